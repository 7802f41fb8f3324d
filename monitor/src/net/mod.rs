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
use std::time::{Duration, Instant};

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

/// How often the network thread looks at the rings while traffic flows.
const POLL_INTERVAL: Duration = Duration::from_micros(200);
/// How long after the last frame the thread keeps polling before it hands
/// the transmit ring back to notifications.
const BUSY_FOR: Duration = Duration::from_millis(20);

/// The network thread's view of the device: it polls the transmit ring
/// while frames flow and sleeps on notifications otherwise.
struct Poller<'a> {
    device: &'a Mutex<NetDevice>,
    busy_until: Instant,
}

impl Poller<'_> {
    fn busy(&self) -> bool {
        Instant::now() < self.busy_until
    }

    /// How long to wait for the backend before looking again.
    fn wait(&self, idle: Duration) -> Duration {
        if self.busy() { POLL_INTERVAL } else { idle }
    }

    /// Hands `to_guest` to the kernel and returns what the kernel queued to
    /// send, switching polling on while frames flow and off after.
    fn exchange(&mut self, to_guest: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let shared = self.device;
        let mut device = shared.lock().unwrap_or_else(|e| e.into_inner());
        let moved_in = !to_guest.is_empty();
        if moved_in {
            device.receive(to_guest);
        }
        let mut sent = device.take_transmitted();
        if moved_in || !sent.is_empty() {
            self.busy_until = Instant::now() + BUSY_FOR;
        }
        sent.extend(device.set_polling(self.busy()));
        sent
    }
}

fn serve_gateway(device: &Mutex<NetDevice>, gateway: &mut UserNet, from_vcpu: &Receiver<Vec<Vec<u8>>>) {
    let mut poller = Poller { device, busy_until: Instant::now() };
    loop {
        // While connections are open the real machine's sockets are polled
        // often; otherwise only new connections are waited for.
        let wait = if gateway.busy() { POLL_INTERVAL } else { poller.wait(Duration::from_millis(5)) };
        match from_vcpu.recv_timeout(wait) {
            Ok(frames) => frames.into_iter().for_each(|f| gateway.from_guest(f)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(frames) = from_vcpu.try_recv() {
            frames.into_iter().for_each(|f| gateway.from_guest(f));
        }
        let to_guest = gateway.poll();
        for frame in poller.exchange(to_guest) {
            gateway.from_guest(frame);
        }
    }
}

fn serve_tap(device: &Mutex<NetDevice>, tap: &Tap, stop: &AtomicBool) {
    let mut poller = Poller { device, busy_until: Instant::now() };
    while !stop.load(Ordering::Relaxed) {
        let to_guest = tap.receive(poller.wait(Duration::from_millis(50)));
        for frame in poller.exchange(to_guest) {
            tap.send(&frame);
        }
    }
}
