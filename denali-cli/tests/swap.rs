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
    let report = swap_report(&out.stdout);
    assert!(number_before(report, " swap-outs") > 0, "{report}");
    // Pages move many to a disk request, not one each.
    let (pages_out, pages_in) = (number_before(report, " pages,"), number_before(report, " pages read"));
    let requests = number_before(report, " disk requests");
    assert_eq!(pages_out, pages_in, "{report}");
    assert!(requests > 0 && requests * 8 <= pages_out + pages_in, "{report}");
    // Every slot came back when the VMs exited.
    assert!(report.ends_with(", 0 pages in use at the end"), "{report}");
}

#[test]
fn a_disk_read_error_during_a_swap_in_stops_that_vm_alone() {
    use denali_abi::boot::{BundleSpec, build_bundle};
    use denali_monitor::{CapturedConsole, Config, DiskFaults};
    require_kvm();
    let dir = scratch();
    let service = new_service(dir.path(), "swapfail", Some(include_str!("guests/swapper.rs")));
    let image = denali_cli::image::read_dvm(&build(&service, "swapfail")).unwrap();
    let spec = BundleSpec {
        name: "swapfail",
        instances: 10,
        image: &image,
        args: "",
        ipv4: denali_abi::net::Ipv4Config::DEFAULT,
        disk_sectors: 0,
    };
    let bundle = build_bundle(&[spec]);
    let disk = dir.path().join("swap.disk");
    let windows_end = denali_cli::vm_disk::windows_end_of_bundle(&bundle).unwrap();
    denali_cli::vm_disk::prepare(&disk, windows_end, 64 << 20).unwrap();
    let label = denali_abi::disk::DiskLabel::parse(&std::fs::read(&disk).unwrap()[..512]).unwrap();

    // The first read from the swap area fails: the VM it was for stops
    // with a sentence, the other nine run on with their memory intact.
    let mut config = Config::new(&denali_cli::kernel::kernel_elf().unwrap(), bundle);
    config.mem_size = 32 << 20;
    config.stats = true;
    config.disk = Some(disk);
    config.disk_faults = Some(DiskFaults { from_sector: label.swap_start, reads: 1 });
    let console = CapturedConsole::default();
    let status = denali_monitor::run(&config, Box::new(console.clone())).unwrap();
    let text = console.text();
    let stopped = text.lines().filter(|l| l.contains("could not be swapped back in (the disk failed); stopping it"));
    assert_eq!(stopped.count(), 1, "{text}");
    let intact = (0..10).filter(|id| text.contains(&format!("vm {id}: 2 MiB intact after 3 sleeps"))).count();
    assert_eq!(intact, 9, "{text}");
    assert_eq!(status, 142, "{text}");
    // Its slots were given back with the rest.
    assert!(text.contains(", 0 pages in use at the end"), "{text}");
}

#[test]
fn a_full_swap_area_stops_only_the_vms_that_do_not_fit() {
    let dir = scratch();
    let service = new_service(dir.path(), "swapfull", Some(include_str!("guests/swapper.rs")));
    build(&service, "swapfull");
    // Twelve VMs of 2 MiB need several MiB more than 32 MiB of memory and
    // a 1 MiB swap area hold together.
    let disk = dir.path().join("swap.disk");
    let args = ["--instances", "12", "--mem", "32", "--swap", "1", "--stats", "--disk", disk.to_str().unwrap()];
    let out = run(&service, &args);
    assert_ne!(out.status, 0, "{}", out.stdout);
    let stopped: Vec<&str> =
        out.stdout.lines().filter(|l| l.contains("; stopping it") || l.contains(" stopped: ")).collect();
    for line in &stopped {
        let why = ["the kernel had no free memory for that page", "no room in the swap area to make some"];
        assert!(why.iter().any(|why| line.contains(why)), "unexpected stop: {line}\n{}", out.stdout);
    }
    let intact = (0..12).filter(|id| out.stdout.contains(&format!("vm {id}: 2 MiB intact after 3 sleeps"))).count();
    // Every VM either finished intact or was stopped with a sentence; the
    // kernel ran on to the end and gave every slot back.
    assert!(!stopped.is_empty() && intact > 0, "{}", out.stdout);
    assert_eq!(stopped.len() + intact, 12, "{}", out.stdout);
    let report = swap_report(&out.stdout);
    assert!(report.ends_with(", 0 pages in use at the end"), "{report}");
}

#[test]
fn many_small_vms_swapped_out_whole_all_come_back_intact() {
    let dir = scratch();
    let service = new_service(dir.path(), "napper", Some(include_str!("guests/swapper.rs")));
    // 100 VMs of 192 KiB that sleep 100 ms eight times: more than 32 MiB
    // holds, so idle ones go out whole (page tables and all) and come back
    // on their alarms, over and over, while others' pages move on the disk.
    std::fs::write(service.join("Denali.toml"), "args = \"192 8 100\"\n").unwrap();
    build(&service, "napper");
    let disk = dir.path().join("swap.disk");
    let args = ["--instances", "100", "--mem", "32", "--swap", "64", "--stats", "--disk", disk.to_str().unwrap()];
    let out = run(&service, &args);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let intact = (0..100).filter(|id| out.stdout.contains(&format!("vm {id}: 192 KiB intact after 8 sleeps"))).count();
    assert_eq!(intact, 100, "{}", out.stdout);
    let whole = out.stdout.lines().find(|l| l.contains("took an idle VM out whole")).expect("a whole swap-out line");
    let numbers: Vec<u64> = whole.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(numbers[0] > 0, "{whole}");
    // What a VM swapped out whole still takes of kernel memory.
    assert!(numbers[1] <= 2048, "{whole}");
}
