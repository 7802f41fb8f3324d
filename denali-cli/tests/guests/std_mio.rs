//! mio (tokio's I/O layer) in a Denali VM: a non-blocking listener, an
//! echo over loopback driven by `Poll`, and a `Waker` from another thread.
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Duration;

const SERVER: Token = Token(0);
const CONN: Token = Token(1);
const WAKE: Token = Token(2);

fn main() {
    let mut poll = Poll::new().unwrap();
    let mut listener = TcpListener::bind("127.0.0.1:7100".parse().unwrap()).unwrap();
    poll.registry().register(&mut listener, SERVER, Interest::READABLE).unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).unwrap());
    let client = std::thread::spawn(|| {
        let mut stream = std::net::TcpStream::connect("127.0.0.1:7100").unwrap();
        stream.write_all(b"through mio").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        stream.read_to_string(&mut back).unwrap();
        back
    });
    let mut events = Events::with_capacity(16);
    let mut conn = None;
    let mut echoed = 0;
    'serve: loop {
        poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
        if events.is_empty() {
            panic!("poll timed out");
        }
        for event in &events {
            match event.token() {
                SERVER => {
                    let (mut stream, _) = listener.accept().unwrap();
                    poll.registry().register(&mut stream, CONN, Interest::READABLE).unwrap();
                    conn = Some(stream);
                }
                CONN => {
                    let stream = conn.as_mut().unwrap();
                    let mut buf = [0u8; 64];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) => break 'serve,
                            Ok(n) => {
                                stream.write_all(&buf[..n]).unwrap();
                                echoed += n;
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => panic!("read: {e}"),
                        }
                    }
                }
                _ => {}
            }
        }
    }
    drop(conn);
    println!("mio echoed {echoed} bytes; the client got {:?}", client.join().unwrap());
    let other = Arc::clone(&waker);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        other.wake().unwrap();
    });
    poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
    println!("woken by the waker: {}", events.iter().any(|e| e.token() == WAKE));
}
