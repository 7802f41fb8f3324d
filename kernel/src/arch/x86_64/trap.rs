//! Leaving and re-entering ring 3.
//!
//! The kernel runs a VM the way a monitor runs a vCPU: [`enter_user`] loads
//! the VM's registers and `iretq`s into it, and returns only when the VM
//! traps (a hypercall, a fault or an interrupt), with every user register
//! saved in its [`UserContext`]. Each VM therefore needs no kernel stack of
//! its own, and the scheduler is an ordinary loop on the boot stack.
//!
//! Hypercalls arrive as `int 4` (see `denali_abi`). Those that leave the VM
//! (`exit`, `yield`, `idle`) trap like anything else; the others, and page
//! faults from ring 3, are handed to the kernel's [`TrapHooks`] without
//! the run loop: the gate's stub saves only the registers a Rust call
//! clobbers and calls the hook on the kernel stack; the VM's callee-saved
//! registers stay in the CPU, which the call keeps, and if the hook says
//! the VM resumes the stub loads the clobbered ones back and `iretq`s into
//! it. Otherwise (the VM blocks, yields, exits, faults for good, or the run
//! loop has work first) it stores the callee-saved registers too and
//! returns to the run loop like any other trap.
//! Every IDT gate switches to an IST stack. While a VM runs, the stack of
//! the ordinary traps (`IST_TRAP`) is the end of its context, so a trap from
//! ring 3 pushes the VM's registers straight into it and control returns to
//! the scheduler without a copy; the kernel's own trap stack is put back
//! before the run loop runs again. A hook runs with the VM's context still
//! the trap stack: it runs with interrupts off and must not fault (a trap
//! in ring 0 then is a kernel bug, reported as any other). A trap from ring
//! 3 on another IST (an NMI, a machine check) is copied into the context.
//! The hook entries are assembler macros expanded in the stubs' block: both
//! blocks are one assembler unit, as the stubs' references to the local
//! label `denali_state_saved` already require (a split fails the build).
//! In ring 0 only the timer waking a halted kernel is expected; any other
//! trap there is a kernel bug and ends the run with a report.

use super::gdt::{IST_DOUBLE_FAULT, IST_NMI, IST_TRAP, Selectors};
pub use crate::platform::TrapHooks;
pub use crate::vm::context::UserContext;
use core::arch::global_asm;
use denali_abi::boot::{DEBUG_REQUEST_VECTOR, NIC_VECTOR};
use denali_abi::hypercall::HYPERCALL_VECTOR;

const CONTEXT_WORDS: usize = core::mem::size_of::<UserContext>() / 8;
const _: () = assert!(CONTEXT_WORDS == 22);
const CS_OFFSET: usize = core::mem::offset_of!(UserContext, cs);
/// Where the CPU's trap frame (without an error code) starts in a context.
const RIP_OFFSET: usize = core::mem::offset_of!(UserContext, rip);
const _: () = assert!(core::mem::align_of::<UserContext>() == 16, "the CPU pushes a trap frame 16-aligned");
/// Where the TSS keeps the `IST_TRAP` stack pointer.
const TRAP_STACK_OFFSET: usize =
    core::mem::offset_of!(x86_64::structures::tss::TaskStateSegment, interrupt_stack_table) + 8 * IST_TRAP as usize;

// Kernel stack pointer saved by enter_user, restored when the VM traps.
#[unsafe(no_mangle)]
static mut DENALI_KERNEL_RSP: u64 = 0;
// Where the running VM's registers are saved.
#[unsafe(no_mangle)]
static mut DENALI_CURRENT_CONTEXT: *mut UserContext = core::ptr::null_mut();
// The hooks the hypercall and page-fault stubs call, and their kernel (see
// enter_user).
#[unsafe(no_mangle)]
static mut DENALI_HOOK_KERNEL: *mut () = core::ptr::null_mut();
#[unsafe(no_mangle)]
static mut DENALI_HOOK_HYPERCALL: usize = 0;
#[unsafe(no_mangle)]
static mut DENALI_HOOK_PAGE_FAULT: usize = 0;
// 1 while a VM's state-save routine runs (see `user_state`), 2 once it
// ended at its `ud2`.
#[unsafe(no_mangle)]
static mut DENALI_SAVING_STATE: u8 = 0;
unsafe extern "C" {
    fn denali_enter_user(context: *mut UserContext);
    fn denali_enter_save(scratch: *mut UserContext, rip: u64, cs: u64, ss: u64);
    static denali_trap_stubs: [u64; 256];
}

/// Runs a VM's state-save routine at `rip` (ring 3, interrupts off) on the
/// current page tables, by a short path: the routine needs no registers,
/// and its `ud2` returns here without the general registers being saved.
/// The kernel's general registers are still in the CPU while it runs; no
/// code of the VM's runs then, and every way out of the routine (its `ud2`
/// or any trap) comes back to the kernel, so none of them is observable.
/// True if it ended there; otherwise it trapped some other way, and
/// `scratch` holds what the trap path saved (the VM's own context is not
/// touched either way).
///
/// # Safety
///
/// `cs` and `ss` must be the ring-3 selectors and `rip` the save routine
/// mapped in the current address space.
pub unsafe fn run_save_routine(scratch: &mut UserContext, rip: u64, cs: u64, ss: u64) -> bool {
    // SAFETY: the caller's promise makes the iretq enter ring 3 at code
    // that ends in `ud2` or traps; both return here, the first through
    // denali_state_saved, the second through the common trap path (or a
    // hook's stub, whose hook sends it on) into `scratch`. The kernel is
    // single-threaded and its interrupts are off: nothing else reads the
    // flag or the hooks.
    unsafe {
        let none = no_hook as extern "C" fn() -> u64 as usize;
        set_hooks(core::ptr::null_mut(), none, none);
        denali_enter_save(scratch, rip, cs, ss);
        let saved = core::ptr::addr_of!(DENALI_SAVING_STATE).read() == 2;
        core::ptr::addr_of_mut!(DENALI_SAVING_STATE).write(0);
        saved
    }
}

/// Runs the VM whose registers are in `context` until it traps in a way
/// `hooks` leave to the caller; on return, `context` holds its registers and
/// `context.vector` says why it stopped. Hypercalls and page faults go to
/// `hooks` first, on the kernel stack below this call's frame.
///
/// # Safety
///
/// `context` must be valid for writes until this returns and describe
/// ring-3 code running on the current page tables (its `cs`/`ss` are the
/// user selectors and its `rflags` has IOPL 0), so that the `iretq` cannot
/// enter ring 0; `hooks` must be callable as their contract says while this
/// runs.
pub unsafe fn enter_user(context: *mut UserContext, hooks: TrapHooks) {
    // SAFETY: the kernel is single-threaded and its interrupts are off here,
    // so nothing else reads the hooks' statics; the caller guarantees the
    // context is a ring-3 one; the stub saves the callee-saved registers and
    // returns here when the VM traps.
    unsafe {
        set_hooks(hooks.kernel, hooks.hypercall as usize, hooks.page_fault as usize);
        denali_enter_user(context)
    }
}

/// Points the stubs at the hooks.
///
/// # Safety
///
/// The kernel is single-threaded and calls this with interrupts off; the
/// hooks are what the stubs may call until the next call of this.
unsafe fn set_hooks(kernel: *mut (), hypercall: usize, page_fault: usize) {
    // SAFETY: the caller's promise: nothing reads the statics meanwhile.
    unsafe {
        core::ptr::addr_of_mut!(DENALI_HOOK_KERNEL).write(kernel);
        core::ptr::addr_of_mut!(DENALI_HOOK_HYPERCALL).write(hypercall);
        core::ptr::addr_of_mut!(DENALI_HOOK_PAGE_FAULT).write(page_fault);
    }
}

/// The hooks while a state-save routine runs: none of its traps is a VM's
/// to finish, so each goes back to `run_save_routine`.
extern "C" fn no_hook() -> u64 {
    TrapHooks::TO_RUN_LOOP
}

global_asm!(
    // Loads the 15 general registers from a UserContext at rsp, in the
    // order the trap path pushes them.
    ".macro denali_pop_context",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rbp",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rbx",
    "    pop rax",
    ".endm",
    // Puts the kernel's own trap stack back in the TSS; its top is left in
    // rax.
    ".macro denali_kernel_trap_stack",
    "    mov rax, [rip + DENALI_KERNEL_TRAP_STACK]",
    "    mov [rip + DENALI_TSS + {trap_stack}], rax",
    ".endm",
    // Copies a trap frame (the registers the stubs pushed at rsp) to the
    // context at rdi.
    ".macro denali_copy_frame",
    "    mov rsi, rsp",
    "    mov ecx, {words}",
    "    rep movsq",
    ".endm",
    // Leaving the kernel for ring 3: keeps the callee-saved registers and
    // the stack pointer to come back to (16-byte aligned, as a call from the
    // hypercall stub needs it), and where a trap saves the ring-3 registers
    // (rdi), which becomes the trap stack: a trap pushes its frame and the
    // stub the registers, ending at the context's start.
    ".macro denali_leave_kernel",
    "    sub rsp, 8",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rip + DENALI_KERNEL_RSP], rsp",
    "    mov [rip + DENALI_CURRENT_CONTEXT], rdi",
    "    lea rax, [rdi + {context_size}]",
    "    mov [rip + DENALI_TSS + {trap_stack}], rax",
    ".endm",
    // Back from ring 3: returns from denali_enter_user or denali_enter_save,
    // with the kernel's own trap stack back in the TSS.
    ".macro denali_back_to_kernel",
    "    denali_kernel_trap_stack",
    "    mov rsp, [rip + DENALI_KERNEL_RSP]",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    add rsp, 8",
    "    ret",
    ".endm",
    "",
    ".global denali_enter_user",
    "denali_enter_user:",
    "    denali_leave_kernel",
    "    mov rsp, rdi",
    "    denali_pop_context",
    "    add rsp, 16",
    "    iretq",
    "",
    // rdi: a scratch context for a trap other than the routine's ud2;
    // rsi: the routine; rdx, rcx: user cs and ss.
    ".global denali_enter_save",
    "denali_enter_save:",
    "    denali_leave_kernel",
    "    mov byte ptr [rip + DENALI_SAVING_STATE], 1",
    "    push rcx",
    "    push 0",
    "    push 2",
    "    push rdx",
    "    push rsi",
    "    iretq",
    "",
    // The save routine's ud2 (vector 6 while DENALI_SAVING_STATE is 1):
    // back to run_save_routine's caller at once.
    "denali_state_saved:",
    "    mov byte ptr [rip + DENALI_SAVING_STATE], 2",
    "    denali_back_to_kernel",
    "",
    // Stores the registers a Rust call clobbers into their slots of the
    // VM's context, which starts `below` bytes under rsp (the CPU's frame
    // ends in the context: the trap stack is its end).
    ".macro denali_store_clobbered below",
    "    mov [rsp - (\\below - {rax})], rax",
    "    mov [rsp - (\\below - {rcx})], rcx",
    "    mov [rsp - (\\below - {rdx})], rdx",
    "    mov [rsp - (\\below - {rsi})], rsi",
    "    mov [rsp - (\\below - {rdi})], rdi",
    "    mov [rsp - (\\below - {r8})], r8",
    "    mov [rsp - (\\below - {r9})], r9",
    "    mov [rsp - (\\below - {r10})], r10",
    "    mov [rsp - (\\below - {r11})], r11",
    ".endm",
    // Loads them back from the context at rsp, and returns to the VM.
    ".macro denali_load_clobbered_and_resume",
    "    mov rax, [rsp + {rax}]",
    "    mov rcx, [rsp + {rcx}]",
    "    mov rdx, [rsp + {rdx}]",
    "    mov rsi, [rsp + {rsi}]",
    "    mov rdi, [rsp + {rdi}]",
    "    mov r8, [rsp + {r8}]",
    "    mov r9, [rsp + {r9}]",
    "    mov r10, [rsp + {r10}]",
    "    mov r11, [rsp + {r11}]",
    "    add rsp, {rip}",
    "    iretq",
    ".endm",
    // A hook left the trap to the run loop: the callee-saved registers,
    // still the VM's, and the vector complete its context.
    ".macro denali_complete_context vector",
    "    mov rsp, [rip + DENALI_CURRENT_CONTEXT]",
    "    mov [rsp + {r15}], r15",
    "    mov [rsp + {r14}], r14",
    "    mov [rsp + {r13}], r13",
    "    mov [rsp + {r12}], r12",
    "    mov [rsp + {rbp}], rbp",
    "    mov [rsp + {rbx}], rbx",
    "    mov qword ptr [rsp + {vector}], \\vector",
    ".endm",
    "",
    // The hypercall gate. The calls that leave the VM take the common path
    // (see TrapHooks::LEAVING_CALLS; a number of 64 or more is none of
    // them). For the others the hook is called with the TSC's low half in
    // esi and its high half in edx; the
    // vector and error code are written only if the call goes on to the
    // run loop. Only ring 3 raises this gate (the kernel never executes
    // `int 4`).
    ".macro denali_hypercall_entry",
    "    cmp rax, 63",
    "    ja 1f",
    "    bt qword ptr [rip + denali_leaving_calls], rax",
    "    jnc 1f",
    "    push 0",
    "    push {hypercall}",
    "    jmp denali_trap_common",
    "1:  denali_store_clobbered {rip}",
    "    cld",
    "    mov rsp, [rip + DENALI_KERNEL_RSP]",
    "    rdtsc",
    "    mov esi, eax",
    "    mov rdi, [rip + DENALI_HOOK_KERNEL]",
    "    call [rip + DENALI_HOOK_HYPERCALL]",
    "    cmp rax, {resume}",
    "    jne denali_hypercall_not_resumed",
    "denali_hypercall_resume:",
    "    mov rsp, [rip + DENALI_CURRENT_CONTEXT]",
    "    denali_load_clobbered_and_resume",
    ".endm",
    "",
    // The page-fault gate (the CPU pushed an error code, at the context's
    // `error_code`). From ring 3 the hook is called with the address; a
    // fault in ring 0 is the kernel's and takes the common path.
    ".macro denali_page_fault_entry",
    "    test qword ptr [rsp + 16], 3",
    "    jz 1f",
    "    denali_store_clobbered {error_code}",
    "    cld",
    "    mov rsp, [rip + DENALI_KERNEL_RSP]",
    "    mov rsi, cr2",
    "    mov rdi, [rip + DENALI_HOOK_KERNEL]",
    "    call [rip + DENALI_HOOK_PAGE_FAULT]",
    "    cmp rax, {resume}",
    "    jne denali_page_fault_to_run_loop",
    "    mov rsp, [rip + DENALI_CURRENT_CONTEXT]",
    "    denali_load_clobbered_and_resume",
    "1:  push {page_fault}",
    "    jmp denali_trap_common",
    ".endm",
    "",
    ".pushsection .rodata",
    ".balign 8",
    "denali_leaving_calls:",
    "    .quad {leaving_calls}",
    ".popsection",
    "",
    // The hypercall hook answered a timer deadline (arm it, then resume the
    // VM), or left the call to the run loop.
    "denali_hypercall_not_resumed:",
    "    test rax, rax",
    "    jz 5f",
    "    mov rdi, rax",
    "    call denali_arm_timer",
    "    jmp denali_hypercall_resume",
    "5:  denali_complete_context {hypercall}",
    "    mov qword ptr [rsp + {error_code}], 0",
    "    denali_back_to_kernel",
    "",
    "denali_page_fault_to_run_loop:",
    "    denali_complete_context {page_fault}",
    "    denali_back_to_kernel",
    "",
    "denali_trap_common:",
    "    push rax",
    "    push rbx",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rbp",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    cld",
    "    test qword ptr [rsp + {cs_offset}], 3",
    "    jz 2f",
    // From ring 3: the registers are in the VM's context, pushed there, or
    // (a trap on another IST) copied there. Return from denali_enter_user
    // to the scheduler.
    "    mov rdi, [rip + DENALI_CURRENT_CONTEXT]",
    "    cmp rsp, rdi",
    "    je 3f",
    "    denali_copy_frame",
    "3:  denali_back_to_kernel",
    // From ring 0: the timer or the NIC waking the halted kernel, or a
    // kernel bug (reported, and the run stops). The kernel's own trap stack
    // goes back into the TSS, and a frame that landed elsewhere (a fault
    // while a VM's context was the trap stack, or an NMI) moves onto it, so
    // the report never runs on a VM's context.
    "2:  denali_kernel_trap_stack",
    "    sub rax, {context_size}",
    "    cmp rsp, rax",
    "    je 4f",
    "    mov rdi, rax",
    "    denali_copy_frame",
    "    mov rsp, rax",
    "4:  mov rdi, rsp",
    "    call denali_kernel_trap",
    // It returned: a timer interrupt woke the halted kernel. Resume it.
    "    denali_pop_context",
    "    add rsp, 16",
    "    iretq",
    cs_offset = const CS_OFFSET,
    words = const CONTEXT_WORDS,
    context_size = const CONTEXT_WORDS * 8,
    trap_stack = const TRAP_STACK_OFFSET,
    r15 = const core::mem::offset_of!(UserContext, r15),
    r14 = const core::mem::offset_of!(UserContext, r14),
    r13 = const core::mem::offset_of!(UserContext, r13),
    r12 = const core::mem::offset_of!(UserContext, r12),
    rbp = const core::mem::offset_of!(UserContext, rbp),
    rbx = const core::mem::offset_of!(UserContext, rbx),
    rax = const core::mem::offset_of!(UserContext, rax),
    rcx = const core::mem::offset_of!(UserContext, rcx),
    rdx = const core::mem::offset_of!(UserContext, rdx),
    rsi = const core::mem::offset_of!(UserContext, rsi),
    rdi = const core::mem::offset_of!(UserContext, rdi),
    r8 = const core::mem::offset_of!(UserContext, r8),
    r9 = const core::mem::offset_of!(UserContext, r9),
    r10 = const core::mem::offset_of!(UserContext, r10),
    r11 = const core::mem::offset_of!(UserContext, r11),
    rip = const RIP_OFFSET,
    vector = const core::mem::offset_of!(UserContext, vector),
    error_code = const core::mem::offset_of!(UserContext, error_code),
    hypercall = const HYPERCALL_VECTOR,
    page_fault = const crate::platform::vectors::PAGE_FAULT,
    resume = const TrapHooks::RESUME,
    leaving_calls = const TrapHooks::LEAVING_CALLS,
);

/// Arms the timer for the hypercall stub, when the hook answers a deadline.
#[unsafe(no_mangle)]
extern "C" fn denali_arm_timer(tsc: u64) {
    super::apic::set_deadline(tsc);
}

// One stub per vector: push a zero error code where the CPU pushes none,
// then the vector number, then join the common path (the hypercall and
// page-fault gates run their own entries, in line).
const _: () = assert!(HYPERCALL_VECTOR == 4, "the stubs take the hypercall path for vector 4");
const _: () = assert!(crate::platform::vectors::PAGE_FAULT == 14, "and the page-fault path for vector 14");
macro_rules! trap_stubs {
    ($($vector:literal)*) => {
        global_asm!(
            $(
                concat!(".balign 16\n", "denali_trap_stub_", $vector, ":"),
                concat!(".if ", $vector, " == 6"),
                "    cmp byte ptr [rip + DENALI_SAVING_STATE], 1",
                "    je denali_state_saved",
                ".endif",
                concat!(".if ", $vector, " == 4"),
                "    denali_hypercall_entry",
                concat!(".elseif ", $vector, " == 14"),
                "    denali_page_fault_entry",
                concat!(
                    ".elseif ", $vector, " == 8 || (", $vector, " >= 10 && ", $vector, " <= 14) || ",
                    $vector, " == 17 || ", $vector, " == 21 || ", $vector, " == 29 || ", $vector, " == 30"
                ),
                concat!("    push ", $vector),
                "    jmp denali_trap_common",
                ".else",
                "    push 0",
                concat!("    push ", $vector),
                "    jmp denali_trap_common",
                ".endif",
            )*
            ".section .rodata",
            ".balign 8",
            ".global denali_trap_stubs",
            "denali_trap_stubs:",
            $(concat!("    .quad denali_trap_stub_", $vector),)*
            ".text",
        );
    };
}

trap_stubs!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
    64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95
    96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119
    120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143
    144 145 146 147 148 149 150 151 152 153 154 155 156 157 158 159 160 161 162 163 164 165 166 167
    168 169 170 171 172 173 174 175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191
    192 193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215
    216 217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239
    240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255
);

/// A 64-bit interrupt gate.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

static mut IDT: [Gate; 256] =
    [Gate { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, reserved: 0 }; 256];

/// The breakpoint exception, `int3`.
const BREAKPOINT_VECTOR: usize = 3;

/// Fills and loads the IDT: every vector gets its stub and an IST stack.
/// Only the hypercall gate and the breakpoint have DPL 3; `int n` for any
/// other vector from ring 3 is a #GP, never a forged trap.
pub fn init_idt(selectors: &Selectors) {
    // SAFETY: called once at boot before interrupts are enabled; the IDT is
    // static, so the pointer handed to lidt stays valid forever, and the stub
    // table is defined by the global_asm above.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        let stubs = &*core::ptr::addr_of!(denali_trap_stubs);
        for (vector, gate) in idt.iter_mut().enumerate() {
            let addr = stubs[vector];
            // Ring 3 may raise the hypercall gate and `int3`, a debugger's
            // breakpoint (a VM not being debugged stops on it, as on a
            // fault).
            let user_gate = vector == usize::from(HYPERCALL_VECTOR) || vector == BREAKPOINT_VECTOR;
            let ist = match vector {
                8 => IST_DOUBLE_FAULT,
                2 | 18 => IST_NMI,
                _ => IST_TRAP,
            };
            *gate = Gate {
                offset_low: addr as u16,
                selector: selectors.kernel_code.0,
                ist: ist as u8 + 1,
                type_attr: if user_gate { 0xee } else { 0x8e },
                offset_mid: (addr >> 16) as u16,
                offset_high: (addr >> 32) as u32,
                reserved: 0,
            };
        }
        let pointer = x86_64::structures::DescriptorTablePointer {
            limit: (core::mem::size_of_val(idt) - 1) as u16,
            base: x86_64::VirtAddr::from_ptr(idt.as_ptr()),
        };
        x86_64::instructions::tables::lidt(&pointer);
    }
}

/// The monitor asked to stop the debugged VM while the kernel was halted.
pub static DEBUG_REQUESTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A trap taken in ring 0. The timer, the NIC or the monitor's debug
/// request waking the kernel from `hlt` (the only time the kernel enables
/// interrupts) returns and resumes it (the NIC's and the request are noted
/// for the run loop); anything else
/// means the kernel itself is broken: report and stop.
#[unsafe(no_mangle)]
extern "C" fn denali_kernel_trap(frame: &UserContext) {
    match frame.vector {
        super::apic::TIMER_VECTOR => return super::apic::end_of_interrupt(),
        super::apic::SPURIOUS_VECTOR => return,
        vector if super::pic::PIC_VECTORS.contains(&vector) => return,
        vector if [NIC_VECTOR, DEBUG_REQUEST_VECTOR].map(u64::from).contains(&vector) => {
            // A debug request also ends any idle wait, as a frame does.
            if vector == u64::from(DEBUG_REQUEST_VECTOR) {
                DEBUG_REQUESTED.store(true, core::sync::atomic::Ordering::Relaxed);
            }
            crate::drivers::virtio_net::INTERRUPTED.store(true, core::sync::atomic::Ordering::Relaxed);
            return super::apic::end_of_interrupt();
        }
        _ => {}
    }
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    panic!(
        "trap {} in the kernel at rip {:#x} (error {:#x}, cr2 {:#x}, rsp {:#x})",
        frame.vector, frame.rip, frame.error_code, cr2, frame.rsp
    );
}
