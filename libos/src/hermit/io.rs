//! File descriptors 0-2: standard output and error go to the VM's console;
//! standard input is empty (a VM has no terminal).

use super::fail;
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
        _ => fail(EBADF) as isize,
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
unsafe extern "C" fn sys_read(fd: i32, _buf: *mut u8, _len: usize) -> isize {
    match fd {
        STDIN => 0,
        _ => fail(EBADF) as isize,
    }
}

/// # Safety
/// `iov` points to `count` `iovec`s.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_readv(fd: i32, _iov: *const iovec, _count: usize) -> isize {
    match fd {
        STDIN => 0,
        _ => fail(EBADF) as isize,
    }
}

#[unsafe(no_mangle)]
extern "C" fn sys_close(fd: i32) -> i32 {
    match fd {
        STDIN | STDOUT | STDERR => 0,
        _ => fail(EBADF),
    }
}
