//! Threads and futexes: std's threads are the libOS's green threads, and
//! its locks (`Mutex`, `Condvar`, `RwLock`, `Once`, thread parking) wait on
//! futexes that park a green thread on an address.

extern crate alloc;

use super::fail;
use super::time::deadline_after;
use crate::thread::{self as green, Wake};
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU32, Ordering};
use hermit_abi::{EAGAIN, EINVAL, ESRCH, ETIMEDOUT, FUTEX_RELATIVE_TIMEOUT, Tid, timespec};

/// Stack of a thread spawned without a size.
const DEFAULT_STACK: usize = 256 * 1024;
/// A `Tid` is the thread's slot in its low 16 bits and the slot's
/// generation above, so a stale id never names a newer thread.
const SLOT_BITS: u32 = 16;

fn tid_of(slot: usize, generation: u64) -> Option<Tid> {
    let slot = u32::try_from(slot).ok().filter(|&s| s < 1 << SLOT_BITS)?;
    Some(((generation as u32) << SLOT_BITS) | slot)
}

fn spawn(func: extern "C" fn(usize), arg: usize, stack_size: usize) -> Option<Tid> {
    let (slot, generation) = green::spawn_raw(Box::new(move || func(arg)), stack_size)?;
    tid_of(slot, generation)
}

#[unsafe(no_mangle)]
extern "C" fn sys_spawn2(func: extern "C" fn(usize), arg: usize, _prio: u8, stack_size: usize, _core: isize) -> Tid {
    spawn(func, arg, stack_size).unwrap_or(0)
}

/// # Safety
/// `id` is null or points to a writable `Tid`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_spawn(id: *mut Tid, func: extern "C" fn(usize), arg: usize, _prio: u8, _core: isize) -> i32 {
    match spawn(func, arg, DEFAULT_STACK) {
        Some(tid) => {
            if !id.is_null() {
                // SAFETY: the caller's contract.
                unsafe { id.write(tid) };
            }
            0
        }
        None => fail(hermit_abi::ENOMEM),
    }
}

#[unsafe(no_mangle)]
extern "C" fn sys_join(tid: Tid) -> i32 {
    let slot = (tid & ((1 << SLOT_BITS) - 1)) as usize;
    // The id keeps the low bits of the generation: a slot reused more than
    // 65,535 times (a thread per connection) still joins the right thread.
    let Some(generation) = green::generation(slot).filter(|&g| g as u32 & 0xffff == tid >> SLOT_BITS) else {
        return fail(ESRCH);
    };
    if slot == green::current() {
        return fail(ESRCH);
    }
    green::join_raw(slot, generation);
    0
}

#[unsafe(no_mangle)]
extern "C" fn sys_yield() {
    green::yield_now();
}

/// # Safety
/// `address` points to a live, aligned `u32`; `timeout` is null or points
/// to a `timespec`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_futex_wait(address: *mut u32, expected: u32, timeout: *const timespec, flags: u32) -> i32 {
    if address.is_null() || !address.is_aligned() {
        return fail(EINVAL);
    }
    // SAFETY: the caller's contract; std's futexes are atomics.
    let word = unsafe { AtomicU32::from_ptr(address) };
    if word.load(Ordering::Acquire) != expected {
        return fail(EAGAIN);
    }
    // SAFETY: the caller's contract.
    let due = match unsafe { timeout.as_ref() } {
        None => None,
        Some(t) if flags & FUTEX_RELATIVE_TIMEOUT != 0 => match deadline_after(t) {
            Some(due) => Some(due),
            None => return fail(EINVAL),
        },
        // Absolute deadlines are not used by std; refuse rather than guess
        // the clock.
        Some(_) => return fail(EINVAL),
    };
    match green::park_on(address as usize, due) {
        Wake::Unparked => 0,
        Wake::TimedOut => fail(ETIMEDOUT),
    }
}

#[unsafe(no_mangle)]
extern "C" fn sys_futex_wake(address: *mut u32, count: i32) -> i32 {
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    green::unpark(address as usize, count).min(i32::MAX as usize) as i32
}
