#![no_std]
#![no_main]
//! Two VMs on the virtual segment: VM 0 serves TCP echo on port 7 and UDP
//! echo on port 9; VM 1 connects to VM 0's address (its own minus one),
//! checks every byte comes back, and does a UDP round trip. ARP, TCP and
//! UDP all stay inside the isolation kernel.

extern crate alloc;

use alloc::vec::Vec;
use denali::io::{ErrorKind, Read, Write};
use denali::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use denali::prelude::*;

const TOTAL: usize = 64 * 1024;

fn serve() {
    let udp = UdpSocket::bind("0.0.0.0:9").expect("bind udp");
    denali::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = udp.recv_from(&mut buf).expect("a datagram");
        udp.send_to(&buf[..n], from).expect("udp echo");
    });
    let mut listener = TcpListener::bind("0.0.0.0:7").expect("bind tcp");
    assert_eq!(TcpListener::bind("0.0.0.0:7").err().map(|e| e.kind()), Some(ErrorKind::AddrInUse));
    let (mut stream, peer) = listener.accept().expect("accept");
    println!("server: connection from {peer}");
    let mut buf = [0u8; 1500];
    let mut echoed = 0;
    loop {
        match stream.read(&mut buf).expect("read") {
            0 => break,
            n => {
                stream.write_all(&buf[..n]).expect("write");
                echoed += n;
            }
        }
    }
    println!("server: echoed {echoed} bytes");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    // Let the last segments and the FIN go out before the VM ends.
    denali::time::sleep(core::time::Duration::from_millis(200));
}

fn client() {
    let me = denali::net::local_ip().expect("an address");
    let server = Ipv4Addr::from(u32::from(me) - 1);
    println!("client: {me} -> {server}");
    let refused = TcpStream::connect(SocketAddrV4::new(server, 8)).err().map(|e| e.kind());
    println!("client: port 8 gives {refused:?}");
    let mut stream = TcpStream::connect(SocketAddrV4::new(server, 7)).expect("connect");
    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 7 % 251) as u8).collect();
    let mut back = Vec::with_capacity(TOTAL);
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    for chunk in data.chunks(1000) {
        stream.write_all(chunk).expect("send");
        sent += chunk.len();
        while back.len() < sent {
            let n = stream.read(&mut buf).expect("receive");
            assert!(n > 0, "early end of stream");
            back.extend_from_slice(&buf[..n]);
        }
    }
    stream.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(stream.read(&mut buf).expect("end"), 0);
    assert!(back == data, "echo differs");
    println!("client: tcp echo ok, {} bytes", back.len());

    let udp = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
    udp.send_to(b"ping over udp", SocketAddrV4::new(server, 9)).expect("udp send");
    let (n, from) = udp.recv_from(&mut buf).expect("udp reply");
    println!("client: udp reply {:?} from {from}", core::str::from_utf8(&buf[..n]).unwrap());
}

#[denali::main]
fn main() {
    if denali::vm::id() == 0 { serve() } else { client() }
}
