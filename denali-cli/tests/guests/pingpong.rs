#![no_std]
#![no_main]
//! VM 0 sends numbered frames to VM 1, which sends each back: a round trip
//! over the kernel's virtual switch, never leaving the isolation kernel.

use denali::hypercall::Error;
use denali::net::frame::{self, mac_of};
use denali::prelude::*;
use denali::time::Instant;

const ROUNDS: u32 = 100;

fn build(dst: [u8; 6], seq: u32) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&denali::vm::mac());
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f[14..18].copy_from_slice(&seq.to_le_bytes());
    f
}

#[denali::main]
fn main() {
    let mut buf = [0u8; frame::FRAME_MAX];
    if denali::vm::id() == 1 {
        for _ in 0..ROUNDS {
            let n = frame::recv(&mut buf).expect("a frame");
            let seq = u32::from_le_bytes(buf[14..18].try_into().unwrap());
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
    println!("nobody there: {:?}", frame::send(&build([0x02, 0, 0, 0, 0, 9], 0)));
    println!("nothing yet: {:?}", frame::try_recv(&mut buf).err() == Some(Error::WouldBlock));
    let start = Instant::now();
    for seq in 0..ROUNDS {
        frame::send(&build(mac_of(1), seq)).expect("send");
        frame::recv(&mut buf).expect("reply");
        let got = u32::from_le_bytes(buf[14..18].try_into().unwrap());
        assert_eq!(got, seq + 1_000_000, "echo of frame {seq}");
    }
    let us = start.elapsed().as_micros() as u64 / u64::from(ROUNDS);
    println!("pinger: {ROUNDS} round trips, {us} us each");
}
