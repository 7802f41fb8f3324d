//! Physical memory: the frame allocator, and (on the target) the physmap and
//! the per-VM address spaces built from frames.

pub mod frame;
pub mod guest;
pub mod heap;
pub mod phys;
pub mod space;
