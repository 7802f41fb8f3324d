//! The KVM VM and its one vCPU: memory, kernel loading, long-mode entry and
//! the run loop.

use crate::debug::{DebugPort, GdbServer};
use crate::devices::{PortAction, PortBus};
use crate::disk::BlockDevice;
use crate::layout::{self, BOOT_INFO_ADDR, GDT_ADDR, PAGE_TABLES_END, PML4_ADDR};
use crate::net::{Backend, NET_MMIO_ADDR, NIC_MAC, NetConfig, NetDevice, Network, Notified, Tap, UserNet};
use crate::progress::BootProgress;
use crate::{Config, Error};
use denali_abi::boot::{
    BOOT_FLAG_CONSOLE_PORT, BOOT_FLAG_PROGRESS_SHOWN, BOOT_FLAG_STATS, BOOT_FLAG_VERBOSE, BOOT_FLAG_ZEROED_MEMORY,
    BOOT_MAGIC, BootInfo, MAX_MEM_REGIONS, MemRegion,
};
use denali_abi::boot::{DEBUG_REQUEST_VECTOR, NIC_VECTOR, VIRTIO_MMIO_SIZE};
use kvm_bindings::kvm_msi;
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::loader::{KernelLoader, elf::Elf};
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

/// Least guest RAM: the kernel's smallest heap (8 MiB, and as much again
/// to find room for it), the kernel and a little for VMs.
const MIN_MEM_SIZE: u64 = 32 << 20;

/// A KVM VM ready to enter the kernel.
pub struct Machine {
    // Kept alive for as long as the vCPU runs (the NIC raises interrupts
    // through it from its own thread).
    _vm: Arc<VmFd>,
    memory: GuestMemoryMmap,
    vcpu: VcpuFd,
    /// The NIC, if the run has one.
    network: Option<Network>,
    /// The VMs' disk, if the run has one.
    disk: Option<BlockDevice>,
    /// The bar a long boot draws.
    progress: BootProgress,
    /// Who reads the kernel's counters, if anyone.
    counters: Option<crate::LiveCounters>,
    /// What explains a crashed VM (taken by the port bus when it runs).
    debug: Option<DebugPort>,
}

pub fn open_kvm() -> Result<Kvm, Error> {
    Kvm::new().map_err(|e| match e.errno() {
        2 => Error::NoKvm,
        13 | 1 => Error::KvmPermission,
        _ => Error::Kvm("open /dev/kvm", e),
    })
}

impl Machine {
    /// Creates the VM, loads the kernel and the bundle, and sets up the vCPU.
    pub fn create(config: &Config) -> Result<Self, Error> {
        let kvm = open_kvm()?;
        // Listen on forwarded ports first: a port in use is a user's
        // mistake to report before anything else happens.
        let backend = match &config.net {
            Some(NetConfig::User { gateway, prefix_len, forwards }) => Some(Backend::User(Box::new(
                UserNet::new(*gateway, *prefix_len, forwards).map_err(|(port, e)| Error::Listen(port, e))?,
            ))),
            Some(NetConfig::Tap(name)) => Some(Backend::Tap(Tap::open(name).map_err(Error::Tap)?)),
            None => None,
        };
        let disk_file = match &config.disk {
            Some(path) => Some(open_disk(path)?),
            None => None,
        };
        let vm = Arc::new(kvm.create_vm().map_err(|e| Error::Kvm("create a VM", e))?);
        if config.mem_size > layout::MAX_MEM_SIZE || config.mem_size < MIN_MEM_SIZE {
            return Err(Error::Memory(format!(
                "{} MiB of guest memory requested; between {} MiB and {} GiB is supported",
                config.mem_size >> 20,
                MIN_MEM_SIZE >> 20,
                layout::MAX_MEM_SIZE >> 30
            )));
        }
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), config.mem_size as usize)])
            .map_err(|e| Error::Memory(e.to_string()))?;
        for (slot, region) in memory.iter().enumerate() {
            let host = region.get_host_address(MemoryRegionAddress(0)).map_err(|e| Error::Memory(e.to_string()))?;
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mmap owned by `memory`, which the
            // Machine keeps alive for as long as the VM exists.
            unsafe { vm.set_user_memory_region(mem_region) }.map_err(|e| Error::Kvm("map guest memory", e))?;
        }

        let kernel_end = load_kernel(&memory, config)?;
        let bundle_addr = kernel_end.next_multiple_of(2 << 20);
        let bundle_end = bundle_addr + config.bundle.len() as u64;
        if bundle_end + (16 << 20) > config.mem_size {
            return Err(Error::Memory(format!(
                "the boot bundle ({} KiB) does not fit in {} MiB of guest memory; give the run more memory",
                config.bundle.len() >> 10,
                config.mem_size >> 20
            )));
        }
        let write = |addr: u64, bytes: &[u8]| {
            memory.write_slice(bytes, GuestAddress(addr)).map_err(|e| Error::Memory(e.to_string()))
        };
        write(bundle_addr, &config.bundle)?;
        for (addr, entry) in denali_abi::boot::boot_page_tables(PML4_ADDR, config.mem_size, false) {
            write(addr, &entry.to_le_bytes())?;
        }
        for (i, descriptor) in layout::GDT.iter().enumerate() {
            write(GDT_ADDR + i as u64 * 8, &descriptor.to_le_bytes())?;
        }

        vm.create_irq_chip().map_err(|e| Error::Kvm("create the interrupt controller", e))?;
        let vcpu = vm.create_vcpu(0).map_err(|e| Error::Kvm("create a vCPU", e))?;
        let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| Error::Kvm("report CPUID", e))?;
        vcpu.set_cpuid2(&cpuid).map_err(|e| Error::Kvm("set CPUID", e))?;
        let tsc_khz = vcpu.get_tsc_khz().map_err(|e| Error::Kvm("report the TSC frequency", e))?;

        let mut regions = [MemRegion::default(); MAX_MEM_REGIONS];
        regions[0] = MemRegion { start: bundle_end.next_multiple_of(4096), end: config.mem_size };
        let info = BootInfo {
            magic: BOOT_MAGIC,
            abi_version: denali_abi::ABI_VERSION,
            region_count: 1,
            bundle_addr,
            bundle_len: config.bundle.len() as u64,
            tsc_khz: u64::from(tsc_khz),
            regions,
            // Fresh anonymous memory: the regions are zero.
            flags: BOOT_FLAG_CONSOLE_PORT
                | BOOT_FLAG_ZEROED_MEMORY
                | BOOT_FLAG_PROGRESS_SHOWN
                | if config.verbose { BOOT_FLAG_VERBOSE } else { 0 }
                | if config.stats { BOOT_FLAG_STATS } else { 0 },
            time_limit_ms: config.time_limit.map_or(0, |t| t.as_millis().max(1) as u64),
            net_mmio: if backend.is_some() { NET_MMIO_ADDR } else { 0 },
            blk_mmio: if disk_file.is_some() { BLK_MMIO_ADDR } else { 0 },
            unix_time_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64),
            debug_vm: config.gdb.as_ref().map_or(0, |gdb| u64::from(gdb.vm) + 1),
        };
        // SAFETY: BootInfo is a #[repr(C)] struct of integers with no padding
        // (its size is asserted in denali-abi), so viewing it as bytes is sound.
        let info_bytes =
            unsafe { std::slice::from_raw_parts((&info as *const BootInfo).cast::<u8>(), size_of::<BootInfo>()) };
        write(BOOT_INFO_ADDR, info_bytes)?;

        let network = backend.map(|backend| {
            let raise = interrupt_raiser(vm.clone(), NIC_VECTOR);
            Network::start(NetDevice::new(memory.clone(), NIC_MAC, Box::new(raise)), backend)
        });
        let disk = match (disk_file, &config.disk) {
            (Some(file), Some(path)) => {
                let device = BlockDevice::new(memory.clone(), file).map_err(|e| Error::Disk(path.clone(), e))?;
                Some(device.with_faults(config.disk_faults))
            }
            _ => None,
        };
        let progress = BootProgress::new(&config.bundle);
        let counters = config.counters.clone();
        let mut debug = DebugPort::new(memory.clone(), &config.bundle, &config.elves, config.core_dir.clone());
        if let Some(gdb) = &config.gdb {
            let listener = std::net::TcpListener::bind(("127.0.0.1", gdb.port)).map_err(|e| Error::Gdb(gdb.port, e))?;
            let raise = Box::new(interrupt_raiser(vm.clone(), DEBUG_REQUEST_VECTOR));
            debug = debug.with_gdb(GdbServer::new(listener, memory.clone(), raise), gdb.vm);
        }
        let machine = Machine { _vm: vm, memory, vcpu, network, disk, progress, counters, debug: Some(debug) };
        machine.enter_long_mode(kernel_entry(config)?)?;
        Ok(machine)
    }

    fn enter_long_mode(&self, entry: u64) -> Result<(), Error> {
        let mut sregs = self.vcpu.get_sregs().map_err(|e| Error::Kvm("read special registers", e))?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x08,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = kvm_segment { selector: 0x10, type_: 0x3, db: 1, l: 0, ..code };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.gdt.base = GDT_ADDR;
        sregs.gdt.limit = (layout::GDT.len() * 8 - 1) as u16;
        sregs.cr3 = PML4_ADDR;
        // PAE, PGE, OSFXSR, OSXMMEXCPT.
        sregs.cr4 = 0x20 | 0x80 | 0x200 | 0x400;
        // PE, MP, ET, NE, WP, PG.
        sregs.cr0 = 0x1 | 0x2 | 0x10 | 0x20 | 0x1_0000 | 0x8000_0000;
        // SCE, LME, LMA, NXE.
        sregs.efer = 0x1 | 0x100 | 0x400 | 0x800;
        self.vcpu.set_sregs(&sregs).map_err(|e| Error::Kvm("set special registers", e))?;
        let mut regs = self.vcpu.get_regs().map_err(|e| Error::Kvm("read registers", e))?;
        regs.rip = entry;
        regs.rdi = BOOT_INFO_ADDR;
        regs.rflags = 0x2;
        self.vcpu.set_regs(&regs).map_err(|e| Error::Kvm("set registers", e))?;
        Ok(())
    }

    /// Runs the vCPU until the kernel writes the exit port.
    pub fn run(mut self, console: Box<dyn Write + Send>) -> Result<i32, Error> {
        let debug = self.debug.take().expect("a machine runs once");
        let mut bus = PortBus::new(console, self.memory.clone(), self.counters.take(), debug);
        let result = loop {
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == 4 => continue, // EINTR
                Err(e) => break Err(Error::Kvm("run the vCPU", e)),
            };
            match exit {
                VcpuExit::IoOut(port, data) => match bus.write(port, data) {
                    PortAction::Continue => {}
                    PortAction::Exit(status) => break Ok(status),
                    PortAction::Panic => break Err(Error::KernelPanic),
                    // Only a kernel without the TSC-deadline timer idles
                    // here; the NIC's interrupts do not cut this sleep
                    // short (with the timer, `hlt` waits for either).
                    PortAction::Idle(duration) => std::thread::sleep(duration),
                    PortAction::Progress { made, memory_mib } => self.progress.update(made, memory_mib),
                },
                VcpuExit::IoIn(port, data) => bus.read(port, data),
                VcpuExit::MmioRead(addr, data) => match (nic_register(&self.network, addr), disk_register(addr)) {
                    (Some((network, offset)), _) => {
                        network.device.lock().unwrap_or_else(|e| e.into_inner()).read(offset, data)
                    }
                    (None, Some(offset)) if let Some(disk) = self.disk.as_mut() => disk.read(offset, data),
                    _ => data.fill(0xff),
                },
                VcpuExit::MmioWrite(addr, data) => {
                    if let (Some(offset), Some(disk)) = (disk_register(addr), self.disk.as_mut()) {
                        disk.write(offset, data);
                    } else if let Some((network, offset)) = nic_register(&self.network, addr) {
                        let mut device = network.device.lock().unwrap_or_else(|e| e.into_inner());
                        if device.write(offset, data) == Some(Notified::Transmit) {
                            let frames = device.take_transmitted();
                            drop(device);
                            network.transmit(frames);
                        }
                    }
                }
                VcpuExit::Shutdown => break Err(Error::TripleFault(self.dump_registers())),
                VcpuExit::Hlt => {
                    break Err(Error::UnexpectedExit(format!(
                        "it halted with nothing to wake it\n{}",
                        self.dump_registers()
                    )));
                }
                other => {
                    let what = format!("{other:?}");
                    break Err(Error::UnexpectedExit(format!("{what}\n{}", self.dump_registers())));
                }
            }
        };
        bus.flush();
        if let Some(network) = self.network.take() {
            network.stop();
        }
        result
    }

    fn dump_registers(&self) -> String {
        let (Ok(r), Ok(s)) = (self.vcpu.get_regs(), self.vcpu.get_sregs()) else {
            return String::from("(registers unavailable)");
        };
        format!(
            "  rip {:#018x}  rsp {:#018x}  rflags {:#x}\n  rax {:#018x}  rbx {:#018x}  rcx {:#018x}  rdx {:#018x}\n  \
             rsi {:#018x}  rdi {:#018x}  rbp {:#018x}\n  cr0 {:#x}  cr2 {:#x}  cr3 {:#x}  cr4 {:#x}  efer {:#x}  cs {:#x}",
            r.rip,
            r.rsp,
            r.rflags,
            r.rax,
            r.rbx,
            r.rcx,
            r.rdx,
            r.rsi,
            r.rdi,
            r.rbp,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.cs.selector
        )
    }
}

/// The NIC and the register offset, if `addr` is one of its registers.
fn nic_register(network: &Option<Network>, addr: u64) -> Option<(&Network, u64)> {
    let network = network.as_ref()?;
    let offset = addr.checked_sub(NET_MMIO_ADDR).filter(|&o| o < VIRTIO_MMIO_SIZE)?;
    Some((network, offset))
}

/// Guest-physical address of the disk's registers: the page after the NIC's.
const BLK_MMIO_ADDR: u64 = NET_MMIO_ADDR + VIRTIO_MMIO_SIZE;

/// The register offset, if `addr` is one of the disk's registers.
fn disk_register(addr: u64) -> Option<u64> {
    addr.checked_sub(BLK_MMIO_ADDR).filter(|&o| o < VIRTIO_MMIO_SIZE)
}

/// Opens the disk file for reading and writing, locked against another
/// run using it at the same time (the lock goes with the file).
fn open_disk(path: &std::path::Path) -> Result<File, Error> {
    let file = File::options().read(true).write(true).open(path).map_err(|e| Error::Disk(path.to_path_buf(), e))?;
    // SAFETY: flock on a descriptor we own; it changes nothing but the lock.
    if unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::DiskInUse(path.to_path_buf()));
    }
    Ok(file)
}

fn open_kernel(config: &Config) -> Result<File, Error> {
    File::open(&config.kernel).map_err(|e| Error::Kernel(format!("{}: {e}", config.kernel.display())))
}

/// Loads the kernel's segments at their physical addresses and returns the
/// end of the highest one.
fn load_kernel(memory: &GuestMemoryMmap, config: &Config) -> Result<u64, Error> {
    let mut file = open_kernel(config)?;
    let loaded = Elf::load(memory, None, &mut file, None)
        .map_err(|e| Error::Kernel(format!("{}: {e}", config.kernel.display())))?;
    if loaded.kernel_end < PAGE_TABLES_END {
        return Err(Error::Kernel("the kernel's segments overlap the boot page tables".into()));
    }
    Ok(loaded.kernel_end)
}

fn kernel_entry(config: &Config) -> Result<u64, Error> {
    let mut file = open_kernel(config)?;
    let mut header = [0u8; 64];
    std::io::Read::read_exact(&mut file, &mut header).map_err(|e| Error::Kernel(e.to_string()))?;
    Ok(u64::from_le_bytes(header[24..32].try_into().expect("8 bytes")))
}

/// Raises interrupt `vector` in the kernel, from any thread: a
/// fixed-delivery MSI to APIC 0, which the in-kernel LAPIC takes.
fn interrupt_raiser(vm: Arc<VmFd>, vector: u8) -> impl Fn() + Send + 'static {
    move || {
        let msi = kvm_msi { address_lo: 0xfee0_0000, data: u32::from(vector), ..Default::default() };
        let _ = vm.signal_msi(msi);
    }
}
