//! Ending the service.

use crate::hypercall::{Hypercall, call2};

/// Stops this VM with exit status `code`; `cargo denali run` exits with it.
pub fn exit(code: i32) -> ! {
    // SAFETY: `exit` takes no pointer; nothing runs after it.
    let _ = unsafe { call2(Hypercall::Exit, code as u32 as u64, 0) };
    // The kernel never returns from exit.
    loop {
        core::hint::spin_loop();
    }
}
