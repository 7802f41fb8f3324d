//! Errors of the monitor, each a sentence a user can act on.

use std::fmt;
use std::io;

/// Why a run could not start or ended abnormally.
#[derive(Debug)]
pub enum Error {
    /// `/dev/kvm` does not exist.
    NoKvm,
    /// `/dev/kvm` exists but may not be opened.
    KvmPermission,
    /// Another KVM ioctl failed.
    Kvm(&'static str, kvm_ioctls::Error),
    /// The kernel ELF could not be read or loaded.
    Kernel(String),
    /// The guest memory could not be set up.
    Memory(String),
    /// The kernel reset the CPU (a triple fault).
    TripleFault(String),
    /// The kernel reported a panic on the panic port.
    KernelPanic,
    /// The vCPU stopped for a reason the monitor does not handle.
    UnexpectedExit(String),
    /// Writing the console failed.
    Console(io::Error),
    /// A forwarded port could not be listened on.
    Listen(u16, io::Error),
    /// The TAP device could not be attached.
    Tap(crate::net::TapError),
    /// The disk file could not be opened.
    Disk(std::path::PathBuf, io::Error),
    /// Another run holds the disk file.
    DiskInUse(std::path::PathBuf),
    /// gdb's port could not be listened on.
    Gdb(u16, io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoKvm => write!(
                f,
                "/dev/kvm does not exist: enable virtualisation (load the kvm_intel or kvm_amd module) or run with --qemu"
            ),
            Error::KvmPermission => write!(
                f,
                "permission denied opening /dev/kvm: add your user to the `kvm` group (sudo usermod -aG kvm $USER) and log in again"
            ),
            Error::Kvm(what, e) => write!(f, "KVM refused to {what}: {e}"),
            Error::Kernel(e) => write!(f, "cannot load the isolation kernel: {e}"),
            Error::Memory(e) => write!(f, "cannot set up guest memory: {e}"),
            Error::TripleFault(regs) => write!(f, "the isolation kernel triple-faulted (the CPU reset):\n{regs}"),
            Error::KernelPanic => write!(f, "the isolation kernel panicked (its message is above)"),
            Error::UnexpectedExit(e) => write!(f, "the isolation kernel stopped unexpectedly: {e}"),
            Error::Console(e) => write!(f, "cannot write the console: {e}"),
            Error::Listen(port, e) if e.kind() == io::ErrorKind::AddrInUse => write!(
                f,
                "port {port} on 127.0.0.1 is already in use: stop what listens there or forward another host port (-p HOST:GUEST)"
            ),
            Error::Tap(e) if e.error.raw_os_error() == Some(1) || e.error.kind() == io::ErrorKind::PermissionDenied => {
                write!(
                    f,
                    "no permission to attach TAP device {}: run as root (or grant CAP_NET_ADMIN), or use -p HOST:GUEST for user-mode networking",
                    e.name
                )
            }
            Error::Tap(e) => write!(f, "cannot attach TAP device {}: {}", e.name, e.error),
            Error::Disk(path, e) => {
                write!(
                    f,
                    "cannot open the disk file {} ({e}): check it exists and is writable, or name another with --disk",
                    path.display()
                )
            }
            Error::DiskInUse(path) => write!(
                f,
                "the disk file {} is in use by another run: wait for it to end, or name another file with --disk",
                path.display()
            ),
            Error::Listen(port, e) => {
                write!(f, "cannot listen on 127.0.0.1:{port} ({e}): forward another host port (-p HOST:GUEST)")
            }
            Error::Gdb(port, e) => {
                write!(f, "cannot listen for gdb on 127.0.0.1:{port} ({e}): name another port with --gdb PORT")
            }
        }
    }
}

impl std::error::Error for Error {}
