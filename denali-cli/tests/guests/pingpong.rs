#![no_std]
#![no_main]
//! VM 0 sends numbered frames to VM 1, which sends each back: a round trip
//! over the kernel's virtual switch, never leaving the isolation kernel.

use denali::hypercall::Error;
use denali::net::frame::{self, mac_of};
use denali::prelude::*;
use denali::time::Instant;

const ROUNDS: u32 = 100;

/// An IPv4 packet of the experimental protocol 253 from this VM's own
/// address (the switch carries nothing else) to VM `to`'s, with `seq` as
/// its payload.
fn build(dst: [u8; 6], seq: u32) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&denali::vm::mac());
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45; // IPv4, 20-byte header
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[22] = 64; // TTL
    f[23] = 253; // experimental protocol
    f[26..30].copy_from_slice(&denali::net::local_ip().unwrap().octets());
    f[30..34].copy_from_slice(&[10, 0, 2, 15 + (1 - denali::vm::id()) as u8]);
    f[34..38].copy_from_slice(&seq.to_le_bytes());
    f
}

#[denali::main]
fn main() {
    let mut buf = [0u8; frame::FRAME_MAX];
    if denali::vm::id() == 1 {
        for _ in 0..ROUNDS {
            let n = frame::recv(&mut buf).expect("a frame");
            let seq = u32::from_le_bytes(buf[34..38].try_into().unwrap());
            let src: [u8; 6] = buf[6..12].try_into().unwrap();
            assert_eq!(n, 64);
            frame::send(&build(src, seq + 1_000_000)).expect("echo");
        }
        return;
    }
    // A forged source address is refused; a frame for no VM is dropped.
    let mut forged = build(mac_of(1), 0);
    forged[6..12].copy_from_slice(&mac_of(1));
    println!("forged source: {:?}", frame::send(&forged));
    let mut forged_ip = build(mac_of(1), 0);
    forged_ip[26..30].copy_from_slice(&[10, 0, 2, 99]);
    println!("forged ip source: {:?}", frame::send(&forged_ip));
    let mut not_ip = build(mac_of(1), 0);
    not_ip[12..14].copy_from_slice(&[0x88, 0xb5]);
    println!("not ip: {:?}", frame::send(&not_ip));
    println!("nobody there: {:?}", frame::send(&build([0x02, 0, 0, 0, 0, 9], 0)));
    println!("nothing yet: {:?}", frame::try_recv(&mut buf).err() == Some(Error::WouldBlock));
    let start = Instant::now();
    for seq in 0..ROUNDS {
        frame::send(&build(mac_of(1), seq)).expect("send");
        frame::recv(&mut buf).expect("reply");
        let got = u32::from_le_bytes(buf[34..38].try_into().unwrap());
        assert_eq!(got, seq + 1_000_000, "echo of frame {seq}");
    }
    let us = start.elapsed().as_micros() as u64 / u64::from(ROUNDS);
    println!("pinger: {ROUNDS} round trips, {us} us each");
}
