//! Isolation: a VM that faults is stopped and reported, and the kernel and
//! the other VMs of the boot keep running. Hostile images are refused by
//! the CLI and by the kernel's own loader.

mod support;

use denali_abi::boot::build_bundle;
use std::sync::{Arc, Mutex};
use support::*;

const NULL_WRITE: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    let p = core::hint::black_box(0usize) as *mut u64;\n    unsafe { p.write_volatile(0xdead) };\n}\n";
const KERNEL_READ: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    let p = core::hint::black_box(0xffff_8000_0000_1000usize) as *const u64;\n    let v = unsafe { p.read_volatile() };\n    denali::println!(\"read the kernel: {v}\");\n}\n";
const SURVIVOR: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    denali::println!(\"survivor {} of {} done\", denali::vm::id(), denali::vm::count());\n}\n";

#[test]
fn faulting_vms_do_not_stop_their_neighbours() {
    let dir = scratch();
    let null_write = build(
        &new_service(dir.path(), "nullwrite", Some(NULL_WRITE)),
        "nullwrite",
    );
    let kernel_read = build(
        &new_service(dir.path(), "kernelread", Some(KERNEL_READ)),
        "kernelread",
    );
    let survivor = build(
        &new_service(dir.path(), "survivor", Some(SURVIVOR)),
        "survivor",
    );
    let out = run(
        dir.path(),
        &[
            null_write.to_str().unwrap(),
            kernel_read.to_str().unwrap(),
            survivor.to_str().unwrap(),
        ],
    );
    let text = &out.stdout;
    assert!(
        text.contains("vm 0 (nullwrite) stopped: page fault (#PF) (vector 14) at rip 0x"),
        "{text}"
    );
    assert!(text.contains("writing 0x0: a null pointer"), "{text}");
    assert!(
        text.contains("vm 1 (kernelread) stopped: page fault (#PF) (vector 14)"),
        "{text}"
    );
    assert!(
        text.contains("reading 0xffff800000001000: a kernel address"),
        "{text}"
    );
    assert!(!text.contains("read the kernel"), "{text}");
    assert!(text.contains("vm2| survivor 2 of 3 done"), "{text}");
    assert!(
        text.contains("vm 2 (survivor) exited with status 0"),
        "{text}"
    );
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
        out.stderr
            .contains("is not a valid Denali image: the image's content hash does not match"),
        "{}",
        out.stderr
    );

    let truncated = dir.path().join("truncated.dvm");
    std::fs::write(&truncated, &bytes[..40]).unwrap();
    let out = run(dir.path(), &[truncated.to_str().unwrap()]);
    assert!(
        out.stderr
            .contains("is not a valid Denali image: the image is truncated"),
        "{}",
        out.stderr
    );

    let foreign = dir.path().join("foreign.dvm");
    std::fs::copy(good.with_extension("elf"), &foreign).unwrap();
    let out = run(dir.path(), &[foreign.to_str().unwrap()]);
    assert!(
        out.stderr
            .contains("is not a valid Denali image: not a Denali image (bad magic)"),
        "{}",
        out.stderr
    );
}

#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_kernel_loader_refuses_a_corrupted_image_and_runs_the_rest() {
    require_kvm();
    let dir = scratch();
    let good_path = build(
        &new_service(dir.path(), "loadertest", Some(SURVIVOR)),
        "loadertest",
    );
    let good = std::fs::read(&good_path).unwrap();
    let mut corrupted = good.clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 1;
    // Bypass the CLI's check: hand the kernel a bundle with a bad image.
    let bundle = build_bundle(&[("corrupted", 1, &corrupted), ("good", 1, &good)]);
    let kernel = denali_cli::kernel::kernel_elf().expect("kernel builds");
    let console = Console::default();
    let status = denali_monitor::run(
        &denali_monitor::Config::new(&kernel, bundle),
        Box::new(console.clone()),
    )
    .expect("run");
    let text = String::from_utf8_lossy(&console.0.lock().unwrap()).into_owned();
    assert!(
        text.contains(
            "image 0 (corrupted) refused by the loader: the image's content hash does not match"
        ),
        "{text}"
    );
    assert!(text.contains("vm1| survivor 1 of 2 done"), "{text}");
    assert_eq!(status, 126, "{text}");
}
