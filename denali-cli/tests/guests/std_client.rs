//! A std service that fetches the page the no_std `http` template serves
//! from another VM (at `SERVER`, an environment variable), with nothing but
//! `std::net`, and reports what came back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Connects to `server`, retrying while it boots.
fn connect(server: &str) -> TcpStream {
    for _ in 0..300 {
        match TcpStream::connect(server) {
            Ok(stream) => return stream,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    panic!("{server} never answered");
}

fn main() {
    let server = std::env::var("SERVER").expect("SERVER names the server to fetch from");
    let mut stream = connect(&server);
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: denali\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, then as many body bytes as it announces.
    let (head_len, body_len) = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed before a whole response");
        response.extend_from_slice(&buf[..n]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).expect("a content-length");
            break (end + 4, length.trim().parse::<usize>().unwrap());
        }
    };
    while response.len() < head_len + body_len {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed mid-body");
        response.extend_from_slice(&buf[..n]);
    }
    let status = String::from_utf8_lossy(&response[..response.iter().position(|&b| b == b'\r').unwrap()]).into_owned();
    let body = String::from_utf8_lossy(&response[head_len..]);
    println!("std client: {status}, {body_len} bytes, from VM 0: {}", body.contains("Hello from Denali VM 0"));
}
