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
    assert!(text.contains("vm0| nobody there: Ok(())"), "{text}");
    assert!(text.contains("vm0| nothing yet: true"), "{text}");
    assert!(text.contains("vm0| pinger: 100 round trips"), "{text}");
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
