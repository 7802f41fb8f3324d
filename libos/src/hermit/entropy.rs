//! Entropy for std (`HashMap`'s random keys, `RandomState`): the CPU's
//! `rdrand` where it has it, which ring 3 may execute; otherwise a
//! generator seeded from the TSC, the wall clock and the VM's identity,
//! which differs per VM and per run but is not cryptographically strong.

use core::sync::atomic::{AtomicU64, Ordering};

fn has_rdrand() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 30) != 0
}

#[target_feature(enable = "rdrand")]
fn rdrand() -> Option<u64> {
    let mut value = 0;
    for _ in 0..10 {
        if core::arch::x86_64::_rdrand64_step(&mut value) == 1 {
            return Some(value);
        }
    }
    None
}

/// SplitMix64 over a state seeded once from what differs between VMs and
/// runs.
fn fallback() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    if STATE.load(Ordering::Relaxed) == 0 {
        let info = crate::vm::info();
        // SAFETY: rdtsc is allowed in ring 3.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let seed = tsc ^ info.unix_ns_at_boot.rotate_left(17) ^ u64::from(info.vm_id).rotate_left(40) | 1;
        STATE.store(seed, Ordering::Relaxed);
    }
    let mut z = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// # Safety
/// `buf` points to `len` writable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_read_entropy(buf: *mut u8, len: usize, _flags: u32) -> isize {
    let rdrand_ok = has_rdrand();
    let mut filled = 0;
    while filled < len {
        // SAFETY: rdrand is called only where cpuid reports it.
        let word = if rdrand_ok { unsafe { rdrand() }.unwrap_or_else(fallback) } else { fallback() };
        let n = (len - filled).min(8);
        // SAFETY: `filled + n <= len`, inside the caller's buffer.
        unsafe { core::ptr::copy_nonoverlapping(word.to_le_bytes().as_ptr(), buf.add(filled), n) };
        filled += n;
    }
    len as isize
}
