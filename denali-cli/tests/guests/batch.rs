#![no_std]
#![no_main]
//! Frames in batches: VM 0 sends VM 1 rounds of eight numbered frames of
//! different lengths in one `net_send_batch`; VM 1 takes them with
//! `net_recv_batch` and sends each round back the same way. VM 0 first
//! tries the batch calls with arguments no VM should get past.

extern crate alloc;

use alloc::vec::Vec;
use denali::hypercall::{Hypercall, call2};
use denali::net::frame::{self, FRAME_MAX, mac_of};
use denali::prelude::*;

const ROUNDS: u32 = 20;
const BATCH: usize = 8;
/// What VM 1 adds to a sequence number it sends back.
const ANSWER: u32 = 1_000_000;

/// An IPv4 packet of the experimental protocol 253, `len` bytes long, from
/// this VM to VM `to`, with `seq` as its payload.
fn build(to: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut f = alloc::vec![0u8; len];
    f[0..6].copy_from_slice(&mac_of(to));
    f[6..12].copy_from_slice(&denali::vm::mac());
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 253;
    f[26..30].copy_from_slice(&denali::net::local_ip().unwrap().octets());
    f[30..34].copy_from_slice(&[10, 0, 2, 15 + to as u8]);
    f[34..38].copy_from_slice(&seq.to_le_bytes());
    f
}

/// Takes `want` frames, in as many batch calls as it needs; each one's
/// sequence number and length, in the order they came.
fn take(want: usize) -> Vec<(u32, usize)> {
    let mut bufs = [[0u8; FRAME_MAX]; BATCH];
    let mut got = Vec::new();
    while got.len() < want {
        let mut lens = [0usize; BATCH];
        let mut slices: Vec<&mut [u8]> = bufs.iter_mut().take(want - got.len()).map(|b| &mut b[..]).collect();
        let n = frame::recv_batch(&mut slices, &mut lens).expect("a batch of frames");
        for (buf, &len) in bufs.iter().zip(&lens[..n]) {
            got.push((u32::from_le_bytes(buf[34..38].try_into().unwrap()), len));
        }
    }
    got
}

/// Sends `frames` in one batch call.
fn send_all(frames: &[Vec<u8>]) {
    let list: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    assert_eq!(frame::send_batch(&list), Ok(frames.len()), "the switch takes the whole batch");
}

/// The length of frame `i` of a round: 60 to 1,460 bytes.
fn length(i: usize) -> usize {
    60 + 200 * i
}

#[denali::main]
fn main() {
    if denali::vm::id() == 1 {
        let first = take(2);
        println!("took {first:?}");
        for _ in 0..ROUNDS {
            let round = take(BATCH);
            let answers: Vec<Vec<u8>> = round.iter().map(|&(seq, len)| build(0, seq + ANSWER, len)).collect();
            send_all(&answers);
        }
        return;
    }
    let list = [0u64; 4];
    // SAFETY: the kernel only reads the list, or refuses it.
    let bad = |at: u64, count: u64| unsafe { call2(Hypercall::NetSendBatch, at, count) };
    println!("no entries: {:?}", bad(list.as_ptr() as u64, 0));
    println!("33 entries: {:?}", bad(list.as_ptr() as u64, 33));
    println!("kernel list: {:?}", bad(0xffff_8000_0000_0000, 1));
    // A forged frame third: the two before it go, it and the one after do not.
    let (first, second) = (build(1, 1, 60), build(1, 2, 60));
    let mut forged = build(1, 3, 60);
    forged[6..12].copy_from_slice(&mac_of(1));
    println!("forged third: {:?}", frame::send_batch(&[&first, &second, &forged, &first]));
    for round in 0..ROUNDS {
        let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| build(1, round * 100 + i as u32, length(i))).collect();
        send_all(&frames);
        let back = take(BATCH);
        let expected: Vec<(u32, usize)> = (0..BATCH).map(|i| (round * 100 + i as u32 + ANSWER, length(i))).collect();
        assert_eq!(back, expected, "round {round} came back whole and in order");
    }
    println!("batches: {ROUNDS} rounds of {BATCH} frames each way, whole and in order");
}
