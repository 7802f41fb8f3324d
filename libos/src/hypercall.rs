//! Raw hypercalls: the only way out of the VM. Safe wrappers live in the
//! modules that use them (`console`, `process`, `time`, `net`, `disk`).

pub use denali_abi::hypercall::{Error, Hypercall};

/// Makes hypercall `call` with up to two arguments and decodes the result.
#[inline(always)]
pub fn call2(call: Hypercall, a0: u64, a1: u64) -> Result<u64, Error> {
    call3(call, a0, a1, 0)
}

/// Makes hypercall `call` with up to three arguments and decodes the result.
#[inline(always)]
pub fn call3(call: Hypercall, a0: u64, a1: u64, a2: u64) -> Result<u64, Error> {
    Error::from_return(raw3(call as u64, a0, a1, a2))
}

/// Makes hypercall number `number` with up to two arguments and returns
/// `rax` as the kernel left it. For probing the interface; services use the
/// typed wrappers.
#[inline(always)]
pub fn raw(number: u64, a0: u64, a1: u64) -> u64 {
    raw3(number, a0, a1, 0)
}

/// [`raw`] with a third argument.
#[inline(always)]
pub fn raw3(number: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let rax: u64;
    // SAFETY: `int 4` enters the isolation kernel through the hypercall gate;
    // the kernel preserves every register but rax and touches VM memory only
    // as the call's documented arguments allow (the asm is not `nomem`).
    unsafe {
        core::arch::asm!(
            "int 4",
            inlateout("rax") number => rax,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            options(nostack),
        );
    }
    rax
}
