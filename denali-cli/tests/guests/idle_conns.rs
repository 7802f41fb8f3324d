#![no_std]
#![no_main]
//! A frame wakes only the thread whose socket it changes. VM 0 serves TCP
//! echo on port 7 with a thread per connection; VM 1 opens IDLE
//! connections it never uses, then makes ROUNDS echo round trips on one
//! more. VM 0 counts its thread switches during the round trips: the idle
//! connections' threads (and the accepting one) must sleep through them.

extern crate alloc;

use denali::io::{Read, Write};
use denali::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use denali::prelude::*;

const IDLE: usize = 40;
const ROUNDS: u64 = 200;

fn serve() {
    let mut listener = TcpListener::bind("0.0.0.0:7").expect("bind tcp");
    for accepted in 0..=IDLE {
        let (mut stream, _) = listener.accept().expect("accept");
        let measured = accepted == IDLE;
        let echo = denali::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let before = denali::thread::switches();
            let mut rounds = 0;
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                stream.write_all(&buf[..n]).expect("write");
                rounds += 1;
            }
            if measured {
                let switches = denali::thread::switches() - before;
                println!("server: {rounds} round trips, {switches} thread switches");
            }
        });
        if measured {
            echo.join();
        }
    }
}

fn client() {
    let me = denali::net::local_ip().expect("an address");
    let server = SocketAddrV4::new(Ipv4Addr::from(u32::from(me) - 1), 7);
    let idle: alloc::vec::Vec<TcpStream> = (0..IDLE).map(|_| TcpStream::connect(server).expect("connect")).collect();
    let mut stream = TcpStream::connect(server).expect("connect");
    stream.set_nodelay(true).expect("a connected socket");
    let mut buf = [0u8; 64];
    for round in 0..ROUNDS {
        buf.fill(round as u8);
        stream.write_all(&buf).expect("send");
        let mut got = 0;
        while got < buf.len() {
            let n = stream.read(&mut buf[got..]).expect("receive");
            assert!(n > 0, "early end of stream");
            got += n;
        }
        assert!(buf.iter().all(|&b| b == round as u8), "echo differs");
    }
    stream.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(stream.read(&mut buf).expect("end"), 0);
    println!("client: {ROUNDS} round trips with {} idle connections", idle.len());
}

#[denali::main]
fn main() {
    if denali::vm::id() == 0 { serve() } else { client() }
}
