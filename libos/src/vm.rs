//! Who this VM is: its id, how many VMs booted with it, its arguments, all
//! read from the info page the kernel maps read-only.

use denali_abi::info::{CommandLine, INFO_MAGIC, InfoPage};
use denali_abi::layout::INFO_PAGE;

/// The info page.
pub(crate) fn info() -> &'static InfoPage {
    // SAFETY: the kernel maps an InfoPage at INFO_PAGE in every VM before it
    // first runs and keeps it mapped for the VM's life; it is read-only, so
    // no Rust code can create a conflicting &mut.
    let info = unsafe { &*(INFO_PAGE as *const InfoPage) };
    debug_assert_eq!(info.magic, INFO_MAGIC);
    info
}

/// This VM's id, unique within one boot, counted from 0.
pub fn id() -> u32 {
    info().vm_id
}

/// How many VMs this boot started.
pub fn count() -> u32 {
    info().vm_count
}

/// This VM's arguments from its manifest ("" when it has none).
pub fn args() -> &'static str {
    core::str::from_utf8(command_line().args).unwrap_or("")
}

/// This VM's whole command line: arguments, program name, environment.
pub(crate) fn command_line() -> CommandLine<'static> {
    let info = info();
    let len = (info.args_len as usize).min(info.args.len());
    CommandLine::parse(&info.args[..len])
}

/// This VM's Ethernet address on the virtual segment.
pub fn mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&info().mac[..6]);
    mac
}

/// Whether the kernel says (on the info page) that no frame waits in this
/// VM's receive ring; false where it does not keep that count.
pub(crate) fn rx_ring_is_empty() -> bool {
    let info = info();
    // SAFETY: the field is inside the mapped info page; a volatile read sees
    // the kernel's latest value (it writes it while the VM is not running).
    let frames = unsafe { core::ptr::addr_of!(info.rx_frames).read_volatile() };
    info.features & denali_abi::info::FEATURE_RX_COUNT != 0 && frames == 0
}

/// Event bits the kernel has raised and the VM not yet taken (`idle`
/// takes them). The kernel writes this word while the VM is not running.
pub(crate) fn pending_events() -> u64 {
    // SAFETY: the field is inside the mapped info page; a volatile read sees
    // the kernel's latest value.
    unsafe { core::ptr::addr_of!(info().pending_events).read_volatile() }
}

/// Size of this VM's flat address space in bytes.
pub fn memory_size() -> u64 {
    info().mem_size
}

/// Heap bytes this VM has allocated now (for watching a service's memory:
/// it should not grow with the work it has done).
pub fn heap_in_use() -> usize {
    crate::heap::used()
}
