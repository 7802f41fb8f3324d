//! ELF core files of crashed VMs, which `gdb NAME.elf core.vmN` opens: the
//! VM's registers (an `NT_PRSTATUS` note laid out as Linux writes one) and
//! every page it could read, as it saw them, one `PT_LOAD` per run of
//! pages. The pages come from [`VmSpace::pages`], so a core holds the VM's
//! own memory and nothing else.

use super::walk::{Page, VmSpace};
use denali_abi::debug::DebugEvent;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use vm_memory::{Bytes, GuestAddress};

const PAGE_SIZE: u64 = 4096;
const ELF_HEADER_SIZE: u64 = 64;
const PROGRAM_HEADER_SIZE: u64 = 56;
const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;
const NT_PRSTATUS: u32 = 1;
const NT_PRPSINFO: u32 = 3;
/// `struct elf_prstatus` on x86-64, and where its fields lie.
const PRSTATUS_SIZE: usize = 336;
const PRSTATUS_CURSIG: usize = 12;
const PRSTATUS_PID: usize = 32;
const PRSTATUS_REGS: usize = 112;
/// `struct elf_prpsinfo` on x86-64, and where its fields lie.
const PRPSINFO_SIZE: usize = 136;
const PRPSINFO_PID: usize = 24;
const PRPSINFO_FNAME: usize = 40;
const PRPSINFO_PSARGS: usize = 56;

/// A run of pages at consecutive addresses with the same permissions.
struct Segment {
    va: u64,
    frames: Vec<u64>,
    flags: u32,
}

/// The bytes of memory a core of `pages` holds.
pub fn memory_bytes(pages: &[Page]) -> u64 {
    pages.len() as u64 * PAGE_SIZE
}

/// A new file at `path` for a core, readable by its owner alone (a core
/// holds the VM's secrets). A file already there (an earlier run's core)
/// is replaced; a symbolic link there is removed, never followed.
pub fn create(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // `create_new` fails on anything put there since, a link included.
    File::options().write(true).create_new(true).mode(0o600).open(path)
}

/// Writes the core of the VM `report` describes to `out`: its `pages`
/// (from [`VmSpace::pages`]), read through `space`. `program` is the file
/// name of the ELF it was made from (gdb checks the core against it),
/// `name` the service's.
pub fn write_core(
    out: &mut impl Write,
    space: &VmSpace<'_>,
    pages: &[Page],
    report: &DebugEvent,
    program: &str,
    name: &str,
) -> io::Result<()> {
    let mut segments = segments(pages);
    // An ELF header counts at most 65,535 program headers (one is the
    // notes'): a VM whose pages form more runs gets a core of the first.
    segments.truncate(usize::from(u16::MAX) - 1);
    let notes = [note(NT_PRSTATUS, &prstatus(report)), note(NT_PRPSINFO, &prpsinfo(report, program, name))].concat();
    let headers_end = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE * (1 + segments.len() as u64);
    let data_start = (headers_end + notes.len() as u64).next_multiple_of(PAGE_SIZE);

    let mut head = elf_header(u16::try_from(1 + segments.len()).unwrap_or(u16::MAX));
    head.extend(program_header(PT_NOTE, 0, headers_end, 0, notes.len() as u64, 4));
    let mut offset = data_start;
    for segment in &segments {
        let len = segment.frames.len() as u64 * PAGE_SIZE;
        head.extend(program_header(PT_LOAD, segment.flags, offset, segment.va, len, PAGE_SIZE));
        offset += len;
    }
    head.extend(&notes);
    head.resize(data_start as usize, 0);
    out.write_all(&head)?;
    let mut page = [0u8; PAGE_SIZE as usize];
    for frame in segments.iter().flat_map(|segment| &segment.frames) {
        space.memory().read_slice(&mut page, GuestAddress(*frame)).map_err(io::Error::other)?;
        out.write_all(&page)?;
    }
    out.flush()
}

/// The pages grouped into runs.
fn segments(pages: &[Page]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for page in pages {
        let flags = PF_R | if page.writable { PF_W } else { 0 } | if page.executable { PF_X } else { 0 };
        match segments.last_mut() {
            Some(last) if last.flags == flags && last.va + last.frames.len() as u64 * PAGE_SIZE == page.va => {
                last.frames.push(page.frame);
            }
            _ => segments.push(Segment { va: page.va, frames: vec![page.frame], flags }),
        }
    }
    segments
}

fn elf_header(program_headers: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(ELF_HEADER_SIZE as usize);
    // Magic, 64-bit, little-endian, version 1, System V ABI.
    h.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    h.extend([0; 8]);
    h.extend(ET_CORE.to_le_bytes());
    h.extend(EM_X86_64.to_le_bytes());
    h.extend(1u32.to_le_bytes());
    h.extend(0u64.to_le_bytes()); // entry
    h.extend(ELF_HEADER_SIZE.to_le_bytes()); // program headers
    h.extend(0u64.to_le_bytes()); // section headers: none
    h.extend(0u32.to_le_bytes()); // flags
    h.extend((ELF_HEADER_SIZE as u16).to_le_bytes());
    h.extend((PROGRAM_HEADER_SIZE as u16).to_le_bytes());
    h.extend(program_headers.to_le_bytes());
    h.extend([0; 6]); // section header size, count, name table
    h
}

fn program_header(kind: u32, flags: u32, offset: u64, va: u64, len: u64, align: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(PROGRAM_HEADER_SIZE as usize);
    h.extend(kind.to_le_bytes());
    h.extend(flags.to_le_bytes());
    h.extend(offset.to_le_bytes());
    h.extend(va.to_le_bytes());
    h.extend(0u64.to_le_bytes()); // physical address
    h.extend(len.to_le_bytes()); // in the file
    h.extend(len.to_le_bytes()); // in memory
    h.extend(align.to_le_bytes());
    h
}

/// An ELF note named "CORE".
fn note(kind: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(5u32.to_le_bytes());
    n.extend((desc.len() as u32).to_le_bytes());
    n.extend(kind.to_le_bytes());
    n.extend(b"CORE\0\0\0\0");
    n.extend(desc);
    n.resize(n.len().next_multiple_of(4), 0);
    n
}

fn prstatus(report: &DebugEvent) -> Vec<u8> {
    let mut s = vec![0u8; PRSTATUS_SIZE];
    let signal = u16::from(super::crash_signal(report));
    s[0..4].copy_from_slice(&u32::from(signal).to_le_bytes());
    s[PRSTATUS_CURSIG..PRSTATUS_CURSIG + 2].copy_from_slice(&signal.to_le_bytes());
    s[PRSTATUS_PID..PRSTATUS_PID + 4].copy_from_slice(&pid(report).to_le_bytes());
    for (i, word) in report.regs.to_words().iter().enumerate() {
        let at = PRSTATUS_REGS + i * 8;
        s[at..at + 8].copy_from_slice(&word.to_le_bytes());
    }
    s
}

fn prpsinfo(report: &DebugEvent, program: &str, name: &str) -> Vec<u8> {
    let mut s = vec![0u8; PRPSINFO_SIZE];
    s[1] = b'R';
    s[PRPSINFO_PID..PRPSINFO_PID + 4].copy_from_slice(&pid(report).to_le_bytes());
    let fname = &program.as_bytes()[..program.len().min(15)];
    s[PRPSINFO_FNAME..PRPSINFO_FNAME + fname.len()].copy_from_slice(fname);
    let args = format!("{name} (Denali vm {})", report.vm);
    let args = &args.as_bytes()[..args.len().min(79)];
    s[PRPSINFO_PSARGS..PRPSINFO_PSARGS + args.len()].copy_from_slice(args);
    s
}

/// The VM's id as a process id (gdb shows it); 0 is not a process.
fn pid(report: &DebugEvent) -> u32 {
    u32::try_from(report.vm).unwrap_or(u32::MAX).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use denali_abi::debug::{EventKind, UserRegs};
    use object::read::elf::{ElfFile64, ProgramHeader};
    use object::{LittleEndian, Object, ObjectSegment};
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn a_core_holds_the_registers_and_only_the_vms_pages() {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
        let put = |at: u64, value: u64| memory.write_obj(value, GuestAddress(at)).unwrap();
        put(0x1000, 0x4000 | 7);
        put(0x4000, 0x5000 | 7);
        put(0x5000, 0x6000 | 7);
        put(0x6000 + 8, 0x10000 | 7); // VM page 0x1000, writable
        put(0x6000 + 16, 0x11000 | 7); // VM page 0x2000, writable
        put(0x6000 + 24, 0x12000 | 5); // VM page 0x3000, read-only
        put(0x6000 + 32, 0x13000 | 3); // the kernel's page, never in a core
        memory.write_slice(b"the VM's own", GuestAddress(0x11000)).unwrap();
        memory.write_slice(b"someone else's", GuestAddress(0x13000)).unwrap();
        let regs = UserRegs { rip: 0x1234, rsp: 0x2ff0, rbp: 0x2ff8, ..UserRegs::default() };
        let report = DebugEvent {
            vm: 7,
            kind: EventKind::Fault as u64,
            vector: 14,
            error_code: 4,
            root: 0x1000,
            space_size: 1 << 30,
            regs,
            ..DebugEvent::default()
        };
        let mut core = Vec::new();
        let space = VmSpace::new(&memory, 0x1000, 1 << 30);
        write_core(&mut core, &space, &space.pages(), &report, "svc.elf", "svc").unwrap();

        let elf = ElfFile64::<LittleEndian>::parse(&*core).unwrap();
        assert_eq!(elf.elf_header().e_type.get(LittleEndian), ET_CORE);
        let loads: Vec<(u64, u64)> = elf.segments().map(|s| (s.address(), s.size())).collect();
        assert_eq!(loads, [(0x1000, 0x2000), (0x3000, 0x1000)]);
        let second = elf.segments().find(|s| s.address() == 0x1000).unwrap().data().unwrap();
        assert!(second[0x1000..].starts_with(b"the VM's own"));
        assert!(!core.windows(14).any(|w| w == b"someone else's"));

        let note = elf.elf_program_headers().iter().find(|h| h.p_type(LittleEndian) == PT_NOTE).unwrap();
        let mut notes = note.notes(LittleEndian, &*core).unwrap().unwrap();
        let status = notes.next().unwrap().unwrap();
        assert_eq!((status.name(), status.n_type(LittleEndian)), (&b"CORE"[..], NT_PRSTATUS));
        let desc = status.desc();
        assert_eq!(u16::from_le_bytes([desc[PRSTATUS_CURSIG], desc[PRSTATUS_CURSIG + 1]]), 11, "SIGSEGV");
        let rip_at = PRSTATUS_REGS + 16 * 8;
        assert_eq!(u64::from_le_bytes(desc[rip_at..rip_at + 8].try_into().unwrap()), 0x1234);
        let info = notes.next().unwrap().unwrap();
        assert_eq!(info.n_type(LittleEndian), NT_PRPSINFO);
        assert!(info.desc()[PRPSINFO_FNAME..].starts_with(b"svc.elf\0"));
    }

    #[test]
    fn a_core_file_replaces_an_old_one_follows_no_link_and_only_its_owner_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("core.vm0");
        std::fs::write(&old, b"an earlier run's core").unwrap();
        create(&old).unwrap().write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&old).unwrap().permissions().mode() & 0o777, 0o600);

        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"not the monitor's").unwrap();
        let planted = dir.path().join("core.vm1");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        create(&planted).unwrap().write_all(b"core").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"not the monitor's", "the link was followed");
        assert!(!std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink());
    }
}
