//! gdb's connection while the debugged VM runs. The vCPU's thread talks
//! to gdb only while the VM is stopped; while it runs, a thread of this
//! module waits for gdb to send something (its Ctrl-C) or to leave, and
//! then raises the kernel's debug-request interrupt once. The kernel stops
//! the VM, and the vCPU's thread reads what gdb sent.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one wait for gdb's bytes lasts, so that the thread notices
/// soon when the VM stops or the run ends.
const POLL: Duration = Duration::from_millis(100);

/// Raises the kernel's debug-request interrupt.
pub type Raise = Box<dyn Fn() + Send>;

/// Whose turn it is to listen to gdb.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The VM is stopped: the vCPU's thread talks to gdb.
    Stopped,
    /// The VM runs: the watcher listens.
    Running,
    /// The session is over: the watcher ends.
    Over,
}

/// What the watcher and the vCPU's thread share: the turn, and a signal
/// that it changed.
struct Shared {
    turn: Mutex<Turn>,
    changed: Condvar,
}

/// The thread that listens to gdb while the VM runs.
pub struct Watcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Watches `stream` (a clone of gdb's connection) from the next
    /// [`Watcher::running`] on, raising the interrupt with `raise`.
    pub fn start(stream: TcpStream, raise: Raise) -> std::io::Result<Watcher> {
        let shared = Arc::new(Shared { turn: Mutex::new(Turn::Stopped), changed: Condvar::new() });
        let theirs = shared.clone();
        let thread =
            std::thread::Builder::new().name("gdb-watch".into()).spawn(move || watch(&stream, &theirs, &raise))?;
        Ok(Watcher { shared, thread: Some(thread) })
    }

    /// The VM runs: gdb's next bytes stop it.
    pub fn running(&self) {
        self.set(Turn::Running);
    }

    /// The VM stopped: the vCPU's thread talks to gdb.
    pub fn stopped(&self) {
        self.set(Turn::Stopped);
    }

    /// Hands the turn over, waking the watcher.
    fn set(&self, turn: Turn) {
        *self.shared.turn.lock().unwrap_or_else(|e| e.into_inner()) = turn;
        self.shared.changed.notify_all();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.set(Turn::Over);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watcher's loop: while the VM runs, waits for `stream` to have bytes
/// (or to close), then raises the interrupt once and hands the turn back.
fn watch(stream: &TcpStream, shared: &Shared, raise: &Raise) {
    loop {
        let mut turn = shared.turn.lock().unwrap_or_else(|e| e.into_inner());
        while *turn == Turn::Stopped {
            turn = shared.changed.wait(turn).unwrap_or_else(|e| e.into_inner());
        }
        if *turn == Turn::Over {
            return;
        }
        drop(turn);
        if !readable(stream, POLL) {
            continue;
        }
        let mut turn = shared.turn.lock().unwrap_or_else(|e| e.into_inner());
        if *turn == Turn::Running {
            *turn = Turn::Stopped;
            raise();
        }
    }
}

/// Whether `stream` has bytes to read (or has closed) within `limit`.
fn readable(stream: &TcpStream, limit: Duration) -> bool {
    let mut poll = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `poll` points at one valid pollfd for the call's length, and
    // the descriptor stays open while `stream` is borrowed.
    let ready = unsafe { libc::poll(&mut poll, 1, limit.as_millis() as libc::c_int) };
    ready > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn gdb_stops_a_running_vm_once_and_never_a_stopped_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut gdb = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let raised = Arc::new(AtomicU32::new(0));
        let count = raised.clone();
        let watcher = Watcher::start(
            ours,
            Box::new(move || {
                count.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();

        gdb.write_all(&[3]).unwrap();
        std::thread::sleep(3 * POLL);
        assert_eq!(raised.load(Ordering::SeqCst), 0, "raised while the VM was stopped");
        watcher.running();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while raised.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(3 * POLL);
        assert_eq!(raised.load(Ordering::SeqCst), 1, "raised once for gdb's byte");
        drop(watcher);
    }
}
