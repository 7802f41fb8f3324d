//! The file-descriptor table of a std service. Descriptors 0-2 are the
//! console (see `io`); from 3 on each names a socket, an event counter, a
//! file or a directory,
//! shared by the descriptors `dup` made from it and released when the last
//! one closes.

extern crate alloc;

use super::eventfd::EventFd;
use super::file::{OpenDir, OpenFile};
use super::socket::Socket;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use hermit_abi::{EBADF, EMFILE};

/// The first descriptor past standard input, output and error.
pub(super) const FIRST: i32 = 3;
/// Most descriptors open at once: a bound on what the table can hold.
const MAX_OPEN: usize = 16 * 1024;

/// A socket, as descriptors share it.
pub(super) type Entry = Rc<RefCell<Socket>>;

/// What a descriptor names.
#[derive(Clone)]
pub(super) enum Object {
    Socket(Entry),
    Event(Rc<EventFd>),
    File(Rc<OpenFile>),
    Dir(Rc<OpenDir>),
}

struct Table(RefCell<Vec<Option<Object>>>);

// SAFETY: a Denali VM is single-threaded at the hardware level: its green
// threads run one at a time, and no borrow of the table is held across a
// switch (every function here returns before anything can block).
unsafe impl Sync for Table {}

static TABLE: Table = Table(RefCell::new(Vec::new()));

/// Gives `entry` the lowest free descriptor, or fails with `EMFILE`.
pub(super) fn insert(entry: Object) -> Result<i32, i32> {
    let mut table = TABLE.0.borrow_mut();
    let slot = match table.iter().position(Option::is_none) {
        Some(slot) => slot,
        None if table.len() < MAX_OPEN => {
            table.push(None);
            table.len() - 1
        }
        None => return Err(EMFILE),
    };
    table[slot] = Some(entry);
    Ok(slot as i32 + FIRST)
}

/// What descriptor `fd` names, or `EBADF`.
pub(super) fn get(fd: i32) -> Result<Object, i32> {
    let slot = usize::try_from(fd - FIRST).map_err(|_| EBADF)?;
    TABLE.0.borrow().get(slot).cloned().flatten().ok_or(EBADF)
}

/// Closes descriptor `fd`; what it named is released once no other
/// descriptor (or call in progress) holds it.
pub(super) fn remove(fd: i32) -> Result<(), i32> {
    let slot = usize::try_from(fd - FIRST).map_err(|_| EBADF)?;
    let entry = TABLE.0.borrow_mut().get_mut(slot).and_then(Option::take).ok_or(EBADF)?;
    // Dropped outside the table's borrow: releasing a socket polls the
    // network stack, and a file writes its directory entry; neither
    // reaches back into the table.
    drop(entry);
    Ok(())
}
