//! Network namespaces for the TAP tests: each test makes its own, so only
//! addresses inside it are used and nothing on this machine's network
//! changes.

use std::process::Command;

/// A network namespace with a TAP device `dn0` at 10.0.2.2/24, removed
/// (with the device) when dropped.
pub struct Namespace(pub String);

impl Namespace {
    /// A namespace named for this process and `tag` (tests run at once).
    pub fn new(tag: &str) -> Namespace {
        let name = format!("denali-{tag}-{}", std::process::id());
        let ns = Namespace(name.clone());
        ip(&["netns", "add", &name]);
        for args in [
            &["tuntap", "add", "dev", "dn0", "mode", "tap"][..],
            &["addr", "add", "10.0.2.2/24", "dev", "dn0"],
            &["link", "set", "dn0", "up"],
            &["link", "set", "lo", "up"],
        ] {
            ip(&[&["netns", "exec", &name, "ip"][..], args].concat());
        }
        // A client here gives up connecting when the tests' patience runs
        // out (`load::CONNECT_PATIENCE`), not after Linux's default six SYN
        // retries (127 s): a VM under PVM takes a burst of a thousand
        // connections in over a minute, and every SYN it has no room for
        // is dropped so its client sends it again, as against a full Linux
        // backlog. Eight retries give up after 511 s.
        ip(&["netns", "exec", &name, "sh", "-c", "echo 8 > /proc/sys/net/ipv4/tcp_syn_retries"]);
        ns
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Namespace {
    /// A raw (`AF_PACKET`) socket on `device` inside the namespace: it sends
    /// frames into the device as its host side, and sees every frame that
    /// crosses it. Reads give up after `patience`.
    pub fn packet_socket(&self, device: &str, patience: std::time::Duration) -> std::fs::File {
        use std::os::fd::{AsRawFd, FromRawFd};
        let netns = std::fs::File::open(format!("/var/run/netns/{}", self.0)).expect("the namespace's handle");
        let device = std::ffi::CString::new(device).expect("a device name");
        // A thread of its own enters the namespace: the socket stays bound
        // to it, and the test's other threads stay where they are.
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: `setns` on this thread only, with a descriptor of
                // a network namespace held open above.
                assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
                let all = (libc::ETH_P_ALL as u16).to_be();
                // SAFETY: plain socket calls with a valid, owned descriptor
                // and structures sized for them.
                unsafe {
                    let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all));
                    assert!(fd >= 0, "AF_PACKET socket (the TAP tests run as root)");
                    let file = std::fs::File::from_raw_fd(fd);
                    let index = libc::if_nametoindex(device.as_ptr());
                    assert_ne!(index, 0, "no device {device:?} in the namespace");
                    let mut address: libc::sockaddr_ll = std::mem::zeroed();
                    address.sll_family = libc::AF_PACKET as u16;
                    address.sll_protocol = all;
                    address.sll_ifindex = index as i32;
                    let size = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                    assert_eq!(libc::bind(fd, (&raw const address).cast(), size), 0, "bind to {device:?}");
                    let timeout = libc::timeval { tv_sec: patience.as_secs() as i64, tv_usec: 0 };
                    let size = std::mem::size_of::<libc::timeval>() as u32;
                    let option = (&raw const timeout).cast();
                    assert_eq!(libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, option, size), 0);
                    file
                }
            })
            .join()
            .expect("the namespace's socket")
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("the TAP tests need `ip` (Debian package iproute2; scripts/setup installs it): {e}")
    });
    assert!(
        out.status.success(),
        "ip {} failed (the TAP tests need root to make a network namespace): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cargo denali run ARGS` for `service` inside `ns`.
pub fn run_in(ns: &Namespace, service: &std::path::Path, args: &[&str]) -> Command {
    let mut c = ns.command(env!("CARGO_BIN_EXE_cargo-denali"));
    c.env("CARGO_TARGET_DIR", super::guest_target_dir()).current_dir(service).args(["denali", "run"]).args(args);
    c
}
