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

/// The answers, made once: the page and "not found", each kept alive or
/// closed. A request is answered with one write of one of them.
struct Answers {
    page: [Vec<u8>; 2],
    missing: [Vec<u8>; 2],
}

impl Answers {
    fn new(page: &[u8]) -> Answers {
        let both = |status, body| [answer(status, body, false), answer(status, body, true)];
        Answers { page: both("200 OK", page), missing: both("404 Not Found", b"not found\n") }
    }
}

/// A whole answer: status line, headers and body.
fn answer(status: &str, body: &[u8], close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

/// What a request head asks: whether it is for the page, and whether the
/// connection closes after the answer (asked for by `Connection: close`,
/// or HTTP/1.0 without `Connection: keep-alive`). Header names and
/// `Connection`'s options are case-insensitive; the method is not.
fn read_head(head: &[u8]) -> (bool, bool) {
    let mut lines = head.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request = lines.next().unwrap_or_default();
    let found = request.starts_with(b"GET / ") || request.starts_with(b"GET /index.html ");
    let (mut says_close, mut says_keep_alive) = (false, false);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        if !line[..colon].eq_ignore_ascii_case(b"connection") {
            continue;
        }
        for option in line[colon + 1..].split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            says_close |= option.eq_ignore_ascii_case(b"close");
            says_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    (found, says_close || (request.ends_with(b"HTTP/1.0") && !says_keep_alive))
}

/// Serves requests on one connection until the client closes it or asks
/// to close.
fn serve(mut stream: TcpStream, answers: &Answers) {
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
        let (found, close) = read_head(&buf[..end]);
        let answers = if found { &answers.page } else { &answers.missing };
        if stream.write_all(&answers[usize::from(close)]).is_err() || close {
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
    let page = page();
    let answers: &'static Answers = alloc::boxed::Box::leak(alloc::boxed::Box::new(Answers::new(page.as_bytes())));
    let mut listener = TcpListener::bind("0.0.0.0:80").expect("port 80 is free in a fresh VM");
    println!("http: serving {} bytes on {}", page.len(), listener.local_addr().expect("bound"));
    drop(page);
    let mut accepted: u64 = 0;
    loop {
        match listener.accept() {
            Ok((stream, _)) => drop(denali::thread::spawn(move || serve(stream, answers))),
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
