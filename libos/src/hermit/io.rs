//! Reading, writing and closing descriptors: 0-2 are the console (standard
//! output and error go to it; standard input is empty: a VM has no
//! terminal), the rest are sockets.

use super::{fail, fd, ret_size, socket};
use hermit_abi::{EBADF, EINVAL, iovec};

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
        _ => ret_size(socket::write(fd, if len == 0 { &[] } else { unsafe { core::slice::from_raw_parts(buf, len) } })),
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
        _ => ret_size(socket::read(
            fd,
            if len == 0 { &mut [] } else { unsafe { core::slice::from_raw_parts_mut(buf, len) } },
        )),
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
