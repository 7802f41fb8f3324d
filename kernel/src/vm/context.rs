//! A VM's registers while it is not running, and the segment selectors it
//! runs with. Shared by the kernel's core (which reads and sets them) and
//! the trap path in `arch` (which saves and loads them).

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
