//! The GDT and the TSS: kernel and user segments, and an interrupt stack
//! (IST) for every kind of trap so that a trap never runs on a stack a VM
//! could have corrupted.

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (1-based in the IDT, 0-based here) for traps from ring 3 and
/// ordinary kernel traps.
pub const IST_TRAP: u16 = 0;
/// IST slot for double faults.
pub const IST_DOUBLE_FAULT: u16 = 1;
/// IST slot for NMIs and machine checks.
pub const IST_NMI: u16 = 2;

const IST_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_SIZE]);

static mut IST_STACKS: [Stack; 3] = [const { Stack([0; IST_SIZE]) }; 3];
/// The TSS. The trap path writes its `IST_TRAP` entry: the running VM's
/// context while a VM runs, [`DENALI_KERNEL_TRAP_STACK`] while the kernel does.
#[unsafe(no_mangle)]
pub(super) static mut DENALI_TSS: TaskStateSegment = TaskStateSegment::new();
/// The top of the kernel's own stack for traps (`IST_TRAP`).
#[unsafe(no_mangle)]
pub(super) static mut DENALI_KERNEL_TRAP_STACK: u64 = 0;
static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();

/// The segment selectors the kernel and VMs run with.
#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    /// Ring-0 code.
    pub kernel_code: SegmentSelector,
    /// Ring-0 data.
    pub kernel_data: SegmentSelector,
    /// Ring-3 data (RPL 3).
    pub user_data: SegmentSelector,
    /// Ring-3 code (RPL 3).
    pub user_code: SegmentSelector,
}

/// Builds and loads the GDT and TSS. Call once, at boot.
pub fn init() -> Selectors {
    // SAFETY: called once on the boot CPU before anything else reads these
    // statics; after this they are only read by the CPU.
    unsafe {
        let tss = &mut *core::ptr::addr_of_mut!(DENALI_TSS);
        let stacks = &*core::ptr::addr_of!(IST_STACKS);
        for (i, stack) in stacks.iter().enumerate() {
            let top = VirtAddr::from_ptr(stack.0.as_ptr()) + IST_SIZE as u64;
            tss.interrupt_stack_table[i] = top;
        }
        // Privilege changes without an IST use rsp0; every gate has an IST,
        // but keep rsp0 valid anyway.
        tss.privilege_stack_table[0] = tss.interrupt_stack_table[IST_TRAP as usize];
        DENALI_KERNEL_TRAP_STACK = tss.interrupt_stack_table[IST_TRAP as usize].as_u64();

        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        let selectors = Selectors {
            kernel_code: gdt.append(Descriptor::kernel_code_segment()),
            kernel_data: gdt.append(Descriptor::kernel_data_segment()),
            user_data: gdt.append(Descriptor::user_data_segment()),
            user_code: gdt.append(Descriptor::user_code_segment()),
        };
        let tss_selector = gdt.append(Descriptor::tss_segment(&*core::ptr::addr_of!(DENALI_TSS)));
        gdt.load();
        CS::set_reg(selectors.kernel_code);
        // DS and ES are null: 64-bit code ignores them, and a VM's state
        // saved from the CPU must never hold a kernel selector (the CPU
        // nulls one on the way to ring 3, but PVM was seen to hand the
        // kernel's DS to ring 3 after an exit to the monitor, and that VM's
        // next restore then faulted).
        DS::set_reg(SegmentSelector::NULL);
        ES::set_reg(SegmentSelector::NULL);
        SS::set_reg(selectors.kernel_data);
        load_tss(tss_selector);
        selectors
    }
}
