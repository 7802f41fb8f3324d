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
