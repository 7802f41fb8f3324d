#![no_std]
#![no_main]
//! A hostile tenant trying to make the kernel hold memory for it. VM 0
//! sends 64 full frames to every other VM, which never reads a frame (it
//! sleeps, then exits), then sets its alarm far in the future `ALARMS`
//! times. The kernel must stay up and its heap must not grow. The others
//! sleep a minute, so that none has exited before the flood reaches it on
//! a slow host (the alarms take longer than that anyway).

use denali::hypercall::{Hypercall, call2};
use denali::net::frame::{self, mac_of};
use denali::prelude::*;
use denali::time::{Duration, sleep};

const ALARMS: u64 = 200_000;
const FRAMES_EACH: u32 = 64;

#[denali::main]
fn main() {
    if denali::vm::id() != 0 {
        sleep(Duration::from_secs(60));
        return;
    }
    let own = denali::net::local_ip().unwrap().octets();
    let mut f = [0x5au8; frame::FRAME_MAX];
    f[6..12].copy_from_slice(&denali::vm::mac());
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&1500u16.to_be_bytes());
    f[26..30].copy_from_slice(&own);
    let (mut sent, mut refused) = (0, 0);
    for vm in 1..denali::vm::count() {
        f[0..6].copy_from_slice(&mac_of(vm));
        f[30..34].copy_from_slice(&(u32::from_be_bytes(own) + vm).to_be_bytes());
        for _ in 0..FRAMES_EACH {
            match frame::send(&f) {
                Ok(()) => sent += 1,
                Err(_) => refused += 1,
            }
        }
    }
    println!("hoarder: {sent} frames sent, {refused} refused");
    for i in 0..ALARMS {
        // SAFETY: `alarm` takes no pointer.
        let _ = unsafe { call2(Hypercall::Alarm, u64::MAX - i, 0) };
    }
    // SAFETY: as above; 0 cancels the alarm.
    let _ = unsafe { call2(Hypercall::Alarm, 0, 0) };
    println!("hoarder: {ALARMS} alarms set");
}
