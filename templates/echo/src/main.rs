#![no_std]
#![no_main]
//! A TCP echo server on port 7: every byte a client sends comes back. One
//! green thread per connection.
//!
//! Run it with `cargo denali run -p 7007:7`, then `nc 127.0.0.1 7007`.

use denali::io::{Read, Write};
use denali::net::{TcpListener, TcpStream};
use denali::prelude::*;

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 2048];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[denali::main]
fn main() {
    let mut listener = TcpListener::bind("0.0.0.0:7").expect("port 7 is free in a fresh VM");
    println!("echo: listening on {}", listener.local_addr().expect("bound"));
    loop {
        match listener.accept() {
            Ok((stream, _)) => drop(denali::thread::spawn(move || echo(stream))),
            Err(e) => println!("echo: accept failed: {e}"),
        }
    }
}
