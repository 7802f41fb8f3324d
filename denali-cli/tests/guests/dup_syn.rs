#![no_std]
#![no_main]
//! A client whose SYN is sent twice, as a host's is when the SYN-ACK is
//! late: VM 0 must open one connection for it, not two (a second, with its
//! own sequence numbers, would reset the client once the handshake is done).
//!
//! VM 0 is a small web server. VM 1 first fetches a page with the libOS's
//! TCP (so a socket of VM 0 is freed and reused, as under real traffic),
//! then speaks TCP by hand in raw frames: two SYNs for one connection, the
//! handshake's ACK with a request, and it reports what came back.

extern crate alloc;

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use denali::io::{Read, Write};
use denali::net::frame::{self, mac_of};
use denali::net::{TcpListener, TcpStream};
use denali::prelude::*;
use denali::time::{Duration, Instant};

const SERVER: [u8; 4] = [10, 0, 2, 15];
const PORT: u16 = 80;
/// The hand-made connection's port (outside the libOS's ephemeral range).
const CLIENT_PORT: u16 = 40_000;
const CLIENT_ISN: u32 = 1_000;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: denali\r\nConnection: close\r\n\r\n";

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// The ones'-complement sum of `data` as 16-bit words, added to `sum`.
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame with a TCP segment from this VM to the server.
fn segment(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let me = denali::net::local_ip().unwrap().octets();
    let tcp_len = 20 + payload.len();
    let mut f = alloc::vec![0u8; 14 + 20 + tcp_len];
    f[0..6].copy_from_slice(&mac_of(0));
    f[6..12].copy_from_slice(&denali::vm::mac());
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&me);
    ip[16..20].copy_from_slice(&SERVER);
    let checksum = fold(sum16(ip, 0));
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let tcp = &mut f[34..];
    tcp[0..2].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&8192u16.to_be_bytes());
    tcp[20..].copy_from_slice(payload);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&me);
    pseudo[4..8].copy_from_slice(&SERVER);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    let checksum = fold(sum16(tcp, sum16(&pseudo, 0)));
    tcp[16..18].copy_from_slice(&checksum.to_be_bytes());
    f
}

/// A segment the server sent to the hand-made connection.
struct Reply {
    flags: u8,
    seq: u32,
    payload: Vec<u8>,
}

/// The server's segments to the hand-made connection for `wait`.
fn replies(wait: Duration) -> Vec<Reply> {
    let mut buf = [0u8; frame::FRAME_MAX];
    let mut got = Vec::new();
    let end = Instant::now() + wait;
    while Instant::now() < end {
        let Ok(n) = frame::try_recv(&mut buf) else {
            denali::time::sleep(Duration::from_millis(5));
            continue;
        };
        let f = &buf[..n];
        if n < 54 || f[12..14] != [0x08, 0x00] || f[23] != 6 || f[26..30] != SERVER {
            continue;
        }
        let tcp = &f[14 + usize::from(f[14] & 0xf) * 4..];
        if tcp[2..4] != CLIENT_PORT.to_be_bytes() {
            continue;
        }
        let ip_len = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let data = usize::from(tcp[12] >> 4) * 4;
        let payload_len = (ip_len - usize::from(f[14] & 0xf) * 4).saturating_sub(data);
        got.push(Reply {
            flags: tcp[13],
            seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            payload: tcp[data..data + payload_len].to_vec(),
        });
    }
    got
}

/// VM 0: answers the client's two requests, one connection at a time, with
/// a short page, then stays a moment for retransmissions and exits.
fn serve() {
    let mut listener = TcpListener::bind("0.0.0.0:80").expect("port 80 is free");
    let mut answered = 0;
    while answered < 2 {
        let Ok((mut stream, _)) = listener.accept() else { continue };
        let mut head = Vec::new();
        let mut chunk = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";
        if stream.write_all(reply).is_ok() {
            answered += 1;
        }
    }
    denali::time::sleep(Duration::from_secs(2));
}

/// VM 1: one ordinary fetch, then the connection whose SYN is sent twice.
fn client() {
    let mut stream = loop {
        match TcpStream::connect("10.0.2.15:80") {
            Ok(stream) => break stream,
            Err(_) => denali::time::sleep(Duration::from_millis(50)),
        }
    };
    stream.write_all(REQUEST).unwrap();
    let mut page = Vec::new();
    let mut chunk = [0u8; 512];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        page.extend_from_slice(&chunk[..n]);
    }
    drop(stream);
    println!("dup-syn: first fetch: {}", page.starts_with(b"HTTP/1.1 200 OK"));
    // Time for VM 0 to free that connection's socket.
    denali::time::sleep(Duration::from_millis(300));

    frame::send(&segment(CLIENT_ISN, 0, SYN, &[])).unwrap();
    frame::send(&segment(CLIENT_ISN, 0, SYN, &[])).unwrap();
    let answers = replies(Duration::from_millis(500));
    let syn_acks: BTreeSet<u32> =
        answers.iter().filter(|r| r.flags & (SYN | ACK) == SYN | ACK).map(|r| r.seq).collect();
    println!("dup-syn: {} distinct SYN-ACKs for one connection", syn_acks.len());
    let Some(&server_isn) = syn_acks.first() else { return };
    let request = segment(CLIENT_ISN + 1, server_isn.wrapping_add(1), ACK | PSH, REQUEST);
    frame::send(&request).unwrap();
    let answers = replies(Duration::from_millis(1_000));
    let resets = answers.iter().filter(|r| r.flags & RST != 0).count();
    let body: Vec<u8> = answers.iter().flat_map(|r| r.payload.iter().copied()).collect();
    println!("dup-syn: resets {resets}, answered: {}", body.starts_with(b"HTTP/1.1 200 OK"));
}

#[denali::main]
fn main() {
    if denali::vm::id() == 0 { serve() } else { client() }
}
