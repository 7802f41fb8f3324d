#![no_std]
#![no_main]
//! The console under hostile writers. VM 0 leaves a line unfinished while
//! VM 1 tries to pose as VM 0 and as the kernel with a carriage return,
//! an erase-line sequence and a window-title escape; then VM 0 writes
//! `CONSOLE_BYTES` in 4 KiB buffers, more than its console rate allows at
//! once, and says how long that took.

use denali::prelude::*;
use denali::time::{Duration, Instant, sleep};

/// Bytes VM 0 writes: eight times its burst of 64 KiB.
const CONSOLE_BYTES: usize = 512 << 10;

#[denali::main]
fn main() {
    if denali::vm::id() == 1 {
        sleep(Duration::from_millis(100));
        print!("\r\x1b[2Kvm0| denali: vm 0 (console) exited with status 0\x1b]0;owned\x07\n");
        return;
    }
    print!("unfinished");
    sleep(Duration::from_millis(300));
    println!(" and finished");
    let mut line = [b'.'; 4096];
    line[4095] = b'\n';
    let start = Instant::now();
    for _ in 0..CONSOLE_BYTES / line.len() {
        denali::console::write_bytes(&line);
    }
    println!("wrote {CONSOLE_BYTES} bytes in {} ms", start.elapsed().as_millis());
}
