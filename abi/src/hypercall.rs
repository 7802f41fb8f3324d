//! Hypercall numbers, error codes and event bits.
//!
//! The list is short on purpose ("economy of mechanism"): everything a guest
//! can ask of the kernel is here.

/// The interrupt vector of the hypercall gate: a guest executes `int 4`.
///
/// Why not `syscall`: the KVM on our machines is the PVM flavour, which does
/// not switch a non-PVM guest kernel to supervisor mode on `syscall` (the
/// guest lands on the kernel's entry point still in ring 3), and it refuses
/// `int 0x80`. Vector 4 (#OF) can otherwise only be raised by `into`, which
/// does not exist in 64-bit mode, so the gate is free, and `int 4` behaves
/// the same under KVM, PVM, QEMU and bare metal.
pub const HYPERCALL_VECTOR: u8 = 4;

/// Hypercall numbers, passed in `rax`.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// `exit(code: i32, flags: u64) -> !`: the VM stops; `code` is its exit
    /// status. `flags` [`EXIT_CRASHED`](crate::debug::EXIT_CRASHED) says it
    /// panicked or aborted, so it is reported with a backtrace as a fault
    /// is; other bits are ignored.
    Exit = 0,
    /// `console_write(buf: *const u8, len: usize) -> usize`: writes at most
    /// [`CONSOLE_WRITE_MAX`] bytes to the console, returns how many.
    ConsoleWrite = 1,
    /// `idle() -> u64`: gives up the CPU until an event is pending, then
    /// returns the whole batch of pending event bits and clears them.
    Idle = 2,
    /// `alarm(deadline_ns: u64) -> 0`: sets the virtual alarm clock to an
    /// absolute global-clock time; [`EVENT_ALARM`] is raised when it passes.
    /// A deadline of 0 cancels the alarm.
    Alarm = 3,
    /// `yield() -> 0`: lets another runnable VM run first.
    Yield = 4,
    /// `net_send(frame: *const u8, len: usize) -> len`: hands one Ethernet
    /// frame (header included, [`FRAME_MIN`] to [`FRAME_MAX`] bytes, source
    /// MAC the VM's own) to the virtual switch. A frame for a full ring or an
    /// unknown address is dropped, never queued: the call does not block.
    NetSend = 5,
    /// `net_recv(buf: *mut u8, cap: usize) -> len`: takes the oldest frame
    /// from the VM's receive ring, or fails with [`Error::WouldBlock`].
    NetRecv = 6,
    /// `disk_read(sector: u64, buf: *mut u8, len: usize) -> len`: reads
    /// `len` bytes (whole sectors, at most
    /// [`DISK_IO_MAX`](crate::disk::DISK_IO_MAX)) from the VM's disk window
    /// starting at `sector`. Returns when the data is in `buf`.
    DiskRead = 7,
    /// `disk_write(sector: u64, buf: *const u8, len: usize) -> len`: writes
    /// `len` bytes from `buf` to the VM's disk window, as `disk_read`.
    /// Returns when the device has the data.
    DiskWrite = 8,
    /// `net_send_batch(list: *const FrameRef, count: usize) -> sent`: hands
    /// the frames of `list`'s `count` entries (at most [`NET_BATCH_MAX`]) to
    /// the switch in order, each as `net_send` does. It stops at the first
    /// frame `net_send` would refuse: returns how many went before it, or
    /// that frame's error if it is the first.
    NetSendBatch = 9,
    /// `net_recv_batch(list: *mut FrameRef, count: usize) -> received`:
    /// takes up to `count` (at most [`NET_BATCH_MAX`]) of the oldest
    /// received frames, the n-th into the buffer of `list[n]` (`len` is its
    /// capacity) and its length into `list[n].len`. Fails with
    /// [`Error::WouldBlock`] when none waits; stops before a frame longer
    /// than its buffer ([`Error::InvalidArgument`] if it is the first).
    /// The lengths go into the list after the frames are taken: if the VM
    /// cannot write the list, the call fails and those frames are lost.
    NetRecvBatch = 10,
}

impl TryFrom<u64> for Hypercall {
    type Error = Error;

    fn try_from(number: u64) -> Result<Self, Error> {
        Ok(match number {
            0 => Hypercall::Exit,
            1 => Hypercall::ConsoleWrite,
            2 => Hypercall::Idle,
            3 => Hypercall::Alarm,
            4 => Hypercall::Yield,
            5 => Hypercall::NetSend,
            6 => Hypercall::NetRecv,
            7 => Hypercall::DiskRead,
            8 => Hypercall::DiskWrite,
            9 => Hypercall::NetSendBatch,
            10 => Hypercall::NetRecvBatch,
            _ => return Err(Error::NoSuchCall),
        })
    }
}

/// Shortest Ethernet frame `net_send` takes (the header).
pub const FRAME_MIN: usize = 14;
/// Longest Ethernet frame `net_send` takes (1500-byte payload + header).
pub const FRAME_MAX: usize = 1514;

/// Most frames one `net_send_batch` or `net_recv_batch` moves.
pub const NET_BATCH_MAX: usize = 32;

/// One frame of a batch: where it is (or goes) in the VM's memory and its
/// length (for `net_recv_batch`, the buffer's capacity in and the frame's
/// length out). 16 bytes, as the kernel reads and writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameRef {
    /// The frame's flat address in the VM.
    pub addr: u64,
    /// Its length in bytes.
    pub len: u64,
}

impl FrameRef {
    /// Bytes of one entry.
    pub const SIZE: usize = 16;

    /// The entry as it lies in memory.
    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut bytes = [0; Self::SIZE];
        bytes[..8].copy_from_slice(&self.addr.to_le_bytes());
        bytes[8..].copy_from_slice(&self.len.to_le_bytes());
        bytes
    }

    /// The entry that lies in `bytes`.
    pub fn from_bytes(bytes: [u8; Self::SIZE]) -> FrameRef {
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        FrameRef { addr: word(0), len: word(8) }
    }
}

const _: () = assert!(core::mem::size_of::<FrameRef>() == FrameRef::SIZE);

/// Longest buffer one `console_write` takes.
pub const CONSOLE_WRITE_MAX: usize = 4096;

/// Hypercall errors; a hypercall returns `-(error as i64)`.
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The call number is not a hypercall.
    NoSuchCall = 1,
    /// A pointer argument is outside the VM's memory or lacks the rights.
    BadAddress = 2,
    /// An argument is out of range.
    InvalidArgument = 3,
    /// Nothing to receive yet.
    WouldBlock = 4,
    /// The device failed the transfer.
    Io = 5,
}

impl Error {
    /// The value placed in `rax`.
    pub const fn to_return(self) -> u64 {
        (-(self as i64)) as u64
    }

    /// Decodes a hypercall's `rax`: `Ok(value)` or the error.
    pub fn from_return(rax: u64) -> Result<u64, Error> {
        match rax as i64 {
            -1 => Err(Error::NoSuchCall),
            -2 => Err(Error::BadAddress),
            -3 => Err(Error::InvalidArgument),
            -4 => Err(Error::WouldBlock),
            -5 => Err(Error::Io),
            _ => Ok(rax),
        }
    }
}

/// Event bit: the virtual alarm clock went off.
pub const EVENT_ALARM: u64 = 1 << 0;
/// Event bit: the VM was switched out and should recalibrate its clock.
pub const EVENT_WAKEUP: u64 = 1 << 1;
/// Event bit: frames arrived on the virtual NIC.
pub const EVENT_NET_RX: u64 = 1 << 2;
/// Event bit: a disk request completed.
pub const EVENT_DISK: u64 = 1 << 3;
/// Event bit: the operator asked the VM to shut down.
pub const EVENT_SHUTDOWN: u64 = 1 << 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_ref_round_trips_through_its_bytes() {
        let entry = FrameRef { addr: 0x20_1000, len: 1514 };
        assert_eq!(FrameRef::from_bytes(entry.to_bytes()), entry);
        assert_eq!(&entry.to_bytes()[8..10], &1514u16.to_le_bytes());
    }

    #[test]
    fn errors_round_trip_through_rax() {
        for e in [Error::NoSuchCall, Error::BadAddress, Error::InvalidArgument, Error::WouldBlock, Error::Io] {
            assert_eq!(Error::from_return(e.to_return()), Err(e));
        }
        assert_eq!(Error::from_return(42), Ok(42));
    }

    #[test]
    fn unknown_numbers_are_refused() {
        assert_eq!(Hypercall::try_from(4), Ok(Hypercall::Yield));
        assert_eq!(Hypercall::try_from(99), Err(Error::NoSuchCall));
    }
}
