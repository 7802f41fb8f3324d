//! The PCI bus, through the legacy configuration ports (0xCF8/0xCFC), which
//! every PC and QEMU machine type has: finds the virtio NIC and disk on bare
//! metal and hands `virtio-drivers` their transports.

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

/// Where a virtio device's MSI-X table and virtio common
/// configuration are, to route its receive interrupt once the driver has
/// set its queues up.
pub struct InterruptRoute {
    device_function: DeviceFunction,
    /// Offset of the MSI-X capability in configuration space, and the
    /// kernel address of the MSI-X table.
    msix: Option<(u8, u64)>,
    /// Kernel address of the virtio common configuration structure.
    common: Option<u64>,
}

const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;

/// The `nth` virtio device of `kind` on bus 0 (counting from 0), its
/// memory BARs mapped uncached and bus mastering on: its transport for
/// `virtio-drivers`, and how to route its interrupt.
pub fn find_virtio(
    frames: &mut FrameAllocator,
    kernel_pml4: u64,
    kind: DeviceType,
    nth: usize,
) -> Option<(PciTransport, InterruptRoute)> {
    let mut root = PciRoot::new(PortCam);
    let found = root.enumerate_bus(0).filter(|(_, info)| virtio_device_type(info) == Some(kind)).nth(nth);
    let (device_function, _) = found?;
    let bars = root.bars(device_function).ok()?;
    let mut bar_address = [0u64; 6];
    for (index, bar) in bars.iter().enumerate() {
        if let Some(BarInfo::Memory { address, size, .. }) = *bar
            && address != 0
            && size != 0
        {
            phys::map_mmio(frames, kernel_pml4, address, size)?;
            bar_address[index] = address;
        }
    }
    let at = |bar: u32, offset: u32| {
        let base = *bar_address.get(bar as usize)?;
        (base != 0).then(|| phys::to_virt(base + u64::from(offset)) as u64)
    };
    let (mut msix, mut common) = (None, None);
    for capability in root.capabilities(device_function) {
        let word = |at: u8| PortCam.read_word(device_function, capability.offset + at);
        match capability.id {
            CAP_MSIX => {
                let table = word(4);
                msix = at(table & 7, table & !7).map(|table| (capability.offset, table));
            }
            CAP_VENDOR if (capability.private_header >> 8) as u8 == VIRTIO_PCI_CAP_COMMON_CFG && common.is_none() => {
                common = at(word(4) & 0xff, word(8));
            }
            _ => {}
        }
    }
    root.set_command(device_function, Command::MEMORY_SPACE | Command::BUS_MASTER);
    let transport = PciTransport::new::<super::KernelHal, _>(&mut root, device_function).ok()?;
    Some((transport, InterruptRoute { device_function, msix, common }))
}

impl InterruptRoute {
    /// Sends the receive queue's interrupts to `vector` on this CPU through
    /// MSI-X; call once the driver has set its queues up. False if the
    /// device has no MSI-X or refuses the route (the kernel then polls).
    pub fn route_receive_interrupt(&self, vector: u8, apic_id: u32) -> bool {
        let (Some((cap, table)), Some(common)) = (self.msix, self.common) else { return false };
        let table = table as *mut u32;
        let common = common as *mut u8;
        // SAFETY: `table` is entry 0 of the device's MSI-X table and
        // `common` its virtio common configuration, both in BARs mapped
        // uncached by find_virtio and used by nothing else; the
        // offsets are the PCI and virtio specifications'.
        unsafe {
            table.write_volatile(0xfee0_0000 | (apic_id & 0xff) << 12);
            table.add(1).write_volatile(0);
            table.add(2).write_volatile(u32::from(vector));
            table.add(3).write_volatile(0);
            // MSI-X enable (bit 15 of message control), function unmasked.
            let mut cam = PortCam;
            let control = cam.read_word(self.device_function, cap);
            cam.write_word(self.device_function, cap, (control | 1 << 31) & !(1 << 30));
            // queue_select = 0 (receive), queue_msix_vector = entry 0.
            common.add(0x16).cast::<u16>().write_volatile(0);
            common.add(0x1a).cast::<u16>().write_volatile(0);
            common.add(0x1a).cast::<u16>().read_volatile() == 0
        }
    }
}
