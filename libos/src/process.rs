//! Ending the service.

use crate::hypercall::{Hypercall, call2};
use core::sync::atomic::{AtomicUsize, Ordering};

/// What runs before the VM stops (0: nothing), set by [`before_exit`].
static BEFORE_EXIT: AtomicUsize = AtomicUsize::new(0);

/// Has [`exit`] run `hook` first. The network stack sets it when it is
/// made (to send what it put off), so a service that never uses the
/// network does not link it.
pub(crate) fn before_exit(hook: fn()) {
    BEFORE_EXIT.store(hook as usize, Ordering::Relaxed);
}

/// Stops this VM with exit status `code`; `cargo denali run` exits with it.
pub fn exit(code: i32) -> ! {
    let hook = BEFORE_EXIT.load(Ordering::Relaxed);
    if hook != 0 {
        // SAFETY: only `before_exit` stores here, and it stores a `fn()`.
        let hook = unsafe { core::mem::transmute::<usize, fn()>(hook) };
        hook();
    }
    stop(code, 0)
}

/// Stops this VM with exit status `code` after a panic or an abort: the
/// host prints a backtrace of where it was (and writes a core file where
/// asked), as for a fault.
pub fn crash(code: i32) -> ! {
    stop(code, denali_abi::debug::EXIT_CRASHED)
}

fn stop(code: i32, flags: u64) -> ! {
    // SAFETY: `exit` takes no pointer; nothing runs after it.
    let _ = unsafe { call2(Hypercall::Exit, code as u32 as u64, flags) };
    // The kernel never returns from exit.
    loop {
        core::hint::spin_loop();
    }
}
