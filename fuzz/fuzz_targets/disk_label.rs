//! The first sector of a disk, where the kernel and the CLI look for the
//! Denali label: a label read from it is written back the same.
#![no_main]

use denali_abi::disk::DiskLabel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(label) = DiskLabel::parse(data) else { return };
    assert_eq!(DiskLabel::parse(&label.to_sector()), Some(label));
});
