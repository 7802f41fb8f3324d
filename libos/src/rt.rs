//! Start-up and the panic handler.

#[cfg(not(target_os = "hermit"))]
use crate::{println, process};

#[cfg(not(target_os = "hermit"))]
unsafe extern "Rust" {
    // Defined by #[denali::main].
    fn __denali_main();
}

/// The VM's first instruction: the kernel enters here with the stack set
/// and every other register zero.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start() -> ! {
    crate::heap::init();
    #[cfg(target_os = "hermit")]
    crate::hermit::start();
    #[cfg(not(target_os = "hermit"))]
    {
        // SAFETY: #[denali::main] defines __denali_main as a safe fn().
        unsafe { __denali_main() };
        process::exit(0)
    }
}

/// Panics print where and why, as `std` does, and exit with status 101
/// (the host then prints the backtrace).
/// (A std service has std's own.)
#[cfg(not(target_os = "hermit"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("{info}");
    process::crash(101)
}
