#![no_std]
#![no_main]
//! A web server: a 2 KB page on port 80, HTTP/1.1 with keep-alive, one
//! green thread per connection.
//!
//! Run it with `cargo denali run -p 8080:80`, then `curl http://127.0.0.1:8080/`.

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use denali::io::{Read, Write};
use denali::net::{TcpListener, TcpStream};
use denali::prelude::*;

/// Size of the page's body.
const PAGE_SIZE: usize = 2048;
/// Longest request head accepted.
const HEAD_MAX: usize = 8 * 1024;

fn page() -> String {
    let mut body = format!(
        "<!doctype html>\n<html><head><title>Denali</title></head><body>\n<h1>Hello from Denali VM {}</h1>\n<p>",
        denali::vm::id()
    );
    let tail = "</p>\n</body></html>\n";
    while body.len() + tail.len() < PAGE_SIZE {
        body.push_str(&"isolation kernel "[..(PAGE_SIZE - tail.len() - body.len()).min(17)]);
    }
    body.push_str(tail);
    body
}

/// Serves requests on one connection until the client closes it or asks
/// to close.
fn serve(mut stream: TcpStream, page: &[u8]) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        // Read one request head (requests have no body here).
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > HEAD_MAX {
                let _ = stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n");
                return;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let http10 = head.lines().next().is_some_and(|l| l.ends_with("http/1.0"));
        let close = head.contains("connection: close") || (http10 && !head.contains("connection: keep-alive"));
        let found = head.starts_with("get / ") || head.starts_with("get /index.html ");
        let (status, body): (&str, &[u8]) = if found { ("200 OK", page) } else { ("404 Not Found", b"not found\n") };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        let mut out = response.into_bytes();
        out.extend_from_slice(body);
        if stream.write_all(&out).is_err() || close {
            return;
        }
        buf.drain(..end);
    }
}

/// Every this many connections the server says what it holds, so a leak
/// would show.
const REPORT_EVERY: u64 = 1000;

#[denali::main]
fn main() {
    let page: &'static [u8] = page().leak().as_bytes();
    let mut listener = TcpListener::bind("0.0.0.0:80").expect("port 80 is free in a fresh VM");
    println!("http: serving {} bytes on {}", page.len(), listener.local_addr().expect("bound"));
    let mut accepted: u64 = 0;
    loop {
        match listener.accept() {
            Ok((stream, _)) => drop(denali::thread::spawn(move || serve(stream, page))),
            Err(e) => println!("http: accept failed: {e}"),
        }
        accepted += 1;
        if accepted % REPORT_EVERY == 0 {
            println!(
                "http: {accepted} connections accepted; now {} threads, {} sockets, {} KiB of heap",
                denali::thread::count(),
                denali::net::open_sockets(),
                denali::vm::heap_in_use() >> 10
            );
        }
    }
}
