//! The machine's console: how the isolation kernel's messages and every
//! VM's `console_write` bytes become lines on one terminal, without any VM
//! being able to pose as another or as the kernel.
//!
//! One [`Lines`] discipline serves both places that draw the console: the
//! kernel on bare metal (writing the UART) and our monitor (which takes
//! each VM's buffer in one exit, see [`ConsoleRequest`]). Its rules:
//!
//! - A VM's line starts with `vmN| ` when several VMs run.
//! - Control bytes from a VM other than newline and tab are shown escaped
//!   (`\x1b`, `\r`, `\u{9b}` for C1 controls, `\xff` for bytes that are not
//!   UTF-8), so no escape sequence, carriage return or erase reaches the
//!   terminal: a VM cannot move the cursor, rewrite a line or set the
//!   window title.
//! - A line belongs to its writer: when another writer (a VM or the
//!   kernel) writes while a line is unfinished, that line is ended first,
//!   so lines are never glued together; its writer's next bytes start a
//!   fresh, prefixed line.
//!
//! The kernel's own messages are trusted and shown as they are.

/// Who wrote to the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// The isolation kernel itself.
    Kernel,
    /// The VM with this id.
    Vm(u32),
}

/// [`ConsoleRequest::writer`] for the kernel's own messages.
pub const KERNEL_WRITER: u32 = u32::MAX;
/// [`ConsoleRequest::flags`]: prefix VM lines with `vmN| `.
pub const CONSOLE_PREFIX: u32 = 1;
/// Most pieces one request carries (a buffer of up to 4 KiB spans at most
/// two pages).
pub const CONSOLE_PIECES: usize = 2;

/// What the kernel hands our monitor on the console port
/// ([`crate::boot::ports::CONSOLE`]): a 32-bit write of this struct's
/// physical address. The monitor reads the bytes of each piece from guest
/// memory and draws them with [`Lines`]: one exit per buffer, however
/// long, instead of one per byte through the UART.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleRequest {
    /// A VM id, or [`KERNEL_WRITER`].
    pub writer: u32,
    /// [`CONSOLE_PREFIX`] or 0.
    pub flags: u32,
    /// Pieces in use.
    pub count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Physical address and length of each piece, in order.
    pub pieces: [ConsolePiece; CONSOLE_PIECES],
}

/// One physically contiguous piece of a console buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsolePiece {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

const _: () = assert!(core::mem::size_of::<ConsoleRequest>() == 16 + 16 * CONSOLE_PIECES);

impl ConsoleRequest {
    /// Who wrote it.
    pub fn writer(&self) -> Writer {
        if self.writer == KERNEL_WRITER { Writer::Kernel } else { Writer::Vm(self.writer) }
    }
}

/// The console's line discipline (see the module documentation): it owns
/// which writer's line is unfinished, and nothing else, so it costs the
/// same however many VMs write.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lines {
    /// The writer whose line is unfinished, if any.
    open: Option<Writer>,
}

impl Lines {
    /// A console at the start of a line.
    pub const fn new() -> Lines {
        Lines { open: None }
    }

    /// Draws `bytes` from `writer` through `out` (which receives the
    /// terminal's bytes, in order). `prefix` asks for `vmN| ` at the start
    /// of each of a VM's lines.
    pub fn write(&mut self, writer: Writer, prefix: bool, bytes: &[u8], out: &mut impl FnMut(&[u8])) {
        if bytes.is_empty() {
            return;
        }
        if self.open.is_some_and(|open| open != writer) {
            out(b"\n");
            self.open = None;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.open.is_none() {
                if let (Writer::Vm(id), true) = (writer, prefix) {
                    let mut tag = [0u8; 16];
                    out(vm_tag(id, &mut tag));
                }
                self.open = Some(writer);
            }
            let line_end = rest.iter().position(|&b| b == b'\n');
            let (line, next) = match line_end {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            match writer {
                Writer::Kernel => out(line),
                Writer::Vm(_) => escape(line, out),
            }
            if line_end.is_some() {
                out(b"\n");
                self.open = None;
            }
            rest = next;
        }
    }

    /// Ends an unfinished line (the run is over).
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8])) {
        if self.open.take().is_some() {
            out(b"\n");
        }
    }
}

/// `vmN| ` for VM `id`, in `buf`.
fn vm_tag(id: u32, buf: &mut [u8; 16]) -> &[u8] {
    let mut digits = [0u8; 10];
    let mut n = id;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[..2].copy_from_slice(b"vm");
    for i in 0..len {
        buf[2 + i] = digits[len - 1 - i];
    }
    buf[2 + len..4 + len].copy_from_slice(b"| ");
    &buf[..4 + len]
}

/// Draws a VM's bytes (no newline among them) with every control byte,
/// C1 control and non-UTF-8 byte escaped.
fn escape(mut bytes: &[u8], out: &mut impl FnMut(&[u8])) {
    while !bytes.is_empty() {
        let (valid, bad) = match core::str::from_utf8(bytes) {
            Ok(text) => (text, None),
            Err(e) => (core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""), Some(e.valid_up_to())),
        };
        let mut plain = 0;
        for (at, c) in valid.char_indices() {
            let hidden = (c.is_control() && c != '\t') || c == '\u{7f}';
            if hidden {
                out(&valid.as_bytes()[plain..at]);
                let mut buf = [0u8; 12];
                out(escaped(c as u32, &mut buf));
                plain = at + c.len_utf8();
            }
        }
        out(&valid.as_bytes()[plain..]);
        let Some(at) = bad else { return };
        let mut buf = [0u8; 12];
        out(escaped_byte(bytes[at], &mut buf));
        bytes = &bytes[at + 1..];
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `\r`, `\x1b` or `\u{9b}` for a control character.
fn escaped(c: u32, buf: &mut [u8; 12]) -> &[u8] {
    match c {
        0x0d => b"\\r",
        0..=0x7f => escaped_byte(c as u8, buf),
        _ => {
            buf[..3].copy_from_slice(b"\\u{");
            buf[3] = HEX[(c >> 4 & 0xf) as usize];
            buf[4] = HEX[(c & 0xf) as usize];
            buf[5] = b'}';
            &buf[..6]
        }
    }
}

/// `\xNN` for a byte.
fn escaped_byte(byte: u8, buf: &mut [u8; 12]) -> &[u8] {
    buf[..2].copy_from_slice(b"\\x");
    buf[2] = HEX[usize::from(byte >> 4)];
    buf[3] = HEX[usize::from(byte & 0xf)];
    &buf[..4]
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn draw(writes: &[(Writer, &[u8])]) -> String {
        let mut lines = Lines::new();
        let mut out = Vec::new();
        for &(writer, bytes) in writes {
            lines.write(writer, true, bytes, &mut |b: &[u8]| out.extend_from_slice(b));
        }
        lines.finish(&mut |b: &[u8]| out.extend_from_slice(b));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_line_carries_its_vm() {
        let text = draw(&[(Writer::Vm(0), b"one\ntwo\n"), (Writer::Vm(12), b"three\n")]);
        assert_eq!(text, "vm0| one\nvm0| two\nvm12| three\n");
    }

    #[test]
    fn a_vm_cannot_pose_as_another_or_the_kernel() {
        // A carriage return and erase-line to overwrite its own prefix, an
        // OSC title, a C1 CSI in UTF-8, and bytes that are not UTF-8.
        let text = draw(&[(
            Writer::Vm(1),
            b"\r\x1b[2Kvm0| denali: vm 0 exited\x1b]0;pwned\x07 \xc2\x9b31m \xff\xfe ok\ttab \xc3\xa9\n",
        )]);
        assert_eq!(
            text,
            "vm1| \\r\\x1b[2Kvm0| denali: vm 0 exited\\x1b]0;pwned\\x07 \\u{9b}31m \\xff\\xfe ok\ttab \u{e9}\n"
        );
        assert!(!text.bytes().any(|b| b == 0x1b || b == b'\r'));
    }

    #[test]
    fn unfinished_lines_are_never_glued_together() {
        let text = draw(&[
            (Writer::Vm(0), b"partial"),
            (Writer::Vm(1), b"other\n"),
            (Writer::Vm(0), b" rest\n"),
            (Writer::Vm(2), b"no newline"),
            (Writer::Kernel, b"denali: vm 2 exited with status 0\n"),
        ]);
        assert_eq!(text, "vm0| partial\nvm1| other\nvm0|  rest\nvm2| no newline\ndenali: vm 2 exited with status 0\n");
    }

    #[test]
    fn one_writer_continues_its_own_line() {
        let text = draw(&[(Writer::Vm(3), b"a"), (Writer::Vm(3), b"b\n")]);
        assert_eq!(text, "vm3| ab\n");
    }

    #[test]
    fn request_writers_decode() {
        let request = ConsoleRequest { writer: KERNEL_WRITER, ..Default::default() };
        assert_eq!(request.writer(), Writer::Kernel);
        assert_eq!(ConsoleRequest { writer: 7, ..request }.writer(), Writer::Vm(7));
    }
}
