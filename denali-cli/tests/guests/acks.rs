#![no_std]
#![no_main]
//! VM 0 answers each 32-byte request with 2 KiB, two segments, on one
//! connection; VM 1 makes 100 requests, and lets each answer arrive whole
//! before it reads it. Two segments oblige the client's stack to
//! acknowledge at once (RFC 9293's "at least every second full-sized
//! segment"), and the request it sends next carries that ACK, so a request
//! costs the client one frame. Each side prints the frames it sent.

use denali::io::{Read, Write};
use denali::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use denali::prelude::*;

const ROUNDS: u64 = 100;
const REQUEST: usize = 32;
const ANSWER: usize = 2048;

fn serve() {
    let mut listener = TcpListener::bind("0.0.0.0:80").expect("bind");
    let (mut stream, _) = listener.accept().expect("accept");
    // As a web server does: the answer's last, short segment goes without
    // waiting for the first one's ACK.
    stream.set_nodelay(true).expect("nodelay");
    let (mut request, answer) = ([0u8; REQUEST], [7u8; ANSWER]);
    let before = denali::net::frames_sent();
    for _ in 0..ROUNDS {
        stream.read_exact(&mut request).expect("a request");
        stream.write_all(&answer).expect("the answer");
    }
    println!("server: {ROUNDS} answers in {} frames", denali::net::frames_sent() - before);
    // The client's goodbye: it has every answer.
    assert_eq!(stream.read(&mut request).expect("the end"), 0);
}

fn client() {
    let me = denali::net::local_ip().expect("an address");
    let server = Ipv4Addr::from(u32::from(me) - 1);
    let mut stream = TcpStream::connect(SocketAddrV4::new(server, 80)).expect("connect");
    let (request, mut answer) = ([1u8; REQUEST], [0u8; ANSWER]);
    let before = denali::net::frames_sent();
    for _ in 0..ROUNDS {
        stream.write_all(&request).expect("a request");
        // Both segments are in when the read takes them (on a slow kernel
        // they can be further apart than smoltcp's 10 ms delayed ACK).
        denali::time::sleep(core::time::Duration::from_millis(30));
        stream.read_exact(&mut answer).expect("the answer");
        assert!(answer.iter().all(|&b| b == 7), "the answer differs");
    }
    println!("client: {ROUNDS} requests in {} frames", denali::net::frames_sent() - before);
}

#[denali::main]
fn main() {
    if denali::vm::id() == 0 { serve() } else { client() }
}
