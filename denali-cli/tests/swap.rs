//! Swapping: more VMs than memory holds, each with 2 MiB of its own data,
//! all finish with every byte intact when the disk has a swap area (their
//! pages moving many to a disk request), while without one the same run
//! runs out of memory.

mod support;

use support::*;

#[test]
fn vms_are_swapped_out_and_back_in_when_memory_runs_short() {
    let dir = scratch();
    let service = new_service(dir.path(), "swapper", Some(include_str!("guests/swapper.rs")));
    build(&service, "swapper");
    let vms = ["--instances", "10", "--mem", "32"];

    // Ten VMs of 2 MiB each do not fit in what 32 MiB leaves for VMs.
    let out = run(&service, &vms);
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(out.stdout.contains("the kernel had no free memory for that page"), "{}", out.stdout);

    let disk = dir.path().join("swap.disk");
    let swap = ["--swap", "64", "--stats", "--disk", disk.to_str().unwrap()];
    let out = run(&service, &[&vms[..], &swap[..]].concat());
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    for id in 0..10 {
        let line = format!("vm {id}: 2 MiB intact after 3 sleeps");
        assert!(out.stdout.contains(&line), "no `{line}` in\n{}", out.stdout);
    }
    let report = out.stdout.lines().find(|l| l.starts_with("denali: swap: ")).expect("a swap line");
    let swap_outs: u64 = report["denali: swap: ".len()..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(swap_outs > 0, "{report}");
    // Pages move many to a disk request, not one each.
    let number_before = |word: &str| -> u64 {
        let at = report.find(word).unwrap_or_else(|| panic!("no `{word}` in {report}"));
        report[..at].split([' ', '(']).rev().find(|w| !w.is_empty()).unwrap().parse().unwrap()
    };
    let (pages_out, pages_in) = (number_before(" pages,"), number_before(" pages read"));
    let requests = number_before(" disk requests");
    assert_eq!(pages_out, pages_in, "{report}");
    assert!(requests > 0 && requests * 8 <= pages_out + pages_in, "{report}");
    // Every slot came back when the VMs exited.
    assert!(report.ends_with(", 0 pages in use at the end"), "{report}");
}
