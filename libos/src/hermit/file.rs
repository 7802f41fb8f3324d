//! Files and directories for `std::fs`: `open`, `lseek`, `stat`, `fstat`,
//! `getdents64`, `mkdir`, `unlink` and `rmdir` over the VM's volume (see
//! `volume`). Paths start at the volume's root `/`; a relative path starts
//! there too, as a VM has no other working directory.
//!
//! Descriptors naming one file share one open `lamfat::File` (one view of
//! its size and clusters), each with its own offset. A file that is open
//! cannot be removed (`EBUSY`): FAT would hand its clusters to the next
//! file while the descriptor still wrote to them.

extern crate alloc;

use super::volume::{self, FatDir, FatEntry, FatError, FatFile};
use alloc::collections::BTreeMap;
use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::ffi::{CStr, c_char};
use hermit_abi::{
    DT_DIR, DT_REG, EBADF, EBUSY, EEXIST, EFAULT, EFBIG, EINVAL, EISDIR, ENOENT, ENOTDIR, O_APPEND, O_CREAT,
    O_DIRECTORY, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, S_IFDIR, S_IFREG, SEEK_CUR, SEEK_END, SEEK_SET, stat,
    timespec,
};
use lamfat::{Read, Seek, SeekFrom, Write};

/// The access-mode bits of `open`'s flags (read, write or both).
const O_ACCMODE: i32 = 0o3;

/// A file as one descriptor (and its `dup`s) sees it.
pub(super) struct OpenFile {
    node: Rc<Node>,
    offset: Cell<u64>,
    readable: bool,
    writable: bool,
    append: bool,
}

/// A directory opened for listing.
pub(super) struct OpenDir {
    path: String,
    listed: Cell<bool>,
}

/// A file open under one or more descriptors.
struct Node {
    /// Its path from the root, as first opened.
    path: String,
    /// Its key in [`OPEN`] (see [`Found::key`]).
    key: String,
    file: RefCell<FatFile>,
}

impl Drop for Node {
    fn drop(&mut self) {
        OPEN.0.borrow_mut().remove(&self.key);
    }
}

/// The files open now, by [`Found::key`].
struct OpenNodes(RefCell<BTreeMap<String, Weak<Node>>>);

// SAFETY: one green thread runs at a time in a VM, and no borrow of the
// map is held across anything that could switch threads.
unsafe impl Sync for OpenNodes {}

static OPEN: OpenNodes = OpenNodes(RefCell::new(BTreeMap::new()));

/// The open file known by `key`, if a descriptor has it.
fn open_node(key: &str) -> Option<Rc<Node>> {
    OPEN.0.borrow().get(key).and_then(Weak::upgrade)
}

fn share(path: String, key: String, file: FatFile) -> Rc<Node> {
    let node = Rc::new(Node { path, key, file: RefCell::new(file) });
    OPEN.0.borrow_mut().insert(node.key.clone(), Rc::downgrade(&node));
    node
}

/// `name` as a path from the root: `.` dropped, `..` taken back (never
/// above the root), separators collapsed; `""` is the root.
fn resolve(name: *const c_char) -> Result<String, i32> {
    if name.is_null() {
        return Err(EFAULT);
    }
    // SAFETY: std passes a NUL-terminated string it owns.
    let name = unsafe { CStr::from_ptr(name) }.to_str().map_err(|_| EINVAL)?;
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// The directory holding `path` and the last part of it.
fn parent_of(path: &str) -> Result<(FatDir, &str), i32> {
    let root = volume::volume()?.root_dir();
    match path.rsplit_once('/') {
        None => Ok((root, path)),
        Some((parent, name)) => Ok((root.open_dir(parent).map_err(|e| not_a_dir(&e))?, name)),
    }
}

/// A failure to walk a path: a file where a directory should be is
/// `ENOTDIR` (the crate says `InvalidInput`).
fn not_a_dir(error: &FatError) -> i32 {
    match error {
        lamfat::Error::InvalidInput => ENOTDIR,
        e => volume::errno(e),
    }
}

/// What a path names.
struct Found {
    /// The entry; `None` for the root.
    entry: Option<FatEntry>,
    /// One name for it however the path was spelled: the short (8.3) names
    /// of its parts, each unique in its directory. A file reached by its
    /// long name in another case, or by its short name, has the same key.
    key: String,
}

impl Found {
    fn is_dir(&self) -> bool {
        self.entry.as_ref().is_none_or(FatEntry::is_dir)
    }

    /// The directory it names (the caller has checked `is_dir`).
    fn dir(&self) -> Result<FatDir, i32> {
        match &self.entry {
            None => Ok(volume::volume()?.root_dir()),
            Some(entry) => Ok(entry.to_dir()),
        }
    }

    /// Its inode number: a hash of its key.
    fn ino(&self) -> u64 {
        denali_abi::fnv1a64(self.key.as_bytes())
    }
}

/// Walks `path` from the root, matching each part as the FAT crate does
/// when it opens or removes one.
fn find(path: &str) -> Result<Found, i32> {
    let mut found = Found { entry: None, key: String::new() };
    volume::volume()?;
    for part in path.split('/').filter(|part| !part.is_empty()) {
        if !found.is_dir() {
            return Err(ENOTDIR);
        }
        let entry = lookup(&found.dir()?, part)?;
        found.key.push('/');
        found.key.push_str(&entry.short_file_name());
        found.entry = Some(entry);
    }
    Ok(found)
}

/// The entry of `dir` called `name`: by its long name or its short one,
/// without case (Unicode upper-case folding, as the crate compares).
fn lookup(dir: &FatDir, name: &str) -> Result<FatEntry, i32> {
    let fold = |s: &str| s.chars().flat_map(char::to_uppercase).collect::<String>();
    let wanted = fold(name);
    for entry in dir.iter() {
        let entry = entry.map_err(|e| volume::errno(&e))?;
        if fold(&entry.file_name()) == wanted || fold(&entry.short_file_name()) == wanted {
            return Ok(entry);
        }
    }
    Err(ENOENT)
}

fn open(path: String, flags: i32) -> Result<super::fd::Object, i32> {
    use super::fd::Object;
    let (readable, writable) = match flags & O_ACCMODE {
        O_RDONLY => (true, false),
        O_WRONLY => (false, true),
        O_RDWR => (true, true),
        _ => return Err(EINVAL),
    };
    let exclusive = flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL;
    let node = match find(&path) {
        Ok(_) if exclusive => return Err(EEXIST),
        Ok(found) if found.is_dir() => {
            if writable || flags & O_CREAT != 0 {
                return Err(EISDIR);
            }
            return Ok(Object::Dir(Rc::new(OpenDir { path, listed: Cell::new(false) })));
        }
        Ok(_) if flags & O_DIRECTORY != 0 => return Err(ENOTDIR),
        Ok(Found { entry: Some(entry), key }) => open_node(&key).unwrap_or_else(|| share(path, key, entry.to_file())),
        Ok(Found { entry: None, .. }) => unreachable!("the root is a directory"),
        Err(ENOENT) if flags & O_CREAT != 0 && flags & O_DIRECTORY == 0 && !path.is_empty() => {
            let (parent, name) = parent_of(&path)?;
            let file = parent.create_file(name).map_err(|e| volume::errno(&e))?;
            let key = find(&path)?.key;
            share(path, key, file)
        }
        Err(e) => return Err(e),
    };
    if flags & O_TRUNC != 0 && writable {
        let mut file = node.file.borrow_mut();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.truncate())
            .and_then(|()| file.flush())
            .map_err(|e| volume::errno(&e))?;
    }
    let append = flags & O_APPEND != 0;
    Ok(Object::File(Rc::new(OpenFile { node, offset: Cell::new(0), readable, writable: writable || append, append })))
}

impl OpenFile {
    /// Reads at the descriptor's offset and moves it on.
    pub(super) fn read(&self, buf: &mut [u8]) -> Result<usize, i32> {
        if !self.readable {
            return Err(EBADF);
        }
        if self.offset.get() >= u64::from(u32::MAX) {
            // Past the largest FAT file: nothing to read.
            return Ok(0);
        }
        let mut file = self.node.file.borrow_mut();
        let fat = |e: FatError| volume::errno(&e);
        // The crate stops a seek at the end: a read there returns 0.
        file.seek(SeekFrom::Start(self.offset.get())).map_err(fat)?;
        let read = file.read(buf).map_err(fat)?;
        self.offset.set(self.offset.get() + read as u64);
        Ok(read)
    }

    /// Writes at the descriptor's offset (at the end, if appending), zeros
    /// filling any gap a seek past the end left, and records the new size
    /// on the disk before returning.
    pub(super) fn write(&self, buf: &[u8]) -> Result<usize, i32> {
        if !self.writable {
            return Err(EBADF);
        }
        if buf.is_empty() {
            // As on Linux, writing nothing past the end does not extend.
            return Ok(0);
        }
        let mut file = self.node.file.borrow_mut();
        let fat = |e: FatError| volume::errno(&e);
        let size = file.seek(SeekFrom::End(0)).map_err(fat)?;
        let at = if self.append { size } else { self.offset.get() };
        if at.saturating_add(buf.len() as u64) > u64::from(u32::MAX) {
            return Err(EFBIG);
        }
        let zeros = [0u8; 512];
        let mut end = size;
        while end < at {
            let gap = (at - end).min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..gap]).map_err(fat)?;
            end += gap as u64;
        }
        file.seek(SeekFrom::Start(at)).map_err(fat)?;
        file.write_all(buf).map_err(fat)?;
        file.flush().map_err(fat)?;
        self.offset.set(at + buf.len() as u64);
        Ok(buf.len())
    }

    fn seek(&self, offset: i64, whence: i32) -> Result<u64, i32> {
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => self.offset.get(),
            SEEK_END => self.node.file.borrow_mut().seek(SeekFrom::End(0)).map_err(|e| volume::errno(&e))?,
            _ => return Err(EINVAL),
        };
        let to = base.checked_add_signed(offset).ok_or(EINVAL)?;
        self.offset.set(to);
        Ok(to)
    }
}

impl OpenDir {
    /// Fills `buf` with the directory's entries as `dirent64` records, all
    /// at once (std's reader asks once, doubling its buffer on `EINVAL`);
    /// 0 once they have been read.
    fn list(&self, buf: &mut [u8]) -> Result<usize, i32> {
        if self.listed.get() {
            return Ok(0);
        }
        let mut names: Vec<(String, u64, u8)> = Vec::new();
        let found = find(&self.path)?;
        for entry in found.dir()?.iter() {
            let entry = entry.map_err(|e| volume::errno(&e))?;
            let name = entry.file_name();
            if name != "." && name != ".." {
                let ino = denali_abi::fnv1a64(alloc::format!("{}/{}", found.key, entry.short_file_name()).as_bytes());
                names.push((name, ino, if entry.is_dir() { DT_DIR } else { DT_REG }));
            }
        }
        if names.is_empty() {
            // std's Hermit layer takes an empty listing for a failure, so an
            // empty directory lists what Linux's getdents always does.
            names = alloc::vec![(String::from("."), found.ino(), DT_DIR), (String::from(".."), 0, DT_DIR)];
        }
        let mut used = 0;
        for (name, ino, kind) in &names {
            used = put_dirent(buf, used, *ino, name, *kind).ok_or(EINVAL)?;
        }
        self.listed.set(true);
        Ok(used)
    }
}

/// Where `dirent64`'s name starts: after `d_ino`, `d_off`, `d_reclen` and
/// `d_type`.
const DIRENT_NAME: usize = 19;

/// Writes one `dirent64` record at `at` in `buf`, 8-byte aligned as
/// readers cast it; where the next starts, or `None` if it does not fit.
fn put_dirent(buf: &mut [u8], at: usize, ino: u64, name: &str, kind: u8) -> Option<usize> {
    let len = (DIRENT_NAME + name.len() + 1).next_multiple_of(8);
    let record = buf.get_mut(at..at + len)?;
    record.fill(0);
    record[0..8].copy_from_slice(&ino.to_ne_bytes());
    record[8..16].copy_from_slice(&((at + len) as i64).to_ne_bytes());
    record[16..18].copy_from_slice(&u16::try_from(len).ok()?.to_ne_bytes());
    record[18] = kind;
    record[DIRENT_NAME..DIRENT_NAME + name.len()].copy_from_slice(name.as_bytes());
    Some(at + len)
}

/// What `stat` says of the file or directory at `path`.
fn attributes(path: &str) -> Result<stat, i32> {
    let found = find(path)?;
    let volume = volume::volume()?;
    // SAFETY: `stat` is plain integers, for which zero is a value.
    let mut st: stat = unsafe { core::mem::zeroed() };
    st.st_ino = found.ino();
    st.st_nlink = 1;
    st.st_blksize = i64::from(volume.cluster_size());
    st.st_mode = if found.is_dir() { S_IFDIR | 0o755 } else { S_IFREG | 0o644 };
    if let Some(entry) = &found.entry {
        if entry.attributes().contains(lamfat::FileAttributes::READ_ONLY) {
            st.st_mode &= !0o222;
        }
        st.st_size = entry.len() as i64;
        st.st_blocks = entry.len().div_ceil(512) as i64;
        let at = |seconds: u64| timespec { tv_sec: seconds as i64, tv_nsec: 0 };
        st.st_mtim = at(volume::unix_seconds(entry.modified()));
        st.st_ctim = at(volume::unix_seconds(entry.created()));
        st.st_atim = at(volume::unix_seconds(lamfat::DateTime::new(entry.accessed(), lamfat::Time::new(0, 0, 0, 0))));
    }
    Ok(st)
}

/// Writes `attributes(path)` to `out`.
///
/// # Safety
/// `out` is null or points to a writable `stat`.
unsafe fn stat_into(path: Result<String, i32>, out: *mut stat) -> i32 {
    if out.is_null() {
        return super::fail(EFAULT);
    }
    match path.and_then(|p| attributes(&p)) {
        Ok(st) => {
            // SAFETY: the caller's contract.
            unsafe { out.write(st) };
            0
        }
        Err(e) => super::fail(e),
    }
}

/// # Safety
/// `name` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_open(name: *const c_char, flags: i32, _mode: i32) -> i32 {
    match resolve(name).and_then(|path| open(path, flags)).and_then(super::fd::insert) {
        Ok(fd) => fd,
        Err(e) => super::fail(e),
    }
}

/// # Safety
/// `name` is null or a NUL-terminated string; `out` is null or writable.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_stat(name: *const c_char, out: *mut stat) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { stat_into(resolve(name), out) }
}

/// # Safety
/// As `sys_stat` (there are no links to follow).
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_lstat(name: *const c_char, out: *mut stat) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { stat_into(resolve(name), out) }
}

/// # Safety
/// `out` is null or points to a writable `stat`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_fstat(fd: i32, out: *mut stat) -> i32 {
    use super::fd::Object;
    let path = match super::fd::get(fd) {
        Ok(Object::File(file)) => Ok(file.node.path.clone()),
        Ok(Object::Dir(dir)) => Ok(dir.path.clone()),
        Ok(_) => Err(EINVAL),
        Err(e) => Err(e),
    };
    // SAFETY: the caller's contract.
    unsafe { stat_into(path, out) }
}

#[unsafe(no_mangle)]
extern "C" fn sys_lseek(fd: i32, offset: isize, whence: i32) -> isize {
    use super::fd::Object;
    let moved = match super::fd::get(fd) {
        Ok(Object::File(file)) => file.seek(offset as i64, whence),
        Ok(Object::Dir(_)) => Ok(0),
        Ok(_) => Err(hermit_abi::ESPIPE),
        Err(e) => Err(e),
    };
    match moved {
        Ok(at) => isize::try_from(at).unwrap_or(isize::MAX),
        Err(e) => super::fail(e) as isize,
    }
}

/// # Safety
/// `dirp` points to `count` writable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_getdents64(fd: i32, dirp: *mut hermit_abi::dirent64, count: usize) -> i64 {
    use super::fd::Object;
    if dirp.is_null() {
        return super::fail(EFAULT).into();
    }
    // SAFETY: the caller's contract.
    let buf = unsafe { core::slice::from_raw_parts_mut(dirp.cast::<u8>(), count) };
    let listed = match super::fd::get(fd) {
        Ok(Object::Dir(dir)) => dir.list(buf),
        Ok(_) => Err(ENOTDIR),
        Err(e) => Err(e),
    };
    listed.map_or_else(|e| super::fail(e).into(), |n| n as i64)
}

/// # Safety
/// `name` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_mkdir(name: *const c_char, _mode: u32) -> i32 {
    let made = resolve(name).and_then(|path| {
        match find(&path) {
            Ok(_) => return Err(EEXIST),
            Err(ENOENT) => {}
            Err(e) => return Err(e),
        }
        let (parent, name) = parent_of(&path)?;
        parent.create_dir(name).map(drop).map_err(|e| volume::errno(&e))
    });
    made.map_or_else(super::fail, |()| 0)
}

/// Removes the file (`dir` false) or empty directory (`dir` true) at `name`.
fn remove(name: *const c_char, dir: bool) -> i32 {
    let removed = resolve(name).and_then(|path| {
        let found = find(&path)?;
        match &found.entry {
            None => return Err(if dir { EBUSY } else { EISDIR }),
            Some(entry) if entry.is_dir() != dir => return Err(if dir { ENOTDIR } else { EISDIR }),
            Some(_) => {}
        }
        if open_node(&found.key).is_some() {
            return Err(EBUSY);
        }
        let (parent, name) = parent_of(&path)?;
        parent.remove(name).map_err(|e| volume::errno(&e))
    });
    removed.map_or_else(super::fail, |()| 0)
}

/// # Safety
/// `name` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_unlink(name: *const c_char) -> i32 {
    remove(name, false)
}

/// # Safety
/// `name` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_rmdir(name: *const c_char) -> i32 {
    remove(name, true)
}
