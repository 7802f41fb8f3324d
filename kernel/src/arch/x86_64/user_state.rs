//! The register state a VM can touch beyond its general registers, and how
//! the kernel keeps it private to each VM.
//!
//! Ring 3 can reach the x87, SSE, AVX and AVX-512 registers (and the
//! opmask registers, and on some hosts PKRU and APX), the data segment
//! selectors, and with FSGSBASE the FS and GS bases. All of it must be one
//! VM's alone. Under the PVM flavour of KVM, though, ring 3 runs natively
//! with the *host's* XCR0 and CR4, whatever the kernel sets (measured: a VM
//! uses AVX-512 with XCR0 = x87|SSE), and the kernel, run in PVM's
//! instruction emulator, cannot execute `xsave` at all (KVM reports an
//! emulation failure). Only ring 3 reaches the state, so ring 3 switches it:
//!
//! - A page of code ([`STATE_SWITCH_PAGE`], read-only, the same frame in
//!   every VM) holds a *save* routine and a *restore* routine, in variants
//!   for what this CPU has (XSAVE or only FXSAVE, FSGSBASE or not).
//! - Each VM has a page of its own ([`CPU_STATE_PAGE`]) that they save to
//!   and restore from.
//! - When a VM other than the one whose state is in the CPU is about to
//!   run, the kernel first enters the previous owner at its save routine
//!   (interrupts off, no register of the kernel's in it), which ends with
//!   `ud2`: the invalid-opcode trap brings the kernel back by a short path
//!   (`trap::run_save_routine`; PVM delivers no `int n` from ring 3 but 3
//!   and 4, and 4 is the hypercall gate); then it enters the new VM at its restore
//!   routine, with the VM's own registers but `rip`, `rax` and `rdx`, which
//!   the routine takes from the VM's info page last, jumping to where the
//!   VM was. The routine touches no flags and no stack.
//!
//! Between VMs that trust each other nothing would be needed; between
//! VMs that do not, this costs one extra kernel entry per switch, and a
//! page per VM.

use crate::mem::phys;
use crate::vm::context::UserSelectors;
pub use crate::vm::state_switch::StateSwitch;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use denali_abi::info::ResumePoint;
use denali_abi::layout::{CPU_STATE_PAGE, INFO_PAGE, STATE_SWITCH_PAGE};

/// XSAVE components the routines save and restore: x87, SSE, AVX, MPX,
/// the AVX-512 opmask and upper ZMM state, PKRU and APX, every user
/// component whose standard-format area ends within the page. (AMX tile
/// data would not fit; no host lets our monitor's vCPU use it.)
const XSAVE_MASK: u64 = 0xff | 1 << 9 | 1 << 19;

/// Components the kernel enables in XCR0 where it governs ring 3 (bare
/// metal, QEMU, hardware KVM), among those the CPU has: x87, SSE, AVX and
/// AVX-512.
const XCR0_WANTED: u64 = 0b1110_0111;

/// Offsets in the CPU state page: the XSAVE area from 0, then the
/// selectors and bases.
const XSAVE_HEADER: u64 = 512;
const SELECTORS: u64 = 0xf00;
const BASES: u64 = 0xf20;

/// Where the routines find what they need, as numbers for the assembler.
const STATE: u64 = CPU_STATE_PAGE;
const RESUME: u64 = INFO_PAGE + core::mem::offset_of!(denali_abi::info::InfoPage, resume) as u64;
const RESUME_RIP: u64 = RESUME + core::mem::offset_of!(ResumePoint, rip) as u64;
const RESUME_RAX: u64 = RESUME + core::mem::offset_of!(ResumePoint, rax) as u64;
const RESUME_RDX: u64 = RESUME + core::mem::offset_of!(ResumePoint, rdx) as u64;

// The routines, assembled into the kernel's read-only data and copied into
// the state-switch page at boot (they run only there, in ring 3, at
// addresses fixed by the ABI, so every operand is absolute).
core::arch::global_asm!(
    ".pushsection .rodata.denali_state_switch, \"a\"",
    ".balign 64",
    ".global denali_state_switch_start",
    "denali_state_switch_start:",
    // save: selectors and bases, then the XSAVE (or FXSAVE) state.
    ".macro denali_save_selectors",
    "    mov word ptr [{state} + {selectors}], ds",
    "    mov word ptr [{state} + {selectors} + 8], es",
    "    mov word ptr [{state} + {selectors} + 16], fs",
    "    mov word ptr [{state} + {selectors} + 24], gs",
    ".endm",
    ".macro denali_save_bases",
    "    rdfsbase rax",
    "    mov [{state} + {bases}], rax",
    "    rdgsbase rax",
    "    mov [{state} + {bases} + 8], rax",
    ".endm",
    ".macro denali_xsave",
    // XSAVE writes only XSTATE_BV of the header; the rest must be zero
    // for XRSTOR, and the VM may have written it.
    "    xor eax, eax",
    "    mov [{state} + {header} + 8], rax",
    "    mov [{state} + {header} + 16], rax",
    "    mov [{state} + {header} + 24], rax",
    "    mov [{state} + {header} + 32], rax",
    "    mov [{state} + {header} + 40], rax",
    "    mov [{state} + {header} + 48], rax",
    "    mov [{state} + {header} + 56], rax",
    "    mov eax, {mask_lo}",
    "    mov edx, {mask_hi}",
    "    xsave64 [{state}]",
    ".endm",
    // restore: the XSAVE (or FXSAVE) state, then selectors and bases,
    // then rax, rdx and rip from the info page. No flags, no stack.
    ".macro denali_xrstor",
    "    mov eax, {mask_lo}",
    "    mov edx, {mask_hi}",
    "    xrstor64 [{state}]",
    ".endm",
    ".macro denali_restore_selectors",
    "    mov ax, word ptr [{state} + {selectors}]",
    "    mov ds, ax",
    "    mov ax, word ptr [{state} + {selectors} + 8]",
    "    mov es, ax",
    "    mov ax, word ptr [{state} + {selectors} + 16]",
    "    mov fs, ax",
    "    mov ax, word ptr [{state} + {selectors} + 24]",
    "    mov gs, ax",
    ".endm",
    ".macro denali_restore_bases",
    "    mov rax, [{state} + {bases}]",
    "    wrfsbase rax",
    "    mov rax, [{state} + {bases} + 8]",
    "    wrgsbase rax",
    ".endm",
    ".macro denali_resume",
    "    mov rax, [{resume_rax}]",
    "    mov rdx, [{resume_rdx}]",
    "    jmp qword ptr [{resume_rip}]",
    ".endm",
    "",
    ".global denali_save_xsave_bases",
    "denali_save_xsave_bases:",
    "    denali_save_selectors",
    "    denali_save_bases",
    "    denali_xsave",
    "    ud2",
    ".global denali_save_xsave",
    "denali_save_xsave:",
    "    denali_save_selectors",
    "    denali_xsave",
    "    ud2",
    ".global denali_save_fxsave",
    "denali_save_fxsave:",
    "    denali_save_selectors",
    "    fxsave64 [{state}]",
    "    ud2",
    ".global denali_restore_xsave_bases",
    "denali_restore_xsave_bases:",
    "    denali_xrstor",
    "    denali_restore_selectors",
    "    denali_restore_bases",
    "    denali_resume",
    ".global denali_restore_xsave",
    "denali_restore_xsave:",
    "    denali_xrstor",
    "    denali_restore_selectors",
    "    denali_resume",
    ".global denali_restore_fxsave",
    "denali_restore_fxsave:",
    "    fxrstor64 [{state}]",
    "    denali_restore_selectors",
    "    denali_resume",
    ".global denali_state_switch_end",
    "denali_state_switch_end:",
    ".popsection",
    state = const STATE,
    selectors = const SELECTORS,
    bases = const BASES,
    header = const XSAVE_HEADER,
    mask_lo = const XSAVE_MASK as u32,
    mask_hi = const (XSAVE_MASK >> 32) as u32,
    resume_rip = const RESUME_RIP,
    resume_rax = const RESUME_RAX,
    resume_rdx = const RESUME_RDX,
);

unsafe extern "C" {
    static denali_state_switch_start: u8;
    static denali_state_switch_end: u8;
    static denali_save_xsave_bases: u8;
    static denali_save_xsave: u8;
    static denali_save_fxsave: u8;
    static denali_restore_xsave_bases: u8;
    static denali_restore_xsave: u8;
    static denali_restore_fxsave: u8;
}

/// What ring 3 can use on this CPU, as the kernel set it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// XSAVE is on (CR4.OSXSAVE), with this XCR0.
    pub xcr0: Option<u64>,
    /// FSGSBASE is on: ring 3 sets its FS and GS bases itself. Only with
    /// XSAVE (the FXSAVE routines do not switch the bases; no real CPU has
    /// one without the other, a virtual one might).
    pub fsgsbase: bool,
    /// UMIP is on: `sgdt`, `sidt` and friends fault in ring 3.
    pub umip: bool,
}

impl Features {
    /// What this CPU has.
    pub fn detect() -> Features {
        let (leaf1, leaf7) = (__cpuid(1), __cpuid_count(7, 0));
        let xcr0 = (leaf1.ecx & 1 << 26 != 0).then(|| {
            // Leaf 0xd exists where XSAVE does.
            let supported = __cpuid_count(0xd, 0);
            (u64::from(supported.edx) << 32 | u64::from(supported.eax)) & XCR0_WANTED
        });
        // Bases are switched only by the XSAVE routines.
        Features { xcr0, fsgsbase: xcr0.is_some() && leaf7.ebx & 1 != 0, umip: leaf7.ecx & 1 << 2 != 0 }
    }
}

/// Flat address of routine `symbol` once the page is mapped.
fn in_page(symbol: &u8) -> u64 {
    // SAFETY: both are symbols of the same assembled block.
    let start = unsafe { &denali_state_switch_start } as *const u8 as u64;
    STATE_SWITCH_PAGE + (symbol as *const u8 as u64 - start)
}

/// Copies the routines into `frame` (a fresh frame the kernel keeps for
/// good) and picks the variants for `features`.
pub fn install(frame: u64, features: Features, selectors: UserSelectors) -> StateSwitch {
    // SAFETY: the block lies between its two symbols, in the kernel's
    // read-only data; the assert keeps it within one page.
    let code = unsafe {
        let start = &denali_state_switch_start as *const u8;
        let len = (&denali_state_switch_end as *const u8).offset_from(start) as usize;
        assert!(len <= 4096, "the state-switch routines outgrew their page");
        core::slice::from_raw_parts(start, len)
    };
    // SAFETY: `frame` is a whole frame the caller handed over, reached
    // through the physmap; the code is at most a page.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), phys::to_virt(frame), code.len()) };
    // SAFETY: taking the address of assembled symbols.
    let (save, restore) = unsafe {
        match (features.xcr0.is_some(), features.fsgsbase) {
            (true, true) => (in_page(&denali_save_xsave_bases), in_page(&denali_restore_xsave_bases)),
            (true, false) => (in_page(&denali_save_xsave), in_page(&denali_restore_xsave)),
            // Without XSAVE there is no FSGSBASE worth saving either (no
            // such CPU exists); FXSAVE covers x87 and SSE.
            (false, _) => (in_page(&denali_save_fxsave), in_page(&denali_restore_fxsave)),
        }
    };
    let switch = StateSwitch::new(frame, save, restore, selectors);
    if features.xcr0.is_some() && features.fsgsbase { switch.switching_bases() } else { switch }
}
