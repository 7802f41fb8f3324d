//! The machine's NIC under our monitor: a virtio-mmio network device whose
//! other end is a backend on the real machine (user-mode networking with
//! port forwards), served by a thread of its own.
//!
//! The vCPU thread handles register accesses; a transmit notification
//! hands the frames to the network thread. The network thread moves bytes
//! between the real machine and the backend, puts frames for the kernel in
//! its receive buffers, and raises one interrupt per batch.

mod device;
mod usernet;

pub use device::{NetDevice, Notified};
pub use usernet::{GATEWAY_MAC, PortForward, UserNet};

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Guest-physical address of the NIC's registers: above any RAM the
/// monitor gives (64 GiB at most).
pub const NET_MMIO_ADDR: u64 = 64 << 30;
/// The NIC's own address (the kernel's uplink; VMs have their own).
pub const NIC_MAC: [u8; 6] = [0x02, 0x44, 0x4e, 0xff, 0xff, 0xff];

/// How the NIC is connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The gateway's address, which the monitor's user-mode host takes.
    pub gateway: std::net::Ipv4Addr,
    /// Network prefix length.
    pub prefix_len: u8,
    /// Ports forwarded from 127.0.0.1.
    pub forwards: Vec<PortForward>,
}

/// What the vCPU thread tells the network thread.
pub enum Message {
    /// Frames the kernel sent.
    Frames(Vec<Vec<u8>>),
}

/// The running network side: the device (shared with the vCPU thread) and
/// the thread serving the backend.
pub struct Network {
    /// The device's registers and queues.
    pub device: Arc<Mutex<NetDevice>>,
    /// To the network thread; dropping it ends the thread.
    pub to_thread: Sender<Message>,
    thread: JoinHandle<()>,
}

impl Network {
    /// Starts the network thread with `backend` behind `device`.
    pub fn start(device: NetDevice, mut backend: UserNet) -> Network {
        let device = Arc::new(Mutex::new(device));
        let (to_thread, from_vcpu) = std::sync::mpsc::channel();
        let shared = device.clone();
        let thread = std::thread::Builder::new()
            .name("denali-net".into())
            .spawn(move || serve(&shared, &mut backend, &from_vcpu))
            .expect("spawn the network thread");
        Network { device, to_thread, thread }
    }

    /// Stops the network thread.
    pub fn stop(self) {
        drop(self.to_thread);
        let _ = self.thread.join();
    }
}

fn serve(device: &Mutex<NetDevice>, backend: &mut UserNet, messages: &Receiver<Message>) {
    loop {
        // While connections are open the real machine's sockets are polled
        // often; otherwise only new connections are waited for.
        let wait = if backend.busy() { Duration::from_micros(200) } else { Duration::from_millis(5) };
        match messages.recv_timeout(wait) {
            Ok(Message::Frames(frames)) => frames.into_iter().for_each(|f| backend.from_guest(f)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(Message::Frames(frames)) = messages.try_recv() {
            frames.into_iter().for_each(|f| backend.from_guest(f));
        }
        let to_guest = backend.poll();
        if !to_guest.is_empty() {
            device.lock().unwrap_or_else(|e| e.into_inner()).receive(to_guest);
        }
    }
}
