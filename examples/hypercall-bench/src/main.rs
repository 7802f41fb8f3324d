#![no_std]
#![no_main]
//! Prints what the Denali virtual architecture's basic operations cost,
//! measured inside a VM: a ring-3 loop with no call (the loop's own cost,
//! to subtract), a null hypercall (an unknown call number, which the
//! kernel answers at once), a `yield`, an alarm already due and the `idle`
//! that takes its event, reading the clock, a first touch of a demand-zero
//! page, and a first write to a page of the image's data (copy-on-write).
//!
//! Booted through PVH under QEMU with `-icount shift=0,sleep=off`, a
//! nanosecond of the VM's clock is one instruction, so the figures are
//! instructions per operation (`examples/bench-icount` in `denali-cli`).
//!
//! `cargo denali run --release` in this directory. The iteration count is
//! the VM's first argument (`args` in Denali.toml), 1,000,000 by default. A
//! second argument picks a two-VM figure instead:
//! - `switch`: run two instances; each yield hands the CPU to the other
//!   VM, so one round is two hypercalls and two domain switches.
//! - `frames SIZE`: two instances pass a SIZE-byte IPv4 frame back and
//!   forth through the virtual switch (`net_send`, `net_recv`, `idle`).
//! - `frames SIZE batch`: the same with eight frames each way a round, in
//!   one `net_send_batch` and at least one `net_recv_batch` each; the
//!   figure is per frame each way (comparable to the round trip above).
//! - `echo`: VM 0 echoes TCP on port 7, VM 1 sends it 64 bytes and reads
//!   them back, over the libOS's TCP/IP stack.
//! - `stream`: VM 1 sends VM 0 64 KiB over TCP, and VM 0 answers each
//!   64 KiB with one byte (many segments a poll: where the libOS's stack
//!   batches frames).
//! - `http`: this VM (id 1) asks VM 0, the `http` template at 10.0.2.15,
//!   for its 2 KB page over one keep-alive connection.
//! - `swap`: many instances each fill `SWAP_PAGES` heap pages, then sleep
//!   a millisecond and check them, as often as the count says. Booted in a
//!   memory that holds only some of them, with a swap area, the kernel
//!   swaps the sleeping ones out and back in; its report (`--stats`) says
//!   what a swap-out and a swap-in took.
//! - `exit`: nothing (many instances time making VMs).
//!
//! The measuring VM prints `hypercall-bench: done` last (the servers of the
//! network figures never exit).

extern crate alloc;

use alloc::vec::Vec;
use denali::hypercall::{Hypercall, call2, raw};
use denali::io::{Read, Write};
use denali::net::frame::{self, FRAME_MAX, mac_of};
use denali::net::{TcpListener, TcpStream};
use denali::prelude::*;
use denali::time::Instant;

const PAGES: usize = 256;
/// Pages each one-write first-touch figure touches (the heap holds the
/// first-touch pages above and two of these runs).
const ONE_WRITE_PAGES: usize = 128;

/// Image data pages written once each by the copy-on-write figure. Not
/// zero, so the linker keeps them in `.data` (pages of the image that
/// every VM shares until it writes one).
const DATA_PAGES: usize = 64;
static mut DATA: [[u8; 4096]; DATA_PAGES] = [[1; 4096]; DATA_PAGES];

fn per_op(label: &str, n: u64, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = start.elapsed().as_nanos() as u64;
    println!("{label:<28} {:>10} ns/op  ({n} ops in {} ms)", ns / n, ns / 1_000_000);
}

/// The address of VM `peer`, the VM next to this one (the bundle gives
/// consecutive VMs consecutive addresses).
fn neighbour(peer: u32) -> denali::net::Ipv4Addr {
    let me = denali::net::local_ip().expect("the bundle gives each VM an address").octets();
    let last = if peer > denali::vm::id() { me[3] + 1 } else { me[3] - 1 };
    denali::net::Ipv4Addr::new(me[0], me[1], me[2], last)
}

/// An IPv4 frame of `size` bytes from this VM to VM `peer` (one address
/// away), which the switch lets through: this VM's MAC and address as its
/// source.
fn ipv4_frame(peer: u32, size: usize) -> Vec<u8> {
    let me = denali::net::local_ip().expect("the bundle gives each VM an address").octets();
    let to = neighbour(peer).octets();
    let mut f = alloc::vec![0u8; size];
    f[0..6].copy_from_slice(&mac_of(peer));
    f[6..12].copy_from_slice(&denali::vm::mac());
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((size - 14) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&me);
    f[30..34].copy_from_slice(&to);
    f
}

/// Frames a round of the batched frame figure passes each way.
const BATCH: usize = 8;

/// VM 0 and VM 1 pass eight frames back and forth a round, a batch each
/// way; VM 0 times the rounds and prints the figure per frame.
fn frame_batches(iterations: u64, size: usize) {
    let me = denali::vm::id();
    let frame = ipv4_frame(1 - me, size);
    let batch = [&frame[..]; BATCH];
    let mut bufs = alloc::vec![[0u8; FRAME_MAX]; BATCH];
    let mut pass = || {
        assert_eq!(frame::send_batch(&batch), Ok(BATCH), "the switch takes the batch for the other VM");
        let mut got = 0;
        while got < BATCH {
            let mut slices: [&mut [u8]; BATCH] = [(); BATCH].map(|()| &mut [][..]);
            for (slot, buf) in slices.iter_mut().zip(bufs[got..].iter_mut()) {
                *slot = &mut buf[..];
            }
            let mut lens = [0usize; BATCH];
            let slices = &mut slices[..BATCH - got];
            got += frame::recv_batch(slices, &mut lens).expect("the other VM sends its batch");
        }
    };
    if me == 1 {
        for _ in 0..=iterations {
            pass();
        }
        return;
    }
    pass();
    let start = Instant::now();
    for _ in 0..iterations {
        pass();
    }
    let per_frame = start.elapsed().as_nanos() as u64 / (iterations * BATCH as u64);
    println!(
        "{:<28} {per_frame:>10} ns/op  ({iterations} rounds of {BATCH})",
        alloc::format!("batched round trip ({size} B)")
    );
}

/// VM 0 and VM 1 pass a frame back and forth; VM 0 times the rounds.
fn frames(iterations: u64, size: usize) {
    let me = denali::vm::id();
    let frame = ipv4_frame(1 - me, size);
    let mut buf = [0u8; FRAME_MAX];
    let mut pass = || {
        frame::send(&frame).expect("the switch takes a frame for the other VM");
        frame::recv(&mut buf).expect("the other VM answers");
    };
    if me == 1 {
        // Answers the warm-up round and every timed one.
        for _ in 0..=iterations {
            frame::recv(&mut buf).expect("VM 0 sends");
            frame::send(&frame).expect("the switch takes a frame for VM 0");
        }
        return;
    }
    pass();
    per_op(&alloc::format!("frame round trip ({size} B)"), iterations, pass);
}

/// VM 0 echoes one TCP connection on port 7; VM 1 times 64-byte rounds.
fn echo(iterations: u64) {
    if denali::vm::id() == 0 {
        let mut listener = TcpListener::bind("0.0.0.0:7").expect("port 7 is free in a fresh VM");
        let (mut stream, _) = listener.accept().expect("VM 1 connects");
        let mut buf = [0u8; 64];
        while stream.read_exact(&mut buf).is_ok() && stream.write_all(&buf).is_ok() {}
        return;
    }
    let mut stream = TcpStream::connect((neighbour(0), 7)).expect("VM 0 listens on port 7");
    stream.set_nodelay(true).expect("a connected socket");
    let mut buf = [7u8; 64];
    let mut round = || {
        stream.write_all(&[7u8; 64]).expect("VM 0 reads");
        stream.read_exact(&mut buf).expect("VM 0 echoes");
    };
    round();
    per_op("TCP echo round trip (64 B)", iterations, round);
}

/// Bytes of one `stream` transfer.
const STREAM_BYTES: usize = 64 << 10;

/// VM 0 reads `STREAM_BYTES` at a time on port 9 and answers each with a
/// byte; VM 1 times sending them.
fn stream(iterations: u64) {
    if denali::vm::id() == 0 {
        let mut listener = TcpListener::bind("0.0.0.0:9").expect("port 9 is free in a fresh VM");
        let (mut stream, _) = listener.accept().expect("VM 1 connects");
        let mut buf = alloc::vec![0u8; STREAM_BYTES];
        while stream.read_exact(&mut buf).is_ok() && stream.write_all(&[1]).is_ok() {}
        return;
    }
    let mut stream = TcpStream::connect((neighbour(0), 9)).expect("VM 0 listens on port 9");
    stream.set_nodelay(true).expect("a connected socket");
    let data = alloc::vec![9u8; STREAM_BYTES];
    let mut round = || {
        stream.write_all(&data).expect("VM 0 reads");
        stream.read_exact(&mut [0u8; 1]).expect("VM 0 answers");
    };
    round();
    per_op("TCP stream, 64 KiB one way", iterations, round);
}

/// One GET of the page on `stream` and its whole answer, read through
/// `chunk` into `buf` (both kept from one request to the next, as a load
/// generator keeps them).
fn fetch(stream: &mut TcpStream, chunk: &mut [u8], buf: &mut Vec<u8>) {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n").expect("the server reads");
    buf.clear();
    let mut whole = None;
    loop {
        let n = stream.read(chunk).expect("the server answers");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if whole.is_none() {
            whole = answer_length(buf);
        }
        if whole.is_some_and(|whole| buf.len() >= whole) {
            return;
        }
    }
}

/// The length of the whole answer (head and body), once its head is in
/// `buf`.
fn answer_length(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut answer = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = answer.parse(buf).expect("an HTTP answer") else { return None };
    let length = answer.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
    let length = length.and_then(|h| core::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
    Some(head + length.expect("a Content-Length"))
}

/// Times keep-alive requests to the `http` template at 10.0.2.15.
fn http(iterations: u64) {
    let mut stream = TcpStream::connect("10.0.2.15:80").expect("the http template listens on port 80");
    stream.set_nodelay(true).expect("a connected socket");
    let (mut chunk, mut buf) = (alloc::vec![0u8; 4096], Vec::new());
    fetch(&mut stream, &mut chunk, &mut buf);
    per_op("HTTP request, keep-alive (2 KB page)", iterations, || fetch(&mut stream, &mut chunk, &mut buf));
}

#[denali::main]
fn main() {
    let mut args = denali::vm::args().split_whitespace();
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    match args.next() {
        Some("switch") => per_op("yield round (2 VMs)", iterations, || {
            // SAFETY: `yield` takes no pointer.
            let _ = unsafe { call2(Hypercall::Yield, 0, 0) };
        }),
        Some("frames") => {
            let size = args.next().and_then(|n| n.parse().ok()).unwrap_or(64);
            match args.next() {
                Some("batch") => frame_batches(iterations, size),
                _ => frames(iterations, size),
            }
        }
        Some("echo") => echo(iterations),
        Some("stream") => stream(iterations),
        Some("http") => http(iterations),
        Some("swap") => swap(iterations),
        // For timing VM creation: nothing to do.
        Some("exit") => {}
        _ => one_vm(iterations),
    }
    println!("hypercall-bench: done");
}

/// Heap pages each VM of the `swap` run fills: about what a web VM has
/// of its own beside its stack and info page.
const SWAP_PAGES: usize = 16;

/// Waits until every VM has booted small (the kernel's load control
/// starts VMs only as memory holds them while they boot: three seconds is
/// time enough to make hundreds, even where the kernel is emulated), fills
/// `SWAP_PAGES` heap pages, then `rounds` times sleeps a millisecond (long
/// enough for the kernel to swap it out for another) and checks the pages
/// came back.
fn swap(rounds: u64) {
    let id = denali::vm::id() as u8;
    let pattern = |page: usize| id.wrapping_mul(31).wrapping_add(page as u8);
    denali::time::sleep(core::time::Duration::from_secs(3));
    let pages: Vec<Page> = (0..SWAP_PAGES).map(|page| Page([pattern(page); 4096])).collect();
    for round in 1..=rounds {
        denali::time::sleep(core::time::Duration::from_millis(1));
        // A byte a cache line: a page lost, zeroed or another's shows.
        let changed = pages.iter().enumerate().find(|(i, page)| page.0.iter().step_by(64).any(|&b| b != pattern(*i)));
        if let Some((page, _)) = changed {
            println!("vm {id}: page {page} changed after sleep {round}");
            denali::process::exit(1);
        }
    }
}

/// The figures one VM can measure alone.
fn one_vm(iterations: u64) {
    per_op("ring-3 loop (no call)", iterations, || {
        core::hint::black_box(0u64);
    });
    per_op("null hypercall", iterations, || {
        // SAFETY: no such call: the kernel refuses it and touches nothing.
        core::hint::black_box(unsafe { raw(u64::MAX, 0, 0) });
    });
    per_op("yield hypercall", iterations / 10, || {
        // SAFETY: `yield` takes no pointer.
        let _ = unsafe { call2(Hypercall::Yield, 0, 0) };
    });
    per_op("alarm (due) + idle", iterations / 10, || {
        // SAFETY: neither call takes a pointer. A deadline of 1 ns since
        // boot has passed, so the alarm's event is pending at once and
        // `idle` returns it without blocking.
        let _ = unsafe { call2(Hypercall::Alarm, 1, 0) };
        let _ = unsafe { call2(Hypercall::Idle, 0, 0) };
    });
    per_op("clock read (no hypercall)", iterations, || {
        core::hint::black_box(Instant::now());
    });
    let mut pages = alloc::vec::Vec::<[u8; 4096]>::with_capacity(PAGES);
    let start = Instant::now();
    for i in 0..PAGES {
        // Each push fills a fresh heap page, faulting it in.
        pages.push([i as u8; 4096]);
    }
    let ns = start.elapsed().as_nanos() as u64;
    println!("{:<28} {:>10} ns/op  ({PAGES} pages)", "first touch of a heap page", ns / PAGES as u64);
    first_touches_one_write();
    let data = &raw mut DATA;
    let start = Instant::now();
    for page in 0..DATA_PAGES {
        // SAFETY: one thread; each write stays inside `DATA`.
        unsafe { core::ptr::write_volatile(&raw mut (*data)[page][8], 2) };
    }
    let ns = start.elapsed().as_nanos() as u64;
    println!("{:<28} {:>10} ns/op  ({DATA_PAGES} pages)", "copy-on-write fault", ns / DATA_PAGES as u64);
}

/// A page of the heap, page aligned.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A first touch with one write a page, so the figure is the fault alone:
/// straight after the others (the kernel zeroes each frame as the VM
/// touches it), and after an idle moment, in which the kernel zeroes free
/// frames ahead of need (what a service pays that waited before it grew).
fn first_touches_one_write() {
    // Kept, so the second run's pages are new ones too.
    let _touched = first_touch_one_write("first touch, one write");
    denali::time::sleep(core::time::Duration::from_millis(2));
    first_touch_one_write("first touch, zeroed ahead");
}

/// Writes a byte to each of `ONE_WRITE_PAGES` heap pages never touched;
/// returns them.
fn first_touch_one_write(label: &str) -> Vec<Page> {
    let mut untouched = Vec::<Page>::with_capacity(ONE_WRITE_PAGES);
    let base = untouched.as_mut_ptr();
    let start = Instant::now();
    for page in 0..ONE_WRITE_PAGES {
        // SAFETY: within the vector's capacity; one byte of each page is
        // written and none is read.
        unsafe { core::ptr::write_volatile(base.add(page).cast::<u8>(), 1) };
    }
    let ns = start.elapsed().as_nanos() as u64;
    println!("{label:<28} {:>10} ns/op  ({ONE_WRITE_PAGES} pages)", ns / ONE_WRITE_PAGES as u64);
    untouched
}
