//! The process: exit, abort, ids, errno, how many CPUs.

use super::entry::PANICKED;
use core::sync::atomic::Ordering;

/// What `abort` exits with: a panicking program's 101, or the 134 a shell
/// reports for SIGABRT.
const PANIC_STATUS: i32 = 101;
const ABORT_STATUS: i32 = 134;

#[unsafe(no_mangle)]
extern "C" fn sys_exit(status: i32) -> ! {
    crate::process::exit(status)
}

#[unsafe(no_mangle)]
extern "C" fn sys_abort() -> ! {
    crate::process::crash(if PANICKED.load(Ordering::Relaxed) { PANIC_STATUS } else { ABORT_STATUS })
}

/// The VM's id: one "process" per VM.
#[unsafe(no_mangle)]
extern "C" fn sys_getpid() -> i32 {
    crate::vm::id() as i32
}

/// The calling thread's `errno`: the error of its last failed call.
#[unsafe(no_mangle)]
extern "C" fn sys_get_errno() -> i32 {
    crate::thread::errno()
}

#[unsafe(no_mangle)]
extern "C" fn sys_errno() -> i32 {
    crate::thread::errno()
}

/// A Denali VM has one virtual CPU; its threads take turns on it.
#[unsafe(no_mangle)]
extern "C" fn sys_available_parallelism() -> usize {
    1
}

#[unsafe(no_mangle)]
extern "C" fn sys_get_processor_count() -> usize {
    1
}
