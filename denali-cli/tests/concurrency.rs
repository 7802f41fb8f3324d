//! Web servers under load behave like real ones: a thousand clients at
//! once all queue and all get their pages, through a port forward and
//! through a TAP device, and ten thousand connections one after another
//! leave no socket, thread or memory behind.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::load::{LoadReport, http_load, read_response};
use support::netns::*;
use support::*;

const CLIENTS: usize = 1000;
const REQUESTS_EACH: usize = 2;
const PAGE: usize = 2048;

fn assert_all_served(report: &LoadReport, server: &Background) {
    let sample: Vec<&String> = report.failures.iter().take(5).collect();
    assert!(
        report.failures.is_empty(),
        "{} of {CLIENTS} clients failed, for example {sample:?}\n{}",
        report.failures.len(),
        server.output()
    );
    assert_eq!(report.ok, CLIENTS * REQUESTS_EACH);
}

#[test]
fn a_thousand_concurrent_clients_through_a_port_forward_all_get_the_page() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_from_template(dir.path(), "web", "http");
    let port = free_port();
    let mut server = Background::start(&service, &["-p", &format!("{port}:80")]);
    server.wait_for("http: serving 2048 bytes", Duration::from_secs(300));
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let report = http_load(target, CLIENTS, REQUESTS_EACH, PAGE, None);
    assert_all_served(&report, &server);
}

#[test]
fn a_thousand_concurrent_clients_over_a_tap_device_all_get_the_page() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_from_template(dir.path(), "webtap", "http");
    build(&service, "webtap");
    let ns = Namespace::new("load");
    let mut server = Background::spawn(run_in(&ns, &service, &["--net", "tap=dn0"]));
    server.wait_for("http: serving 2048 bytes on 10.0.2.15:80", Duration::from_secs(300));
    let target = SocketAddr::from(([10, 0, 2, 15], 80));
    let report = http_load(target, CLIENTS, REQUESTS_EACH, PAGE, Some(&ns.0));
    assert_all_served(&report, &server);
}

/// `(threads, sockets, heap KiB)` from the template's report after `n`
/// connections.
fn holdings(output: &str, n: u64) -> (u64, u64, u64) {
    let prefix = format!("http: {n} connections accepted; now ");
    let line = output.lines().find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()));
    let line = line.unwrap_or_else(|| panic!("no report after {n} connections:\n{output}"));
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1], numbers[2])
}

#[test]
fn ten_thousand_connections_one_after_another_leave_nothing_behind() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_from_template(dir.path(), "webseq", "http");
    let port = free_port();
    let mut server = Background::start(&service, &["-p", &format!("{port}:80")]);
    server.wait_for("http: serving 2048 bytes", Duration::from_secs(300));
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let mut buf = Vec::new();
    for n in 0..10_000 {
        let mut stream = TcpStream::connect(target).unwrap_or_else(|e| panic!("connection {n}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: denali\r\n\r\n").unwrap();
        buf.clear();
        let (status, len) = read_response(&mut stream, &mut buf).unwrap_or_else(|e| panic!("connection {n}: {e}"));
        assert_eq!((status, len), (200, PAGE), "connection {n}");
    }
    server.wait_for("http: 10000 connections accepted", Duration::from_secs(60));
    let output = server.output();
    let (threads_1k, sockets_1k, heap_1k) = holdings(&output, 1000);
    let (threads, sockets, heap) = holdings(&output, 10_000);
    println!("after 1,000 connections: {threads_1k} threads, {sockets_1k} sockets, {heap_1k} KiB of heap");
    println!("after 10,000 connections: {threads} threads, {sockets} sockets, {heap} KiB of heap");
    // The main thread and at most the last connection's; the listener's
    // sockets and at most a few still saying goodbye.
    assert!(threads <= 3, "{threads} threads after 10,000 sequential connections");
    assert!(sockets <= 8, "{sockets} sockets after 10,000 sequential connections");
    assert!(heap <= heap_1k + 64, "the heap grew from {heap_1k} KiB to {heap} KiB");
}
