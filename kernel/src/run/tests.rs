//! The kernel's core on a simulated machine (see `testing`): hostile VMs
//! against the bounds on what they can make the kernel hold, and hypercall
//! arguments no VM should get past.

use crate::testing::{Guest, Program, Trap, calls, heap_peak_of_this_thread, kernel, reset_heap_peak};
use denali_abi::hypercall::{Error, FRAME_MAX, Hypercall};
use denali_abi::net::mac_of;

const EXIT: u64 = Hypercall::Exit as u64;
const ALARM: u64 = Hypercall::Alarm as u64;
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
    // Stopped anywhere else, it is saved.
    kernel.state_owner = Some(1);
    kernel.save_user_state();
    assert_eq!(kernel.platform.saves, 1);
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
