//! Drivers for the machine's devices (not the VMs': theirs are virtual and
//! live in `vm` and `net`).

pub mod pci;
pub mod virtio_net;
