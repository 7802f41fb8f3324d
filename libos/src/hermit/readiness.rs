//! Readiness for async runtimes in std services: a future that finds a
//! non-blocking socket not ready hands its `Waker` here with the
//! descriptor, and a reactor thread (started on first use) waits on the
//! network as `poll` does and wakes each waker once its descriptor is
//! ready. This is what tokio's I/O driver does over epoll; `denali-tokio`
//! builds tokio sockets on it.

extern crate alloc;

use crate::net::stack::{self, Wait};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::task::Waker;
use denali_abi::hypercall::EVENT_NET_RX;
use hermit_abi::{POLLIN, POLLOUT};

/// What a waiting future waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Interest {
    /// Data to read, a connection to accept, or the peer's end.
    Readable,
    /// Room to write, or a connection made.
    Writable,
}

struct Waiting {
    fd: i32,
    events: i16,
    waker: Waker,
}

struct Reactor {
    waiting: RefCell<Vec<Waiting>>,
    started: Cell<bool>,
}

// SAFETY: one green thread runs at a time in a VM, and no borrow of the
// list is held across a switch (every function here returns, or drops its
// borrow, before anything can block).
unsafe impl Sync for Reactor {}

static REACTOR: Reactor = Reactor { waiting: RefCell::new(Vec::new()), started: Cell::new(false) };

/// Wakes `waker` once descriptor `fd` is ready as `interest` says (or has
/// failed, or is closed). Several tasks may wait on one descriptor (two
/// accepting on one listener): each is woken. A task polled again with a
/// waker that wakes it already is not added twice.
pub fn wake_when_ready(fd: i32, interest: Interest, waker: &Waker) {
    let events = match interest {
        Interest::Readable => POLLIN,
        Interest::Writable => POLLOUT,
    };
    {
        let mut waiting = REACTOR.waiting.borrow_mut();
        if !waiting.iter().any(|w| w.fd == fd && w.events == events && w.waker.will_wake(waker)) {
            waiting.push(Waiting { fd, events, waker: waker.clone() });
        }
    }
    if !REACTOR.started.replace(true) {
        crate::thread::spawn(run);
    }
    // The reactor may be waiting on the old list: have it look again.
    crate::thread::wake_event_waiters(EVENT_NET_RX);
}

/// The reactor thread: waits until some descriptor is ready, wakes the
/// futures waiting on the ready ones, and waits again.
fn run() {
    loop {
        let woken = stack::wait(Wait::Forever, stack::Interest::Any, |stack| {
            let mut waiting = REACTOR.waiting.borrow_mut();
            let mut woken = Vec::new();
            waiting.retain(|w| {
                let ready = super::socket::revents(stack, w.fd, w.events) != 0;
                if ready {
                    woken.push(w.waker.clone());
                }
                !ready
            });
            (!woken.is_empty()).then_some(Ok(woken))
        });
        // Woken outside the list's borrow: a waker may register again.
        for waker in woken.into_iter().flatten() {
            waker.wake();
        }
    }
}
