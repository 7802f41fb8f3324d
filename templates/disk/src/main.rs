#![no_std]
#![no_main]
//! Counts its boots on its own disk: each VM keeps the count in the first
//! 8 bytes of its disk, which outlives the run (`[disk]` in Denali.toml).
use denali::prelude::*;

#[denali::main]
fn main() {
    let mut count = [0u8; 8];
    if let Err(e) = denali::disk::read_at(0, &mut count) {
        eprintln!("cannot read the disk: {e}");
        denali::process::exit(1);
    }
    let boots = u64::from_le_bytes(count) + 1;
    if let Err(e) = denali::disk::write_at(0, &boots.to_le_bytes()) {
        eprintln!("cannot write the disk: {e}");
        denali::process::exit(1);
    }
    let kib = denali::disk::capacity() / 1024;
    println!("VM {} has booted {boots} time(s); its disk holds {kib} KiB", denali::vm::id());
}
