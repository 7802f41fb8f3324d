//! A `.dvm` image, as the CLI and the kernel's loader read it: any bytes
//! are refused with an error or accepted with segments that stay inside
//! the flat address space, never a panic.
#![no_main]

use denali_abi::image::Image;
use denali_abi::layout::IMAGE_BASE;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Image::parse(data) else { return };
    let mem_size = image.header().mem_size;
    for segment in image.segments() {
        assert!(segment.vaddr >= IMAGE_BASE);
        assert!(segment.vaddr + segment.mem_size <= mem_size);
        assert!(segment.data.len() as u64 <= segment.mem_size);
    }
    assert!(image.heap_start() <= image.heap_end() && image.heap_end() <= image.stack_bottom());
    assert!(image.stack_top() <= mem_size);
});
