//! `Denali.toml`: any text is refused with a sentence or read into a
//! manifest, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = denali_cli::manifest::Manifest::parse(text);
});
