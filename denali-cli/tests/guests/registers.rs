#![no_std]
#![no_main]
//! Register state is private to each VM. VM 0 (the owner) puts a secret in
//! every piece of register state ring 3 can reach beyond the general
//! registers (x87 control word, MXCSR, the upper half of ymm15, zmm16-31,
//! the opmask registers k1 and k7, the data segment selectors, the FS and
//! GS bases), sleeps while VM 1 (the spy) runs, and checks it kept all of
//! it. The spy reads the same registers first thing (they must hold their
//! initial values), then overwrites them all. VM 2 tries `sgdt`, which UMIP
//! makes fault.
//!
//! What this CPU lacks is reported as absent and skipped.

extern crate alloc;

use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use denali::prelude::*;
use denali::time::{Duration, sleep};

const SECRET: u64 = 0x5ec2_e7d0_0d1e_5ec2;
const JUNK: u64 = 0x0bad_f00d_dead_beef;

/// What ring 3 may use here.
struct Cpu {
    avx: bool,
    avx512: bool,
    fsgsbase: bool,
    umip: bool,
}

fn cpu() -> Cpu {
    let (leaf1, leaf7) = (__cpuid(1), __cpuid_count(7, 0));
    let xcr0 = if leaf1.ecx & 1 << 27 != 0 {
        let (lo, hi): (u32, u32);
        // SAFETY: xgetbv with OSXSAVE set only reads XCR0.
        unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
        u64::from(hi) << 32 | u64::from(lo)
    } else {
        0
    };
    Cpu {
        avx: leaf1.ecx & 1 << 28 != 0 && xcr0 & 0b110 == 0b110,
        avx512: leaf7.ebx & 1 << 16 != 0 && xcr0 & 0b1110_0110 == 0b1110_0110,
        fsgsbase: leaf7.ebx & 1 != 0,
        umip: leaf7.ecx & 1 << 2 != 0,
    }
}

/// Everything this test puts in the registers, as read back.
#[derive(PartialEq, Eq, Debug, Clone, Copy)]
struct State {
    fcw: u16,
    mxcsr: u32,
    ymm15_high: [u64; 2],
    zmm: [[u64; 8]; 16],
    k1: u64,
    k7: u64,
    selectors: [u16; 4],
    bases: [u64; 2],
}

impl State {
    /// The state a test VM loads: every word derived from `seed`.
    fn pattern(seed: u64, selector: u16) -> State {
        let mut zmm = [[0; 8]; 16];
        for (i, reg) in zmm.iter_mut().enumerate() {
            for (j, word) in reg.iter_mut().enumerate() {
                *word = seed ^ ((i * 8 + j) as u64) << 56;
            }
        }
        State {
            // Rounding and precision control from the seed's lowest bit.
            fcw: 0x0c7f ^ ((seed as u16 & 1) << 11),
            mxcsr: 0x7f80 ^ ((seed as u32 & 1) << 14),
            ymm15_high: [seed, !seed],
            zmm,
            k1: seed,
            k7: !seed,
            selectors: [selector; 4],
            bases: [seed & 0x7fff_ffff_f000, !seed & 0x7fff_ffff_f000],
        }
    }

    /// The state a VM starts with.
    fn initial() -> State {
        State {
            fcw: 0x037f,
            mxcsr: 0x1f80,
            ymm15_high: [0; 2],
            zmm: [[0; 8]; 16],
            k1: 0,
            k7: 0,
            selectors: [0; 4],
            bases: [0; 2],
        }
    }

    fn load(&self, cpu: &Cpu) {
        // SAFETY (every block here): each instruction only loads a register
        // ring 3 owns, from memory this function borrows.
        unsafe {
            asm!("fldcw [{}]", in(reg) &self.fcw, options(nostack));
            asm!("ldmxcsr [{}]", in(reg) &self.mxcsr, options(nostack));
            let selector = self.selectors[0];
            asm!("mov ds, {0:x}", "mov es, {0:x}", "mov fs, {0:x}", "mov gs, {0:x}", in(reg) selector, options(nostack));
            if cpu.fsgsbase {
                asm!("wrfsbase {}", "wrgsbase {}", in(reg) self.bases[0], in(reg) self.bases[1], options(nostack));
            }
            if cpu.avx {
                let ymm = [0, 0, self.ymm15_high[0], self.ymm15_high[1]];
                asm!("vmovdqu ymm15, [{}]", in(reg) &ymm, options(nostack));
            }
            if cpu.avx512 {
                let z = &self.zmm;
                asm!(
                    "vmovdqu64 zmm16, [{0}]", "vmovdqu64 zmm17, [{0} + 64]", "vmovdqu64 zmm18, [{0} + 128]",
                    "vmovdqu64 zmm19, [{0} + 192]", "vmovdqu64 zmm20, [{0} + 256]", "vmovdqu64 zmm21, [{0} + 320]",
                    "vmovdqu64 zmm22, [{0} + 384]", "vmovdqu64 zmm23, [{0} + 448]", "vmovdqu64 zmm24, [{0} + 512]",
                    "vmovdqu64 zmm25, [{0} + 576]", "vmovdqu64 zmm26, [{0} + 640]", "vmovdqu64 zmm27, [{0} + 704]",
                    "vmovdqu64 zmm28, [{0} + 768]", "vmovdqu64 zmm29, [{0} + 832]", "vmovdqu64 zmm30, [{0} + 896]",
                    "vmovdqu64 zmm31, [{0} + 960]",
                    "kmovq k1, {1}", "kmovq k7, {2}",
                    in(reg) z.as_ptr(), in(reg) self.k1, in(reg) self.k7, options(nostack),
                );
            }
        }
    }

    fn read(cpu: &Cpu) -> State {
        let mut s = State::initial();
        // SAFETY (every block here): each instruction only stores a
        // register into memory this function owns.
        unsafe {
            asm!("fnstcw [{}]", in(reg) &mut s.fcw, options(nostack));
            asm!("stmxcsr [{}]", in(reg) &mut s.mxcsr, options(nostack));
            let (ds, es, fs, gs): (u16, u16, u16, u16);
            asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
                out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, options(nomem, nostack));
            s.selectors = [ds, es, fs, gs];
            if cpu.fsgsbase {
                let (fs_base, gs_base): (u64, u64);
                asm!("rdfsbase {}", "rdgsbase {}", out(reg) fs_base, out(reg) gs_base, options(nomem, nostack));
                s.bases = [fs_base, gs_base];
            }
            if cpu.avx {
                asm!("vextracti128 [{}], ymm15, 1", in(reg) s.ymm15_high.as_mut_ptr(), options(nostack));
            }
            if cpu.avx512 {
                let z = s.zmm.as_mut_ptr();
                asm!(
                    "vmovdqu64 [{0}], zmm16", "vmovdqu64 [{0} + 64], zmm17", "vmovdqu64 [{0} + 128], zmm18",
                    "vmovdqu64 [{0} + 192], zmm19", "vmovdqu64 [{0} + 256], zmm20", "vmovdqu64 [{0} + 320], zmm21",
                    "vmovdqu64 [{0} + 384], zmm22", "vmovdqu64 [{0} + 448], zmm23", "vmovdqu64 [{0} + 512], zmm24",
                    "vmovdqu64 [{0} + 576], zmm25", "vmovdqu64 [{0} + 640], zmm26", "vmovdqu64 [{0} + 704], zmm27",
                    "vmovdqu64 [{0} + 768], zmm28", "vmovdqu64 [{0} + 832], zmm29", "vmovdqu64 [{0} + 896], zmm30",
                    "vmovdqu64 [{0} + 960], zmm31",
                    "kmovq {1}, k1", "kmovq {2}, k7",
                    in(reg) z, out(reg) s.k1, out(reg) s.k7, options(nostack),
                );
            }
        }
        s
    }
}

/// Compares what each part of `got` holds with `want`, as one line.
fn report(cpu: &Cpu, got: &State, want: &State) -> alloc::string::String {
    let verdict = |present: bool, same: bool| if !present { "absent" } else if same { "yes" } else { "NO" };
    alloc::format!(
        "x87 {} mxcsr {} ymm {} zmm {} opmask {} selectors {} bases {}",
        verdict(true, got.fcw == want.fcw),
        verdict(true, got.mxcsr == want.mxcsr),
        verdict(cpu.avx, got.ymm15_high == want.ymm15_high),
        verdict(cpu.avx512, got.zmm == want.zmm),
        verdict(cpu.avx512, (got.k1, got.k7) == (want.k1, want.k7)),
        verdict(true, got.selectors == want.selectors),
        verdict(cpu.fsgsbase, got.bases == want.bases),
    )
}

#[denali::main]
fn main() {
    let cpu = cpu();
    let (user_data, user_code): (u16, u16);
    // SAFETY: reads the stack and code segment selectors.
    unsafe { asm!("mov {0:x}, ss", "mov {1:x}, cs", out(reg) user_data, out(reg) user_code, options(nomem, nostack)) };
    match denali::vm::id() {
        0 => {
            let secret = State::pattern(SECRET, user_data);
            secret.load(&cpu);
            sleep(Duration::from_millis(500));
            let kept = State::read(&cpu);
            println!("owner kept: {}", report(&cpu, &kept, &secret));
        }
        1 => {
            let seen = State::read(&cpu);
            println!("spy saw initial state: {}", report(&cpu, &seen, &State::initial()));
            State::pattern(JUNK, user_code).load(&cpu);
            println!("spy overwrote everything");
        }
        _ if cpu.umip => {
            println!("umip: present, trying sgdt");
            let mut gdt = [0u8; 10];
            // SAFETY: sgdt stores 10 bytes into `gdt` (or faults under UMIP).
            unsafe { asm!("sgdt [{}]", in(reg) gdt.as_mut_ptr(), options(nostack)) };
            println!("umip: sgdt read {gdt:x?}");
        }
        _ => println!("umip: absent"),
    }
}
