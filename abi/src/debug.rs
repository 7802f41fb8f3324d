//! Debug events: what the kernel tells the monitor about a VM that
//! crashed, or that a debugger holds and that has stopped, so that the host
//! can print a backtrace with names and lines, write a core file, and serve
//! gdb.
//!
//! The kernel writes the physical address of a [`DebugEvent`] to
//! [`ports::DEBUG`](crate::boot::ports::DEBUG): just before it frees a
//! crashed VM's memory, and whenever the VM under a debugger (see
//! [`BootInfo::debug_vm`](crate::boot::BootInfo::debug_vm)) stops. The
//! monitor reads the event and, through the page tables it names, the VM's
//! own pages (and nothing else) while the port write holds the kernel
//! still; for a stop, it writes back the VM's registers and a
//! [`Command`] before it returns. Where no monitor claims the port, the
//! write does nothing (and a stop continues).

/// The second argument of `exit` (see
/// [`Hypercall::Exit`](crate::hypercall::Hypercall::Exit)): the VM panicked
/// or aborted, so the kernel reports it as it reports a fault.
pub const EXIT_CRASHED: u64 = 1;

/// What happened to the VM.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A CPU exception the kernel could not resolve: the VM stops.
    Fault = 1,
    /// `exit` with [`EXIT_CRASHED`]: a panic or an abort.
    Panic = 2,
    /// The debugged VM is at its entry point, before its first instruction.
    Entry = 3,
    /// The debugged VM ran one instruction.
    Step = 4,
    /// The debugged VM ran `int3` (`rip` is after it) or trapped on a
    /// single-step it set itself.
    Trap = 5,
    /// The debugged VM exited with `status`.
    Exited = 6,
    /// The debugger asked to stop the VM while it ran (gdb's Ctrl-C; see
    /// [`DEBUG_REQUEST_VECTOR`](crate::boot::DEBUG_REQUEST_VECTOR)).
    Interrupted = 7,
}

/// What the debugged VM does after a stop (the monitor's answer).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run on.
    Continue = 1,
    /// Run one instruction, then stop again.
    Step = 2,
    /// End the VM (gdb's `kill`): it finishes with status
    /// [`KILLED_STATUS`].
    Kill = 3,
}

/// The status of a VM its debugger killed: 128 + `SIGKILL`, as a shell
/// reports a killed process.
pub const KILLED_STATUS: i32 = 137;

/// [`DebugEvent::flags`]: every page of the VM is its own (its image's
/// shared pages were copied), so the debugger may write its memory, and
/// plant breakpoints, without touching another VM's.
pub const EVENT_MEMORY_PRIVATE: u64 = 1;

/// Defines [`UserRegs`] with these fields, in this order, and its
/// conversions to and from words.
macro_rules! user_regs {
    ($($field:ident),* $(,)?) => {
        /// A VM's general registers, in the order of Linux's
        /// `user_regs_struct` (what an ELF core's `NT_PRSTATUS` note holds).
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub struct UserRegs {
            $(pub $field: u64,)*
        }

        impl UserRegs {
            /// The registers in field order.
            pub fn to_words(&self) -> [u64; USER_REGS_WORDS] {
                [$(self.$field),*]
            }

            /// Registers from their words in field order.
            pub fn from_words(words: [u64; USER_REGS_WORDS]) -> UserRegs {
                let [$($field),*] = words;
                UserRegs { $($field),* }
            }
        }
    };
}

user_regs!(
    r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, rflags, rsp, ss,
    fs_base, gs_base, ds, es, fs, gs,
);

/// Words in a [`UserRegs`].
pub const USER_REGS_WORDS: usize = 27;

/// What the kernel says about a VM that crashed or stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugEvent {
    /// The VM's id.
    pub vm: u64,
    /// An [`EventKind`], as a number (the monitor checks it).
    pub kind: u64,
    /// The exception's vector (a fault), else 0.
    pub vector: u64,
    /// The exception's error code, else 0.
    pub error_code: u64,
    /// The address a page fault was for, else 0.
    pub fault_address: u64,
    /// The physical address of the VM's top-level page table.
    pub root: u64,
    /// The size of the VM's flat address space: it sees `[0, space_size)`.
    pub space_size: u64,
    /// The exit status (an [`EventKind::Exited`] or a panic), else 0.
    pub status: u64,
    /// `EVENT_*` bits.
    pub flags: u64,
    /// Written by the monitor for a stop: a [`Command`], as a number.
    pub command: u64,
    /// Its registers where it stopped; for a stop, the monitor may change
    /// them (the kernel keeps the segments and the privileged flags).
    pub regs: UserRegs,
}

const HEADER_WORDS: usize = 10;
const _: () = assert!(core::mem::size_of::<UserRegs>() == USER_REGS_WORDS * 8);
const _: () = assert!(core::mem::size_of::<DebugEvent>() == DebugEvent::SIZE);

impl DebugEvent {
    /// Its size in guest memory.
    pub const SIZE: usize = (HEADER_WORDS + USER_REGS_WORDS) * 8;

    /// The event from its bytes in guest memory (little-endian words in
    /// field order).
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> DebugEvent {
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let regs: [u64; USER_REGS_WORDS] = core::array::from_fn(|i| word(HEADER_WORDS + i));
        DebugEvent {
            vm: word(0),
            kind: word(1),
            vector: word(2),
            error_code: word(3),
            fault_address: word(4),
            root: word(5),
            space_size: word(6),
            status: word(7),
            flags: word(8),
            command: word(9),
            regs: UserRegs::from_words(regs),
        }
    }

    /// What kind of event it is, if a known one.
    pub fn event_kind(&self) -> Option<EventKind> {
        use EventKind::*;
        [Fault, Panic, Entry, Step, Trap, Exited, Interrupted].into_iter().find(|kind| *kind as u64 == self.kind)
    }

    /// The monitor's answer to a stop, if a known one.
    pub fn command(&self) -> Option<Command> {
        [Command::Continue, Command::Step, Command::Kill].into_iter().find(|command| *command as u64 == self.command)
    }

    /// Whether the VM stopped for good (a fault or a panic).
    pub fn is_crash(&self) -> bool {
        matches!(self.event_kind(), Some(EventKind::Fault | EventKind::Panic))
    }

    /// The offset of [`DebugEvent::command`] in guest memory, where the
    /// monitor writes its answer, followed by the registers.
    pub const COMMAND_OFFSET: usize = 9 * 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_back_from_its_bytes() {
        let regs = UserRegs::from_words(core::array::from_fn(|i| 100 + i as u64));
        assert_eq!(regs.rip, 116);
        assert_eq!(regs.rsp, 119);
        let report = DebugEvent {
            vm: 3,
            kind: EventKind::Panic as u64,
            root: 0x5000,
            space_size: 1 << 30,
            status: 101,
            command: Command::Step as u64,
            regs,
            ..DebugEvent::default()
        };
        // SAFETY: DebugEvent is repr(C) and all u64, with no padding: its
        // bytes are initialised, and are what the kernel leaves in memory.
        let bytes: [u8; DebugEvent::SIZE] = unsafe { core::mem::transmute(report) };
        let back = DebugEvent::from_bytes(&bytes);
        assert_eq!(back, report);
        assert_eq!(back.event_kind(), Some(EventKind::Panic));
        assert_eq!(back.command(), Some(Command::Step));
        assert!(back.is_crash());
        let regs_at = DebugEvent::COMMAND_OFFSET + 8;
        assert_eq!(bytes[regs_at + 16 * 8], 116, "rip after the command");
        assert_eq!(back.regs.to_words(), core::array::from_fn(|i| 100 + i as u64));
    }
}
