//! The PCI bus, through the legacy configuration ports (0xCF8/0xCFC), which
//! every PC and QEMU machine type has: finds the virtio-net NIC on bare
//! metal and hands `virtio-drivers` its transport.

use crate::mem::frame::FrameAllocator;
use crate::mem::phys;
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{BarInfo, Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use x86_64::instructions::port::Port;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Configuration space through the I/O ports.
pub struct PortCam;

fn select(device_function: DeviceFunction, register_offset: u8) {
    let address = 0x8000_0000
        | u32::from(device_function.bus) << 16
        | u32::from(device_function.device) << 11
        | u32::from(device_function.function) << 8
        | u32::from(register_offset & 0xfc);
    // SAFETY: the configuration address port only selects a register.
    unsafe { Port::<u32>::new(CONFIG_ADDRESS).write(address) };
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, device_function: DeviceFunction, register_offset: u8) -> u32 {
        select(device_function, register_offset);
        // SAFETY: reading configuration space has no side effects.
        unsafe { Port::<u32>::new(CONFIG_DATA).read() }
    }

    fn write_word(&mut self, device_function: DeviceFunction, register_offset: u8, data: u32) {
        select(device_function, register_offset);
        // SAFETY: the kernel is the only user of configuration space.
        unsafe { Port::<u32>::new(CONFIG_DATA).write(data) };
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// The first virtio-net device on bus 0, its memory BARs mapped uncached
/// and bus mastering on, as a `virtio-drivers` transport.
pub fn find_virtio_net(frames: &mut FrameAllocator, kernel_pml4: u64) -> Option<PciTransport> {
    let mut root = PciRoot::new(PortCam);
    let found = root.enumerate_bus(0).find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Network));
    let (device_function, _) = found?;
    for bar in root.bars(device_function).ok()?.into_iter().flatten() {
        if let BarInfo::Memory { address, size, .. } = bar
            && address != 0
            && size != 0
        {
            phys::map_mmio(frames, kernel_pml4, address, size)?;
        }
    }
    root.set_command(device_function, Command::MEMORY_SPACE | Command::BUS_MASTER);
    PciTransport::new::<super::virtio_net::KernelHal, _>(&mut root, device_function).ok()
}
