//! I/O errors and the `Read`/`Write` traits, shaped like `std::io` so code
//! written against std reads the same here.

use core::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer refused the connection (nothing listens there).
    ConnectionRefused,
    /// The peer reset the connection.
    ConnectionReset,
    /// The connection was dropped for lack of an answer.
    TimedOut,
    /// The socket is not connected (or no longer).
    NotConnected,
    /// The address or port is already bound in this VM.
    AddrInUse,
    /// The address is not one this VM can use.
    AddrNotAvailable,
    /// Writing after the write half was shut down.
    BrokenPipe,
    /// An argument was not valid (for example port 0 to connect to).
    InvalidInput,
    /// The operation would have had to wait.
    WouldBlock,
    /// Fewer bytes than needed before the end of the stream.
    UnexpectedEof,
    /// A write accepted no bytes.
    WriteZero,
    /// The VM has no network configuration.
    NetworkUnreachable,
    /// The VM lacks the device (no disk).
    Unsupported,
    /// Anything else.
    Other,
}

/// An I/O error: a kind, and a sentence for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: &'static str,
}

impl Error {
    /// An error of `kind` described by `message`.
    pub const fn new(kind: ErrorKind, message: &'static str) -> Self {
        Error { kind, message }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl core::error::Error for Error {}

/// `Result` with an I/O [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// A source of bytes.
pub trait Read {
    /// Reads some bytes into `buf`, returning how many; 0 means the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize>;

    /// Reads exactly `buf.len()` bytes.
    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.read(buf)? {
                0 => return Err(Error::new(ErrorKind::UnexpectedEof, "the stream ended before the buffer was full")),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }
}

/// A sink of bytes.
pub trait Write {
    /// Writes some of `buf`, returning how many bytes were taken.
    fn write(&mut self, buf: &[u8]) -> Result<usize>;

    /// Sends what is buffered on its way.
    fn flush(&mut self) -> Result<()>;

    /// Writes all of `buf`.
    fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.write(buf)? {
                0 => return Err(Error::new(ErrorKind::WriteZero, "the stream took none of the bytes")),
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }
}
