#![no_std]
#![no_main]
//! A hostile neighbour: sends junk frames at VM 0 (and broadcasts) as fast
//! as it can, forever, never waiting for anything.

use denali::net::frame::{self, mac_of};
use denali::prelude::*;

#[denali::main]
fn main() {
    let mut junk = [0xa5u8; 1514];
    junk[6..12].copy_from_slice(&denali::vm::mac());
    // Well-formed enough to pass the switch: IPv4 from its own address.
    junk[12..14].copy_from_slice(&[0x08, 0x00]);
    junk[14] = 0x45;
    junk[16..18].copy_from_slice(&1500u16.to_be_bytes());
    junk[26..30].copy_from_slice(&denali::net::local_ip().unwrap().octets());
    let mut sent: u64 = 0;
    loop {
        let target = if sent % 8 == 7 { [0xff; 6] } else { mac_of(0) };
        junk[0..6].copy_from_slice(&target);
        let _ = frame::send(&junk);
        sent += 1;
        if sent % 2000 == 0 {
            println!("flood: {sent} frames sent");
        }
    }
}
