#![no_std]
#![no_main]
//! Three VMs: a UDP echo server (VM 0), its client (VM 1), and an attacker
//! (VM 2) that tries to take the server's place: it tells the client, in
//! unicast ARP replies, that the server's address is at its MAC, reads
//! whatever reaches it, and relays each datagram to the server with the
//! client's address forged as the source. The switch must refuse both.

use denali::net::frame::{self, mac_of};
use denali::net::{Ipv4Addr, UdpSocket};
use denali::prelude::*;
use denali::time::{Duration, Instant, sleep};

const SERVER: [u8; 4] = [10, 0, 2, 15];
const CLIENT: [u8; 4] = [10, 0, 2, 16];
const DATAGRAMS: usize = 20;

#[denali::main]
fn main() {
    match denali::vm::id() {
        0 => server(),
        1 => client(),
        _ => attacker(),
    }
}

fn server() {
    let socket = UdpSocket::bind("0.0.0.0:9").unwrap();
    let mut buf = [0u8; 64];
    let mut from_client = 0;
    for _ in 0..DATAGRAMS {
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        if *from.ip() == Ipv4Addr::from(CLIENT) {
            from_client += 1;
        }
        socket.send_to(&buf[..n], from).unwrap();
    }
    println!("server: {DATAGRAMS} datagrams, {from_client} from the client");
}

fn client() {
    // Let the attacker start first.
    sleep(Duration::from_millis(300));
    let socket = UdpSocket::bind("0.0.0.0:5000").unwrap();
    let mut replies = 0;
    let mut buf = [0u8; 64];
    for i in 0..DATAGRAMS {
        let message = [b's', b'e', b'c', b'r', b'e', b't', b' ', b'0' + i as u8 % 10];
        socket.send_to(&message, (Ipv4Addr::from(SERVER), 9)).unwrap();
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        if *from.ip() == Ipv4Addr::from(SERVER) && buf[..n].starts_with(b"secret") {
            replies += 1;
        }
    }
    println!("client: {replies} replies from the server");
}

/// An ARP reply to the client saying the server's address is at our MAC.
fn poison() -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&mac_of(1));
    f[6..12].copy_from_slice(&denali::vm::mac());
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f[22..28].copy_from_slice(&denali::vm::mac());
    f[28..32].copy_from_slice(&SERVER);
    f[32..38].copy_from_slice(&mac_of(1));
    f[38..42].copy_from_slice(&CLIENT);
    f
}

fn attacker() {
    let (mut sent, mut refused, mut intercepted, mut relayed) = (0, 0, 0, 0);
    let mut buf = [0u8; frame::FRAME_MAX];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        sent += 1;
        if frame::send(&poison()).is_err() {
            refused += 1;
        }
        while let Ok(n) = frame::try_recv(&mut buf) {
            let udp_to_server = n > 34 && buf[12..14] == [0x08, 0x00] && buf[30..34] == SERVER;
            if udp_to_server {
                intercepted += 1;
                // Relay it as if the client had sent it to the server.
                buf[0..6].copy_from_slice(&mac_of(0));
                buf[6..12].copy_from_slice(&denali::vm::mac());
                if frame::send(&buf[..n]).is_ok() {
                    relayed += 1;
                }
            }
        }
        sleep(Duration::from_millis(20));
    }
    // A datagram to the server with the client's address forged.
    let mut forged = [0u8; 42];
    forged[0..6].copy_from_slice(&mac_of(0));
    forged[6..12].copy_from_slice(&denali::vm::mac());
    forged[12..14].copy_from_slice(&[0x08, 0x00]);
    forged[14] = 0x45;
    forged[16..18].copy_from_slice(&28u16.to_be_bytes());
    forged[22..24].copy_from_slice(&[64, 17]);
    forged[26..30].copy_from_slice(&CLIENT);
    forged[30..34].copy_from_slice(&SERVER);
    println!("attacker: forged relay {:?}", frame::send(&forged));
    println!("attacker: {refused} of {sent} poisoned ARP replies refused; {intercepted} datagrams intercepted, {relayed} relayed");
}
