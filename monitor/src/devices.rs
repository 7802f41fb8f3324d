//! The kernel's devices: the 16550 UART (vm-superio's model) and the exit
//! and panic ports. Port I/O from the vCPU lands here.

use denali_abi::boot::ports;
use std::io::Write;
use vm_superio::{Serial, Trigger};

/// The UART's interrupt line: the kernel polls, so there is none to raise.
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// What a port write asks of the run loop.
#[derive(Debug, PartialEq, Eq)]
pub enum PortAction {
    /// Keep running.
    Continue,
    /// The kernel ended the run with this status.
    Exit(i32),
    /// The kernel panicked.
    Panic,
    /// The kernel has nothing to run for this long.
    Idle(std::time::Duration),
}

/// Every device on the I/O port bus.
pub struct PortBus {
    serial: Serial<NoInterrupt, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
}

const SERIAL_PORTS: std::ops::Range<u16> = ports::SERIAL..ports::SERIAL + 8;

impl PortBus {
    /// A bus whose UART writes to `console`.
    pub fn new(console: Box<dyn Write + Send>) -> Self {
        PortBus { serial: Serial::new(NoInterrupt, console) }
    }

    /// A write of `data` to `port`.
    pub fn write(&mut self, port: u16, data: &[u8]) -> PortAction {
        match port {
            p if SERIAL_PORTS.contains(&p) => {
                if let Some(&byte) = data.first() {
                    // A full console (a closed pipe) must not stop the run.
                    let _ = self.serial.write((p - ports::SERIAL) as u8, byte);
                }
                PortAction::Continue
            }
            ports::EXIT => PortAction::Exit(le_u32(data) as i32),
            ports::PANIC => PortAction::Panic,
            ports::IDLE => PortAction::Idle(std::time::Duration::from_micros(u64::from(le_u32(data)))),
            _ => PortAction::Continue,
        }
    }

    /// A read from `port` into `data`.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        let value = if SERIAL_PORTS.contains(&port) { self.serial.read((port - ports::SERIAL) as u8) } else { 0xff };
        data.fill(value);
    }

    /// Flushes the console.
    pub fn flush(&mut self) {
        let _ = self.serial.writer_mut().flush();
    }
}

fn le_u32(data: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let n = data.len().min(4);
    bytes[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CapturedConsole;

    #[test]
    fn uart_bytes_reach_the_console_and_the_exit_port_ends_the_run() {
        let sink = CapturedConsole::default();
        let mut bus = PortBus::new(Box::new(sink.clone()));
        assert_eq!(bus.write(ports::SERIAL, b"h"), PortAction::Continue);
        assert_eq!(bus.write(ports::SERIAL, b"i"), PortAction::Continue);
        assert_eq!(sink.text(), "hi");
        assert_eq!(bus.write(ports::EXIT, &7u32.to_le_bytes()), PortAction::Exit(7));
        assert_eq!(bus.write(ports::PANIC, &1u32.to_le_bytes()), PortAction::Panic);
        assert_eq!(
            bus.write(ports::IDLE, &1500u32.to_le_bytes()),
            PortAction::Idle(std::time::Duration::from_micros(1500))
        );
        // The line-status register says the transmitter is empty.
        let mut lsr = [0u8];
        bus.read(ports::SERIAL + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
