//! The legacy 8259 interrupt controllers, which firmware may leave running
//! (SeaBIOS does, with the PIT's timer on vector 8, where the CPU reports a
//! double fault). The kernel uses the local APIC only: the PICs are moved
//! to vectors [`PIC_VECTORS`] and every line is masked; a spurious interrupt
//! they still raise there is ignored.

use x86_64::instructions::port::Port;

/// Where the PICs' sixteen lines are moved to.
pub const PIC_VECTORS: core::ops::RangeInclusive<u64> = crate::platform::vectors::PIC;

/// Remaps both PICs away from the exception vectors and masks every line.
pub fn disable() {
    let base = *PIC_VECTORS.start() as u8;
    // SAFETY: the standard initialisation sequence of the two 8259s; they
    // raise no interrupt with every line masked.
    unsafe {
        let (mut master_cmd, mut master_data) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
        let (mut slave_cmd, mut slave_data) = (Port::<u8>::new(0xa0), Port::<u8>::new(0xa1));
        master_cmd.write(0x11);
        slave_cmd.write(0x11);
        master_data.write(base);
        slave_data.write(base + 8);
        master_data.write(4);
        slave_data.write(2);
        master_data.write(1);
        slave_data.write(1);
        master_data.write(0xff);
        slave_data.write(0xff);
    }
}
