//! Resource bounds under KVM: a hostile VM cannot make the isolation kernel
//! allocate without bound (alarms, frames parked for VMs that never read),
//! so the kernel, and every other VM, keeps running.

mod support;

use support::*;

/// `(at boot, peak)` from `--stats`' kernel heap line, in KiB.
fn heap_figures(text: &str) -> (u64, u64) {
    let line = text.lines().find(|l| l.starts_with("denali: kernel heap:")).expect("a kernel heap line");
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[test]
fn alarms_and_a_frame_flood_cannot_grow_the_kernel_heap() {
    let dir = scratch();
    let service = new_service(dir.path(), "hoard", Some(include_str!("guests/hoard.rs")));
    build(&service, "hoard");
    // 120 VMs in 32 MiB: the smallest kernel heap, with room for fewer
    // frames than the flood sends.
    let out = run(&service, &["--instances", "120", "--mem", "32", "--stats", "--timeout", "300"]);
    let text = &out.stdout;
    assert!(text.contains("vm0| hoarder: 200000 alarms set"), "{text}");
    assert!(text.contains("vm0| hoarder: 7616 frames sent, 0 refused"), "{text}");
    assert!(text.contains("denali: 120 VMs: 120 exited with status 0, 0 did not"), "{text}");
    let (boot, peak) = heap_figures(text);
    assert!(peak <= boot + 64, "the kernel heap grew from {boot} KiB to {peak} KiB:\n{text}");
    // More frames than the pool holds were sent: every one was parked
    // (some pushing out others: the pool holds about 1,400) or dropped.
    let network = text.lines().find(|l| l.starts_with("denali: network:")).expect("network line");
    let numbers: Vec<u64> = network.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    let (sent, received, dropped) = (numbers[0], numbers[1], numbers[2]);
    assert_eq!(sent, 7616, "{network}");
    assert!(received + dropped >= sent && dropped > 0, "{network}");
    assert_eq!(out.status, 0, "{text}\n{}", out.stderr);
}
