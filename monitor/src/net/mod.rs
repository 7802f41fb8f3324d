//! The machine's NIC under our monitor: a virtio-mmio network device whose
//! other end is a backend on the real machine: user-mode networking with
//! port forwards, or a TAP device.
//!
//! The vCPU thread handles register accesses and hands what the kernel
//! transmits to the backend. A network thread of its own brings frames
//! from the backend into the kernel's receive buffers and raises one
//! interrupt per batch.

mod device;
mod tap;
mod usernet;

pub use device::{NetDevice, Notified};
pub use tap::{Tap, TapError};
pub use usernet::{GATEWAY_MAC, PortForward, UserNet};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Guest-physical address of the NIC's registers: above any RAM the
/// monitor gives (64 GiB at most).
pub const NET_MMIO_ADDR: u64 = 64 << 30;
/// The NIC's own address (the kernel's uplink; VMs have their own).
pub const NIC_MAC: [u8; 6] = [0x02, 0x44, 0x4e, 0xff, 0xff, 0xff];

/// What the NIC is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetConfig {
    /// User-mode networking: a gateway host inside the monitor.
    User {
        /// The gateway's address, which the monitor's host takes.
        gateway: std::net::Ipv4Addr,
        /// Network prefix length.
        prefix_len: u8,
        /// Ports forwarded from 127.0.0.1.
        forwards: Vec<PortForward>,
    },
    /// The TAP device of this name.
    Tap(String),
}

/// A backend, opened (ports bound, device attached) before the VM is made.
pub enum Backend {
    /// User-mode networking.
    User(Box<UserNet>),
    /// A TAP device.
    Tap(Tap),
}

/// Where the vCPU thread sends what the kernel transmits.
enum Uplink {
    Gateway(Sender<Vec<Vec<u8>>>),
    Tap(Arc<Tap>),
}

/// The running network side: the device (shared with the vCPU thread) and
/// the thread serving the backend.
pub struct Network {
    /// The device's registers and queues.
    pub device: Arc<Mutex<NetDevice>>,
    uplink: Uplink,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Network {
    /// Starts the network thread with `backend` behind `device`.
    pub fn start(device: NetDevice, backend: Backend) -> Network {
        let device = Arc::new(Mutex::new(device));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (device.clone(), stop.clone());
        let (uplink, serve): (Uplink, Box<dyn FnOnce() + Send>) = match backend {
            Backend::User(mut gateway) => {
                let (sender, from_vcpu) = std::sync::mpsc::channel();
                (Uplink::Gateway(sender), Box::new(move || serve_gateway(&shared, &mut gateway, &from_vcpu)))
            }
            Backend::Tap(tap) => {
                let tap = Arc::new(tap);
                let reader = tap.clone();
                (Uplink::Tap(tap), Box::new(move || serve_tap(&shared, &reader, &stopping)))
            }
        };
        let thread =
            std::thread::Builder::new().name("denali-net".into()).spawn(serve).expect("spawn the network thread");
        Network { device, uplink, stop, thread }
    }

    /// Passes frames the kernel sent to the backend.
    pub fn transmit(&self, frames: Vec<Vec<u8>>) {
        match &self.uplink {
            Uplink::Gateway(sender) => {
                let _ = sender.send(frames);
            }
            Uplink::Tap(tap) => frames.iter().for_each(|f| tap.send(f)),
        }
    }

    /// Stops the network thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.uplink);
        let _ = self.thread.join();
    }
}

fn deliver(device: &Mutex<NetDevice>, frames: Vec<Vec<u8>>) {
    if !frames.is_empty() {
        device.lock().unwrap_or_else(|e| e.into_inner()).receive(frames);
    }
}

fn serve_gateway(device: &Mutex<NetDevice>, gateway: &mut UserNet, from_vcpu: &Receiver<Vec<Vec<u8>>>) {
    loop {
        // While connections are open the real machine's sockets are polled
        // often; otherwise only new connections are waited for.
        let wait = if gateway.busy() { Duration::from_micros(200) } else { Duration::from_millis(5) };
        match from_vcpu.recv_timeout(wait) {
            Ok(frames) => frames.into_iter().for_each(|f| gateway.from_guest(f)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(frames) = from_vcpu.try_recv() {
            frames.into_iter().for_each(|f| gateway.from_guest(f));
        }
        deliver(device, gateway.poll());
    }
}

fn serve_tap(device: &Mutex<NetDevice>, tap: &Tap, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        deliver(device, tap.receive(50));
    }
}
