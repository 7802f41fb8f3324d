//! Reading, writing and closing descriptors: 0-2 are the console (standard
//! output and error go to it; standard input is empty: a VM has no
//! terminal), the rest are what the table holds (sockets, event counters,
//! files, directories).

use super::fd::{self, Object};
use super::{fail, ret_size, socket};
use hermit_abi::{EBADF, EINVAL, EISDIR, iovec};

const STDIN: i32 = 0;
const STDOUT: i32 = 1;
const STDERR: i32 = 2;

/// # Safety
/// `buf` points to `len` readable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    match fd {
        STDOUT | STDERR => {
            if len != 0 {
                // SAFETY: the caller's contract.
                crate::console::write_bytes(unsafe { core::slice::from_raw_parts(buf, len) });
            }
            len as isize
        }
        STDIN => fail(EBADF) as isize,
        _ if buf.is_null() && len != 0 => fail(hermit_abi::EFAULT) as isize,
        // SAFETY: the caller's contract.
        _ => ret_size(write(fd, if len == 0 { &[] } else { unsafe { core::slice::from_raw_parts(buf, len) } })),
    }
}

/// # Safety
/// `iov` points to `count` `iovec`s, each naming readable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_writev(fd: i32, iov: *const iovec, count: usize) -> isize {
    if count > hermit_abi::IOV_MAX {
        return fail(EINVAL) as isize;
    }
    let mut total = 0isize;
    for i in 0..count {
        // SAFETY: the caller's contract.
        let v = unsafe { iov.add(i).read() };
        // SAFETY: the caller's contract.
        let written = unsafe { sys_write(fd, v.iov_base.cast(), v.iov_len) };
        if written < 0 {
            return if total > 0 { total } else { written };
        }
        total += written;
    }
    total
}

/// # Safety
/// `buf` points to `len` writable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_read(fd: i32, buf: *mut u8, len: usize) -> isize {
    match fd {
        STDIN => 0,
        STDOUT | STDERR => fail(EBADF) as isize,
        _ if buf.is_null() && len != 0 => fail(hermit_abi::EFAULT) as isize,
        // SAFETY: the caller's contract.
        _ => ret_size(read(fd, if len == 0 { &mut [] } else { unsafe { core::slice::from_raw_parts_mut(buf, len) } })),
    }
}

/// # Safety
/// `iov` points to `count` `iovec`s, each naming writable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_readv(fd: i32, iov: *const iovec, count: usize) -> isize {
    if count > hermit_abi::IOV_MAX {
        return fail(EINVAL) as isize;
    }
    // One read, into the first buffer that has room: a read returns what
    // is there, and a short read is allowed.
    for i in 0..count {
        // SAFETY: the caller's contract.
        let v = unsafe { iov.add(i).read() };
        if v.iov_len != 0 {
            // SAFETY: the caller's contract.
            return unsafe { sys_read(fd, v.iov_base.cast(), v.iov_len) };
        }
    }
    0
}

#[unsafe(no_mangle)]
extern "C" fn sys_close(fd: i32) -> i32 {
    match fd {
        STDIN | STDOUT | STDERR => 0,
        _ => fd::remove(fd).map_or_else(fail, |()| 0),
    }
}

/// Reads from descriptor `fd` (3 on).
fn read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    match fd::get(fd)? {
        Object::Socket(entry) => socket::receive(&entry, buf, false).map(|(n, _)| n),
        Object::Event(event) => event.read(buf),
        Object::File(file) => file.read(buf),
        Object::Dir(_) => Err(EISDIR),
    }
}

/// Writes to descriptor `fd` (3 on).
fn write(fd: i32, buf: &[u8]) -> Result<usize, i32> {
    match fd::get(fd)? {
        Object::Socket(entry) => socket::transmit(&entry, buf, None),
        Object::Event(event) => event.write(buf),
        Object::File(file) => file.write(buf),
        Object::Dir(_) => Err(EISDIR),
    }
}
