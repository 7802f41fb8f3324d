//! The VMs' disk under our monitor: each VM's window of one file, kept
//! across runs, with every bad argument refused.

mod support;

use std::path::{Path, PathBuf};
use support::*;

/// Two VMs with 256 KiB of disk each.
const MANIFEST: &str = "instances = 2\n[disk]\nsize = \"256 KiB\"\n";
const WINDOW: usize = 256 << 10;
/// Where the first window starts in the file (`denali_abi::disk`).
const FIRST_WINDOW: usize = 8 * 512;

fn disk_service(dir: &Path, name: &str) -> PathBuf {
    let service = new_service(dir, name, Some(include_str!("guests/disk.rs")));
    std::fs::write(service.join("Denali.toml"), MANIFEST).unwrap();
    service
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn each_vm_keeps_its_own_disk_across_runs() {
    let dir = scratch();
    let service = disk_service(dir.path(), "diskcount");
    build(&service, "diskcount");
    let disk = dir.path().join("vms.disk");
    for boot in 1..=2 {
        let out = run(&service, &["--disk", disk.to_str().unwrap(), "--stats"]);
        assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
        for id in 0..2 {
            let line = format!("vm {id}: disk of {WINDOW} bytes, boot {boot}, data intact: true");
            assert!(out.stdout.contains(&line), "no `{line}` in\n{}", out.stdout);
        }
        if boot == 1 {
            // Every bad argument fails with its error; the VM goes on.
            for (what, error) in [
                ("past the end", "Err(InvalidArgument)"),
                ("straddling the end", "Err(InvalidArgument)"),
                ("wrapping sector", "Err(InvalidArgument)"),
                ("ragged length", "Err(InvalidArgument)"),
                ("empty", "Err(InvalidArgument)"),
                ("too long", "Err(InvalidArgument)"),
                ("kernel buffer", "Err(BadAddress)"),
                ("null buffer", "Err(BadAddress)"),
                ("write past the end", "Err(InvalidInput)"),
            ] {
                let line = format!("vm 1 {what}: {error}");
                assert!(out.stdout.contains(&line), "no `{line}` in\n{}", out.stdout);
            }
            // --stats counts each VM's disk traffic (KiB read, written): the
            // columns after vm, name, status, cpu ms, private and shared KiB,
            // hypercalls and wake-ups.
            let row = out.stdout.lines().find(|l| l.split_whitespace().next() == Some("0")).expect("stats row");
            let fields: Vec<u64> = row.split_whitespace().skip(8).take(2).map(|f| f.parse().unwrap()).collect();
            assert!(fields.iter().all(|&kib| kib >= 97), "{row}");
        }
    }
    // On the host: the label, then VM 0's window, then VM 1's.
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(&bytes[..8], b"DNLDISK1");
    assert_eq!(bytes.len(), FIRST_WINDOW + 2 * WINDOW);
    for id in 0..2 {
        let window = FIRST_WINDOW + id * WINDOW;
        assert_eq!(le_u64(&bytes, window), 2, "vm {id}'s boot counter");
        let data: Vec<u8> = (0..100_000).map(|i| (i * 7 + id) as u8).collect();
        assert_eq!(&bytes[window + 1000..window + 101_000], &data[..], "vm {id}'s data");
    }
}

#[test]
fn the_disk_template_counts_its_boots() {
    let dir = scratch();
    let service = new_from_template(dir.path(), "counter", "disk");
    let _ = std::fs::remove_file(guest_target_dir().join("denali/debug/counter.disk"));
    for boot in 1..=2 {
        let out = run(&service, &[]);
        assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
        let line = format!("VM 0 has booted {boot} time(s); its disk holds 1024 KiB");
        assert!(out.stdout.contains(&line), "no `{line}` in\n{}", out.stdout);
    }
}

#[test]
fn the_disk_file_is_checked_before_anything_boots() {
    let dir = scratch();
    let service = disk_service(dir.path(), "diskfile");
    build(&service, "diskfile");

    // Without --disk the file is made beside the image.
    let default = guest_target_dir().join("denali/debug/diskfile.disk");
    let _ = std::fs::remove_file(&default);
    let out = run(&service, &[]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("vm 1: disk of 262144 bytes, boot 1"), "{}", out.stdout);
    assert_eq!(std::fs::metadata(&default).unwrap().len(), (FIRST_WINDOW + 2 * WINDOW) as u64);

    // A file that is not a Denali disk is refused and left as it was.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "my notes").unwrap();
    let out = run(&service, &["--disk", notes.to_str().unwrap()]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("notes.txt is not a Denali disk"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");

    // A disk another run is using is refused, before anything is changed.
    let sleeper = new_service(
        dir.path(),
        "disksleeper",
        Some(
            "#![no_std]\n#![no_main]\n#[denali::main]\nfn main() {\n    denali::println!(\"holding the disk\");\n    denali::time::sleep(denali::time::Duration::from_secs(30));\n}\n",
        ),
    );
    std::fs::write(sleeper.join("Denali.toml"), MANIFEST).unwrap();
    let shared = dir.path().join("shared.disk");
    let mut holder = Background::start(&sleeper, &["--disk", shared.to_str().unwrap()]);
    holder.wait_for("holding the disk", std::time::Duration::from_secs(300));
    let out = run(&service, &["--disk", shared.to_str().unwrap()]);
    assert_eq!(out.status, 1, "{}", out.stdout);
    assert!(out.stderr.contains("shared.disk is in use by another run"), "{}", out.stderr);
    drop(holder);

    // A service that asks for no disk is told so.
    let hello = new_service(dir.path(), "nodisk", None);
    let out = run(&hello, &["--disk", dir.path().join("x.disk").to_str().unwrap()]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("no VM asks for a disk: add [disk] size"), "{}", out.stderr);
}
