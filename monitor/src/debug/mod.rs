//! The kernel's debug port (see `denali_abi::debug`). When a VM faults or
//! panics, the monitor reads its stack through the VM's own page tables,
//! prints its backtrace with function names, files and lines from the
//! image's ELF, and, where asked, writes a core file of it. When the VM
//! under gdb stops, the monitor serves gdb (see [`gdb`]).

mod backtrace;
mod core_file;
mod gdb;
mod symbols;
mod walk;
mod watch;

pub use gdb::GdbServer;

use denali_abi::boot::Bundle;
use denali_abi::debug::{DebugEvent, EventKind};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use symbols::{SourceFrame, Symbols};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use walk::VmSpace;

/// Why a crash has no names when the image came without its ELF.
const NO_ELF: &str = "the image's ELF is not beside it (`cargo denali build` keeps NAME.elf next to NAME.dvm)";

/// Functions of the panic machinery: a panic's backtrace starts below the
/// last of them, where the service's own code panicked.
const PANIC_MACHINERY: [&str; 4] = [
    "core::panicking::",
    "rust_begin_unwind",
    "__rustc::rust_begin_unwind",
    "std::sys::backtrace::__rust_end_short_backtrace",
];

/// Where std's runtime calls `main`: a backtrace ends above it, as std's
/// own short backtraces do.
const RUNTIME_START: &str = "std::sys::backtrace::__rust_begin_short_backtrace";

/// One image of the bundle and what is known of its code.
struct Image {
    name: String,
    /// Ids of the VMs made from it.
    vms: Range<u64>,
    elf: Option<PathBuf>,
    /// Loaded at its first crash.
    symbols: Option<Result<Symbols, String>>,
}

/// Most core files one run writes: a bundle of many VMs that all crash
/// must not fill the disk.
pub const CORE_FILES_MAX: usize = 16;
/// Most bytes of VM memory in one run's core files.
pub const CORE_BYTES_MAX: u64 = 4 << 30;

/// What the monitor knows to explain crashes, and the gdb server.
pub struct DebugPort {
    memory: GuestMemoryMmap,
    images: Vec<Image>,
    /// Where to write core files, if anywhere.
    core_dir: Option<PathBuf>,
    /// Core files written so far, and the bytes of memory in them.
    cores: usize,
    core_bytes: u64,
    /// gdb's server and the VM it debugs, if any.
    gdb: Option<(GdbServer, u64)>,
}

impl DebugPort {
    /// Crash reports for the VMs of `bundle` in `memory`; `elves[i]` is
    /// the ELF of the bundle's `i`th image, if there is one. With a
    /// `core_dir`, each crashed VM also leaves a core file there.
    pub fn new(
        memory: GuestMemoryMmap,
        bundle: &[u8],
        elves: &[Option<PathBuf>],
        core_dir: Option<PathBuf>,
    ) -> DebugPort {
        let mut images = Vec::new();
        if let Ok(bundle) = Bundle::parse(bundle) {
            let mut next = 0u64;
            for index in 0..bundle.len() {
                let Some((entry, _)) = bundle.entry(index) else { continue };
                let vms = next..next + u64::from(entry.instances);
                next = vms.end;
                let elf = elves.get(index as usize).cloned().flatten();
                images.push(Image { name: entry.name().to_string(), vms, elf, symbols: None });
            }
        }
        DebugPort { memory, images, core_dir, cores: 0, core_bytes: 0, gdb: None }
    }

    /// Serves gdb with `server` for VM `vm`.
    pub fn with_gdb(mut self, server: GdbServer, vm: u32) -> DebugPort {
        self.gdb = Some((server, u64::from(vm)));
        self
    }

    /// What to say at the end of a run whose debugged VM never stopped
    /// for gdb (the kernel refused it, or the run ended first).
    pub fn unserved(&self) -> Option<String> {
        let (_, vm) = self.gdb.as_ref().filter(|(server, _)| !server.has_stopped())?;
        Some(format!("denali: vm {vm} never reached its entry point, so gdb was not served\n"))
    }

    /// The kernel's event at guest-physical `addr`: a crash is explained,
    /// a stop of the debugged VM served. What there is to say goes to
    /// `say` as soon as it is known.
    pub fn event(&mut self, addr: u64, say: &mut dyn FnMut(&str)) {
        let mut bytes = [0u8; DebugEvent::SIZE];
        if self.memory.read_slice(&mut bytes, GuestAddress(addr)).is_err() {
            return;
        }
        let event = DebugEvent::from_bytes(&bytes);
        if event.is_crash()
            && let Some(text) = self.describe(&event)
        {
            say(&text);
        }
        if let Some((server, _)) = self.gdb.as_mut().filter(|(_, vm)| *vm == event.vm) {
            server.stop(addr, event, say);
        }
    }

    /// What to print for the crash `report`.
    fn describe(&mut self, report: &DebugEvent) -> Option<String> {
        let kind = report.event_kind()?;
        let space = VmSpace::new(&self.memory, report.root, report.space_size);
        let regs = &report.regs;
        let addresses = backtrace::return_addresses(&space, regs.rip, regs.rbp, regs.rsp);
        let image = self.images.iter_mut().find(|image| image.vms.contains(&report.vm));
        let name = image.as_ref().map_or("?", |image| image.name.as_str()).to_string();
        let elf = image.as_ref().and_then(|image| image.elf.clone());
        let mut text = format!("denali: vm {} ({name}) backtrace:\n", report.vm);
        match image.map(Image::symbols) {
            Some(Ok(symbols)) => write_named(&mut text, symbols, &addresses, kind),
            why => {
                for (number, address) in addresses.iter().enumerate() {
                    let _ = writeln!(text, "  #{number} {address:#018x}");
                }
                let why = match why {
                    Some(Err(why)) => why.as_str(),
                    _ => NO_ELF,
                };
                let _ = writeln!(text, "  (no function names: {why})");
            }
        }
        if let Some(dir) = self.core_dir.clone() {
            let elf = elf.unwrap_or_else(|| PathBuf::from(format!("{name}.elf")));
            text += &self.write_core(&dir, report, &name, &elf);
        }
        Some(text)
    }

    /// Writes the core of the VM `report` names (made from `elf`) into
    /// `dir`; says where, or why not.
    fn write_core(&mut self, dir: &Path, report: &DebugEvent, name: &str, elf: &Path) -> String {
        let vm = report.vm;
        if self.cores >= CORE_FILES_MAX {
            return format!("denali: vm {vm} left no core file: this run wrote {CORE_FILES_MAX} already\n");
        }
        let space = VmSpace::new(&self.memory, report.root, report.space_size);
        let pages = space.pages();
        let bytes = core_file::memory_bytes(&pages);
        if self.core_bytes + bytes > CORE_BYTES_MAX {
            let mib = |bytes: u64| bytes >> 20;
            return format!(
                "denali: vm {vm} left no core file: its {} MiB would take this run's core files past {} MiB\n",
                mib(bytes),
                mib(CORE_BYTES_MAX)
            );
        }
        let path = dir.join(format!("core.vm{vm}"));
        let program = elf.file_name().map_or_else(|| name.into(), |file| file.to_string_lossy());
        let written = core_file::create(&path).and_then(|file| {
            core_file::write_core(&mut std::io::BufWriter::new(file), &space, &pages, report, &program, name)
        });
        if written.is_err() {
            // Half a core would only mislead gdb.
            let _ = std::fs::remove_file(&path);
        }
        let (path, elf) = (path.display(), elf.display());
        match written {
            Ok(()) => {
                self.cores += 1;
                self.core_bytes += bytes;
                format!("denali: vm {vm} core file: {path} (open it with `gdb {elf} {path}`)\n")
            }
            Err(e) => format!("denali: vm {vm} left no core file: cannot write {path}: {e}\n"),
        }
    }
}

impl Image {
    fn symbols(&mut self) -> &Result<Symbols, String> {
        let elf = &self.elf;
        self.symbols.get_or_insert_with(|| match elf {
            Some(path) => Symbols::load(path).map_err(|e| format!("cannot read {}: {e}", path.display())),
            None => Err(NO_ELF.into()),
        })
    }
}

/// Writes the frames at `addresses` (innermost first) with their names,
/// leaving out a panic's machinery.
fn write_named(text: &mut String, symbols: &Symbols, addresses: &[u64], kind: EventKind) {
    let mut frames: Vec<(u64, SourceFrame)> = Vec::new();
    for (index, &address) in addresses.iter().enumerate() {
        // A return address is the instruction after the call.
        let pc = if index == 0 { address } else { address.saturating_sub(1) };
        let found = symbols.frames_at(pc);
        if found.is_empty() {
            frames.push((address, SourceFrame { function: None, location: None, inlined: false }));
        }
        frames.extend(found.into_iter().map(|frame| (address, frame)));
    }
    let shown = shown_frames(&frames, kind);
    for (number, (address, frame)) in frames[shown.clone()].iter().enumerate() {
        let function = frame.function.as_deref().unwrap_or("??");
        let _ = write!(text, "  #{number} {address:#018x} in {function}");
        if let Some(location) = &frame.location {
            let _ = write!(text, " at {location}");
        }
        text.push_str(if frame.inlined { " (inlined)\n" } else { "\n" });
    }
    if shown.start > 0 {
        let _ = writeln!(text, "  ({} frames of the panic machinery above #0 not shown)", shown.start);
    }
    if shown.end < frames.len() {
        let _ = writeln!(text, "  ({} frames of std's runtime below not shown)", frames.len() - shown.end);
    }
}

/// The frames worth showing: not std's runtime below `main`, and, for a
/// panic, not the panic machinery at the top.
fn shown_frames(frames: &[(u64, SourceFrame)], kind: EventKind) -> Range<usize> {
    let named = |frame: &SourceFrame, prefix: &str| frame.function.as_deref().is_some_and(|f| f.starts_with(prefix));
    let end = frames.iter().position(|(_, frame)| named(frame, RUNTIME_START)).unwrap_or(frames.len());
    let machinery = |frame: &SourceFrame| PANIC_MACHINERY.iter().any(|prefix| named(frame, prefix));
    let start = match frames[..end].iter().rposition(|(_, frame)| machinery(frame)) {
        Some(last) if kind == EventKind::Panic && last + 1 < end => last + 1,
        _ => 0,
    };
    start..end
}

/// The signal Linux would send for this crash (gdb's numbers are the
/// same): what a core file and gdb say ended the VM.
fn crash_signal(event: &DebugEvent) -> u8 {
    const SIGILL: u8 = 4;
    const SIGTRAP: u8 = 5;
    const SIGABRT: u8 = 6;
    const SIGFPE: u8 = 8;
    const SIGSEGV: u8 = 11;
    match (event.event_kind(), event.vector) {
        (Some(EventKind::Panic), _) => SIGABRT,
        (_, 0 | 16 | 19) => SIGFPE,
        (_, 1 | 3) => SIGTRAP,
        (_, 6) => SIGILL,
        _ => SIGSEGV,
    }
}
