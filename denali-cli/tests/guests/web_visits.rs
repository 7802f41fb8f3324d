#![no_std]
#![no_main]
//! A web server that serves the http template's 2 KB page (naming its VM)
//! for as many connections as its first argument says (default 2), then
//! exits: a run of many of them ends by itself once every VM was visited,
//! so the kernel's report on swapping can be read. It holds as many KiB of
//! its own pattern as its second argument says (default 0), and checks
//! them at every visit: its memory must come back intact from the disk.

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use denali::io::{Read, Write};
use denali::net::TcpListener;
use denali::prelude::*;
use denali::time::{Duration, sleep};

/// The template's page: 2,048 bytes that name this VM.
fn page() -> String {
    let mut body = format!("<!doctype html>\n<html><body>\n<h1>Hello from Denali VM {}</h1>\n<p>", denali::vm::id());
    let tail = "</p>\n</body></html>\n";
    while body.len() + tail.len() < 2048 {
        body.push('.');
    }
    body + tail
}

#[denali::main]
fn main() {
    let mut args = denali::vm::args().split_whitespace().map(|a| a.parse::<usize>().ok());
    let visits = args.next().flatten().unwrap_or(2);
    let ballast_kib = args.next().flatten().unwrap_or(0);
    let id = denali::vm::id() as usize;
    let pattern = |i: usize| (i / 4096 + i * 7 + id * 31) as u8;
    let ballast: Vec<u8> = (0..ballast_kib * 1024).map(pattern).collect();
    let page = page();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    let mut listener = TcpListener::bind("0.0.0.0:80").expect("port 80 is free in a fresh VM");
    println!("web: serving {} bytes on {}", page.len(), listener.local_addr().expect("bound"));
    let mut served = 0;
    while served < visits {
        let Ok((mut stream, _)) = listener.accept() else { continue };
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        if let Some(i) = (0..ballast.len()).find(|&i| ballast[i] != pattern(i)) {
            println!("web: byte {i} of the ballast changed");
            denali::process::exit(1);
        }
        if stream.write_all(response.as_bytes()).is_ok() {
            served += 1;
        }
    }
    // Time for the last response to be acknowledged before the VM goes.
    sleep(Duration::from_secs(1));
    println!("web: {served} visits served");
}
