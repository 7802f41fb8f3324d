//! A boot bundle, as the kernel reads it at boot (under PVH or UEFI it
//! comes from a file anyone may have touched): refused or walked whole,
//! never a panic.
#![no_main]

use denali_abi::boot::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = Bundle::parse(data) else { return };
    let _ = bundle.run_flags();
    for index in 0..bundle.len() {
        let (entry, image) = bundle.entry(index).expect("a parsed bundle has every entry it counts");
        let _ = (entry.name(), entry.ipv4.nth(entry.instances));
        assert!(image.len() <= data.len());
        let _ = bundle.args(index);
    }
});
