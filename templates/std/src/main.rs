//! An ordinary Rust program: `fn main()` and the standard library, nothing
//! Denali-specific. `cargo denali build` sees that the crate does not opt
//! out of std and builds it with std over the Denali library OS.
//!
//! A small web server: `std::net` for the socket, a thread per connection.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let started = Instant::now();
    let name = std::env::var("NAME").unwrap_or_else(|_| String::from("world"));
    let listener = TcpListener::bind("0.0.0.0:80")?;
    println!("api: listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        let greeting = format!("Hello, {name}, from std in a Denali VM (up {:?})\n", started.elapsed());
        thread::spawn(move || {
            if let Err(e) = answer(stream, &greeting) {
                eprintln!("api: {e}");
            }
        });
    }
    Ok(())
}

/// Reads one request's head and answers it with `body`.
fn answer(stream: TcpStream, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    (&stream).write_all(head.as_bytes())?;
    (&stream).write_all(body.as_bytes())
}
