//! The virtual NIC and the kernel's virtual Ethernet switch.

mod support;

use support::*;

#[test]
fn two_vms_exchange_frames_over_the_virtual_switch() {
    let dir = scratch();
    let service = new_service(dir.path(), "pingpong", Some(include_str!("guests/pingpong.rs")));
    build(&service, "pingpong");
    let out = run(&service, &["--instances", "2", "--timeout", "60"]);
    let text = &out.stdout;
    assert!(text.contains("vm0| forged source: Err(InvalidArgument)"), "{text}");
    assert!(text.contains("vm0| forged ip source: Err(InvalidArgument)"), "{text}");
    assert!(text.contains("vm0| not ip: Err(InvalidArgument)"), "{text}");
    assert!(text.contains("vm0| nobody there: Ok(())"), "{text}");
    assert!(text.contains("vm0| nothing yet: true"), "{text}");
    assert!(text.contains("vm0| pinger: 100 round trips"), "{text}");
    assert_eq!(out.status, 0, "{text}\n{}", out.stderr);
}

#[test]
fn two_vms_exchange_frames_in_batches_and_bad_batches_are_refused() {
    let dir = scratch();
    let service = new_service(dir.path(), "batch", Some(include_str!("guests/batch.rs")));
    build(&service, "batch");
    let out = run(&service, &["--instances", "2", "--stats", "--timeout", "120"]);
    let text = &out.stdout;
    assert!(text.contains("vm0| no entries: Err(InvalidArgument)"), "{text}");
    assert!(text.contains("vm0| 33 entries: Err(InvalidArgument)"), "{text}");
    assert!(text.contains("vm0| kernel list: Err(BadAddress)"), "{text}");
    assert!(text.contains("vm0| forged third: Ok(2)"), "{text}");
    assert!(text.contains("vm1| took [(1, 60), (2, 60)]"), "{text}");
    assert!(text.contains("vm0| batches: 20 rounds of 8 frames each way, whole and in order"), "{text}");
    assert_eq!(out.status, 0, "{text}\n{}", out.stderr);
}

#[test]
fn one_vm_talks_tcp_and_udp_to_another_inside_the_kernel() {
    let dir = scratch();
    let service = new_service(dir.path(), "echo_pair", Some(include_str!("guests/tcp_echo.rs")));
    build(&service, "echo_pair");
    let out = run(&service, &["--instances", "2", "--timeout", "120"]);
    let text = &out.stdout;
    assert!(text.contains("vm1| client: 10.0.2.16 -> 10.0.2.15"), "{text}");
    assert!(text.contains("vm1| client: port 8 gives Some(ConnectionRefused)"), "{text}");
    assert!(text.contains("vm0| server: connection from 10.0.2.16:"), "{text}");
    assert!(text.contains("vm0| server: echoed 65536 bytes"), "{text}");
    assert!(text.contains("vm1| client: tcp echo ok, 65536 bytes"), "{text}");
    assert!(text.contains("vm1| client: udp reply \"ping over udp\" from 10.0.2.15:9"), "{text}");
    assert_eq!(out.status, 0, "{text}\n{}", out.stderr);
}

#[test]
fn an_ack_rides_on_the_request_that_follows_it() {
    // Each answer is two full segments, which the client must acknowledge
    // at once; its next request carries the ACK. Were the ACK sent when the
    // answer arrived, each request would cost the client two frames.
    let dir = scratch();
    let service = new_service(dir.path(), "acks", Some(include_str!("guests/acks.rs")));
    build(&service, "acks");
    let out = run(&service, &["--instances", "2", "--timeout", "120"]);
    let text = &out.stdout;
    let line = text.lines().find(|l| l.contains("vm1| client:")).unwrap_or_else(|| panic!("{text}"));
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    // vm1| client: R requests in F frames
    let [_, rounds, frames] = numbers[..] else { panic!("{line}") };
    assert_eq!(rounds, 100, "{line}");
    // A delayed-ACK timer that goes off under a slow kernel may add a few.
    assert!(frames <= rounds * 5 / 4, "ACKs went out in frames of their own: {line}\n{text}");
    assert!(text.contains("vm0| server: 100 answers in"), "{text}");
    assert_eq!(out.status, 0, "{text}\n{}", out.stderr);
}

#[test]
fn a_frame_wakes_only_the_thread_whose_socket_it_changes() {
    // VM 0 has a thread per connection: forty idle ones, one accepting and
    // one echoing. Each round trip wakes the echoing thread; were every
    // waiting thread woken per frame, a round trip would cost over eighty
    // switches.
    let dir = scratch();
    let service = new_service(dir.path(), "idle_conns", Some(include_str!("guests/idle_conns.rs")));
    // A 64 KiB stack and 16 KiB of socket buffers per connection.
    std::fs::write(service.join("Denali.toml"), "memory = \"16 MiB\"\n").unwrap();
    build(&service, "idle_conns");
    let out = run(&service, &["--instances", "2", "--timeout", "120"]);
    let text = &out.stdout;
    assert!(text.contains("vm1| client: 200 round trips with 40 idle connections"), "{text}");
    let line = text.lines().find(|l| l.contains("thread switches")).expect("the server's tally");
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    // vm0| server: R round trips, S thread switches
    let [_, rounds, switches] = numbers[..] else { panic!("{line}") };
    assert_eq!(rounds, 200, "{line}");
    assert!(switches <= 4 * rounds, "threads woke for frames that were not theirs: {line}");
    assert_eq!(out.status, 0, "{text}\n{}", out.stderr);
}

#[test]
fn a_vm_cannot_intercept_or_forge_another_pairs_traffic() {
    let dir = scratch();
    let service = new_service(dir.path(), "spoof", Some(include_str!("guests/spoof.rs")));
    build(&service, "spoof");
    let out = run(&service, &["--instances", "3", "--timeout", "120"]);
    let text = &out.stdout;
    assert!(text.contains("vm0| server: 20 datagrams, 20 from the client"), "{text}");
    assert!(text.contains("vm1| client: 20 replies from the server"), "{text}");
    assert!(text.contains("vm2| attacker: forged relay Err(InvalidArgument)"), "{text}");
    let attacker = text.lines().find(|l| l.contains("poisoned ARP replies refused")).expect("the attacker's tally");
    let numbers: Vec<u64> = attacker.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    // vm2| attacker: R of S poisoned ...; I datagrams intercepted, L relayed
    let [_, refused, sent, intercepted, relayed] = numbers[..] else { panic!("{attacker}") };
    assert!(sent > 10 && refused == sent, "{attacker}");
    assert_eq!((intercepted, relayed), (0, 0), "{attacker}");
    assert_eq!(out.status, 0, "{text}\n{}", out.stderr);
}

#[test]
fn a_syn_sent_twice_opens_one_connection_that_is_not_reset() {
    // A host sends its SYN again when the SYN-ACK is late (a busy VM): the
    // second copy once reached a fresh listening socket, which answered
    // with sequence numbers of its own and then reset the client.
    let dir = scratch();
    let service = new_service(dir.path(), "dup_syn", Some(include_str!("guests/dup_syn.rs")));
    build(&service, "dup_syn");
    let out = run(&service, &["--instances", "2", "--timeout", "60"]);
    let text = &out.stdout;
    assert!(text.contains("vm1| dup-syn: first fetch: true"), "{text}");
    assert!(text.contains("vm1| dup-syn: 1 distinct SYN-ACKs for one connection"), "{text}");
    assert!(text.contains("vm1| dup-syn: resets 0, answered: true"), "{text}");
    assert_eq!(out.status, 0, "{text}\n{}", out.stderr);
}
