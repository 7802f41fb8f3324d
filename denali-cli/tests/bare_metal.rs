//! Bare metal: the UEFI disk image of the loader, the kernel and a service,
//! booted by QEMU with OVMF under software emulation (no KVM), as a PC or a
//! cloud VM would boot it.

mod support;

use denali_cli::bare_metal::{QEMU_MEMORY, QemuBoot, qemu_command};
use std::time::Duration;
use support::*;

/// `cargo denali <args>` in `dir`, with QEMU forced to emulate.
fn denali(dir: &std::path::Path, args: &[&str]) -> Outcome {
    let mut c = cargo_denali();
    c.current_dir(dir).env("DENALI_QEMU_ACCEL", "tcg").arg("denali").args(args);
    run_with_timeout(c, Duration::from_secs(600))
}

#[test]
fn the_hello_template_boots_from_a_uefi_disk_image_under_qemu() {
    let dir = scratch();
    let service = new_service(dir.path(), "hello", None);
    let built = denali(&service, &["build", "--bare-metal"]);
    assert_eq!(built.status, 0, "{}", built.stderr);
    let image = guest_target_dir().join("denali/debug/hello.img");
    assert!(built.stderr.contains(&format!("Built {}", image.display())), "{}", built.stderr);

    let out = denali(&service, &["run", "--qemu", image.to_str().unwrap()]);
    assert!(out.stdout.contains("Hello from Denali VM 0"), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.status, 0, "{}", out.stderr);
}

#[test]
fn the_services_exit_status_comes_back_from_qemu() {
    let dir = scratch();
    let main = "#![no_std]\n#![no_main]\n#[denali::main]\nfn main() {\n    denali::process::exit(7);\n}\n";
    let service = new_service(dir.path(), "seven", Some(main));
    // --stats and --instances reach the kernel on bare metal too.
    let out = denali(&service, &["run", "--qemu", "--stats", "--instances", "2"]);
    assert_eq!(out.status, 7, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("denali: per-VM accounting"), "{}", out.stdout);
    assert!(out.stdout.contains("denali: 2 VMs: 0 exited with status 0, 2 did not"), "{}", out.stdout);
}

#[test]
fn a_truncated_or_foreign_image_is_refused_with_a_sentence() {
    let dir = scratch();
    let service = new_service(dir.path(), "cut", None);
    let built = denali(&service, &["build", "--bare-metal"]);
    assert_eq!(built.status, 0, "{}", built.stderr);
    let image = guest_target_dir().join("denali/debug/cut.img");
    let bytes = std::fs::read(&image).unwrap();
    let truncated = dir.path().join("truncated.img");
    std::fs::write(&truncated, &bytes[..bytes.len() / 4]).unwrap();
    let foreign = guest_target_dir().join("denali/debug/cut.dvm");
    for bad in [&truncated, &foreign] {
        let out = denali(dir.path(), &["run", "--qemu", bad.to_str().unwrap()]);
        assert_eq!(out.status, 1, "{}", out.stdout);
        let expected = format!("{} is not a Denali disk image", bad.display());
        assert!(out.stderr.contains(&expected), "{}", out.stderr);
        assert!(out.stderr.contains("build one with `cargo denali build --bare-metal`"), "{}", out.stderr);
    }
}

#[test]
fn the_http_template_on_bare_metal_answers_curl_through_qemus_user_network() {
    let dir = scratch();
    let service = new_from_template(dir.path(), "web", "http");
    let port = free_port();
    let mut c = cargo_denali();
    c.current_dir(&service).env("DENALI_QEMU_ACCEL", "tcg").args([
        "denali",
        "run",
        "--qemu",
        "-p",
        &format!("{port}:80"),
    ]);
    let mut server = Background::spawn(c);
    server.wait_for("http: serving 2048 bytes on 10.0.2.15:80", Duration::from_secs(300));
    let url = format!("http://127.0.0.1:{port}/");
    let page = curl(&[&url]);
    assert_eq!(page.status, 0, "{}\n{}", page.stderr, server.output());
    assert_eq!(page.stdout.len(), 2048);
    assert!(page.stdout.contains("<h1>Hello from Denali VM 0</h1>"), "{}", page.stdout);
}

#[test]
fn the_kernel_boots_through_pvh_with_the_bundle_as_initrd() {
    let dir = scratch();
    let service = new_service(dir.path(), "pvh", None);
    let built = denali(&service, &["build", "--bare-metal"]);
    assert_eq!(built.status, 0, "{}", built.stderr);
    let kernel = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/denali-kernel/x86_64-unknown-none/release/denali-kernel");
    let bundle = guest_target_dir().join("denali/debug/pvh.bundle");
    // Emulated only: what QEMU can do with KVM depends on the host (under
    // PVM, QEMU's CPU models carry MSRs it refuses), so the KVM rows are
    // `bench-boot`'s, not a test's.
    for machine in ["q35", "microvm"] {
        let accel = "tcg";
        let boot = QemuBoot::Pvh { kernel: &kernel, bundle: &bundle, machine };
        let out = run_with_timeout(qemu_command(boot, accel, QEMU_MEMORY), Duration::from_secs(120));
        assert!(out.stdout.contains("Hello from Denali VM 0"), "{machine}, {accel}: {}\n{}", out.stdout, out.stderr);
        // isa-debug-exit: QEMU exits with (status << 1) | 1.
        assert_eq!(out.status, 1, "{machine}, {accel}: {}", out.stderr);
    }
}

#[test]
fn a_spinning_vm_is_preempted_on_bare_metal_too() {
    let dir = scratch();
    let service = new_service(dir.path(), "spin", Some(include_str!("guests/spin_and_sleep.rs")));
    std::fs::write(service.join("Denali.toml"), "instances = 2\n").unwrap();
    let out = denali(&service, &["run", "--qemu"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let sleeper = out.stdout.find("vm1| sleeper done").expect("the sleeper finished");
    let spinner = out.stdout.find("vm0| spinner done").expect("the spinner finished");
    assert!(sleeper < spinner, "the sleeper waited for the spinner:\n{}", out.stdout);
    assert!(!out.stdout.contains("timer cannot be used"), "{}", out.stdout);
}

#[test]
fn the_disk_written_under_kvm_is_read_on_bare_metal_through_virtio_blk() {
    let dir = scratch();
    let service = new_service(dir.path(), "diskbm", Some(include_str!("guests/disk.rs")));
    std::fs::write(service.join("Denali.toml"), "instances = 2\n[disk]\nsize = \"256 KiB\"\n").unwrap();
    let disk = dir.path().join("vms.disk");
    let disk_arg = disk.to_str().unwrap();

    // Written by the kernel under our monitor (virtio-mmio), read and
    // written again by the kernel on bare metal (virtio-blk over PCI).
    let out = run(&service, &["--disk", disk_arg]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let out = denali(&service, &["run", "--qemu", "--disk", disk_arg]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    for id in 0..2 {
        let line = format!("vm {id}: disk of 262144 bytes, boot 2, data intact: true");
        assert!(out.stdout.contains(&line), "no `{line}` in\n{}", out.stdout);
    }

    // A prebuilt image with a fresh disk and swap: the CLI reads the
    // windows its VMs ask for from the image and puts the swap area beyond
    // them (else the kernel would refuse to swap).
    let image = guest_target_dir().join("denali/debug/diskbm.img");
    let fresh = dir.path().join("fresh.disk");
    let args = ["run", "--qemu", image.to_str().unwrap(), "--disk", fresh.to_str().unwrap(), "--swap", "1"];
    let out = denali(&service, &args);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("vm 1: disk of 262144 bytes, boot 1, data intact: true"), "{}", out.stdout);
    assert!(!out.stdout.contains("overlaps"), "{}", out.stdout);

    // A labelled disk too small for the VMs (no cargo denali would make
    // one), or none at all: the kernel refuses the VMs with a sentence.
    let small = dir.path().join("small.disk");
    std::fs::write(&small, denali_abi::disk::DiskLabel::EMPTY.to_sector()).unwrap();
    let mut qemu = qemu_command(QemuBoot::Uefi(&image), "tcg", QEMU_MEMORY);
    qemu.arg("-drive").arg(format!("format=raw,if=none,id=d,file={}", small.display()));
    qemu.args(["-device", "virtio-blk-pci,drive=d"]);
    let out = run_with_timeout(qemu, Duration::from_secs(120));
    assert!(
        out.stdout
            .contains("vm 0 (diskbm) refused: it asks for 256 KiB of disk and the machine's disk has no room left"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let out = denali(&service, &["run", "--qemu", image.to_str().unwrap()]);
    assert!(
        out.stdout.contains("refused: it asks for 256 KiB of disk and the machine has no Denali disk"),
        "{}",
        out.stdout
    );
}

#[test]
fn under_pvh_the_kernel_uses_the_memory_above_4_gib() {
    let dir = scratch();
    let service = new_service(dir.path(), "himem", Some(include_str!("guests/touch.rs")));
    // q35 puts 2 GiB of 3 below 4 GiB: two VMs that touch 1,000 MiB each
    // do not fit there beside the kernel's heap.
    std::fs::write(service.join("Denali.toml"), "instances = 2\nmemory = \"1100 MiB\"\nargs = \"1000\"\n").unwrap();
    let out = denali(&service, &["run", "--qemu", "--mem", "3072", "-v"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    for vm in 0..2 {
        assert!(out.stdout.contains(&format!("vm {vm}: 1000 MiB touched and intact")), "{}", out.stdout);
    }
    let for_vms = out.stdout.split("isolation kernel up: ").nth(1).and_then(|rest| rest.split(" MiB").next());
    let for_vms: u64 = for_vms.and_then(|n| n.parse().ok()).expect("the kernel says how much memory it has");
    assert!(for_vms > 2048, "the kernel took only {for_vms} MiB of 3 GiB:\n{}", out.stdout);
}

#[test]
fn under_pvh_the_time_limit_ends_the_run_with_the_kernels_report() {
    let dir = scratch();
    let service = new_service(dir.path(), "limit", Some(include_str!("guests/touch.rs")));
    std::fs::write(service.join("Denali.toml"), "args = \"1 600\"\n").unwrap();
    let out = denali(&service, &["run", "--qemu", "--stats", "--timeout", "3"]);
    assert_eq!(out.status, 124, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("vm 0: 1 MiB touched and intact"), "{}", out.stdout);
    assert!(out.stdout.contains("the time limit passed; stopping 1 VM(s)"), "{}", out.stdout);
    assert!(out.stdout.contains("denali: per-VM accounting"), "{}", out.stdout);
    assert!(!out.stderr.contains("did not end the run"), "{}", out.stderr);
}
