//! Physical memory: the frame allocator, and (on the target) the physmap and
//! the per-VM address spaces built from frames.

pub mod frame;
pub mod heap;

#[cfg(target_os = "none")]
pub mod phys;
#[cfg(target_os = "none")]
pub mod space;
