//! The 16550 UART on COM1: the kernel's console, shared by the kernel's own
//! messages and every VM's `console_write`.

use denali_abi::boot::ports;
use x86_64::instructions::port::Port;

/// Transmit-only driver for a 16550 UART.
pub struct Serial {
    base: u16,
}

impl Serial {
    /// COM1.
    pub const fn com1() -> Self {
        Serial { base: ports::SERIAL }
    }

    /// 8N1, FIFOs on, interrupts off.
    pub fn init(&mut self) {
        let init: [(u16, u8); 6] = [(1, 0x00), (3, 0x80), (0, 0x01), (1, 0x00), (3, 0x03), (2, 0xc7)];
        for (offset, value) in init {
            // SAFETY: standard 16550 set-up writes to the UART's own registers.
            unsafe { Port::<u8>::new(self.base + offset).write(value) };
        }
    }

    /// Writes bytes, waiting for room in the transmitter.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            // SAFETY: reading the line-status register and writing the
            // transmit register touch only the UART.
            unsafe {
                let mut lsr = Port::<u8>::new(self.base + 5);
                while lsr.read() & 0x20 == 0 {
                    core::hint::spin_loop();
                }
                Port::<u8>::new(self.base).write(byte);
            }
        }
    }
}

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}
