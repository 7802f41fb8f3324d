//! The virtual switch under hostile frames: any bytes, split into frames,
//! sent by VMs and by the wire, with VMs taking frames now and then. The
//! switch never panics, never parks more than its budget, and never lets a
//! frame out claiming an address its sender does not hold.
#![no_main]

use denali_kernel::net::{Port, Switch};
use libfuzzer_sys::fuzz_target;

const VMS: u32 = 8;
const BUDGET: u32 = 64;

fuzz_target!(|data: &[u8]| {
    let mut switch = Switch::with_budget(BUDGET).expect("a small pool");
    switch.reserve(VMS as usize).expect("room");
    for vm in 0..VMS {
        assert!(switch.attach([10, 0, 2, 15 + vm as u8], vm));
    }
    switch.has_uplink = true;
    // Each frame: a control byte (who sends, who reads), a length byte,
    // then the bytes.
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let len = (usize::from(*len) * 6).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        let from = if control & 0x80 != 0 { Port::Uplink } else { Port::Vm(u32::from(control & 7)) };
        let mut sent = Vec::new();
        if let Ok(_delivered) = switch.send(from, frame, &mut |out| sent.push(out.to_vec())) {
            // What leaves through the uplink from a VM carries its MAC.
            if let Port::Vm(vm) = from {
                for out in &sent {
                    assert_eq!(out[6..12], denali_abi::net::mac_of(vm));
                }
            }
        }
        assert!(switch.parking.parked() <= BUDGET);
        if control & 0x40 != 0 {
            let reader = u32::from(control >> 3 & 7);
            let _ = switch.parking.pop(reader, |f| f.len());
        }
    }
});
