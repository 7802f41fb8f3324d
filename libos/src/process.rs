//! Ending the service.

use crate::hypercall::{Hypercall, call2};

/// Stops this VM with exit status `code`; `cargo denali run` exits with it.
pub fn exit(code: i32) -> ! {
    // What the network stack put off sending (an ACK) goes before the VM.
    crate::thread::send_owed_frames();
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
