//! The kernel's first instructions: switch to the boot stack and call
//! `kernel_main` with the boot-info address the loader left in `rdi`.
//!
//! The loader enters here in 64-bit mode with paging on (the physmap and the
//! kernel image mapped, see `denali_abi::boot`) and interrupts off.

/// Size of the boot stack, on which the scheduler loop runs.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stack([u8; BOOT_STACK_SIZE]);

#[unsafe(no_mangle)]
static mut BOOT_STACK: Stack = Stack([0; BOOT_STACK_SIZE]);

core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "    cli",
    "    cld",
    "    lea rsp, [rip + BOOT_STACK + {size}]",
    "    xor ebp, ebp",
    "    call kernel_main",
    "2:  hlt",
    "    jmp 2b",
    size = const BOOT_STACK_SIZE,
);
