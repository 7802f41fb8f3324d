//! Crashed VMs explained: a fault or a panic prints the VM's backtrace with
//! function names and `src/main.rs` lines, resolved on the host from the
//! image's ELF; without the ELF, raw addresses and why.

mod support;

use support::*;

/// A no_std service that panics three calls deep (release, `debug = 1`:
/// the calls are inlined, and still named).
const PANICS: &str = r#"#![no_std]
#![no_main]
use denali::prelude::*;

fn third(depth: u32) {
    if depth > 2 {
        panic!("too deep at {depth}");
    }
}

fn second(depth: u32) {
    third(depth + 1);
}

fn first(depth: u32) {
    second(depth + 1);
}

#[denali::main]
fn main() {
    first(core::hint::black_box(1));
    println!("not reached");
}
"#;

/// A std service that reads through a null pointer in a named function.
const DEREFS_NULL: &str = r#"#[inline(never)]
fn read_through(pointer: *const u64) -> u64 {
    // SAFETY: it is not; the point is the fault.
    unsafe { core::ptr::read_volatile(pointer) }
}

#[inline(never)]
fn look_up(key: usize) -> u64 {
    read_through(core::hint::black_box(key as *const u64)) + 1
}

fn main() {
    println!("about to fault");
    let value = look_up(core::hint::black_box(0));
    println!("read {value}");
}
"#;

/// Two VMs of one image: VM 0 fills 64 KiB of its heap with a secret
/// pattern and keeps it while VM 1 reads through a null pointer; then VM 0
/// panics. Neither the pattern nor its seed is in the image.
const TWO_CRASHES: &str = r#"#![no_std]
#![no_main]
extern crate alloc;
use core::time::Duration;
use denali::prelude::*;

/// The secret's bytes (the test makes the same).
fn pattern(i: usize, seed: u8) -> u8 {
    (i as u8).wrapping_mul(37) ^ seed
}

#[inline(never)]
fn read_config(at: usize) -> u8 {
    // SAFETY: it is not; the point is the fault.
    unsafe { core::ptr::read_volatile(core::hint::black_box(at) as *const u8) }
}

#[denali::main]
fn main() {
    let seed = core::hint::black_box(denali::vm::args().len() as u8 ^ 0xa5);
    if denali::vm::id() == 0 {
        let secret: alloc::vec::Vec<u8> = (0..65536).map(|i| pattern(i, seed)).collect();
        denali::time::sleep(Duration::from_millis(1500));
        panic!("vm 0 held {} secret bytes", core::hint::black_box(&secret).len());
    }
    denali::time::sleep(Duration::from_millis(300));
    println!("read {}", read_config(0));
}
"#;

/// Debian's gdb; fails, saying so, where it is missing.
fn gdb() -> std::process::Command {
    let found = std::process::Command::new("gdb").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "this test drives gdb, which is not installed: `apt-get install gdb` (scripts/setup does)");
    std::process::Command::new("gdb")
}

/// The frame lines of the backtrace of VM `vm` in `output`.
fn backtrace(output: &str, vm: u32) -> Vec<&str> {
    let header = format!("denali: vm {vm} (");
    let mut lines = output.lines().skip_while(|l| !(l.starts_with(&header) && l.ends_with("backtrace:"))).skip(1);
    let frames: Vec<&str> = lines.by_ref().take_while(|l| l.starts_with("  #")).collect();
    assert!(!frames.is_empty(), "no backtrace for vm {vm} in:\n{output}");
    frames
}

/// The index of the first frame naming `function` at a line of
/// `src/main.rs`.
fn frame_of(frames: &[&str], function: &str) -> usize {
    frames
        .iter()
        .position(|f| f.contains(&format!(" in {function} at src/main.rs:")))
        .unwrap_or_else(|| panic!("no frame of {function} in src/main.rs in:\n{}", frames.join("\n")))
}

#[test]
fn a_panic_three_calls_deep_names_each_call_in_order() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_service(dir.path(), "deep", Some(PANICS));
    let out = run(&service, &["--release"]);
    assert_eq!(out.status, 101, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("too deep at 3"), "{}", out.stdout);
    let frames = backtrace(&out.stdout, 0);
    let order = ["deep::third", "deep::second", "deep::first", "deep::main"].map(|f| frame_of(&frames, f));
    assert!(order.is_sorted(), "frames out of order: {order:?} in\n{}", frames.join("\n"));
    assert_eq!(order[0], 0, "the panic machinery is left out:\n{}", frames.join("\n"));
    assert!(frames[0].contains("src/main.rs:7:"), "the panic's own line first:\n{}", frames.join("\n"));
}

#[test]
fn a_null_dereference_names_the_function_and_its_callers() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_from_template(dir.path(), "nullread", "std");
    std::fs::write(service.join("src/main.rs"), DEREFS_NULL).unwrap();
    let out = run(&service, &["--release"]);
    assert_ne!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("page fault (#PF)"), "{}", out.stdout);
    let frames = backtrace(&out.stdout, 0);
    // The fault is in `read_volatile`, inlined into `read_through`.
    assert!(
        frames[0].contains(" in core::ptr::read_volatile::<u64> at library/core/src/ptr/"),
        "{}",
        frames.join("\n")
    );
    let read_through = frame_of(&frames, "nullread::read_through");
    assert_eq!(read_through, 1, "{}", frames.join("\n"));
    assert!(frames[1].contains("src/main.rs:4:"), "{}", frames.join("\n"));
    assert!(frame_of(&frames, "nullread::look_up") < frame_of(&frames, "nullread::main"), "{}", frames.join("\n"));
    // Core files only when asked.
    assert!(!out.stdout.contains("core file"), "{}", out.stdout);
    assert!(!service.join("core.vm0").exists(), "a core file was written unasked");
}

#[test]
fn an_image_without_its_elf_gets_addresses_and_the_reason() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_service(dir.path(), "noelf", Some(&PANICS.replace("deep", "noelf")));
    let image = build(&service, "noelf");
    let kept = dir.path().join("noelf.dvm");
    std::fs::copy(&image, &kept).unwrap();
    let out = run(dir.path(), &[kept.to_str().unwrap()]);
    assert_eq!(out.status, 101, "{}\n{}", out.stdout, out.stderr);
    let frames = backtrace(&out.stdout, 0);
    assert!(frames.len() >= 4, "the chain is walked without names:\n{}", frames.join("\n"));
    assert!(frames.iter().all(|f| !f.contains(" in ")), "{}", frames.join("\n"));
    assert!(out.stdout.contains("(no function names: the image's ELF is not beside it"), "{}", out.stdout);
}

/// 64 bytes of the secret pattern of `TWO_CRASHES` (no arguments: seed
/// 0xa5), from `offset`.
fn secret(offset: usize) -> Vec<u8> {
    let seed = 0xa5;
    (offset..offset + 64).map(|i| (i as u8).wrapping_mul(37) ^ seed).collect()
}

#[test]
fn core_files_open_in_gdb_and_hold_only_their_own_vm() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_service(dir.path(), "twocrash", Some(TWO_CRASHES));
    let cores = dir.path().join("cores");
    let out = run(&service, &["--release", "--instances", "2", "--core-dir", cores.to_str().unwrap()]);
    assert_ne!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    // Each VM's report names it.
    assert!(frame_of(&backtrace(&out.stdout, 1), "twocrash::read_config") <= 1, "{}", out.stdout);
    assert!(frame_of(&backtrace(&out.stdout, 0), "twocrash::main") <= 1, "{}", out.stdout);

    let (core0, core1) =
        (std::fs::read(cores.join("core.vm0")).unwrap(), std::fs::read(cores.join("core.vm1")).unwrap());
    let holds = |core: &[u8], offset| core.windows(64).any(|w| w == secret(offset));
    assert!(holds(&core0, 4096), "VM 0's core holds its own secret");
    assert!(!holds(&core1, 0) && !holds(&core1, 4096), "VM 1's core holds VM 0's secret");

    let elf = support::guest_target_dir().join("denali/release/twocrash.elf");
    let mut gdb = gdb();
    gdb.current_dir(&service).args(["-nx", "-batch", "-ex", "bt"]).arg(&elf).arg(cores.join("core.vm1"));
    let bt = run_with_timeout(gdb, std::time::Duration::from_secs(120));
    assert!(bt.stdout.contains("Program terminated with signal SIGSEGV"), "{}\n{}", bt.stdout, bt.stderr);
    assert!(bt.stdout.contains("#1  twocrash::read_config () at src/main.rs:15"), "{}\n{}", bt.stdout, bt.stderr);
    assert!(bt.stdout.contains("twocrash::main"), "{}\n{}", bt.stdout, bt.stderr);
}

/// A no_std service to debug (a dev build: every local is in memory).
/// gdb changes `FACTOR`, a static on a page VM 1 shares until then.
const TO_DEBUG: &str = r#"#![no_std]
#![no_main]
use denali::prelude::*;

static mut FACTOR: u64 = 3;

#[inline(never)]
fn scale(value: u64, factor: u64) -> u64 {
    let scaled = value * factor;
    scaled + 1
}

#[denali::main]
fn main() {
    // SAFETY: one thread; only a debugger changes it, with the VM stopped.
    let factor = unsafe { core::ptr::read_volatile(&raw const FACTOR) };
    let result = scale(core::hint::black_box(20), factor);
    println!("vm {} result {result}", denali::vm::id());
}
"#;

/// Boots two VMs of `source` (a service named `name`) with VM 0 waiting
/// for gdb, and hands back the run, the service's directory and gdb's
/// command line, connected, with `commands` to run.
fn debugged(dir: &std::path::Path, name: &str, source: &str, commands: &[&str]) -> (Background, std::process::Command) {
    let service = new_service(dir, name, Some(source));
    let port = free_port().to_string();
    let mut run = Background::start(&service, &["--instances", "2", "--gdb", &port]);
    run.wait_for("stopped at its entry point for gdb", std::time::Duration::from_secs(600));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(!run.output().contains("result"), "a VM ran while VM 0 waited for gdb:\n{}", run.output());

    let elf = support::guest_target_dir().join(format!("denali/debug/{name}.elf"));
    let mut gdb = gdb();
    gdb.current_dir(&service).args(["-nx", "-batch", "-ex", &format!("target remote 127.0.0.1:{port}")]);
    for command in commands {
        gdb.args(["-ex", command]);
    }
    gdb.arg(&elf);
    (run, gdb)
}

/// Boots two VMs of `TO_DEBUG` (as `name`) with VM 0 under `--gdb`, runs
/// a `gdb -batch` session of `commands` against it, and hands back the
/// run and what gdb said.
fn debug_session(dir: &std::path::Path, name: &str, commands: &[&str]) -> (Background, String) {
    let (run, gdb) = debugged(dir, name, &TO_DEBUG.replace("gdbme", name), commands);
    let session = run_with_timeout(gdb, std::time::Duration::from_secs(120));
    (run, format!("{}\n{}", session.stdout, session.stderr))
}

#[test]
fn gdb_breaks_reads_writes_memory_and_registers_steps_and_continues_while_other_vms_wait() {
    let _turn = take_turn();
    let dir = scratch();
    let (mut run, said) = debug_session(
        dir.path(),
        "gdbme",
        &[
            "set var gdbme::FACTOR = 5",
            "break gdbme::scale",
            "continue",
            "print value",
            "stepi",
            "next",
            "print scaled",
            // Pops the frame and sets rax: registers written.
            "return 77",
            "continue",
        ],
    );
    assert!(said.contains("Breakpoint 1, gdbme::scale (value=20, factor=5) at src/main.rs:9"), "{said}");
    assert!(said.contains("$1 = 20"), "{said}");
    assert!(said.contains("$2 = 100"), "the local after `next`: {said}");
    assert!(said.contains("exited normally"), "{said}");

    assert_eq!(run.finish(std::time::Duration::from_secs(60)), 0, "{}", run.output());
    let output = run.output();
    assert!(output.contains("vm 0 result 77"), "gdb's `return` (its register writes) reached VM 0:\n{output}");
    assert!(output.contains("vm 1 result 61"), "VM 1 saw VM 0's debugger's write:\n{output}");
}

#[test]
fn gdb_kill_ends_the_debugged_vm_and_the_other_runs_on() {
    let _turn = take_turn();
    let dir = scratch();
    let (mut run, said) = debug_session(dir.path(), "killme", &["break killme::scale", "continue", "kill"]);
    assert!(said.contains("Breakpoint 1, killme::scale"), "{said}");
    assert_eq!(run.finish(std::time::Duration::from_secs(60)), 137, "{}", run.output());
    let output = run.output();
    assert!(output.contains("vm 0 was killed by its debugger"), "{output}");
    assert!(!output.contains("vm 0 result"), "the killed VM ran on:\n{output}");
    assert!(output.contains("vm 1 result 61"), "{output}");
}

/// A no_std service whose VM 0 computes until a debugger changes `PHASE`,
/// then sleeps for ten minutes; VM 1 exits at once.
const SPINS_THEN_SLEEPS: &str = r#"#![no_std]
#![no_main]
use core::time::Duration;
use denali::prelude::*;

static mut PHASE: u64 = 0;

#[inline(never)]
fn spin() -> u64 {
    let mut turns = 0u64;
    // SAFETY: one thread; only a debugger changes it, with the VM stopped.
    while unsafe { core::ptr::read_volatile(&raw const PHASE) } == 0 {
        turns = turns.wrapping_add(1);
    }
    turns
}

#[inline(never)]
fn nap() {
    denali::time::sleep(Duration::from_secs(600));
}

#[denali::main]
fn main() {
    if denali::vm::id() == 0 {
        println!("spun {}", spin() > 0);
        nap();
    }
    println!("vm {} done", denali::vm::id());
}
"#;

#[test]
fn ctrl_c_in_gdb_stops_the_vm_computing_and_sleeping() {
    let _turn = take_turn();
    let dir = scratch();
    let commands = ["continue", "bt", "set var spinner::PHASE = 1", "continue", "bt", "kill"];
    let (mut run, gdb) = debugged(dir.path(), "spinner", SPINS_THEN_SLEEPS, &commands);
    let limit = std::time::Duration::from_secs(120);
    let mut gdb = Background::spawn(gdb);
    // Ctrl-C while VM 0 computes (it has the CPU)... gdb shows where it
    // connected, then continues (in batch mode, silently).
    gdb.wait_for("src/rt.rs", limit);
    run.wait_for("vm 1 done", limit);
    std::thread::sleep(std::time::Duration::from_secs(1));
    gdb.interrupt();
    gdb.wait_for("#0", limit);
    // ...and while it sleeps (the kernel is idle).
    run.wait_for("spun true", limit);
    std::thread::sleep(std::time::Duration::from_secs(2));
    gdb.interrupt();
    // gdb ends with `kill` (status 1: the connection closes under it).
    gdb.finish(limit);

    let said = gdb.output();
    let stops: Vec<&str> = said.split("Program received signal SIGINT").skip(1).collect();
    assert_eq!(stops.len(), 2, "two stops for two Ctrl-Cs:\n{said}");
    assert!(stops[0].contains("spinner::spin ()"), "the first stop is in the loop:\n{said}");
    assert!(stops[1].contains("spinner::nap ()"), "the second is in the sleep:\n{said}");
    assert_eq!(run.finish(limit), 137, "{}", run.output());
    assert!(run.output().contains("vm 1 done"), "{}", run.output());
}
