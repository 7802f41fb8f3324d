//! A TAP device as the far end of the NIC: frames go to and come from the
//! real machine's network stack, so each VM answers at its own address on
//! the TAP device's network (root, or CAP_NET_ADMIN, is needed to attach).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

/// An attached TAP device.
pub struct Tap {
    file: File,
}

/// Why a TAP device could not be attached.
#[derive(Debug)]
pub struct TapError {
    /// The device's name.
    pub name: String,
    /// What the system said.
    pub error: io::Error,
}

impl Tap {
    /// Attaches to TAP device `name` (creating it if it does not exist; an
    /// existing device keeps its addresses and state).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let fail = |error: io::Error| TapError { name: name.to_string(), error };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ']) {
            return Err(fail(io::Error::new(io::ErrorKind::InvalidInput, "not a network interface name")));
        }
        let file = File::options().read(true).write(true).open("/dev/net/tun").map_err(fail)?;
        // struct ifreq: the name, then the flags (a short) in the union.
        let mut request = [0u8; 40];
        request[..name.len()].copy_from_slice(name.as_bytes());
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        request[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `request`
        // is large enough to hold; the fd is the tun clone device just opened.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, request.as_mut_ptr()) } < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // SAFETY: F_SETFL with O_NONBLOCK on an fd we own changes only how
        // reads on it wait.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        Ok(Tap { file })
    }

    /// Sends one frame out of the device (dropped if the device is down).
    pub fn send(&self, frame: &[u8]) {
        let _ = (&self.file).write(frame);
    }

    /// Waits up to `timeout` for frames and returns those that arrived.
    pub fn receive(&self, timeout: std::time::Duration) -> Vec<Vec<u8>> {
        let mut poll = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout =
            libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos().into() };
        // SAFETY: one valid pollfd and a timespec, for the duration of the
        // call; no signal mask is changed.
        unsafe { libc::ppoll(&mut poll, 1, &timeout, std::ptr::null()) };
        let mut frames = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = (&self.file).read(&mut buf) {
            frames.push(buf[..n].to_vec());
            if frames.len() >= 256 {
                break;
            }
        }
        frames
    }
}
