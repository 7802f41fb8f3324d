//! The kernel binary: entry point, panic handler and global allocator.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod bare {
    use denali_kernel::{arch, boot, kprintln};

    #[global_allocator]
    static HEAP: denali_kernel::mem::heap::CountingHeap = denali_kernel::mem::heap::CountingHeap::empty();

    /// Rust entry, called by `arch::x86_64::entry::_start` on the boot stack
    /// with the physical address of the `BootInfo`.
    #[unsafe(no_mangle)]
    extern "C" fn kernel_main(boot_info_phys: u64) -> ! {
        boot::boot(boot_info_phys, &HEAP)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        // SAFETY: the kernel is single-threaded and about to stop; if the
        // panic struck while the console was held, its holder never resumes.
        unsafe { denali_kernel::console::CONSOLE.force_unlock() };
        kprintln!("denali: kernel panic: {info}");
        arch::x86_64::exit_panic()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the Denali kernel runs only on x86_64-unknown-none; `cargo denali run` builds and boots it");
    std::process::exit(2);
}
