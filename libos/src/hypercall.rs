//! Raw hypercalls: the only way out of the VM. Safe wrappers live in the
//! modules that use them (`console`, `process`, `time`, `net`, `disk`).

pub use denali_abi::hypercall::{Error, Hypercall};

/// Makes hypercall `call` with up to two arguments and decodes the result.
///
/// # Safety
///
/// The kernel reads and writes this VM's memory as the call's arguments
/// say (`net_recv` and `disk_read` write `len` bytes at the pointer they
/// are given): every pointer argument must be valid for the access the
/// call makes, with nothing else borrowing that memory. `exit` does not
/// return, so no destructor runs.
#[inline(always)]
pub unsafe fn call2(call: Hypercall, a0: u64, a1: u64) -> Result<u64, Error> {
    // SAFETY: the caller's promise, passed on.
    unsafe { call3(call, a0, a1, 0) }
}

/// Makes hypercall `call` with up to three arguments and decodes the result.
///
/// # Safety
///
/// As for [`call2`].
#[inline(always)]
pub unsafe fn call3(call: Hypercall, a0: u64, a1: u64, a2: u64) -> Result<u64, Error> {
    // SAFETY: the caller's promise, passed on.
    Error::from_return(unsafe { raw3(call as u64, a0, a1, a2) })
}

/// Makes hypercall number `number` with up to two arguments and returns
/// `rax` as the kernel left it. For probing the interface; services use the
/// typed wrappers.
///
/// # Safety
///
/// As for [`call2`], for whatever call `number` is.
#[inline(always)]
pub unsafe fn raw(number: u64, a0: u64, a1: u64) -> u64 {
    // SAFETY: the caller's promise, passed on.
    unsafe { raw3(number, a0, a1, 0) }
}

/// [`raw`] with a third argument.
///
/// # Safety
///
/// As for [`call2`], for whatever call `number` is.
#[inline(always)]
pub unsafe fn raw3(number: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let rax: u64;
    // SAFETY: `int 4` enters the isolation kernel through the hypercall gate;
    // the kernel preserves every register but rax and touches VM memory only
    // as the call's documented arguments allow (the asm is not `nomem`), which
    // the caller promised is sound.
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
