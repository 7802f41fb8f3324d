//! Echoes every UDP datagram to port 7 back to its sender.
use std::net::UdpSocket;

fn main() {
    let socket = UdpSocket::bind("0.0.0.0:7").unwrap();
    println!("udp echo: ready on port {}", socket.local_addr().unwrap().port());
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        socket.send_to(&buf[..n], from).unwrap();
    }
}
