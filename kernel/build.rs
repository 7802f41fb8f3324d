//! Links the kernel at its higher-half address with kernel/linker.ld.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo:rustc-link-arg-bins=-znoexecstack");
    }
    println!("cargo:rerun-if-changed=linker.ld");
}
