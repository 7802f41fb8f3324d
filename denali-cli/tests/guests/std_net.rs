//! std::net inside one VM: TCP over loopback and the VM's own address,
//! blocking and non-blocking, timeouts, shutdown, refusals, UDP, and many
//! clients at once.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

/// Echoes each connection reversed, once the client has finished writing.
fn serve(listener: TcpListener, connections: usize) -> TcpListener {
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (mut stream, _) = listener.accept().unwrap();
            thread::spawn(move || {
                let mut request = Vec::new();
                stream.read_to_end(&mut request).unwrap();
                request.reverse();
                stream.write_all(&request).unwrap();
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    listener
}

fn exchange(target: SocketAddr, message: &str) -> String {
    let mut stream = TcpStream::connect(target).unwrap();
    stream.write_all(message.as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn main() {
    // The VM's own address, as a UDP socket "connected" outward sees it.
    let probe = UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("10.0.2.2:9").unwrap();
    let own = probe.local_addr().unwrap().ip();
    println!("own address {own}");

    let listener = TcpListener::bind("0.0.0.0:7000").unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    let clients = 50;
    let server = thread::spawn(move || serve(listener, clients + 2));
    for target in ["127.0.0.1:7000".parse().unwrap(), SocketAddr::new(own, 7000)] {
        println!("echo via {target}: {}", exchange(target, "hello"));
    }
    let many: Vec<_> = (0..clients)
        .map(|i| thread::spawn(move || exchange("127.0.0.1:7000".parse().unwrap(), &format!("client {i:02}"))))
        .collect();
    let answers: Vec<String> = many.into_iter().map(|c| c.join().unwrap()).collect();
    println!("{clients} concurrent clients answered: {}", answers.iter().enumerate().all(|(i, a)| *a == format!("client {i:02}").chars().rev().collect::<String>()));
    let listener = server.join().unwrap();

    listener.set_nonblocking(true).unwrap();
    println!("nonblocking accept: {:?}", listener.accept().err().map(|e| e.kind()));
    let mut queued = TcpStream::connect(("localhost", 7000)).unwrap();
    queued.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let timed_out = queued.read(&mut [0u8; 8]).err().map(|e| e.kind());
    println!("read timeout: {timed_out:?} after >= 50 ms: {}", started.elapsed() >= Duration::from_millis(50));
    let (mut accepted, peer) = listener.accept().unwrap();
    println!("accepted the queued connection from {}: {}", peer.ip(), peer == queued.local_addr().unwrap());
    accepted.set_nonblocking(true).unwrap();
    println!("nonblocking read: {:?}", accepted.read(&mut [0u8; 8]).err().map(|e| e.kind()));
    queued.set_nodelay(true).unwrap();
    println!("nodelay {}", queued.nodelay().unwrap());
    drop(queued);
    accepted.set_nonblocking(false).unwrap();
    println!("read after the peer closed: {:?}", accepted.read(&mut [0u8; 8]).unwrap());

    println!("refused: {:?}", TcpStream::connect("127.0.0.1:7001").err().map(|e| e.kind()));
    let timeout = TcpStream::connect_timeout(&"127.0.0.1:7000".parse().unwrap(), Duration::from_secs(2));
    println!("connect_timeout: {}", timeout.is_ok());
    println!("bind in use: {:?}", TcpListener::bind("0.0.0.0:7000").err().map(|e| e.kind()));

    // A thread blocked in a read wakes with the end of the stream when
    // another shuts the reading half (the peer stays open and silent).
    listener.set_nonblocking(false).unwrap();
    let blocked = TcpStream::connect("127.0.0.1:7000").unwrap();
    let (_held, _) = listener.accept().unwrap();
    let shutter = blocked.try_clone().unwrap();
    let reader = thread::spawn(move || (&blocked).read(&mut [0u8; 8]).map_err(|e| e.kind()));
    thread::sleep(Duration::from_millis(20));
    shutter.shutdown(Shutdown::Read).unwrap();
    println!("read woken by shutdown: {:?}", reader.join().unwrap());

    let a = UdpSocket::bind("127.0.0.1:9000").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.send_to(b"ping", "127.0.0.1:9000").unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = a.recv_from(&mut buf).unwrap();
    a.send_to(b"pong", from).unwrap();
    let (m, _) = b.recv_from(&mut buf[n..]).unwrap();
    println!("udp {}", String::from_utf8_lossy(&buf[..n + m]));
    b.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    println!("udp timeout: {:?}", b.recv_from(&mut buf).err().map(|e| e.kind()));
}
