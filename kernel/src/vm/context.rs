//! A VM's registers while it is not running, and the segment selectors it
//! runs with. Shared by the kernel's core (which reads and sets them) and
//! the trap path in `arch` (which saves and loads them).

use denali_abi::debug::UserRegs;

/// The ring-3 segment selectors (RPL 3), as the GDT defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSelectors {
    /// Ring-3 code.
    pub code: u64,
    /// Ring-3 data (and stack).
    pub data: u64,
}

/// A VM's registers while it is not running, laid out exactly as the trap
/// stubs push them (lowest address first). Aligned to 16 bytes, as the CPU
/// aligns the stack it pushes a trap frame on: a trap from ring 3 pushes
/// its frame straight into the context (see `arch::x86_64::trap`).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct UserContext {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Trap vector.
    pub vector: u64,
    /// The CPU's error code for the trap, or 0.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// RFLAGS for a VM: interrupts on (so the kernel can preempt it), IOPL 0.
pub const USER_RFLAGS: u64 = 0x202;

impl UserContext {
    /// A fresh context starting at `rip` with stack `rsp`.
    pub fn new(selectors: UserSelectors, rip: u64, rsp: u64) -> Self {
        UserContext { rip, rsp, cs: selectors.code, ss: selectors.data, rflags: USER_RFLAGS, ..Default::default() }
    }
}

/// The flags a debugger may change: carry, parity, adjust, zero, sign,
/// direction and overflow (never the trap, interrupt or I/O privilege
/// flags).
const DEBUGGER_FLAGS: u64 = 0xcd5;

impl UserContext {
    /// The registers as a debugger or a core file sees them.
    pub fn user_regs(&self) -> UserRegs {
        let c = self;
        UserRegs {
            r15: c.r15,
            r14: c.r14,
            r13: c.r13,
            r12: c.r12,
            rbp: c.rbp,
            rbx: c.rbx,
            r11: c.r11,
            r10: c.r10,
            r9: c.r9,
            r8: c.r8,
            rax: c.rax,
            rcx: c.rcx,
            rdx: c.rdx,
            rsi: c.rsi,
            rdi: c.rdi,
            orig_rax: u64::MAX,
            rip: c.rip,
            cs: c.cs,
            rflags: c.rflags,
            rsp: c.rsp,
            ss: c.ss,
            ds: c.ss,
            es: c.ss,
            ..UserRegs::default()
        }
    }

    /// Takes what a debugger may change from `regs`: the general
    /// registers, `rip` and the arithmetic flags; never the segments or
    /// the privileged flags.
    pub fn set_from_debugger(&mut self, regs: &UserRegs) {
        let c = self;
        (c.r15, c.r14, c.r13, c.r12, c.rbp, c.rbx) = (regs.r15, regs.r14, regs.r13, regs.r12, regs.rbp, regs.rbx);
        (c.r11, c.r10, c.r9, c.r8, c.rax, c.rcx) = (regs.r11, regs.r10, regs.r9, regs.r8, regs.rax, regs.rcx);
        (c.rdx, c.rsi, c.rdi, c.rip, c.rsp) = (regs.rdx, regs.rsi, regs.rdi, regs.rip, regs.rsp);
        c.rflags = (c.rflags & !DEBUGGER_FLAGS) | (regs.rflags & DEBUGGER_FLAGS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debugger_cannot_change_segments_or_privileged_flags() {
        let selectors = UserSelectors { code: 0x23, data: 0x1b };
        let mut context = UserContext::new(selectors, 0x1000, 0x2000);
        let mut regs = context.user_regs();
        (regs.rax, regs.rip, regs.cs, regs.ss) = (7, 0x1234, 0x8, 0x10);
        regs.rflags = u64::MAX;
        context.set_from_debugger(&regs);
        assert_eq!((context.rax, context.rip, context.cs, context.ss), (7, 0x1234, 0x23, 0x1b));
        assert_eq!(context.rflags, USER_RFLAGS | DEBUGGER_FLAGS, "no IOPL, trap or other flag");
    }
}
