//! The first Rust code of a std service: thread-local storage for the main
//! thread, `argv` and `envp` from the info page, then std's own start-up
//! (`runtime_entry`, which runs `main` and exits with its status).

extern crate alloc;
extern crate std;

use crate::vm::{command_line, info};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_char;
use core::sync::atomic::{AtomicBool, Ordering};
use denali_abi::info::FEATURE_FS_GS_BASE;

unsafe extern "C" {
    // std's entry on Hermit (library/std/src/sys/pal/hermit/mod.rs).
    fn runtime_entry(argc: i32, argv: *const *const c_char, env: *const *const c_char) -> !;
}

/// Set once std's panic hook has reported a panic: `sys_abort` then exits
/// with 101, as a panicking `main` does on Linux.
pub(super) static PANICKED: AtomicBool = AtomicBool::new(false);

/// Exit status when the VM cannot give std what it needs to start.
const CANNOT_START: i32 = 70;

pub(crate) fn start() -> ! {
    if info().features & FEATURE_FS_GS_BASE == 0 {
        crate::console::write_bytes(
            b"denali: this kernel cannot give a std service thread-local storage (its CPU lacks FSGSBASE); build the service with #![no_std] instead\n",
        );
        crate::process::exit(CANNOT_START);
    }
    if !crate::thread::give_main_thread_tls() {
        crate::console::write_bytes(
            b"denali: no memory for the main thread's thread-locals; give the VM more `memory`\n",
        );
        crate::process::exit(CANNOT_START);
    }
    note_panics();
    let (argv, envp) = (c_strings(argv()), c_strings(envp()));
    // SAFETY: argv and envp are NUL-terminated arrays of NUL-terminated
    // strings, leaked so they live as long as the program.
    unsafe { runtime_entry(argv.len() as i32 - 1, argv.as_ptr(), envp.as_ptr()) }
}

/// Wraps std's panic hook so that the exit status can say a panic, not an
/// abort, ended the program.
fn note_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        report(panic);
        PANICKED.store(true, Ordering::Relaxed);
    }));
}

/// `argv`: the program's name, then the manifest's `args` split at
/// whitespace.
fn argv() -> Vec<&'static [u8]> {
    let line = command_line();
    let program: &'static [u8] = if line.program.is_empty() { b"service" } else { line.program };
    core::iter::once(program).chain(line.args.split(u8::is_ascii_whitespace).filter(|a| !a.is_empty())).collect()
}

/// `envp`: the manifest's `[env]` entries, `KEY=VALUE`.
fn envp() -> Vec<&'static [u8]> {
    command_line().env().collect()
}

/// A leaked, NULL-terminated array of leaked C strings.
fn c_strings(items: Vec<&[u8]>) -> &'static [*const c_char] {
    let mut pointers: Vec<*const c_char> = items
        .into_iter()
        .map(|item| {
            let mut owned = Vec::with_capacity(item.len() + 1);
            owned.extend_from_slice(item);
            owned.push(0);
            Vec::leak(owned).as_ptr().cast()
        })
        .collect();
    pointers.push(core::ptr::null());
    Vec::leak(pointers)
}
