//! From a linked ELF to a `.dvm` image: the loadable segments with their
//! rights, the entry point and the memory sizes, validated with the same
//! parser the kernel uses.

use anyhow::{Context, Result, bail};
use denali_abi::image::{Image, SEG_EXEC, SEG_READ, SEG_WRITE, SegmentSpec, build_image};
use denali_abi::layout::{DEFAULT_MEM_SIZE, DEFAULT_STACK_SIZE, PAGE_SIZE};
use object::elf::{PF_R, PF_W, PF_X, PT_LOAD};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object};
use std::path::{Path, PathBuf};

/// Memory sizes for an image.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Flat address space.
    pub memory: u64,
    /// Stack at its top.
    pub stack: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes { memory: DEFAULT_MEM_SIZE, stack: DEFAULT_STACK_SIZE }
    }
}

/// Converts the ELF at `elf_path` into `.dvm` bytes.
pub fn elf_to_dvm(elf_path: &Path, sizes: Sizes) -> Result<Vec<u8>> {
    let data = std::fs::read(elf_path).with_context(|| format!("cannot read {}", elf_path.display()))?;
    let elf = ElfFile64::<Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", elf_path.display()))?;
    let endian = elf.endian();
    let mut segments = Vec::new();
    for header in elf.elf_program_headers() {
        if header.p_type(endian) != PT_LOAD || header.p_memsz(endian) == 0 {
            continue;
        }
        let vaddr = header.p_vaddr(endian);
        if vaddr % PAGE_SIZE != 0 {
            bail!(
                "{} has a segment at {vaddr:#x} that does not start on a page: was it linked with the denali crate's linker script?",
                elf_path.display()
            );
        }
        let flags = header.p_flags(endian);
        let mut rights = 0;
        for (elf_flag, seg_flag) in [(PF_R, SEG_READ), (PF_W, SEG_WRITE), (PF_X, SEG_EXEC)] {
            if flags & elf_flag != 0 {
                rights |= seg_flag;
            }
        }
        let bytes = header
            .data(endian, &*data)
            .map_err(|_| anyhow::anyhow!("{}: a segment lies outside the file", elf_path.display()))?;
        segments.push(SegmentSpec { vaddr, mem_size: header.p_memsz(endian), flags: rights, data: bytes });
    }
    let image = build_image(elf.entry(), sizes.memory, sizes.stack, &segments);
    Image::parse(&image).with_context(|| format!("{} cannot become a Denali image", elf_path.display()))?;
    Ok(image)
}

/// Where the build keeps an image's ELF (for symbols): beside the `.dvm`.
pub fn elf_beside(dvm: &Path) -> PathBuf {
    dvm.with_extension("elf")
}

/// Reads and validates a `.dvm` file.
pub fn read_dvm(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Err(e) = Image::parse(&bytes) {
        bail!("{} is not a valid Denali image: {e}\nhint: rebuild it with `cargo denali build`", path.display());
    }
    Ok(bytes)
}
