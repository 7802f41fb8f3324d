//! Bare metal: `cargo denali build --bare-metal` writes a UEFI disk image
//! (`<target-dir>/denali/<profile>/<name>.img`) of the loader, the kernel and
//! the service's bundle, and the bundle alone (`<name>.bundle`, for PVH
//! loaders such as `qemu -kernel denali-kernel -initrd <name>.bundle`).
//! `cargo denali run --qemu` boots the service it builds through PVH (the
//! kernel ELF and the bundle, no firmware: about 100 ms to the first line),
//! or a disk image it is given with OVMF, under `qemu-system-x86_64`, and
//! exits with the service's status.

use crate::build::{self, BuildOptions};
use crate::run::{RunOptions, Service};
use crate::{disk, kernel, vm_disk};
use anyhow::{Context, Result, bail};
use denali_abi::boot::{BOOT_FLAG_STATS, BOOT_FLAG_VERBOSE, PVH_TIME_LIMIT_KEY, TIMED_OUT_STATUS, set_run_flags};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// QEMU's UEFI firmware (Debian package `ovmf`).
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// How long after `--timeout` QEMU is stopped when the kernel, told the
/// limit, has not ended the run itself (its clock starts after QEMU's
/// own start-up and the kernel's boot; more than that is a stuck kernel).
const KERNEL_LIMIT_GRACE: Duration = Duration::from_secs(60);
/// The port of QEMU's isa-debug-exit device: the kernel's exit port.
const EXIT_PORT: &str = "0x501";

/// A bare-metal disk image, and the service in it.
pub struct BareMetalImage {
    /// The `.img` file.
    pub path: PathBuf,
    /// The service it boots.
    pub service: Service,
}

/// How a run wants the images it builds: VMs per image (else as the
/// service's `Denali.toml` says), and the kernel's `--stats` and `-v`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImageRun {
    /// VMs to boot from the image.
    pub instances: Option<u32>,
    /// Print per-VM accounting at the end.
    pub stats: bool,
    /// The kernel reports its own progress.
    pub verbose: bool,
}

/// Builds the service and writes one disk image per binary, set up as
/// `run` says.
pub fn build_images(options: &BuildOptions, run: ImageRun) -> Result<Vec<BareMetalImage>> {
    let built = build::build(options)?;
    let loader = std::fs::read(kernel::loader_efi()?).context("cannot read the UEFI loader")?;
    let kernel = std::fs::read(kernel::kernel_elf()?).context("cannot read the isolation kernel")?;
    let mut images = Vec::new();
    for mut b in built {
        if let Some(n) = run.instances {
            b.manifest.instances = n;
        }
        let service = Service::load(&b.dvm, b.manifest)?;
        let (mut bundle, _) = crate::run::bundle(std::slice::from_ref(&service))?;
        let flags = if run.stats { BOOT_FLAG_STATS } else { 0 } | if run.verbose { BOOT_FLAG_VERBOSE } else { 0 };
        set_run_flags(&mut bundle, flags);
        let path = b.dvm.with_extension("img");
        disk::write_image(&path, &loader, &kernel, &bundle)?;
        // The bundle alone, for loaders that take the kernel and an initrd
        // (QEMU's `-kernel denali-kernel -initrd NAME.bundle`, via PVH).
        let bundle_path = b.dvm.with_extension("bundle");
        std::fs::write(&bundle_path, &bundle).with_context(|| format!("cannot write {}", bundle_path.display()))?;
        images.push(BareMetalImage { path, service });
    }
    Ok(images)
}

/// `cargo denali run --qemu`: boots the given disk image with OVMF, or
/// builds the service and boots its kernel and bundle through PVH.
pub fn run(options: &RunOptions) -> Result<i32> {
    match options.images.as_slice() {
        [] => {
            let run = ImageRun { instances: options.instances, stats: options.stats, verbose: options.build.verbose };
            let mut images = build_images(&options.build, run)?;
            if images.len() != 1 {
                bail!("the package has several binaries: pick one with --bin NAME");
            }
            let built = images.remove(0);
            let disk = vm_disk::for_run(std::slice::from_ref(&built.service), options.disk.as_deref(), options.swap)?;
            let kernel = kernel::kernel_elf()?;
            let bundle = built.path.with_extension("bundle");
            boot(QemuBoot::Pvh { kernel: &kernel, bundle: &bundle, machine: "q35" }, disk.as_deref(), options)
        }
        // A prebuilt image's manifest is inside it: the disk is the one
        // named, which the kernel checks is large enough.
        [one] => {
            if options.stats || options.instances.is_some() {
                eprintln!(
                    "warning: a prebuilt image boots as it was built: --stats and --instances apply to images `run --qemu` builds itself"
                );
            }
            // The windows its VMs ask for are in its bundle: the swap area
            // goes beyond them.
            check_image(one)?;
            let disk = options.disk.as_deref().map(|path| {
                let windows_end = vm_disk::windows_end_of_bundle(&disk::read_bundle(one)?)?;
                vm_disk::prepare(path, windows_end, options.swap).map(|()| path.to_path_buf())
            });
            boot(QemuBoot::Uefi(one), disk.transpose()?.as_deref(), options)
        }
        _ => bail!("--qemu boots one disk image at a time"),
    }
}

/// Refuses what is not a Denali disk image before QEMU sees it.
pub fn check_image(path: &Path) -> Result<()> {
    // The protective MBR, the GPT header and the partition's boot sector:
    // the first MiB and a sector, not the whole (mostly empty) image.
    let read = |what: std::io::Error| anyhow::Error::new(what).context(format!("cannot read {}", path.display()));
    let mut file = std::fs::File::open(path).map_err(read)?;
    let len = file.metadata().map_err(read)?.len();
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, (1 << 20) + 512), &mut head).map_err(read)?;
    let gpt = head.get(512..520) == Some(b"EFI PART");
    let fat = head.get((1 << 20) + 510..(1 << 20) + 512) == Some(&[0x55, 0xaa][..]);
    let whole = len >= 64 << 20;
    if !(gpt && fat && whole) {
        bail!(
            "{} is not a Denali disk image (no GPT disk with its EFI partition, or cut short): build one with `cargo denali build --bare-metal`",
            path.display()
        );
    }
    Ok(())
}

/// KVM acceleration where it can run OVMF, software emulation otherwise.
/// The PVM flavour of KVM (module `kvm_pvm`) runs only PVM-aware guest
/// kernels: OVMF stops there with a KVM internal error, so it is not used.
/// `DENALI_QEMU_ACCEL` (QEMU's `accel=` value) overrides the choice.
fn default_accel() -> &'static str {
    let kvm = std::fs::File::options().read(true).write(true).open("/dev/kvm").is_ok();
    if kvm && !host_is_pvm() { "kvm:tcg" } else { "tcg" }
}

/// Whether `/dev/kvm` is the PVM flavour of KVM: its module `kvm_pvm` is
/// loaded. There the isolation kernel's ring-0 code runs in PVM's
/// instruction emulator (about 1.2 µs an instruction) while VMs' ring-3
/// code runs natively.
pub fn host_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The CPU model QEMU gets with KVM: everything the host offers but
/// IA32_ARCH_CAPABILITIES (MSR 0x10a), which QEMU sets at start and the PVM
/// flavour of KVM refuses on AMD hosts (QEMU then aborts). The kernel does
/// not read that MSR, so nothing is lost on hosts that have it.
const KVM_CPU: &str = "max,-arch-capabilities";

/// How QEMU is to start the kernel.
#[derive(Clone, Copy, Debug)]
pub enum QemuBoot<'a> {
    /// OVMF boots the UEFI disk image (`build --bare-metal`'s `.img`).
    Uefi(&'a Path),
    /// QEMU's own loader enters the kernel ELF through its PVH note, the
    /// bundle as the initrd, on `machine` (`q35`, or `microvm`: no PCI).
    Pvh { kernel: &'a Path, bundle: &'a Path, machine: &'a str },
}

/// Memory QEMU's machine gets unless `--mem` says otherwise.
pub const QEMU_MEMORY: u64 = 1 << 30;

/// A QEMU command line for `boot` with acceleration `accel` (QEMU's
/// `accel=` value) and `memory` bytes of RAM: one CPU, the console on
/// stdout, the kernel's exit port, no network.
pub fn qemu_command(boot: QemuBoot<'_>, accel: &str, memory: u64) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    let machine = match boot {
        QemuBoot::Uefi(_) => "q35",
        QemuBoot::Pvh { machine, .. } => machine,
    };
    let memory = format!("{}M", memory >> 20);
    let cpu = if accel.contains("kvm") { KVM_CPU } else { "max" };
    qemu.args(["-machine", &format!("{machine},accel={accel}"), "-cpu", cpu, "-m", &memory, "-smp", "1"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot", "-nodefaults"])
        .args(["-device", &format!("isa-debug-exit,iobase={EXIT_PORT},iosize=0x04")])
        .stdin(Stdio::null());
    match boot {
        QemuBoot::Uefi(image) => {
            qemu.args(["-bios", OVMF]).arg("-drive").arg(format!("format=raw,snapshot=on,file={}", qemu_path(image)));
        }
        QemuBoot::Pvh { kernel, bundle, .. } => {
            qemu.arg("-kernel").arg(kernel).arg("-initrd").arg(bundle);
        }
    }
    qemu
}

/// Gives `qemu` the VMs' disk file `disk`, as a virtio-blk device on the
/// PCI bus (where the kernel looks for it).
pub fn qemu_disk(qemu: &mut Command, disk: &Path) {
    qemu.arg("-drive")
        .arg(format!("format=raw,if=none,id=vmdisk,file={}", qemu_path(disk)))
        .args(["-device", "virtio-blk-pci,drive=vmdisk"]);
}

/// A path as a value in a QEMU option list (a comma is written twice).
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

fn boot(how: QemuBoot<'_>, disk: Option<&Path>, options: &RunOptions) -> Result<i32> {
    let (time_limit, forwards) = (options.time_limit, &options.forwards);
    if matches!(how, QemuBoot::Uefi(_)) && !Path::new(OVMF).is_file() {
        bail!("QEMU's UEFI firmware is missing ({OVMF}): install the Debian package ovmf");
    }
    let accel = std::env::var("DENALI_QEMU_ACCEL").unwrap_or_else(|_| default_accel().into());
    // Through PVH the kernel is told the time limit and ends the run with
    // its report, as under our monitor; QEMU is stopped only if it does not.
    // A prebuilt UEFI image cannot be told: QEMU is stopped at the limit.
    let kernel_ends_run = matches!(how, QemuBoot::Pvh { .. }) && time_limit.is_some();
    let host_limit = time_limit.map(|limit| if kernel_ends_run { limit + KERNEL_LIMIT_GRACE } else { limit });
    let mut qemu = qemu_command(how, &accel, options.memory.unwrap_or(QEMU_MEMORY));
    if let (true, Some(limit)) = (kernel_ends_run, time_limit) {
        qemu.arg("-append").arg(format!("{PVH_TIME_LIMIT_KEY}{}", limit.as_millis().max(1)));
    }
    if let Some(disk) = disk {
        qemu_disk(&mut qemu, disk);
    }
    if !forwards.is_empty() {
        // QEMU's user-mode network: the first VM is at 10.0.2.15, its
        // default address, behind a virtio-net NIC on the PCI bus.
        let mut netdev = String::from("user,id=net0");
        for &(host, guest) in forwards {
            // A port in use gets the same sentence as under our monitor.
            std::net::TcpListener::bind(("127.0.0.1", host)).map_err(|e| denali_monitor::Error::Listen(host, e))?;
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        qemu.args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"]);
    }
    // SAFETY: between fork and exec only prctl runs, which is
    // async-signal-safe; it makes QEMU die if cargo denali does.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut qemu, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
    let mut child = match qemu.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("qemu-system-x86_64 is not installed: install the Debian package qemu-system-x86")
        }
        Err(e) => return Err(e).context("cannot start qemu-system-x86_64"),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if host_limit.is_some_and(|limit| started.elapsed() > limit) {
            let _ = child.kill();
            let _ = child.wait();
            if kernel_ends_run {
                eprintln!(
                    "warning: QEMU was stopped {} s after --timeout: the kernel did not end the run itself, so it printed no report",
                    KERNEL_LIMIT_GRACE.as_secs()
                );
            }
            return Ok(TIMED_OUT_STATUS);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // isa-debug-exit turns the kernel's status s into QEMU's (s << 1) | 1.
    match status.code() {
        Some(code) if (code - 1) / 2 == denali_abi::boot::KERNEL_PANIC_STATUS => {
            bail!("the isolation kernel panicked (its message is above)")
        }
        Some(code) if code % 2 == 1 => Ok((code - 1) / 2),
        Some(code) => bail!("QEMU stopped (status {code}) without the kernel reporting an exit status"),
        None => bail!("QEMU was killed by a signal"),
    }
}
