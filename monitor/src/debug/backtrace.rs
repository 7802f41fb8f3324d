//! The chain of calls a crashed VM was in: where it stopped, then the
//! return address each saved frame pointer leads to. Denali's targets keep
//! a frame pointer in every function (std's too), so the chain needs no
//! unwind tables; it is read through [`VmSpace`] and ends at the first
//! link that is missing, unreadable or does not climb the stack.

use super::walk::VmSpace;

/// Most frames followed: a chain longer than this is cut.
pub const MAX_FRAMES: usize = 64;

/// `rip`, then the return addresses above the frame `rbp` points at
/// (innermost first). `rsp` bounds the first frame from below.
pub fn return_addresses(space: &VmSpace<'_>, rip: u64, rbp: u64, rsp: u64) -> Vec<u64> {
    let mut addresses = vec![rip];
    let (mut frame, mut floor) = (rbp, rsp);
    while addresses.len() < MAX_FRAMES && frame != 0 && frame >= floor {
        let (Some(caller_frame), Some(ret)) = (space.read_u64(frame), space.read_u64(frame.wrapping_add(8))) else {
            break;
        };
        if ret == 0 {
            break;
        }
        addresses.push(ret);
        floor = frame.saturating_add(16);
        frame = caller_frame;
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// A VM whose page 0 is mapped to frame 0x10000 (its stack).
    fn stack(words: &[(u64, u64)]) -> GuestMemoryMmap {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
        let put = |at: u64, value: u64| memory.write_obj(value, GuestAddress(at)).unwrap();
        put(0x1000, 0x4000 | 7);
        put(0x4000, 0x5000 | 7);
        put(0x5000, 0x6000 | 7);
        put(0x6000, 0x10000 | 7);
        for &(va, value) in words {
            put(0x10000 + va, value);
        }
        memory
    }

    #[test]
    fn the_chain_is_followed_up_the_stack() {
        let memory = stack(&[(0x100, 0x200), (0x108, 0xaaa), (0x200, 0x300), (0x208, 0xbbb), (0x300, 0), (0x308, 0)]);
        let space = VmSpace::new(&memory, 0x1000, 1 << 30);
        assert_eq!(return_addresses(&space, 0x999, 0x100, 0xf0), vec![0x999, 0xaaa, 0xbbb]);
    }

    #[test]
    fn hostile_chains_end() {
        // A loop, a chain that goes down the stack, and one that leaves the
        // mapped page: each stops without looping or reading elsewhere.
        let memory = stack(&[(0x100, 0x100), (0x108, 0xaaa)]);
        let space = VmSpace::new(&memory, 0x1000, 1 << 30);
        assert_eq!(return_addresses(&space, 1, 0x100, 0x100), vec![1, 0xaaa]);
        let memory = stack(&[(0x100, 0x80), (0x108, 0xaaa), (0x80, 0x100), (0x88, 0xbbb)]);
        let space = VmSpace::new(&memory, 0x1000, 1 << 30);
        assert_eq!(return_addresses(&space, 1, 0x100, 0x100), vec![1, 0xaaa]);
        let memory = stack(&[(0xff8, 0x5000), (0x1000, 0xccc)]);
        let space = VmSpace::new(&memory, 0x1000, 1 << 30);
        assert_eq!(return_addresses(&space, 1, 0xff8, 0), vec![1], "the return address is on an unmapped page");
        assert_eq!(return_addresses(&space, 1, 0x100, 0x200), vec![1], "the frame is below the stack pointer");
        assert_eq!(return_addresses(&space, 1, 0x101, 0), vec![1], "misaligned");
    }
}
