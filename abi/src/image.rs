//! The `.dvm` image format: one service, ready to load into a flat address
//! space.
//!
//! ```text
//! ImageHeader                      (64 bytes)
//! SegmentHeader * segment_count    (40 bytes each)
//! segment data                     (anywhere after the table)
//! ```
//!
//! All integers are little-endian. `content_hash` is [`crate::fnv1a64`] of
//! every byte after the header. The CLI writes images with [`build_image`];
//! the CLI and the kernel both validate them with [`Image::parse`], so a
//! hostile image is refused by the same code everywhere.

use crate::boot::read_pod;
use crate::layout::{IMAGE_BASE, MAX_MEM_SIZE, MIN_MEM_SIZE, PAGE_SIZE, page_align_up};

/// Magic at the start of every image.
pub const IMAGE_MAGIC: [u8; 4] = *b"\x7fDVM";
/// Most segments an image may have.
pub const MAX_SEGMENTS: u32 = 16;

/// Segment may be read.
pub const SEG_READ: u32 = 1;
/// Segment may be written.
pub const SEG_WRITE: u32 = 2;
/// Segment may be executed.
pub const SEG_EXEC: u32 = 4;

/// The image header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageHeader {
    /// [`IMAGE_MAGIC`].
    pub magic: [u8; 4],
    /// [`crate::ABI_VERSION`] the image was built for.
    pub abi_version: u32,
    /// Number of [`SegmentHeader`]s after the header.
    pub segment_count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Entry point (flat address).
    pub entry: u64,
    /// Size of the flat address space the service asks for.
    pub mem_size: u64,
    /// Size of the stack at the top of that space.
    pub stack_size: u64,
    /// [`crate::fnv1a64`] of every byte after this header.
    pub content_hash: u64,
    /// Reserved, zero.
    pub reserved2: [u64; 2],
}

/// One loadable segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Offset of the segment's bytes in the file.
    pub file_offset: u64,
    /// Bytes taken from the file.
    pub file_size: u64,
    /// Flat address of the segment's first byte (page aligned).
    pub vaddr: u64,
    /// Bytes the segment occupies in memory (the rest is zero).
    pub mem_size: u64,
    /// `SEG_READ | SEG_WRITE | SEG_EXEC`.
    pub flags: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

const HEADER_SIZE: usize = core::mem::size_of::<ImageHeader>();
const SEGMENT_SIZE: usize = core::mem::size_of::<SegmentHeader>();
const _: () = assert!(HEADER_SIZE == 64);
const _: () = assert!(SEGMENT_SIZE == 40);

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The file ends before its header, segment table or a segment's data.
    Truncated,
    /// Not a `.dvm` image.
    BadMagic,
    /// Built for another ABI version.
    WrongVersion(u32),
    /// The content hash does not match: the file was corrupted.
    HashMismatch,
    /// No segments, or more than [`MAX_SEGMENTS`].
    BadSegmentCount(u32),
    /// Memory or stack size out of range or not page aligned.
    BadMemorySize,
    /// Segment `n` lies outside the image area of the address space.
    SegmentOutOfRange(u32),
    /// Segment `n` is both writable and executable.
    WritableAndExecutable(u32),
    /// Segment `n` has unknown flags or is not readable.
    BadSegmentFlags(u32),
    /// Segments `a` and `b` share a page.
    Overlap(u32, u32),
    /// The entry point is not inside an executable segment.
    BadEntry,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::Truncated => write!(f, "the image is truncated"),
            ImageError::BadMagic => write!(f, "not a Denali image (bad magic)"),
            ImageError::WrongVersion(v) => {
                write!(f, "the image is for ABI version {v}, this kernel speaks {}", crate::ABI_VERSION)
            }
            ImageError::HashMismatch => write!(f, "the image's content hash does not match: it is corrupted"),
            ImageError::BadSegmentCount(n) => write!(f, "the image has {n} segments (1 to {MAX_SEGMENTS} allowed)"),
            ImageError::BadMemorySize => {
                write!(f, "the image's memory or stack size is out of range")
            }
            ImageError::SegmentOutOfRange(i) => {
                write!(f, "segment {i} lies outside the image area")
            }
            ImageError::WritableAndExecutable(i) => {
                write!(f, "segment {i} is writable and executable")
            }
            ImageError::BadSegmentFlags(i) => write!(f, "segment {i} has bad flags"),
            ImageError::Overlap(a, b) => write!(f, "segments {a} and {b} overlap"),
            ImageError::BadEntry => write!(f, "the entry point is not in an executable segment"),
        }
    }
}

/// A validated image.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    bytes: &'a [u8],
    header: ImageHeader,
}

/// A validated segment, with its bytes from the file.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Flat address of the first byte (page aligned).
    pub vaddr: u64,
    /// Size in memory.
    pub mem_size: u64,
    /// `SEG_*` flags.
    pub flags: u32,
    /// Bytes to copy to `vaddr`; the rest up to `mem_size` is zero.
    pub data: &'a [u8],
}

impl<'a> Image<'a> {
    /// Validates everything about an image: header, hash, every segment's
    /// bounds and rights, overlaps and the entry point.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let header: ImageHeader = read_pod(bytes, 0).ok_or(ImageError::Truncated)?;
        if header.magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic);
        }
        if header.abi_version != crate::ABI_VERSION {
            return Err(ImageError::WrongVersion(header.abi_version));
        }
        if header.segment_count == 0 || header.segment_count > MAX_SEGMENTS {
            return Err(ImageError::BadSegmentCount(header.segment_count));
        }
        let table_end = HEADER_SIZE + header.segment_count as usize * SEGMENT_SIZE;
        if bytes.len() < table_end {
            return Err(ImageError::Truncated);
        }
        if crate::fnv1a64(&bytes[HEADER_SIZE..]) != header.content_hash {
            return Err(ImageError::HashMismatch);
        }
        let image = Image { bytes, header };
        let image_area_end = image.heap_end_limit()?;
        for i in 0..header.segment_count {
            let seg = image.segment_header(i);
            if seg.flags & !(SEG_READ | SEG_WRITE | SEG_EXEC) != 0 || seg.flags & SEG_READ == 0 {
                return Err(ImageError::BadSegmentFlags(i));
            }
            if seg.flags & SEG_WRITE != 0 && seg.flags & SEG_EXEC != 0 {
                return Err(ImageError::WritableAndExecutable(i));
            }
            let file_end = seg.file_offset.checked_add(seg.file_size).ok_or(ImageError::Truncated)?;
            if file_end > bytes.len() as u64 || seg.file_offset < table_end as u64 && seg.file_size > 0 {
                return Err(ImageError::Truncated);
            }
            let (start, end) = seg.page_range().ok_or(ImageError::SegmentOutOfRange(i))?;
            if seg.file_size > seg.mem_size || start < IMAGE_BASE || end > image_area_end {
                return Err(ImageError::SegmentOutOfRange(i));
            }
            for j in 0..i {
                let (other_start, other_end) = image.segment_header(j).page_range().unwrap_or((0, 0));
                if start < other_end && other_start < end {
                    return Err(ImageError::Overlap(j, i));
                }
            }
        }
        let entry_ok = image
            .segments()
            .any(|s| s.flags & SEG_EXEC != 0 && header.entry >= s.vaddr && header.entry < s.vaddr + s.mem_size);
        if !entry_ok {
            return Err(ImageError::BadEntry);
        }
        Ok(image)
    }

    /// One past the highest address an image segment or the heap may use:
    /// below the stack and its guard page.
    fn heap_end_limit(&self) -> Result<u64, ImageError> {
        let h = &self.header;
        let aligned = |v: u64| v.is_multiple_of(PAGE_SIZE);
        if !(MIN_MEM_SIZE..=MAX_MEM_SIZE).contains(&h.mem_size)
            || !aligned(h.mem_size)
            || !aligned(h.stack_size)
            || h.stack_size == 0
            || h.stack_size > h.mem_size / 2
        {
            return Err(ImageError::BadMemorySize);
        }
        Ok(h.mem_size - h.stack_size - PAGE_SIZE)
    }

    fn segment_header(&self, index: u32) -> SegmentHeader {
        // parse() checked that the whole table is inside `bytes`.
        read_pod(self.bytes, HEADER_SIZE + index as usize * SEGMENT_SIZE).unwrap_or_default()
    }

    /// The header.
    pub fn header(&self) -> &ImageHeader {
        &self.header
    }

    /// The segments, in file order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        (0..self.header.segment_count).map(move |i| {
            let seg = self.segment_header(i);
            let start = seg.file_offset as usize;
            Segment {
                vaddr: seg.vaddr,
                mem_size: seg.mem_size,
                flags: seg.flags,
                data: &self.bytes[start..start + seg.file_size as usize],
            }
        })
    }

    /// First heap byte: the page after the highest segment.
    pub fn heap_start(&self) -> u64 {
        self.segments().filter_map(|s| page_align_up(s.vaddr + s.mem_size)).max().unwrap_or(IMAGE_BASE)
    }

    /// One past the last heap byte: the stack's guard page.
    pub fn heap_end(&self) -> u64 {
        self.header.mem_size - self.header.stack_size - PAGE_SIZE
    }

    /// One past the top of the stack.
    pub fn stack_top(&self) -> u64 {
        self.header.mem_size
    }

    /// Lowest stack byte.
    pub fn stack_bottom(&self) -> u64 {
        self.header.mem_size - self.header.stack_size
    }
}

impl SegmentHeader {
    /// Page-aligned `[start, end)` the segment occupies, or `None` if it is
    /// misaligned, empty or overflows.
    fn page_range(&self) -> Option<(u64, u64)> {
        if !self.vaddr.is_multiple_of(PAGE_SIZE) || self.mem_size == 0 {
            return None;
        }
        Some((self.vaddr, page_align_up(self.vaddr.checked_add(self.mem_size)?)?))
    }
}

/// Input to [`build_image`]: one segment and its bytes.
#[derive(Clone, Debug)]
pub struct SegmentSpec<'a> {
    /// Flat address (page aligned).
    pub vaddr: u64,
    /// Size in memory (at least `data.len()`).
    pub mem_size: u64,
    /// `SEG_*` flags.
    pub flags: u32,
    /// Initial bytes.
    pub data: &'a [u8],
}

/// Writes an image. The result is not validated: run [`Image::parse`] on it.
#[cfg(feature = "alloc")]
pub fn build_image(entry: u64, mem_size: u64, stack_size: u64, segments: &[SegmentSpec<'_>]) -> alloc::vec::Vec<u8> {
    use alloc::vec::Vec;
    let mut out = Vec::new();
    let table_end = HEADER_SIZE + segments.len() * SEGMENT_SIZE;
    let mut data_offset = table_end as u64;
    let mut body = Vec::new();
    for seg in segments {
        let header = SegmentHeader {
            file_offset: data_offset,
            file_size: seg.data.len() as u64,
            vaddr: seg.vaddr,
            mem_size: seg.mem_size,
            flags: seg.flags,
            reserved: 0,
        };
        body.extend_from_slice(&header.file_offset.to_le_bytes());
        body.extend_from_slice(&header.file_size.to_le_bytes());
        body.extend_from_slice(&header.vaddr.to_le_bytes());
        body.extend_from_slice(&header.mem_size.to_le_bytes());
        body.extend_from_slice(&header.flags.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        data_offset += seg.data.len() as u64;
    }
    for seg in segments {
        body.extend_from_slice(seg.data);
    }
    out.extend_from_slice(&IMAGE_MAGIC);
    out.extend_from_slice(&crate::ABI_VERSION.to_le_bytes());
    out.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(&mem_size.to_le_bytes());
    out.extend_from_slice(&stack_size.to_le_bytes());
    out.extend_from_slice(&crate::fnv1a64(&body).to_le_bytes());
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&body);
    out
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const MEM: u64 = 4 << 20;
    const STACK: u64 = 64 << 10;

    fn text(data: &[u8]) -> SegmentSpec<'_> {
        SegmentSpec { vaddr: IMAGE_BASE, mem_size: 0x2000, flags: SEG_READ | SEG_EXEC, data }
    }

    fn data_seg(vaddr: u64, flags: u32) -> SegmentSpec<'static> {
        SegmentSpec { vaddr, mem_size: 0x1800, flags, data: b"hello" }
    }

    fn build(segs: &[SegmentSpec<'_>]) -> Vec<u8> {
        build_image(IMAGE_BASE + 8, MEM, STACK, segs)
    }

    #[test]
    fn a_well_formed_image_parses() {
        let bytes = build(&[text(&[0x90; 100]), data_seg(IMAGE_BASE + 0x2000, SEG_READ | SEG_WRITE)]);
        let image = Image::parse(&bytes).unwrap();
        let segs: Vec<_> = image.segments().collect();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].data, b"hello");
        assert_eq!(image.heap_start(), IMAGE_BASE + 0x4000);
        assert_eq!(image.heap_end(), MEM - STACK - PAGE_SIZE);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = build(&[text(&[0x90; 100])]);
        for len in 0..bytes.len() {
            assert!(Image::parse(&bytes[..len]).is_err(), "accepted {len} bytes");
        }
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_hash() {
        let mut bytes = build(&[text(&[0x90; 100])]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(Image::parse(&bytes).unwrap_err(), ImageError::HashMismatch);
    }

    #[test]
    fn foreign_files_are_refused() {
        assert_eq!(Image::parse(&[0x7f, b'E', b'L', b'F', 0, 0, 0, 0].repeat(16)).unwrap_err(), ImageError::BadMagic);
    }

    #[test]
    fn writable_and_executable_is_refused() {
        let bytes = build(&[SegmentSpec { flags: SEG_READ | SEG_WRITE | SEG_EXEC, ..text(&[0x90]) }]);
        assert_eq!(Image::parse(&bytes).unwrap_err(), ImageError::WritableAndExecutable(0));
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let bytes = build(&[text(&[0x90]), data_seg(IMAGE_BASE + 0x1000, SEG_READ)]);
        assert_eq!(Image::parse(&bytes).unwrap_err(), ImageError::Overlap(0, 1));
    }

    #[test]
    fn out_of_range_segments_are_refused() {
        for vaddr in [0, 0x1000, MEM - STACK, MEM, !0xfff, IMAGE_BASE + 0x123] {
            let bytes = build(&[text(&[0x90]), data_seg(vaddr, SEG_READ)]);
            assert!(
                matches!(Image::parse(&bytes).unwrap_err(), ImageError::SegmentOutOfRange(1)),
                "accepted a segment at {vaddr:#x}"
            );
        }
        let huge = SegmentSpec { mem_size: u64::MAX - 10, ..data_seg(IMAGE_BASE + 0x2000, SEG_READ) };
        assert!(Image::parse(&build(&[text(&[0x90]), huge])).is_err());
    }

    #[test]
    fn bad_memory_sizes_are_refused() {
        for (mem, stack) in [(0, STACK), (MEM + 1, STACK), (MEM, 0), (MEM, MEM), (MAX_MEM_SIZE * 2, STACK)] {
            let bytes = build_image(IMAGE_BASE, mem, stack, &[text(&[0x90])]);
            assert_eq!(Image::parse(&bytes).unwrap_err(), ImageError::BadMemorySize, "{mem:#x}/{stack:#x}");
        }
    }

    #[test]
    fn entry_must_be_executable() {
        let bytes =
            build_image(IMAGE_BASE + 0x2000, MEM, STACK, &[text(&[0x90]), data_seg(IMAGE_BASE + 0x2000, SEG_READ)]);
        assert_eq!(Image::parse(&bytes).unwrap_err(), ImageError::BadEntry);
    }

    #[test]
    fn segment_data_must_not_alias_the_header() {
        let mut bytes = build(&[text(&[0x90; 64])]);
        // Point the segment's file offset at the header, fix the hash.
        bytes[64..72].copy_from_slice(&0u64.to_le_bytes());
        let hash = crate::fnv1a64(&bytes[64..]);
        bytes[40..48].copy_from_slice(&hash.to_le_bytes());
        assert_eq!(Image::parse(&bytes).unwrap_err(), ImageError::Truncated);
    }
}

impl core::error::Error for ImageError {}
