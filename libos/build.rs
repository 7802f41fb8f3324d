//! Supplies the linker script for services: the target spec passes
//! `-Tdenali.ld`, and this script puts `denali.ld` on the link search path,
//! so a service needs nothing but the `denali` dependency.

use std::path::PathBuf;

const LINKER_SCRIPT: &str = r#"/* A Denali service image: segments from 1 MiB (denali_abi::layout::IMAGE_BASE),
   each starting on its own page so the kernel can give it its own rights. */
ENTRY(_start)

PHDRS {
    text PT_LOAD FLAGS(5);
    rodata PT_LOAD FLAGS(4);
    data PT_LOAD FLAGS(6);
    tls PT_TLS FLAGS(4);
}

SECTIONS {
    . = 0x100000;
    .text : { *(.text._start) *(.text .text.*) } :text
    . = ALIGN(4096);
    .rodata : { *(.rodata .rodata.*) } :rodata
    .eh_frame_hdr : { *(.eh_frame_hdr) } :rodata
    .eh_frame : { KEEP(*(.eh_frame)) } :rodata
    . = ALIGN(4096);
    /* Thread-local storage (std services): the initial image every thread's
       block is copied from; the libOS reads its bounds from these symbols. */
    .tdata : { __denali_tls_start = .; *(.tdata .tdata.*) __denali_tdata_end = .; } :data :tls
    .tbss : { *(.tbss .tbss.*) *(.tcommon) __denali_tls_end = .; } :data :tls
    __denali_tls_align = MAX(ALIGNOF(.tdata), ALIGNOF(.tbss));
    .data : { *(.data .data.*) *(.got .got.*) } :data
    .bss : { *(.bss .bss.*) *(COMMON) } :data
    /DISCARD/ : { *(.comment) *(.note .note.*) }
}
"#;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("denali.ld"), LINKER_SCRIPT).expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");
}
