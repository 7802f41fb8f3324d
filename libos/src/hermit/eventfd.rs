//! `eventfd`: a counter behind a descriptor, which mio (tokio's I/O
//! driver) uses to wake a thread waiting in `poll`.

extern crate alloc;

use super::fail;
use super::fd::{self, Object};
use alloc::rc::Rc;
use core::cell::Cell;
use denali_abi::hypercall::EVENT_NET_RX;
use hermit_abi::{EAGAIN, EFD_NONBLOCK, EFD_SEMAPHORE, EINVAL, POLLIN, POLLOUT};

/// The counter.
pub(super) struct EventFd {
    count: Cell<u64>,
    semaphore: bool,
    nonblocking: Cell<bool>,
}

impl EventFd {
    /// The key threads blocked reading this counter park on.
    fn key(&self) -> usize {
        self as *const EventFd as usize
    }

    pub(super) fn set_nonblocking(&self, on: bool) {
        self.nonblocking.set(on);
    }

    pub(super) fn is_nonblocking(&self) -> bool {
        self.nonblocking.get()
    }

    /// `poll` bits: readable while the count is not zero.
    pub(super) fn readiness(&self) -> i16 {
        if self.count.get() > 0 { POLLIN | POLLOUT } else { POLLOUT }
    }

    /// Takes the count (or one, as a semaphore) into `buf`, waiting for a
    /// non-zero count unless non-blocking.
    pub(super) fn read(&self, buf: &mut [u8]) -> Result<usize, i32> {
        if buf.len() < 8 {
            return Err(EINVAL);
        }
        loop {
            let count = self.count.get();
            if count > 0 {
                let taken = if self.semaphore { 1 } else { count };
                self.count.set(count - taken);
                buf[..8].copy_from_slice(&taken.to_ne_bytes());
                return Ok(8);
            }
            if self.nonblocking.get() {
                return Err(EAGAIN);
            }
            crate::thread::park_on(self.key(), None);
        }
    }

    /// Adds the value in `buf` to the count and wakes its readers and
    /// every thread waiting in `poll`.
    pub(super) fn write(&self, buf: &[u8]) -> Result<usize, i32> {
        let value = buf.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes).ok_or(EINVAL)?;
        if value == u64::MAX {
            return Err(EINVAL);
        }
        self.count.set(self.count.get().saturating_add(value).min(u64::MAX - 1));
        crate::thread::unpark(self.key(), usize::MAX);
        // A `poll` waits as the network does: wake it to look again.
        crate::thread::wake_event_waiters(EVENT_NET_RX);
        Ok(8)
    }
}

#[unsafe(no_mangle)]
extern "C" fn sys_eventfd(initval: u64, flags: i16) -> i32 {
    let event = EventFd {
        count: Cell::new(initval),
        semaphore: flags & EFD_SEMAPHORE != 0,
        nonblocking: Cell::new(flags & EFD_NONBLOCK != 0),
    };
    fd::insert(Object::Event(Rc::new(event))).unwrap_or_else(fail)
}
