//! Isolation: a VM that faults is stopped and reported, and the kernel and
//! the other VMs of the boot keep running. Hostile images are refused by
//! the CLI and by the kernel's own loader.

mod support;

use denali_abi::boot::{BundleSpec, build_bundle};
use denali_abi::net::Ipv4Config;
use std::time::Duration;
use support::*;

const NULL_WRITE: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    let p = core::hint::black_box(0usize) as *mut u64;\n    unsafe { p.write_volatile(0xdead) };\n}\n";
const KERNEL_READ: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    let p = core::hint::black_box(0xffff_8000_0000_1000usize) as *const u64;\n    let v = unsafe { p.read_volatile() };\n    denali::println!(\"read the kernel: {v}\");\n}\n";
const SURVIVOR: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    denali::println!(\"survivor {} of {} done\", denali::vm::id(), denali::vm::count());\n}\n";

#[test]
fn faulting_vms_do_not_stop_their_neighbours() {
    let dir = scratch();
    let null_write = build(&new_service(dir.path(), "nullwrite", Some(NULL_WRITE)), "nullwrite");
    let kernel_read = build(&new_service(dir.path(), "kernelread", Some(KERNEL_READ)), "kernelread");
    let survivor = build(&new_service(dir.path(), "survivor", Some(SURVIVOR)), "survivor");
    let out =
        run(dir.path(), &[null_write.to_str().unwrap(), kernel_read.to_str().unwrap(), survivor.to_str().unwrap()]);
    let text = &out.stdout;
    assert!(text.contains("vm 0 (nullwrite) stopped: page fault (#PF) (vector 14) at rip 0x"), "{text}");
    assert!(text.contains("writing 0x0: a null pointer"), "{text}");
    assert!(text.contains("vm 1 (kernelread) stopped: page fault (#PF) (vector 14)"), "{text}");
    assert!(text.contains("reading 0xffff800000001000: a kernel address"), "{text}");
    assert!(!text.contains("read the kernel"), "{text}");
    assert!(text.contains("vm2| survivor 2 of 3 done"), "{text}");
    assert!(text.contains("denali: vm 0 (nullwrite) exited with status 142"), "{text}");
    assert!(text.contains("denali: 3 VMs: 1 exited with status 0, 2 did not"), "{text}");
    // The run's status is the first failure: 128 + the page-fault vector.
    assert_eq!(out.status, 142, "stderr: {}", out.stderr);
}

#[test]
fn corrupted_images_are_refused_by_the_cli() {
    let dir = scratch();
    let good = build(&new_service(dir.path(), "victim", Some(SURVIVOR)), "victim");
    let mut bytes = std::fs::read(&good).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    let bad = dir.path().join("bad.dvm");
    std::fs::write(&bad, &bytes).unwrap();
    let out = run(dir.path(), &[bad.to_str().unwrap()]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.contains("is not a valid Denali image: the image's content hash does not match"),
        "{}",
        out.stderr
    );

    let truncated = dir.path().join("truncated.dvm");
    std::fs::write(&truncated, &bytes[..40]).unwrap();
    let out = run(dir.path(), &[truncated.to_str().unwrap()]);
    assert!(out.stderr.contains("is not a valid Denali image: the image is truncated"), "{}", out.stderr);

    let foreign = dir.path().join("foreign.dvm");
    std::fs::copy(good.with_extension("elf"), &foreign).unwrap();
    let out = run(dir.path(), &[foreign.to_str().unwrap()]);
    assert!(out.stderr.contains("is not a valid Denali image: not a Denali image (bad magic)"), "{}", out.stderr);
}

#[test]
fn the_kernel_loader_refuses_a_corrupted_image_and_runs_the_rest() {
    require_kvm();
    let dir = scratch();
    let good_path = build(&new_service(dir.path(), "loadertest", Some(SURVIVOR)), "loadertest");
    let good = std::fs::read(&good_path).unwrap();
    let mut corrupted = good.clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 1;
    // Bypass the CLI's check: hand the kernel a bundle with a bad image.
    let bundle = build_bundle(&[
        BundleSpec {
            name: "corrupted",
            instances: 1,
            image: &corrupted,
            args: "",
            ipv4: Ipv4Config::DEFAULT,
            disk_sectors: 0,
        },
        BundleSpec {
            name: "good",
            instances: 1,
            image: &good,
            args: "",
            ipv4: Ipv4Config::DEFAULT.nth(1).unwrap(),
            disk_sectors: 0,
        },
    ]);
    let kernel = denali_cli::kernel::kernel_elf().expect("kernel builds");
    let console = denali_monitor::CapturedConsole::default();
    let status =
        denali_monitor::run(&denali_monitor::Config::new(&kernel, bundle), Box::new(console.clone())).expect("run");
    let text = console.text();
    assert!(
        text.contains("image 0 (corrupted) refused by the loader: the image's content hash does not match"),
        "{text}"
    );
    assert!(text.contains("vm1| survivor 1 of 2 done"), "{text}");
    assert_eq!(status, 126, "{text}");
}

const STACK_OVERFLOW: &str = "#![no_std]\n#![no_main]\n\nfn deep(n: u64) -> u64 {\n    let pad = core::hint::black_box([n; 64]);\n    if n == 0 { 0 } else { deep(n - 1) + pad[3] }\n}\n\n#[denali::main]\nfn main() {\n    denali::println!(\"{}\", deep(1 << 30));\n}\n";
const PRIVILEGED: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    unsafe { core::arch::asm!(\"cli\") };\n    denali::println!(\"interrupts are off\");\n}\n";
/// Raises the vector only the monitor may raise (gdb's Ctrl-C), as if
/// it were the monitor: a fault, like `int` to any vector but the
/// hypercall's and `int3`.
const FORGED_INTERRUPT: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    unsafe { core::arch::asm!(\"int 34\") };\n    denali::println!(\"forged the debugger's interrupt\");\n}\n";
const WILD_JUMP: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    let f: fn() = unsafe { core::mem::transmute(core::hint::black_box(0x3000_0000usize)) };\n    f();\n}\n";

const INFO_WRITE: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    // The info page: the kernel maps it read-only.\n    let p = core::hint::black_box(0x1000usize) as *mut u32;\n    unsafe { p.add(1).write_volatile(99) };\n    denali::println!(\"I am VM {} now\", denali::vm::id());\n}\n";
const CODE_WRITE: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    let f: fn() = main;\n    let p = core::hint::black_box(f as usize) as *mut u8;\n    unsafe { p.write_volatile(0xc3) };\n    denali::println!(\"patched my own code\");\n}\n";

#[test]
fn the_info_page_and_code_are_read_only() {
    let dir = scratch();
    let info = build(&new_service(dir.path(), "infowrite", Some(INFO_WRITE)), "infowrite");
    let code = build(&new_service(dir.path(), "codewrite", Some(CODE_WRITE)), "codewrite");
    let out = run(dir.path(), &[info.to_str().unwrap(), code.to_str().unwrap()]);
    let text = &out.stdout;
    assert!(text.contains("vm 0 (infowrite) stopped: page fault (#PF) (vector 14)"), "{text}");
    assert!(text.contains("writing 0x1004: a page without that right"), "{text}");
    assert!(text.contains("vm 1 (codewrite) stopped: page fault (#PF) (vector 14)"), "{text}");
    assert!(!text.contains("I am VM") && !text.contains("patched my own code"), "{text}");
    assert_eq!(out.status, 142, "stderr: {}", out.stderr);
}

#[test]
fn stack_overflow_privileged_instructions_forged_interrupts_and_wild_jumps_stop_only_their_vm() {
    let dir = scratch();
    let overflow = build(&new_service(dir.path(), "overflow", Some(STACK_OVERFLOW)), "overflow");
    let privileged = build(&new_service(dir.path(), "privileged", Some(PRIVILEGED)), "privileged");
    let wild = build(&new_service(dir.path(), "wild", Some(WILD_JUMP)), "wild");
    let forged = build(&new_service(dir.path(), "forged", Some(FORGED_INTERRUPT)), "forged");
    let survivor = build(&new_service(dir.path(), "bystander", Some(SURVIVOR)), "bystander");
    let images = [&overflow, &privileged, &wild, &forged, &survivor].map(|p| p.to_str().unwrap().to_owned());
    let out = run(dir.path(), &images.iter().map(String::as_str).collect::<Vec<_>>());
    let text = &out.stdout;
    assert!(text.contains("vm 0 (overflow) stopped: page fault (#PF)"), "{text}");
    assert!(text.contains(": the stack guard page (stack overflow)"), "{text}");
    assert!(text.contains("vm 1 (privileged) stopped: general protection fault (#GP) (vector 13)"), "{text}");
    assert!(!text.contains("interrupts are off"), "{text}");
    assert!(
        text.contains("vm 2 (wild) stopped: page fault (#PF) (vector 14) at rip 0x30000000, executing 0x30000000"),
        "{text}"
    );
    // #GP on hardware (the gate's DPL is 0); PVM reports #UD. Either way
    // the VM stops at the instruction, and no debugger is asked for.
    assert!(text.contains("vm 3 (forged) stopped: "), "{text}");
    assert!(!text.contains("forged the debugger's interrupt"), "{text}");
    assert!(text.contains("vm4| survivor 4 of 5 done"), "{text}");
    assert_eq!(out.status, 142, "stderr: {}", out.stderr);
}

#[test]
fn hostile_hypercall_arguments_get_errors_and_the_vm_goes_on() {
    let dir = scratch();
    let service = new_service(dir.path(), "hostile", Some(include_str!("guests/hostile.rs")));
    build(&service, "hostile");
    let out = run(&service, &[]);
    let text = &out.stdout;
    for line in [
        "kernel pointer: Err(BadAddress)",
        "non-canonical pointer: Err(BadAddress)",
        "null pointer: Err(BadAddress)",
        "past the end: Err(BadAddress)",
        "wrapping range: Err(BadAddress)",
        "stack guard page: Err(BadAddress)",
        "unknown call: Err(NoSuchCall)",
        "alarm in the past: Ok(0)",
        "still running",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
}

const STATIC_COUNTER: &str = "#![no_std]\n#![no_main]\nuse core::sync::atomic::{AtomicU64, Ordering};\n\n// In the image's data segment, which every instance maps copy-on-write.\nstatic COUNTER: AtomicU64 = AtomicU64::new(1000);\n\n#[denali::main]\nfn main() {\n    for _ in 0..=denali::vm::id() {\n        COUNTER.fetch_add(1, Ordering::Relaxed);\n    }\n    denali::time::sleep(denali::time::Duration::from_millis(5));\n    denali::println!(\"vm {} counted to {}\", denali::vm::id(), COUNTER.load(Ordering::Relaxed));\n}\n";

#[test]
fn instances_of_one_image_share_code_but_not_data() {
    let dir = scratch();
    let service = new_service(dir.path(), "statics", Some(STATIC_COUNTER));
    build(&service, "statics");
    let out = run(&service, &["--instances", "4", "--stats"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    for id in 0..4 {
        let line = format!("vm {id} counted to {}", 1001 + id);
        assert!(out.stdout.contains(&line), "missing {line:?} in:\n{}", out.stdout);
    }
}

const HOG: &str = "#![no_std]\n#![no_main]\nextern crate alloc;\n\n#[denali::main]\nfn main() {\n    let hog = alloc::vec![1u8; 100 << 20];\n    denali::println!(\"got {} bytes\", hog.len());\n}\n";

#[test]
fn a_vm_that_exhausts_memory_is_stopped_and_the_others_run() {
    let dir = scratch();
    let hog_dir = new_service(dir.path(), "hog", Some(HOG));
    std::fs::write(hog_dir.join("Denali.toml"), "memory = \"128 MiB\"\n").unwrap();
    let hog = build(&hog_dir, "hog");
    let survivor = build(&new_service(dir.path(), "frugal", Some(SURVIVOR)), "frugal");
    // 64 MiB for the whole kernel: the hog's 100 MiB cannot fit.
    let out = run(dir.path(), &["--mem", "64", hog.to_str().unwrap(), survivor.to_str().unwrap()]);
    let text = &out.stdout;
    assert!(text.contains("vm 0 (hog) stopped: page fault (#PF)"), "{text}");
    assert!(text.contains("the kernel had no free memory for that page"), "{text}");
    assert!(!text.contains("got 104857600 bytes"), "{text}");
    assert!(text.contains("vm1| survivor 1 of 2 done"), "{text}");
    assert_eq!(out.status, 142, "stderr: {}", out.stderr);
}

/// Checks the `registers` guest's report (see guests/registers.rs): the
/// owner kept every register, the spy started from the initial state, and
/// `sgdt` faulted where the CPU has UMIP.
fn assert_registers_private(text: &str, spy: &str) {
    for (vm, line) in [("vm0", "owner kept: "), ("vm1", "spy saw initial state: ")] {
        let report = text.lines().find(|l| l.starts_with(&format!("{vm}| {line}"))).unwrap_or_else(|| panic!("{text}"));
        assert!(!report.contains("NO"), "{report}\n{text}");
        assert!(report.contains("x87 yes mxcsr yes") && report.contains("selectors yes"), "{report}");
    }
    if text.contains("vm2| umip: present") {
        assert!(text.contains(&format!("vm 2 ({spy}) stopped: general protection fault")), "{text}");
        assert!(!text.contains("umip: sgdt read"), "{text}");
    }
}

#[test]
fn a_vm_cannot_read_or_write_another_vms_registers() {
    let dir = scratch();
    let source = include_str!("guests/registers.rs");
    let owner = build(&new_service(dir.path(), "regowner", Some(source)), "regowner");
    let spy = build(&new_service(dir.path(), "regspy", Some(source)), "regspy");
    let (owner, spy) = (owner.to_str().unwrap(), spy.to_str().unwrap());
    let out = run(dir.path(), &[owner, spy, spy, "--timeout", "60"]);
    assert_registers_private(&out.stdout, "regspy");
}

#[test]
fn a_vm_cannot_read_or_write_another_vms_registers_on_bare_metal() {
    let dir = scratch();
    let service = new_service(dir.path(), "regqemu", Some(include_str!("guests/registers.rs")));
    std::fs::write(service.join("Denali.toml"), "instances = 3\n").unwrap();
    let mut c = cargo_denali();
    c.current_dir(&service).env("DENALI_QEMU_ACCEL", "tcg").args(["denali", "run", "--qemu", "--timeout", "300"]);
    let out = run_with_timeout(c, Duration::from_secs(600));
    assert_registers_private(&out.stdout, "regqemu");
}

#[test]
fn console_lines_cannot_pose_as_another_vm_and_output_is_rate_bounded() {
    let dir = scratch();
    let service = new_service(dir.path(), "console", Some(include_str!("guests/console.rs")));
    build(&service, "console");
    let out = run(&service, &["--instances", "2", "--stats", "--timeout", "120"]);
    let text = &out.stdout;
    assert_eq!(out.status, 0, "{}", out.stderr);
    // VM 1's line is its own, escaped; nothing reached the terminal raw.
    assert!(
        text.contains("vm1| \\r\\x1b[2Kvm0| denali: vm 0 (console) exited with status 0\\x1b]0;owned\\x07\n"),
        "{}",
        &text[..text.len().min(2000)]
    );
    assert!(!text.contains('\x1b') && !text.contains('\r'), "raw control bytes reached the terminal");
    // VM 0's unfinished line was ended, not glued to VM 1's.
    assert!(text.contains("vm0| unfinished\n"), "{}", &text[..text.len().min(2000)]);
    assert!(text.contains("vm0|  and finished\n"), "{}", &text[..text.len().min(2000)]);
    // Every byte arrived, in 4 KiB lines...
    let dots = text.lines().filter(|l| l.len() == 4095 + 5 && l.starts_with("vm0| ....")).count();
    assert_eq!(dots, 128);
    // ...at no more than the console rate: 64 KiB at once, then 256 KiB a
    // second, so 512 KiB take at least 1.75 s.
    let line = text.lines().find(|l| l.starts_with("vm0| wrote 524288 bytes in ")).expect("the writer's time");
    let ms: u64 = line.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(ms >= 1700, "{line}");
}
