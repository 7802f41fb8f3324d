//! The kernel's core on a simulated machine (see `testing`): hostile VMs
//! against the bounds on what they can make the kernel hold, and hypercall
//! arguments no VM should get past.

use crate::testing::{
    Guest, Program, Sim, Trap, calls, heap_peak_of_this_thread, image_of, kernel, kernel_on, kernel_with_swap,
    kernel_with_swap_of, kernel_with_time_limit, reset_heap_peak,
};
use denali_abi::hypercall::{EVENT_ALARM, Error, FRAME_MAX, FrameRef, Hypercall, NET_BATCH_MAX};
use denali_abi::info::InfoPage;
use denali_abi::net::mac_of;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

const EXIT: u64 = Hypercall::Exit as u64;
const ALARM: u64 = Hypercall::Alarm as u64;
const IDLE: u64 = Hypercall::Idle as u64;
const SEND_BATCH: u64 = Hypercall::NetSendBatch as u64;
const RECV_BATCH: u64 = Hypercall::NetRecvBatch as u64;
const NET_SEND: u64 = Hypercall::NetSend as u64;

/// A flat address in every VM's heap.
const HEAP: u64 = 0x20_0000;

#[test]
fn a_million_alarm_calls_cost_no_kernel_memory() {
    const CALLS: u64 = 1_000_000;
    let mut made = 0u64;
    let program = |_| {
        calls(move |_, _| {
            made += 1;
            (made <= CALLS).then_some((ALARM, u64::MAX - made, 0, 0))
        })
    };
    let mut kernel = kernel(16, 64, 1, program);
    let before = reset_heap_peak();
    assert_eq!(kernel.run(false), 0);
    let grown = heap_peak_of_this_thread() - before;
    println!("kernel heap during {CALLS} alarm calls: at most {grown} bytes more than before");
    // A few transient bytes at most; one entry per call would be 16 MB.
    assert!(grown <= 4096, "the kernel held {grown} more bytes during {CALLS} alarm calls");
    assert_eq!(kernel.stats[0].hypercalls, CALLS + 1);
}

/// VM `id`'s address: the `id`-th after 10.0.2.15.
fn address(id: u32) -> [u8; 4] {
    (u32::from_be_bytes([10, 0, 2, 15]) + id).to_be_bytes()
}

/// An IPv4 frame from VM `from` to VM `to`.
fn frame(from: u32, to: u32) -> Vec<u8> {
    let mut f = vec![0x5au8; FRAME_MAX];
    f[0..6].copy_from_slice(&mac_of(to));
    f[6..12].copy_from_slice(&mac_of(from));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&1500u16.to_be_bytes());
    f[26..30].copy_from_slice(&address(from));
    f[30..34].copy_from_slice(&address(to));
    f
}

/// A VM that sends `each` full frames to each of the `neighbours` VMs
/// after it (of `vms`), never reads one, and exits.
fn flooder(id: u32, vms: u32, neighbours: u32, each: u32) -> Program {
    let mut targets = (1..=neighbours).map(move |n| (id + n) % vms).flat_map(move |to| (0..each).map(move |_| to));
    let mut pending: Option<Vec<u8>> = None;
    Box::new(move |guest: &mut Guest, context| {
        if pending.is_none() {
            match targets.next() {
                Some(to) => pending = Some(frame(id, to)),
                None => {
                    (context.rax, context.rdi) = (EXIT, 0);
                    return Trap::Hypercall;
                }
            }
        }
        // The frame goes to the VM's heap first (a first touch faults).
        let bytes = pending.as_ref().expect("set above");
        if let Err(fault) = guest.write(HEAP, bytes) {
            return fault;
        }
        (context.rax, context.rdi, context.rsi) = (NET_SEND, HEAP, bytes.len() as u64);
        pending = None;
        Trap::Hypercall
    })
}

#[test]
fn a_frame_flood_from_a_thousand_vms_stays_under_the_global_budget() {
    const VMS: u32 = 1000;
    const NEIGHBOURS: u32 = 4;
    const BUDGET: u32 = 500;
    let mut kernel = kernel(128, BUDGET, VMS, |id| flooder(id, VMS, NEIGHBOURS, 64));
    let before = reset_heap_peak();
    assert_eq!(kernel.run(false), 0);
    let grown = heap_peak_of_this_thread() - before;
    // Every VM sent 4 x 64 frames; none read any.
    let sent: u64 = kernel.stats.iter().map(|s| s.frames_sent).sum();
    let dropped: u64 = kernel.stats.iter().map(|s| s.frames_dropped).sum();
    assert_eq!(sent, u64::from(VMS * NEIGHBOURS * 64));
    assert!(dropped > 0, "more frames than the pool holds, and none dropped?");
    assert!(kernel.switch.parking.capacity() == BUDGET && kernel.switch.parking.parked() == 0);
    println!(
        "kernel heap during {sent} frames from {VMS} VMs ({dropped} dropped): at most {grown} bytes more than before"
    );
    assert!(grown <= 4096, "the kernel held {grown} more bytes after the flood");
}

#[test]
fn hostile_hypercall_arguments_fail_for_that_vm_alone() {
    let hostile: Vec<(u64, u64, u64, u64)> = vec![
        (Hypercall::ConsoleWrite as u64, 0xffff_8000_0000_0000, 16, 0),
        (Hypercall::ConsoleWrite as u64, 0, 16, 0),
        (Hypercall::ConsoleWrite as u64, u64::MAX - 8, 16, 0),
        (NET_SEND, HEAP, FRAME_MAX as u64 + 1, 0),
        (NET_SEND, 0xffff_8000_0000_0000, 60, 0),
        (Hypercall::NetRecv as u64, HEAP, 2048, 0),
        (Hypercall::DiskRead as u64, 0, HEAP, 512),
        (0xdead, 1, 2, 3),
        (SEND_BATCH, HEAP, 0, 0),
        (SEND_BATCH, HEAP, NET_BATCH_MAX as u64 + 1, 0),
        (SEND_BATCH, 0xffff_8000_0000_0000, 1, 0),
        (SEND_BATCH, HEAP, 1, 0), // a zeroed entry: a frame of no bytes
        (RECV_BATCH, HEAP, 1, 0),
    ];
    let expected = [
        Error::BadAddress,
        Error::BadAddress,
        Error::BadAddress,
        Error::InvalidArgument,
        Error::BadAddress,
        Error::WouldBlock,
        Error::InvalidArgument,
        Error::NoSuchCall,
        Error::InvalidArgument,
        Error::InvalidArgument,
        Error::BadAddress,
        Error::InvalidArgument,
        Error::WouldBlock,
    ];
    let results = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = results.clone();
    let mut queue = hostile.into_iter();
    let program = move |id| -> Program {
        if id == 1 {
            return calls(|_, _| None);
        }
        let (seen, mut queue) = (seen.clone(), std::mem::take(&mut queue));
        calls(move |_, result| {
            if let Some(rax) = result {
                seen.borrow_mut().push(Error::from_return(rax));
            }
            queue.next()
        })
    };
    let mut kernel = kernel(16, 64, 2, program);
    assert_eq!(kernel.run(false), 0, "both VMs exit 0: the hostile one was refused, not stopped");
    let got: Vec<_> = results.borrow().clone();
    assert_eq!(got, expected.iter().map(|&e| Err(e)).collect::<Vec<_>>());
}

#[test]
fn a_vm_stopped_inside_its_restore_routine_is_not_saved_over() {
    let mut kernel = kernel(16, 64, 2, |_| calls(|_, _| None));
    // VM 0 owns the CPU's register state but was interrupted inside the
    // restore routine: its page holds its state, the CPU may not.
    kernel.state_owner = Some(0);
    kernel.vms[0].as_mut().unwrap().context.rip = denali_abi::layout::STATE_SWITCH_PAGE + 0x10;
    kernel.save_user_state();
    assert_eq!(kernel.platform.saves, 0, "the save routine would have copied another VM's registers");
    assert_eq!(kernel.state_owner, None);
    // Stopped anywhere else, it is saved (once it has page tables).
    assert!(kernel.swap_in(1), "VM 1 comes into memory");
    kernel.state_owner = Some(1);
    kernel.save_user_state();
    assert_eq!(kernel.platform.saves, 1);
}

#[test]
fn a_save_interrupted_is_run_again_and_one_that_faults_stops_only_its_vm() {
    use crate::platform::vectors::{PAGE_FAULT, TIMER};
    let mut kernel = kernel(16, 64, 2, |_| calls(|_, _| None));
    assert!(kernel.swap_in(0) && kernel.swap_in(1), "both VMs come into memory");
    // A timer arriving during the save is no fault of the VM's: it runs again.
    kernel.platform.save_traps.extend([TIMER]);
    kernel.state_owner = Some(0);
    kernel.save_user_state();
    assert_eq!(kernel.platform.saves, 2);
    assert!(kernel.vms[0].is_some(), "an interrupted save does not stop the VM");
    // A fault after an interrupt is the VM's state page failing: that VM
    // stops with the fault's status, and the other is untouched.
    kernel.platform.save_traps.extend([TIMER, PAGE_FAULT]);
    kernel.state_owner = Some(1);
    kernel.save_user_state();
    assert_eq!(kernel.platform.saves, 4);
    assert!(kernel.vms[1].is_none(), "VM 1 is stopped");
    assert_eq!(kernel.statuses[1], Some(super::fault_status(PAGE_FAULT)));
    assert!(kernel.vms[0].is_some());
}

#[test]
fn a_long_boot_reports_its_progress_and_a_short_one_says_nothing() {
    let exit_at_once = |_| calls(|_, _| None);
    let quick = kernel(16, 64, 20, exit_at_once);
    assert_eq!(quick.platform.progress, []);

    // A machine so slow that every VM takes longer to make than the
    // interval between reports.
    let slow =
        crate::testing::kernel_on(crate::testing::Sim::with_ticks_per_look(300_000_000), 16, 64, 20, exit_at_once);
    let reports = &slow.platform.progress;
    assert!(reports.len() >= 10, "{reports:?}");
    assert!(reports.windows(2).all(|pair| pair[0].0 <= pair[1].0), "counts go down: {reports:?}");
    let &(made, mib) = reports.last().unwrap();
    assert_eq!(made, 20, "{reports:?}");
    assert!(mib > 0 && mib <= 16, "{reports:?}");
}

/// What [`swapped_whole`]'s VM 0 found each time it looked at its memory.
type Findings = std::rc::Rc<std::cell::RefCell<Vec<&'static str>>>;

/// VM 0 fills two heap pages, sleeps on an alarm, checks them, waits for a
/// frame, takes it and checks them again; VM 1 sends that frame once its
/// own alarm has woken it. Both are idle long enough to be swapped out.
/// What the VM's info page says of its receive ring.
fn rx_frames(guest: &Guest) -> u32 {
    let mut word = [0; 4];
    let at = denali_abi::layout::INFO_PAGE + core::mem::offset_of!(denali_abi::info::InfoPage, rx_frames) as u64;
    guest.read(at, &mut word).expect("the info page is mapped");
    u32::from_le_bytes(word)
}

fn swapped_whole(id: u32, findings: Findings) -> Program {
    const RECV: u64 = Hypercall::NetRecv as u64;
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut step = 0;
    Box::new(move |guest: &mut Guest, context| {
        let look = |guest: &mut Guest, what| {
            let mut seen = vec![0; pattern.len()];
            let intact = guest.read(HEAP, &mut seen).is_ok() && seen == pattern;
            findings.borrow_mut().push(if intact { what } else { "memory changed" });
        };
        let call = match (id, step) {
            (0, 0) => {
                if let Err(fault) = guest.write(HEAP, &pattern) {
                    return fault;
                }
                (ALARM, 20_000_000, 0)
            }
            (1, 0) => (ALARM, 100_000_000, 0),
            (_, 1) => (IDLE, 0, 0),
            (0, 2) => {
                look(guest, if context.rax & EVENT_ALARM != 0 { "intact after the alarm" } else { "woken without it" });
                (IDLE, 0, 0)
            }
            (0, 3) => {
                // Sent while this VM was out whole: its info page, back in
                // memory, says a frame waits.
                findings.borrow_mut().push(if rx_frames(guest) == 1 {
                    "info page: 1 frame"
                } else {
                    "info page wrong"
                });
                (RECV, HEAP + 0x2000, FRAME_MAX as u64)
            }
            (0, 4) => {
                findings.borrow_mut().push(if rx_frames(guest) == 0 { "info page: none" } else { "info page stale" });
                let mut got = vec![0; FRAME_MAX];
                let same = guest.read(HEAP + 0x2000, &mut got).is_ok() && got == frame(1, 0);
                findings.borrow_mut().push(if same && context.rax == FRAME_MAX as u64 {
                    "got the frame"
                } else {
                    "lost it"
                });
                look(guest, "intact after the frame");
                (EXIT, 0, 0)
            }
            (1, 2) => {
                let bytes = frame(1, 0);
                if let Err(fault) = guest.write(HEAP, &bytes) {
                    return fault;
                }
                (NET_SEND, HEAP, bytes.len() as u64)
            }
            _ => (EXIT, 0, 0),
        };
        step += 1;
        (context.rax, context.rdi, context.rsi) = call;
        Trap::Hypercall
    })
}

#[test]
fn a_vm_swapped_out_whole_wakes_on_an_alarm_and_on_a_frame_with_its_memory_intact() {
    let findings = Findings::default();
    let seen = findings.clone();
    let mut kernel = kernel_with_swap(16, 1024, 2, move |id| swapped_whole(id, seen.clone()));
    // Always short of memory: every VM that goes idle is swapped out.
    kernel.watermarks = crate::swap::Watermarks { low: u64::MAX / 4, high: u64::MAX / 4 };
    let frames_before = kernel.frames.in_use();
    assert_eq!(kernel.run(false), 0);
    assert_eq!(
        *findings.borrow(),
        ["intact after the alarm", "info page: 1 frame", "info page: none", "got the frame", "intact after the frame"]
    );
    // Each went out whole (page tables and all) every time it idled, VM 0
    // twice and VM 1 once, keeping a record of at most 2 KiB, and came
    // back in as often.
    assert_eq!(kernel.swap_counters.whole_swap_outs, 3, "{:?}", kernel.swap_counters);
    assert_eq!(kernel.swap_counters.swap_ins, 3, "{:?}", kernel.swap_counters);
    // The monitor was told where to read them as the VMs ran.
    assert_eq!(kernel.platform.shared_counters, Some(&kernel.swap_counters as *const _));
    assert!(kernel.most_kept_when_whole <= 2048, "{}", kernel.most_kept_when_whole);
    let swaps: Vec<_> = kernel.stats.iter().map(|stats| (stats.swap_outs, stats.swap_ins)).collect();
    assert_eq!(swaps, [(2, 2), (1, 1)]);
    // Nothing is left behind: no frame, no slot.
    assert_eq!(kernel.frames.in_use(), frames_before);
    let swap = kernel.swap.as_ref().expect("a swap area");
    assert_eq!(swap.free_slots(), u64::from(swap.slots()));
}

/// Fills two heap pages, sleeps until `(id + 1) * 100` ms, and exits 0 if
/// they are intact (1 if not).
fn sleeps_with_two_pages(id: u32) -> Program {
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 5 + id) as u8).collect();
    let mut step = 0;
    Box::new(move |guest: &mut Guest, context| {
        let call = match step {
            0 => {
                if let Err(fault) = guest.write(HEAP, &pattern) {
                    return fault;
                }
                (ALARM, (u64::from(id) + 1) * 100_000_000, 0)
            }
            1 => (IDLE, 0, 0),
            _ => {
                let mut seen = vec![0; pattern.len()];
                let intact = guest.read(HEAP, &mut seen).is_ok() && seen == pattern;
                (EXIT, u64::from(!intact), 0)
            }
        };
        step += 1;
        (context.rax, context.rdi, context.rsi) = call;
        Trap::Hypercall
    })
}

#[test]
fn idle_time_swaps_idle_vms_out_to_the_high_watermark_and_woken_vms_come_in_from_the_reserve() {
    let mut kernel = kernel_with_swap(16, 1024, 2, sleeps_with_two_pages);
    // Never short of memory for a VM's turn (low 0), but below the high
    // watermark: only time with nothing to run swaps VMs out.
    kernel.watermarks = crate::swap::Watermarks { low: 0, high: u64::MAX / 4 };
    assert_eq!(kernel.run(false), 0, "both VMs found their pages intact");
    // Asleep for 100 and 200 ms, both went out while the kernel waited,
    // and came back in without another going out for them.
    let swaps: Vec<_> = kernel.stats.iter().map(|stats| (stats.swap_outs, stats.swap_ins)).collect();
    assert_eq!(swaps, [(1, 1), (1, 1)]);
}

#[test]
fn a_vm_that_went_out_whole_comes_back_in_the_frames_counted_for_it() {
    let findings = Findings::default();
    let seen = findings.clone();
    // VM 0 fills two heap pages, under a page table its image does not
    // have, and sleeps; it goes out whole.
    let mut kernel = kernel_with_swap(16, 1024, 1, move |id| swapped_whole(id, seen.clone()));
    kernel.run_slice(0);
    assert!(!kernel.reclaim_idle(u64::MAX), "only VM 0 can go out");
    assert_eq!(kernel.swap_counters.whole_swap_outs, 1, "{:?}", kernel.swap_counters);
    // Its alarm rings.
    let tsc = kernel.platform.tsc();
    tsc.set(tsc.get() + 1_000_000_000);
    kernel.fire_alarms();
    // With exactly the frames counted for it free, it comes back.
    let count = kernel.frames_to_bring_in(0);
    let held: Vec<u64> = (count..kernel.frames.available()).map(|_| kernel.frames.alloc().unwrap()).collect();
    assert_eq!(kernel.frames.available(), count);
    assert!(kernel.swap_in(0), "VM 0 did not come back in {count} frames: {:?}", kernel.statuses);
    held.into_iter().for_each(|frame| kernel.frames.free(frame));
    // And runs on, its memory intact (what it finds after that is about a
    // frame nobody sends).
    kernel.set_time_limit_ms(1_000);
    kernel.run(false);
    assert_eq!(findings.borrow().first(), Some(&"intact after the alarm"));
}

/// VM 0 fills `PAGES` heap pages with a pattern and exits; VM 1 sleeps,
/// then reads as many heap pages of its own, which must be zero.
fn fills_then_reads(id: u32, findings: Findings) -> Program {
    const PAGES: usize = 4;
    let mut step = 0;
    Box::new(move |guest: &mut Guest, context| {
        let call = match (id, step) {
            (0, _) => {
                if let Err(fault) = guest.write(HEAP, &[0xa5; PAGES * 4096]) {
                    return fault;
                }
                (EXIT, 0, 0)
            }
            (1, 0) => (ALARM, 50_000_000, 0),
            (1, 1) => (IDLE, 0, 0),
            _ => {
                let mut seen = vec![1; PAGES * 4096];
                if let Err(fault) = guest.read(HEAP, &mut seen) {
                    return fault;
                }
                findings.borrow_mut().push(if seen.iter().all(|&b| b == 0) { "zero" } else { "another VM's bytes" });
                (EXIT, 0, 0)
            }
        };
        step += 1;
        (context.rax, context.rdi, context.rsi) = call;
        Trap::Hypercall
    })
}

#[test]
fn frames_freed_are_zeroed_while_the_kernel_waits_and_first_touches_take_them() {
    let findings = Findings::default();
    let seen = findings.clone();
    let mut kernel = kernel(16, 64, 2, move |id| fills_then_reads(id, seen.clone()));
    // VM 0 fills its pages and exits; VM 1 sets its alarm and idles.
    while let Some(id) = kernel.sched.pick_next() {
        kernel.run_slice(id);
    }
    assert_eq!(kernel.statuses[0], Some(0));
    assert_eq!(kernel.frames.zeroed_ahead(), 0, "nothing is zeroed ahead while VMs run");
    let deadline = kernel.next_event().expect("VM 1's alarm");
    kernel.wait_until(deadline);
    let zeroed = kernel.frames.zeroed_ahead();
    assert!(zeroed >= 4, "VM 0's four pages (and its tables) were zeroed while waiting, not {zeroed}");
    assert_eq!(kernel.run(false), 0);
    assert_eq!(*findings.borrow(), ["zero"]);
    assert!(kernel.frames.zeroed_ahead() <= zeroed - 4, "VM 1's four first touches took zeroed frames");
}

#[test]
fn making_a_vm_takes_no_frame_until_it_runs() {
    let exit_at_once = |_| calls(|_, _| None);
    let few = kernel(64, 64, 10, exit_at_once);
    let many = kernel(64, 64, 2000, exit_at_once);
    // Only the image's pages and its page tables, however many VMs.
    assert_eq!(few.frames.in_use(), many.frames.in_use());
    let mut many = many;
    let before = many.frames.in_use();
    assert_eq!(many.run(false), 0);
    assert_eq!(many.frames.in_use(), before, "every VM's tables and pages were given back");
}

#[test]
fn more_vms_than_memory_holds_at_once_all_run_when_they_come_and_go() {
    // 500 VMs of about 28 KiB each (tables, info and CPU state pages) in
    // 4 MiB: each comes into memory when it first runs.
    let mut kernel = kernel(4, 64, 500, |_| calls(|_, _| None));
    assert_eq!(kernel.run(false), 0);
    assert!(kernel.statuses.iter().all(|status| *status == Some(0)));
}

#[test]
fn a_crash_is_reported_with_the_vms_registers_and_a_clean_exit_is_not() {
    use denali_abi::debug::{EXIT_CRASHED, EventKind};
    // VM 0 exits, VM 1 panics (exit with the crashed flag), VM 2 reads
    // past the end of its space.
    let program = |id: u32| -> Program {
        Box::new(move |guest: &mut Guest, context| {
            context.rbp = 0x1000 + u64::from(id);
            match id {
                0 => (context.rax, context.rdi, context.rsi) = (EXIT, 0, 0),
                1 => (context.rax, context.rdi, context.rsi) = (EXIT, 101, EXIT_CRASHED),
                _ => return guest.read(u64::MAX - 7, &mut [0; 8]).expect_err("beyond the space"),
            }
            Trap::Hypercall
        })
    };
    let mut kernel = kernel(16, 64, 3, program);
    kernel.run(false);
    assert_eq!(kernel.statuses, [Some(0), Some(101), Some(super::fault_status(14))]);
    let crashes = &kernel.platform.events;
    assert_eq!(crashes.iter().map(|c| c.vm).collect::<Vec<_>>(), [1, 2], "one report per crashed VM");
    let (panic, fault) = (&crashes[0], &crashes[1]);
    assert_eq!((panic.event_kind(), panic.regs.rbp, panic.status), (Some(EventKind::Panic), 0x1001, 101));
    assert_eq!((fault.event_kind(), fault.vector, fault.regs.rbp), (Some(EventKind::Fault), 14, 0x1002));
    assert_eq!(fault.fault_address, u64::MAX - 7);
    assert!(panic.root != 0 && panic.space_size > 0 && panic.regs.cs & 3 == 3, "{panic:?}");
}

#[test]
fn the_debugged_vm_stops_for_its_debugger_and_the_others_run_on() {
    use denali_abi::debug::{Command, EVENT_MEMORY_PRIVATE, EventKind};
    const TRAP_FLAG: u64 = 1 << 8;
    let mut step = 0;
    let program = move |id: u32| -> Program {
        if id == 1 {
            // Not debugged: its int3 stops it, as a fault.
            return Box::new(|_: &mut Guest, _: &mut _| Trap::Breakpoint);
        }
        Box::new(move |_: &mut Guest, context| {
            step += 1;
            match step {
                // Stepped once, with the registers the debugger set; the
                // selectors it tried to change are the kernel's.
                1 => {
                    assert_eq!((context.rax, context.rflags & TRAP_FLAG), (42, TRAP_FLAG));
                    assert_eq!(context.cs & 3, 3, "ring 3 still");
                    Trap::SingleStep
                }
                2 => {
                    assert_eq!(context.rflags & TRAP_FLAG, 0, "continued: no more single steps");
                    Trap::Breakpoint
                }
                _ => {
                    (context.rax, context.rdi, context.rsi) = (EXIT, 7, 0);
                    Trap::Hypercall
                }
            }
        })
    };
    let mut kernel = kernel(16, 64, 2, program);
    kernel.debug_vm(0);
    let hostile: fn(&mut denali_abi::debug::UserRegs) = |regs| (regs.rax, regs.cs) = (42, 0x8);
    kernel.platform.answers.extend([
        (Command::Step, hostile),
        (Command::Continue, |_| {}),
        (Command::Continue, |_| {}),
    ]);
    kernel.run(false);

    assert_eq!(kernel.statuses, [Some(7), Some(super::fault_status(3))]);
    let of = |vm| -> Vec<_> {
        let events = kernel.platform.events.iter().filter(|e| e.vm == vm);
        events.map(|e| (e.event_kind().unwrap(), e.status)).collect()
    };
    let stops = [EventKind::Entry, EventKind::Step, EventKind::Trap].map(|kind| (kind, 0));
    assert_eq!(of(0), [&stops[..], &[(EventKind::Exited, 7)]].concat());
    assert_eq!(of(1), [(EventKind::Fault, super::fault_status(3) as u64)]);
    let entry = &kernel.platform.events[0];
    assert_ne!(entry.flags & EVENT_MEMORY_PRIVATE, 0, "its image pages were copied for the debugger");
    // Its image pages are its own; the one page still shared is the
    // kernel's state-switch page, which the debugger may not write.
    assert_eq!(kernel.stats[0].shared_pages, 1, "the debugged VM shares no image page with VM 1");
    assert!(kernel.stats[1].shared_pages > 1);
}

#[test]
fn a_debugger_kill_ends_the_debugged_vm_and_the_others_run_on() {
    use denali_abi::debug::{Command, EventKind, KILLED_STATUS};
    let program = move |id: u32| -> Program {
        Box::new(move |_: &mut Guest, context| {
            assert_ne!(id, 0, "the killed VM never runs an instruction of its own");
            (context.rax, context.rdi, context.rsi) = (EXIT, 3, 0);
            Trap::Hypercall
        })
    };
    let mut kernel = kernel(16, 64, 2, program);
    kernel.debug_vm(0);
    kernel.platform.answers.push_back((Command::Kill, |_| {}));
    kernel.run(false);

    assert_eq!(kernel.statuses, [Some(KILLED_STATUS), Some(3)]);
    let kinds: Vec<_> = kernel.platform.events.iter().map(|e| (e.vm, e.event_kind().unwrap())).collect();
    assert_eq!(kinds, [(0, EventKind::Entry)], "no exit stop after a kill");
}

#[test]
fn the_debugger_interrupts_the_debugged_vm_running_or_not() {
    use denali_abi::debug::EventKind;
    const YIELD: u64 = Hypercall::Yield as u64;
    let program = move |id: u32| -> Program {
        let mut step = 0;
        Box::new(move |_: &mut Guest, context| {
            step += 1;
            match (id, step) {
                // VM 0 gives the CPU to VM 1, which has it when gdb's
                // Ctrl-C comes; later VM 0 has it when the next comes.
                (0, 1) => {
                    context.rax = YIELD;
                    Trap::Hypercall
                }
                (_, 1) | (0, 2) => Trap::DebugRequest,
                _ => {
                    (context.rax, context.rdi, context.rsi) = (EXIT, 5 + u64::from(id), 0);
                    Trap::Hypercall
                }
            }
        })
    };
    let mut kernel = kernel(16, 64, 2, program);
    kernel.debug_vm(0);
    kernel.run(false);

    assert_eq!(kernel.statuses, [Some(5), Some(6)], "both ran on after the debugger let them");
    let events: Vec<_> = kernel.platform.events.iter().map(|e| (e.vm, e.event_kind().unwrap())).collect();
    let interrupted = (0, EventKind::Interrupted);
    assert_eq!(events, [(0, EventKind::Entry), interrupted, interrupted, (0, EventKind::Exited)]);
    let (waiting, running) = (&kernel.platform.events[1], &kernel.platform.events[2]);
    assert_eq!(waiting.regs.rax, 0, "stopped where its yield returned");
    assert_ne!(running.regs.rip, 0);
}

#[test]
fn a_debug_request_that_comes_while_the_kernel_waits_stops_the_waiting_vm() {
    use denali_abi::debug::EventKind;
    let request = Rc::new(Cell::new(false));
    let monitor = request.clone();
    let program = move |id: u32| -> Program {
        let monitor = monitor.clone();
        Box::new(move |_: &mut Guest, context| {
            if id == 1 {
                // Stands in for the monitor: the request comes between turns.
                monitor.set(true);
                (context.rdi, context.rsi) = (6, 0);
            }
            context.rax = if id == 0 { IDLE } else { EXIT };
            Trap::Hypercall
        })
    };
    let mut kernel = kernel(16, 64, 2, program);
    kernel.platform.debug_request = request;
    kernel.debug_vm(0);
    kernel.run(false);

    let events: Vec<_> = kernel.platform.events.iter().map(|e| (e.vm, e.event_kind().unwrap())).collect();
    assert_eq!(events, [(0, EventKind::Entry), (0, EventKind::Interrupted)], "stopped while it waited");
    assert_eq!(kernel.statuses[1], Some(6));
}

/// A VM that sleeps 1 ms (an alarm, then idle until it fires) `times` times
/// and notes by how many ns each sleep overshot, reading the clock as a VM
/// does.
fn napper(tsc: Rc<Cell<u64>>, times: usize, overshoots: Rc<RefCell<Vec<u64>>>) -> Program {
    let mut due = None;
    calls(move |guest, _| {
        let info = guest.info();
        let now = InfoPage::tsc_to_ns(tsc.get(), info.tsc_base, info.tsc_mult);
        match due {
            Some(due) if now < due => return Some((IDLE, 0, 0, 0)),
            Some(due) => overshoots.borrow_mut().push(now - due),
            None => {}
        }
        due = Some(now + 1_000_000);
        (overshoots.borrow().len() < times).then_some((ALARM, now + 1_000_000, 0, 0))
    })
}

#[test]
fn an_alarm_takes_the_cpu_from_a_spinning_vm_and_its_vm_runs_next() {
    let sim = Sim::new();
    let overshoots = Rc::new(RefCell::new(Vec::new()));
    let napper = napper(sim.tsc(), 50, Rc::clone(&overshoots));
    let mut napper = Some(napper);
    // VMs 0 and 1 never give up the CPU; VM 2 sleeps.
    let mut kernel = kernel_on(sim, 16, 64, 3, |id| match id {
        2 => napper.take().unwrap(),
        _ => Box::new(|_: &mut Guest, _: &mut _| Trap::Spin),
    });
    kernel.set_time_limit_ms(2_000);
    assert_eq!(kernel.run(false), 124, "the spinners run until the time limit");
    let overshoots = overshoots.borrow();
    assert_eq!(overshoots.len(), 50, "the napper slept 50 times");
    // The kernel's own path costs a few dozen reads of the simulated TSC
    // (1 us each); waiting for a spinner's slice would cost milliseconds.
    let worst = overshoots.iter().max().unwrap();
    assert!(*worst < 200_000, "a 1 ms sleep overshot by {worst} ns: {overshoots:?}");
    // And the spinners shared the CPU.
    let (a, b) = (kernel.stats[0].cpu_ticks, kernel.stats[1].cpu_ticks);
    assert!(a.abs_diff(b) < a.max(b) / 10, "spinners ran {a} and {b} ticks");
}

#[test]
fn a_time_limit_that_passes_while_vms_are_made_stops_the_making_and_the_run_reports() {
    // A slow machine: every look at the clock costs a millisecond, so a
    // 30 ms limit passes after a few VMs of 200 are made.
    let vms = 200;
    let mut kernel = kernel_with_time_limit(Sim::with_ticks_per_look(1_000_000), 30, vms, |_| {
        Box::new(|_: &mut Guest, _: &mut _| Trap::Spin)
    });
    let made = kernel.boot.vms;
    assert!(made > 0 && made < u64::from(vms), "{made} of {vms} VMs were made before the limit");
    assert_eq!(kernel.statuses.len(), vms as usize, "every id is accounted for");
    assert_eq!(kernel.run(false), 124, "the run ends as timed out");
    assert!(kernel.statuses.iter().all(|s| *s == Some(124)), "made or not, each VM timed out: {:?}", kernel.statuses);
}

#[test]
fn a_long_boot_prints_its_progress_where_no_monitor_shows_it() {
    // A very slow machine: each look at the clock costs a second.
    let vms = 41;
    let mut kernel = kernel_on(Sim::with_ticks_per_look(1_000_000_000), 16, 64, vms, |_| calls(|_, _| None));
    assert_eq!(kernel.run(false), 0);
    let output = String::from_utf8(crate::console::take_host_output()).unwrap();
    for (doing, done) in [("making", "made"), ("starting", "started")] {
        let lines: Vec<&str> = output.lines().filter(|l| l.contains(&format!(" of 41 {done} ("))).collect();
        assert!(lines.len() >= 2, "{done}: a line every 10 s of a boot this long:\n{output}");
        let start = format!("denali: {doing} VMs: ");
        assert!(lines.iter().all(|l| l.starts_with(&start) && l.ends_with("MiB of memory in use")), "{lines:?}");
    }
    assert!(output.contains("denali: all 41 VMs have started"), "{output}");
}

/// Where frame `n` of a batch lies in a VM's heap, and where the list is.
/// A VM of 16 MiB that naps, then writes a byte at 4 MiB, where its image
/// has no page table (the page needs a frame and a table); it gives up
/// (exits 1) if the write faults a hundred times.
fn touches_a_new_table(_id: u32) -> Program {
    let (mut step, mut faults) = (0, 0);
    Box::new(move |guest: &mut Guest, context| {
        let call = match step {
            0 => (ALARM, 50_000_000, 0),
            1 => (IDLE, 0, 0),
            _ => match guest.write(0x40_0000, &[1]) {
                Err(_) if faults == 100 => (EXIT, 1, 0),
                Err(fault) => {
                    faults += 1;
                    return fault;
                }
                Ok(()) => (EXIT, 0, 0),
            },
        };
        step += 1;
        (context.rax, context.rdi, context.rsi) = call;
        Trap::Hypercall
    })
}

#[test]
fn a_first_touch_that_memory_cannot_meet_stops_the_vm_instead_of_faulting_for_ever() {
    // One frame is free and nothing can be swapped out; the page needs two
    // (itself and a page table).
    let mut kernel = kernel_with_swap_of(&image_of(16 << 20), 16, 1024, 1, touches_a_new_table);
    kernel.run_slice(0);
    let tsc = kernel.platform.tsc();
    tsc.set(tsc.get() + 1_000_000_000);
    kernel.fire_alarms();
    let held: Vec<u64> = (1..kernel.frames.available()).map(|_| kernel.frames.alloc().unwrap()).collect();
    kernel.run_slice(0);
    held.into_iter().for_each(|frame| kernel.frames.free(frame));
    assert_eq!(kernel.statuses[0], Some(crate::vm::fault_status(14)), "it faulted on with no frame to come");
}

/// Heap pages VM 1 of [`batch_into_fresh_pages`] fills before it sleeps.
const FILLED_PAGES: usize = 300;

/// VM 1 fills [`FILLED_PAGES`] heap pages and sleeps for an hour. VM 0
/// writes the headers of [`NET_BATCH_MAX`] full frames (to a MAC nobody
/// has), each in the last bytes of a page, so that the rest of each frame
/// lies in a page it never touched, and naps; woken, it sends them in one
/// batch and notes what the call returned.
fn batch_into_fresh_pages(id: u32, returned: Rc<Cell<Option<u64>>>) -> Program {
    const SLOTS: u64 = HEAP + 0x10_0000;
    const HEADER: usize = 96;
    let slot = |n: u64| SLOTS + n * 0x2000 + 0x1000 - HEADER as u64;
    let mut step = 0;
    Box::new(move |guest: &mut Guest, context| {
        let call = match (id, step) {
            (1, 0) => {
                if let Err(fault) = guest.write(HEAP, &vec![1u8; FILLED_PAGES * 4096]) {
                    return fault;
                }
                (ALARM, 3_600_000_000_000, 0)
            }
            (0, 0) => {
                let mut list = Vec::new();
                for n in 0..NET_BATCH_MAX as u64 {
                    if let Err(fault) = guest.write(slot(n), &frame(0, 7)[..HEADER]) {
                        return fault;
                    }
                    list.extend(FrameRef { addr: slot(n), len: FRAME_MAX as u64 }.to_bytes());
                }
                if let Err(fault) = guest.write(HEAP, &list) {
                    return fault;
                }
                (ALARM, 50_000_000, 0)
            }
            (_, 1) => (IDLE, 0, 0),
            (0, 2) => (SEND_BATCH, HEAP, NET_BATCH_MAX as u64),
            (0, 3) => {
                returned.set(Some(context.rax));
                (EXIT, 0, 0)
            }
            _ => (IDLE, 0, 0),
        };
        step += 1;
        (context.rax, context.rdi, context.rsi) = call;
        Trap::Hypercall
    })
}

#[test]
fn a_batch_into_pages_never_touched_gets_its_memory_when_memory_is_short() {
    // The kernel frees frames before a hypercall as the largest call may
    // need them: a batch touching a page of its own for each of its frames
    // needs far more than a disk transfer's 64 KiB.
    let returned = Rc::new(Cell::new(None));
    let seen = Rc::clone(&returned);
    let mut kernel = kernel_with_swap(16, 1024, 2, move |id| batch_into_fresh_pages(id, Rc::clone(&seen)));
    kernel.run_slice(1);
    kernel.run_slice(0);
    let tsc = kernel.platform.tsc();
    tsc.set(tsc.get() + 1_000_000_000);
    kernel.fire_alarms();
    // Fewer frames free than the batch touches; only VM 1, asleep, can
    // give any back.
    let short = NET_BATCH_MAX as u64 - 2;
    let held: Vec<u64> = (short..kernel.frames.available()).map(|_| kernel.frames.alloc().unwrap()).collect();
    kernel.run_slice(0);
    held.into_iter().for_each(|frame| kernel.frames.free(frame));
    assert_eq!(returned.get(), Some(NET_BATCH_MAX as u64), "every frame went: {:?}", kernel.statuses);
    assert_eq!(kernel.swap_counters.swap_outs, 1, "the sleeping VM made room: {:?}", kernel.swap_counters);
}

fn batch_slot(n: u64) -> u64 {
    HEAP + n * 0x800
}
const BATCH_LIST: u64 = HEAP + 0x4000;

#[test]
fn a_batch_of_frames_goes_in_one_call_each_way_and_stops_at_a_bad_frame() {
    let lengths = [60usize, FRAME_MAX, 100];
    let received = Rc::new(RefCell::new(None));
    let seen = Rc::clone(&received);
    let program = move |id: u32| -> Program {
        let seen = Rc::clone(&seen);
        let (mut asked, mut tries) = (false, 0);
        Box::new(move |guest: &mut Guest, context| {
            if id == 0 {
                if asked {
                    seen.borrow_mut().get_or_insert((Vec::new(), Vec::new())).0.push(context.rax);
                    (context.rax, context.rdi) = (EXIT, 0);
                    return Trap::Hypercall;
                }
                // Three frames for VM 1, then one too long: three go.
                let mut list = Vec::new();
                for (n, &len) in lengths.iter().enumerate() {
                    let mut f = frame(0, 1);
                    f.truncate(len);
                    f[16..18].copy_from_slice(&(len as u16 - 14).to_be_bytes());
                    f[len - 1] = n as u8;
                    if let Err(fault) = guest.write(batch_slot(n as u64), &f) {
                        return fault;
                    }
                    list.extend(FrameRef { addr: batch_slot(n as u64), len: len as u64 }.to_bytes());
                }
                list.extend(FrameRef { addr: batch_slot(0), len: FRAME_MAX as u64 + 1 }.to_bytes());
                if let Err(fault) = guest.write(BATCH_LIST, &list) {
                    return fault;
                }
                asked = true;
                (context.rax, context.rdi, context.rsi) = (SEND_BATCH, BATCH_LIST, 4);
                return Trap::Hypercall;
            }
            if asked && context.rax as i64 > 0 {
                let mut frames = Vec::new();
                for n in 0..context.rax {
                    let mut raw = [0u8; FrameRef::SIZE];
                    guest.read(BATCH_LIST + n * FrameRef::SIZE as u64, &mut raw).unwrap();
                    let entry = FrameRef::from_bytes(raw);
                    let mut bytes = vec![0u8; entry.len as usize];
                    guest.read(entry.addr, &mut bytes).unwrap();
                    frames.push(bytes);
                }
                seen.borrow_mut().get_or_insert((Vec::new(), Vec::new())).1 = frames;
                (context.rax, context.rdi) = (EXIT, 0);
                return Trap::Hypercall;
            }
            // Room for four frames of 2 KiB; nothing yet: let VM 0 run.
            let mut list = Vec::new();
            for n in 0..4 {
                list.extend(FrameRef { addr: batch_slot(n), len: 2048 }.to_bytes());
            }
            if let Err(fault) = guest.write(BATCH_LIST, &list) {
                return fault;
            }
            // Ask, and while nothing has come, let VM 0 run and ask again
            // (a while: then it gives up and fails the run).
            let receiving = asked && context.rax == 0;
            asked = true;
            tries += 1;
            if tries > 1000 {
                (context.rax, context.rdi) = (EXIT, 1);
                return Trap::Hypercall;
            }
            if receiving {
                (context.rax, context.rdi, context.rsi) = (RECV_BATCH, BATCH_LIST, 4);
            } else {
                context.rax = Hypercall::Yield as u64;
            }
            Trap::Hypercall
        })
    };
    let mut kernel = kernel(16, 64, 2, program);
    assert_eq!(kernel.run(false), 0);
    let (sent, frames) = received.borrow().clone().expect("both VMs reported");
    assert_eq!(sent, vec![3], "three frames went before the one too long");
    assert_eq!(frames.len(), 3, "VM 1 took all three in one call");
    for (n, (got, &len)) in frames.iter().zip(&lengths).enumerate() {
        assert_eq!(got.len(), len);
        assert_eq!(got[len - 1], n as u8, "frame {n} in its own buffer, in order");
    }
    assert_eq!(kernel.stats[0].frames_sent, 3);
    assert_eq!(kernel.stats[1].frames_received, 3);
}

/// A NIC whose real-machine side never runs dry: it hands over frames for
/// VM 0 as fast as the kernel takes them, up to `limit`.
struct Flood {
    taken: Rc<Cell<usize>>,
    limit: usize,
    /// The last `interrupt_on_receive` the kernel asked for.
    interrupts: Rc<Cell<Option<bool>>>,
}

impl crate::platform::NetDevice for Flood {
    fn polled(&self) -> bool {
        true
    }
    fn send(&mut self, _frame: &[u8]) {}
    fn acknowledge(&mut self) {}
    fn receive_into(&mut self, out: &mut [u8; FRAME_MAX]) -> Option<usize> {
        (self.taken.get() < self.limit).then(|| {
            self.taken.set(self.taken.get() + 1);
            out.copy_from_slice(&frame(0, 0));
            // From a machine beyond the uplink.
            out[6..12].copy_from_slice(&[0x52, 0x54, 0, 1, 2, 3]);
            out[26..30].copy_from_slice(&[10, 0, 2, 2]);
            FRAME_MAX
        })
    }
    fn has_received(&self) -> bool {
        self.taken.get() < self.limit
    }
    fn interrupt_on_receive(&mut self, on: bool) {
        self.interrupts.set(Some(on));
    }
    fn counters(&self) -> (u64, u64, u64) {
        (0, self.taken.get() as u64, 0)
    }
}

#[test]
fn a_flood_from_the_uplink_leaves_the_vms_the_cpu() {
    let taken = Rc::new(Cell::new(0));
    let interrupts = Rc::new(Cell::new(None));
    let seen_at_first_run = Rc::new(Cell::new(None));
    let seen = Rc::clone(&seen_at_first_run);
    let counted = Rc::clone(&taken);
    let mut kernel = kernel(16, 64, 1, move |_| {
        let (seen, counted) = (Rc::clone(&seen), Rc::clone(&counted));
        Box::new(move |_: &mut Guest, context| {
            seen.set(Some(counted.get()));
            (context.rax, context.rdi) = (EXIT, 0);
            Trap::Hypercall
        })
    });
    let flood = Flood { taken: Rc::clone(&taken), limit: 100_000, interrupts: Rc::clone(&interrupts) };
    kernel.uplink = Some(Box::new(flood));
    assert_eq!(kernel.run(false), 0);
    // Unbounded, the kernel would have taken all 100,000 frames before the
    // VM they were for ran once.
    assert_eq!(seen_at_first_run.get(), Some(super::UPLINK_BUDGET), "frames taken before the VM first ran");
    assert_eq!(interrupts.get(), Some(false), "the NIC's interrupt is off while frames wait");
    assert!(kernel.stats[0].frames_received > 0, "the flood reached its VM");
}

/// Slices a [`slow_booter`] takes to boot, and the heap pages it fills in
/// each.
const BOOT_SLICES: u64 = 8;
const PAGES_A_SLICE: u64 = 4;

/// A VM that boots over several turns, as a web VM does where the kernel
/// is emulated: each turn it fills a few more heap pages and yields. Then
/// it sleeps, and woken, checks every page and exits.
fn slow_booter(id: u32, findings: Findings) -> Program {
    let bytes = (PAGES_A_SLICE * 4096) as usize;
    let fill = move |turn: u64| vec![(id as u8) ^ (turn as u8).wrapping_mul(37); bytes];
    let mut step = 0;
    Box::new(move |guest: &mut Guest, context| {
        let call = match step {
            turn if turn < BOOT_SLICES => {
                if let Err(fault) = guest.write(HEAP + turn * bytes as u64, &fill(turn)) {
                    return fault;
                }
                (Hypercall::Yield as u64, 0, 0)
            }
            turn if turn == BOOT_SLICES => (ALARM, 1_000_000_000, 0),
            turn if turn == BOOT_SLICES + 1 => (IDLE, 0, 0),
            _ => {
                let intact = (0..BOOT_SLICES).all(|turn| {
                    let mut seen = vec![0; bytes];
                    guest.read(HEAP + turn * bytes as u64, &mut seen).is_ok() && seen == fill(turn)
                });
                findings.borrow_mut().push(if intact { "intact" } else { "memory changed" });
                (EXIT, 0, 0)
            }
        };
        step += 1;
        (context.rax, context.rdi, context.rsi) = call;
        Trap::Hypercall
    })
}

#[test]
fn vms_booting_together_in_too_little_memory_start_as_memory_holds_them_and_never_push_each_other_out() {
    // 300 VMs of about 55 frames each once booted, in 16 MiB: about 70
    // fit. Started all at once they pushed each other out while booting
    // (668 of 870 swap-outs were of VMs booting).
    let vms = 300;
    let findings = Findings::default();
    let seen = findings.clone();
    let mut kernel = kernel_with_swap(16, 16384, vms, move |id| slow_booter(id, seen.clone()));
    let frames_before = kernel.frames.in_use();
    assert_eq!(kernel.run(false), 0);
    assert_eq!(findings.borrow().len(), vms as usize);
    assert!(findings.borrow().iter().all(|&found| found == "intact"));
    let counters = kernel.swap_counters;
    assert!(counters.whole_swap_outs > 0, "memory was short: sleeping VMs went out whole; {counters:?}");
    assert_eq!(counters.swap_outs, counters.whole_swap_outs, "only sleeping VMs went out: {counters:?}");
    assert_eq!(kernel.starts.booting(), (0, 0), "nothing booting, nothing reserved");
    assert_eq!(kernel.frames.in_use(), frames_before);
    let swap = kernel.swap.as_ref().expect("a swap area");
    assert_eq!(swap.free_slots(), u64::from(swap.slots()));
}

/// A VM that makes `rounds` rounds of five hypercalls, each taking one of
/// the kernel's paths: an unknown number and an `alarm` (finished on the
/// trap path), a `yield`, and an `alarm` then an `idle` that blocks until
/// it fires (both left to the run loop). Before each call it sets its
/// callee-saved registers to a pattern of the call, and after it looks
/// whether they still hold it; it exits with the number of calls after
/// which they did not.
fn register_keeper(tsc: Rc<Cell<u64>>, rounds: u64) -> Program {
    let pattern = |call: u64| core::array::from_fn::<u64, 6, _>(|r| call << 8 | r as u64);
    let mut made = 0u64;
    let mut clobbered = 0u64;
    Box::new(move |guest: &mut Guest, context| {
        let regs = |c: &crate::vm::context::UserContext| [c.rbx, c.rbp, c.r12, c.r13, c.r14, c.r15];
        if made > 0 && regs(context) != pattern(made) {
            clobbered += 1;
        }
        made += 1;
        [context.rbx, context.rbp, context.r12, context.r13, context.r14, context.r15] = pattern(made);
        let info = guest.info();
        let now = InfoPage::tsc_to_ns(tsc.get(), info.tsc_base, info.tsc_mult);
        let (number, arg) = match made % 5 {
            _ if made > rounds * 5 => (EXIT, clobbered),
            1 => (99, 0),
            2 => (ALARM, 0),
            3 => (Hypercall::Yield as u64, 0),
            4 => (ALARM, now + 100_000),
            _ => (IDLE, 0),
        };
        (context.rax, context.rdi) = (number, arg);
        Trap::Hypercall
    })
}

#[test]
fn every_hypercall_is_counted_once_and_keeps_the_callee_saved_registers_whichever_path_it_takes() {
    const ROUNDS: u64 = 200;
    let sim = Sim::new();
    let tsc = sim.tsc();
    let mut kernel = kernel_on(sim, 16, 64, 2, |_| register_keeper(Rc::clone(&tsc), ROUNDS));
    assert_eq!(kernel.run(false), 0, "no VM found its callee-saved registers changed by a hypercall");
    for id in 0..2 {
        let stats = &kernel.stats[id];
        assert_eq!(stats.hypercalls, ROUNDS * 5 + 1, "VM {id}: each call counted once, the exit included");
        assert!(stats.wakeups >= ROUNDS / 2, "VM {id} blocked and was woken ({} times)", stats.wakeups);
    }
}
