//! Green threads: cooperative threads inside one VM.
//!
//! A thread runs until it sleeps, waits for another, or yields; then the
//! next ready thread runs. When no thread is ready the library OS sets the
//! virtual alarm clock for the earliest sleeper and calls the `idle`
//! hypercall, so a VM whose threads all wait uses no CPU.
//!
//! ```ignore
//! let handle = denali::thread::spawn(|| 6 * 7);
//! assert_eq!(handle.join(), 42);
//! ```
//!
//! Thread stacks are [`STACK_SIZE`] bytes from the heap, without a guard
//! page: a thread that overflows its stack corrupts the heap, not another
//! VM. The main thread keeps the VM's own stack (with its guard page).

extern crate alloc;

use crate::hypercall::{Hypercall, call2};
use crate::time::{Instant, idle};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use denali_abi::hypercall::EVENT_NET_RX;

/// Stack size of a spawned thread.
pub const STACK_SIZE: usize = 64 * 1024;

/// Identifies a thread within its VM; the main thread is 0.
pub type ThreadId = usize;

enum State {
    Ready,
    Sleeping,
    Joining,
    /// Waiting for an event or a socket (and perhaps a deadline).
    Waiting,
    /// Waiting on a key (a futex address) until `unpark` or its deadline.
    #[cfg_attr(not(target_os = "hermit"), allow(dead_code))]
    Parked,
    Finished,
}

struct Thread {
    /// Saved stack pointer while not running.
    rsp: u64,
    /// Owned stack (none for the main thread); only the thread itself
    /// writes and reads it, so it is never initialised as a whole.
    stack: Option<Box<[core::mem::MaybeUninit<u8>]>>,
    state: State,
    entry: Option<Box<dyn FnOnce()>>,
    joiners: Vec<ThreadId>,
    /// When a sleeping or event-waiting thread wakes at the latest (its
    /// key in `sleepers`).
    deadline: Option<u64>,
    /// How many threads had this slot before (a `JoinHandle` of one of
    /// them sees its thread finished).
    generation: u64,
    /// The FS base this thread runs with (its thread-local storage), 0 for
    /// none; and the block it points into.
    fs_base: u64,
    tls: Option<Box<[u8]>>,
    /// The key a `Parked` thread waits on, and whether its wait ended by
    /// its deadline rather than `unpark`.
    parked_on: Option<usize>,
    timed_out: bool,
    /// The thread's `errno` (std services: the last failed call's error).
    errno: i32,
}

impl Thread {
    fn new(rsp: u64, stack: Option<Box<[core::mem::MaybeUninit<u8>]>>, entry: Option<Box<dyn FnOnce()>>) -> Self {
        Thread {
            rsp,
            stack,
            state: State::Ready,
            entry,
            joiners: Vec::new(),
            deadline: None,
            generation: 0,
            fs_base: 0,
            tls: None,
            parked_on: None,
            timed_out: false,
            errno: 0,
        }
    }
}

struct Runtime {
    threads: Vec<Thread>,
    current: ThreadId,
    ready: VecDeque<ThreadId>,
    /// Sleepers by (wake-up time in ns, thread).
    sleepers: BTreeMap<(u64, ThreadId), ()>,
    /// Finished threads whose stacks can go once we are off them.
    dead: Vec<ThreadId>,
    /// Slots of finished threads, for the next ones spawned: a VM that
    /// spawns a thread per connection keeps a table as large as its most
    /// threads at once, not its most threads ever.
    free: Vec<ThreadId>,
    /// Threads waiting for one of these event bits.
    event_waiters: Vec<(ThreadId, u64)>,
    /// Threads waiting for a change of one socket (the key), which the
    /// network stack announces with [`wake_socket_waiters`].
    socket_waiters: Vec<(ThreadId, usize)>,
    /// Parked threads by key, in the order they parked.
    parked: BTreeMap<usize, VecDeque<ThreadId>>,
    /// Switches from one thread to another so far.
    switches: u64,
    /// When the scheduler polls the network stack itself, with no frame
    /// announced: a timer the stack set that no waiting thread's deadline
    /// covers, or frames a poll left (see [`deliver`]).
    net_due: Option<u64>,
    /// The deadline the VM's alarm clock was last set to (it has gone off
    /// once that time has passed).
    alarm: Option<u64>,
}

/// The runtime of this VM's threads. A VM has one CPU and the kernel never
/// runs two of its threads at once, so plain interior mutability is enough;
/// a `RefCell` borrow is never held across a switch.
struct Local(RefCell<Option<Runtime>>);

// SAFETY: a Denali VM is single-threaded at the hardware level: its green
// threads run one at a time on one CPU, never concurrently.
unsafe impl Sync for Local {}

static RUNTIME: Local = Local(RefCell::new(None));

fn with<R>(f: impl FnOnce(&mut Runtime) -> R) -> R {
    let mut slot = RUNTIME.0.borrow_mut();
    let rt = slot.get_or_insert_with(|| Runtime {
        threads: alloc::vec![Thread::new(0, None, None)],
        current: 0,
        ready: VecDeque::new(),
        sleepers: BTreeMap::new(),
        dead: Vec::new(),
        free: Vec::new(),
        event_waiters: Vec::new(),
        socket_waiters: Vec::new(),
        parked: BTreeMap::new(),
        switches: 0,
        net_due: None,
        alarm: None,
    });
    f(rt)
}

/// Saves the callee-saved registers and stack pointer of the running
/// thread in `*from`, and resumes the thread whose stack pointer is `to`.
#[unsafe(naked)]
unsafe extern "C" fn switch_stacks(from: *mut u64, to: u64) {
    core::arch::naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// First code of every spawned thread.
extern "C" fn thread_start() -> ! {
    let entry = with(|rt| {
        let current = rt.current;
        rt.threads[current].entry.take()
    });
    if let Some(entry) = entry {
        entry();
    }
    with(|rt| {
        let current = rt.current;
        rt.threads[current].state = State::Finished;
        let joiners = core::mem::take(&mut rt.threads[current].joiners);
        for joiner in joiners {
            rt.threads[joiner].state = State::Ready;
            rt.ready.push_back(joiner);
        }
        rt.dead.push(current);
    });
    schedule();
    unreachable!("a finished thread was resumed");
}

/// Makes ready every thread waiting for one of the bits in `events`.
pub(crate) fn wake_event_waiters(events: u64) {
    with(|rt| {
        let Runtime { event_waiters, threads, sleepers, ready, .. } = rt;
        wake_matching(event_waiters, |mask| mask & events != 0, threads, sleepers, ready);
    });
}

/// Makes ready every thread waiting on socket `key` (`None`: on any
/// socket).
pub(crate) fn wake_socket_waiters(key: Option<usize>) {
    with(|rt| {
        let Runtime { socket_waiters, threads, sleepers, ready, .. } = rt;
        wake_matching(socket_waiters, |waited| key.is_none_or(|key| key == waited), threads, sleepers, ready);
    });
}

/// Makes ready the threads of `waiters` whose wait `matches`, and takes
/// them off the list and off `sleepers`: in place, in the order they began
/// to wait, so nothing is allocated per event.
fn wake_matching<T: Copy>(
    waiters: &mut Vec<(ThreadId, T)>,
    matches: impl Fn(T) -> bool,
    threads: &mut [Thread],
    sleepers: &mut BTreeMap<(u64, ThreadId), ()>,
    ready: &mut VecDeque<ThreadId>,
) {
    waiters.retain(|&(id, waited)| {
        if !matches(waited) {
            return true;
        }
        if let Some(due) = threads[id].deadline.take() {
            sleepers.remove(&(due, id));
        }
        threads[id].state = State::Ready;
        ready.push_back(id);
        false
    });
}

/// Whether a thread is ready to run.
pub(crate) fn any_ready() -> bool {
    with(|rt| !rt.ready.is_empty())
}

/// Has the scheduler poll the network stack by global-clock time `due_ns`
/// (see [`deliver`]).
pub(crate) fn poll_network_by(due_ns: u64) {
    with(|rt| rt.net_due = Some(rt.net_due.map_or(due_ns, |due| due.min(due_ns))));
}

/// Stack a thread keeps free for the scheduler to poll the network on it.
const NET_POLL_STACK: usize = 24 * 1024;

/// Hands a batch of `events` to the threads waiting for them. Frames are
/// taken in here, once, before any thread runs (and the stack's timers
/// run here when `net_due` comes): the stack wakes the threads whose
/// sockets they changed, and no other socket waiter runs. On a thread
/// with too little stack left for a poll, every socket waiter is woken to
/// poll on its own.
fn deliver(events: u64) {
    let (sockets, due) = with(|rt| {
        let due = rt.net_due.is_some_and(|due| due <= Instant::now().as_nanos_since_boot());
        if due {
            rt.net_due = None;
        }
        (!rt.socket_waiters.is_empty(), due)
    });
    if sockets && (events & EVENT_NET_RX != 0 || due) {
        if stack_room() >= NET_POLL_STACK {
            crate::net::stack::take_in_frames();
        } else {
            wake_socket_waiters(None);
        }
    }
    wake_event_waiters(events);
}

/// Sends what the network stack put off while the threads that frames
/// woke ran (see `net::stack::take_in_frames`): each scheduling point, and
/// the VM's exit, settles it. On a thread with too little stack left for a
/// poll, the threads waiting on the network are woken to poll on their
/// own.
pub(crate) fn send_owed_frames() {
    if crate::net::stack::egress_owed() {
        if stack_room() >= NET_POLL_STACK {
            crate::net::stack::send_owed();
        } else {
            wake_socket_waiters(None);
            wake_event_waiters(EVENT_NET_RX);
        }
    }
}

/// Bytes of stack the running thread has left (the main thread runs on
/// the VM's own stack, which is larger than any thread's).
fn stack_room() -> usize {
    let here = 0u8;
    let at = core::ptr::addr_of!(here) as usize;
    with(|rt| match &rt.threads[rt.current].stack {
        Some(stack) => at.saturating_sub(stack.as_ptr() as usize),
        None => usize::MAX,
    })
}

/// When the scheduler is to poll the network itself (only while a thread
/// waits on a socket: others poll on their own).
fn network_due(rt: &Runtime) -> Option<u64> {
    rt.net_due.filter(|_| !rt.socket_waiters.is_empty())
}

/// Whether a thread waits for an event (or a socket, which events change).
fn waiting_for_events(rt: &Runtime) -> bool {
    !rt.event_waiters.is_empty() || !rt.socket_waiters.is_empty()
}

/// Runs the next ready thread; with none ready, idles the VM until the
/// earliest sleeper is due or an awaited event arrives. Returns when the
/// calling thread runs again.
fn schedule() {
    send_owed_frames();
    loop {
        // Events that arrived while threads ran (or the network's own
        // deadline): take them now, so a waiting thread is not kept waiting
        // behind busy ones.
        let (waiting, net_due) = with(|rt| (waiting_for_events(rt), network_due(rt)));
        if waiting && crate::vm::pending_events() != 0 {
            deliver(idle());
        } else if net_due.is_some_and(|due| due <= Instant::now().as_nanos_since_boot()) {
            deliver(0);
        }
        let next = with(|rt| {
            let now = Instant::now().as_nanos_since_boot();
            while let Some((&(due, id), _)) = rt.sleepers.first_key_value() {
                if due > now {
                    break;
                }
                rt.sleepers.remove(&(due, id));
                rt.threads[id].deadline = None;
                rt.event_waiters.retain(|&(waiter, _)| waiter != id);
                rt.socket_waiters.retain(|&(waiter, _)| waiter != id);
                if let Some(key) = rt.threads[id].parked_on.take() {
                    rt.unlist_parked(key, id);
                }
                rt.threads[id].timed_out = true;
                rt.threads[id].state = State::Ready;
                rt.ready.push_back(id);
            }
            match rt.ready.pop_front() {
                Some(id) => Ok(id),
                None => {
                    let sleeper = rt.sleepers.first_key_value().map(|(&(due, _), _)| due);
                    Err(match (sleeper, network_due(rt)) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    })
                }
            }
        });
        let waiting_for_events = with(|rt| waiting_for_events(rt));
        match next {
            Ok(id) => return switch_to(id),
            Err(Some(due)) => {
                // An alarm stays set until it goes off. One still to come
                // and no later than this deadline is kept: a retransmission
                // deadline moves a little later with every segment sent,
                // and an alarm that goes off early only brings the VM back
                // here to set the later one.
                let now = Instant::now().as_nanos_since_boot();
                let keep = with(|rt| match rt.alarm {
                    Some(set) if now < set && set <= due => true,
                    _ => {
                        rt.alarm = Some(due);
                        false
                    }
                });
                if !keep {
                    // SAFETY: `alarm` takes no pointer.
                    let _ = unsafe { call2(Hypercall::Alarm, due, 0) };
                }
                deliver(idle());
            }
            Err(None) if waiting_for_events => deliver(idle()),
            Err(None) => panic!("every thread of this VM is waiting for another: deadlock"),
        }
    }
}

impl Runtime {
    /// Takes `id` off the list of threads parked on `key`.
    fn unlist_parked(&mut self, key: usize, id: ThreadId) {
        if let Some(queue) = self.parked.get_mut(&key) {
            queue.retain(|&waiter| waiter != id);
            if queue.is_empty() {
                self.parked.remove(&key);
            }
        }
    }
}

/// Switches from the current thread to `next` (which may be itself).
fn switch_to(next: ThreadId) {
    let switch = with(|rt| {
        let current = rt.current;
        if next == current {
            return None;
        }
        rt.current = next;
        rt.switches += 1;
        let from: *mut u64 = &mut rt.threads[current].rsp;
        Some((from, rt.threads[next].rsp, rt.threads[next].fs_base))
    });
    if let Some((from, to, fs_base)) = switch {
        if fs_base != 0 {
            crate::tls::set_fs_base(fs_base);
        }
        // SAFETY: `from` points into the runtime's thread table, which is
        // not moved while a switch is in flight (no thread is spawned
        // between here and the save); `to` was saved by switch_stacks or
        // built by `spawn` for a thread that is not running.
        unsafe { switch_stacks(from, to) };
    }
    // Back on this thread: free the stacks of threads that finished.
    with(|rt| {
        let current = rt.current;
        let dead = core::mem::take(&mut rt.dead);
        for id in dead {
            if id == current {
                rt.dead.push(id);
            } else {
                rt.threads[id].stack = None;
                rt.threads[id].tls = None;
                rt.free.push(id);
            }
        }
    });
}

/// Threads of this VM that have not finished, the main thread included.
pub fn count() -> usize {
    with(|rt| rt.threads.iter().filter(|t| !matches!(t.state, State::Finished)).count())
}

/// How many times this VM has switched from one thread to another (as
/// Linux counts context switches): a thread that wakes for nothing costs
/// two.
pub fn switches() -> u64 {
    with(|rt| rt.switches)
}

/// The running thread's id.
pub fn current() -> ThreadId {
    with(|rt| rt.current)
}

/// Lets the other ready threads run first.
pub fn yield_now() {
    with(|rt| {
        let current = rt.current;
        rt.ready.push_back(current);
    });
    schedule();
}

/// Lets the other ready threads run first, if there are any: a scheduling
/// point for operations that did not have to wait (a thread whose socket
/// is always ready would otherwise keep the VM to itself).
pub(crate) fn yield_if_others_ready() {
    if any_ready() {
        yield_now();
    }
}

/// Parks the running thread until global-clock time `due_ns`.
pub(crate) fn sleep_until(due_ns: u64) {
    park(Awaits::Nothing, Some(due_ns));
}

/// Parks the running thread until one of the `events` bits
/// (`denali_abi::hypercall::EVENT_*`) is delivered to the VM.
pub(crate) fn wait_for_event(events: u64) {
    park(Awaits::Events(events), None);
}

/// Parks the running thread until one of the `events` bits is delivered or
/// global-clock time `due_ns` comes, whichever is first.
pub(crate) fn wait_for_event_until(events: u64, due_ns: u64) {
    park(Awaits::Events(events), Some(due_ns));
}

/// Parks the running thread until [`wake_socket_waiters`] names socket
/// `key` or global-clock time `due_ns` comes, whichever is first.
pub(crate) fn wait_for_socket(key: usize, due_ns: Option<u64>) -> Wake {
    park(Awaits::Socket(key), due_ns);
    woke_by()
}

/// How the running thread's last wait ended.
fn woke_by() -> Wake {
    with(|rt| if rt.threads[rt.current].timed_out { Wake::TimedOut } else { Wake::Unparked })
}

/// What a parked thread waits for besides its deadline.
enum Awaits {
    Nothing,
    /// One of these event bits.
    Events(u64),
    /// A change of this socket.
    Socket(usize),
}

fn park(awaits: Awaits, due_ns: Option<u64>) {
    with(|rt| {
        let current = rt.current;
        rt.threads[current].timed_out = false;
        rt.threads[current].state = match awaits {
            Awaits::Nothing => State::Sleeping,
            Awaits::Events(events) => {
                rt.event_waiters.push((current, events));
                State::Waiting
            }
            Awaits::Socket(key) => {
                rt.socket_waiters.push((current, key));
                State::Waiting
            }
        };
        if let Some(due) = due_ns {
            rt.threads[current].deadline = Some(due);
            rt.sleepers.insert((due, current), ());
        }
    });
    schedule();
}

/// How a wait on a key ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Another thread called [`unpark`] on the key, or the socket changed.
    Unparked,
    /// The deadline came first.
    TimedOut,
}

/// Parks the running thread on `key` until [`unpark`] wakes it or
/// global-clock time `due_ns` comes (the futexes under std's locks).
#[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // used by std's platform layer
pub(crate) fn park_on(key: usize, due_ns: Option<u64>) -> Wake {
    with(|rt| {
        let current = rt.current;
        let thread = &mut rt.threads[current];
        thread.state = State::Parked;
        thread.parked_on = Some(key);
        thread.timed_out = false;
        if let Some(due) = due_ns {
            thread.deadline = Some(due);
            rt.sleepers.insert((due, current), ());
        }
        rt.parked.entry(key).or_default().push_back(current);
    });
    schedule();
    woke_by()
}

/// Makes ready up to `count` threads parked on `key`, first parked first;
/// returns how many.
#[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // used by std's platform layer
pub(crate) fn unpark(key: usize, count: usize) -> usize {
    with(|rt| {
        let mut woken = 0;
        while woken < count {
            let Some(id) = rt.parked.get_mut(&key).and_then(VecDeque::pop_front) else { break };
            let thread = &mut rt.threads[id];
            thread.parked_on = None;
            if let Some(due) = thread.deadline.take() {
                rt.sleepers.remove(&(due, id));
            }
            rt.threads[id].state = State::Ready;
            rt.ready.push_back(id);
            woken += 1;
        }
        if rt.parked.get(&key).is_some_and(VecDeque::is_empty) {
            rt.parked.remove(&key);
        }
        woken
    })
}

/// Notes `errno` as the running thread's last error.
#[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
pub(crate) fn set_errno(errno: i32) {
    with(|rt| {
        let current = rt.current;
        rt.threads[current].errno = errno;
    });
}

/// The running thread's last error.
#[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
pub(crate) fn errno() -> i32 {
    with(|rt| rt.threads[rt.current].errno)
}

/// A handle to wait for a thread and take what it returned.
pub struct JoinHandle<T> {
    id: ThreadId,
    generation: u64,
    result: Rc<Cell<Option<T>>>,
}

impl<T> JoinHandle<T> {
    /// The thread's id.
    pub fn thread_id(&self) -> ThreadId {
        self.id
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        with(|rt| self.finished(rt))
    }

    /// Whether the thread has finished (its slot may hold another by now).
    fn finished(&self, rt: &Runtime) -> bool {
        let thread = &rt.threads[self.id];
        thread.generation != self.generation || matches!(thread.state, State::Finished)
    }

    /// Waits for the thread to finish and returns its result.
    pub fn join(self) -> T {
        join_raw(self.id, self.generation);
        self.result.take().expect("a finished thread left its result")
    }
}

/// Waits until the thread in slot `id`, generation `generation`, has
/// finished.
pub(crate) fn join_raw(id: ThreadId, generation: u64) {
    let finished = with(|rt| {
        let thread = &rt.threads[id];
        if thread.generation != generation || matches!(thread.state, State::Finished) {
            return true;
        }
        let current = rt.current;
        rt.threads[current].state = State::Joining;
        rt.threads[id].joiners.push(current);
        false
    });
    if !finished {
        schedule();
    }
}

/// The generation of the thread slot `id` holds now (finished or not).
#[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // used by std's platform layer
pub(crate) fn generation(id: ThreadId) -> Option<u64> {
    with(|rt| rt.threads.get(id).map(|t| t.generation))
}

/// Starts `f` on a new green thread; it first runs when the caller next
/// sleeps, yields or waits.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let result = Rc::new(Cell::new(None));
    let slot = result.clone();
    let entry: Box<dyn FnOnce()> = Box::new(move || slot.set(Some(f())));
    let (id, generation) = spawn_raw(entry, STACK_SIZE).expect("no memory for a thread's stack");
    JoinHandle { id, generation, result }
}

/// Starts `entry` on a new green thread with a stack of `stack_size` bytes
/// (and its own thread-local storage, if the image has any); returns its
/// slot and generation, or `None` if the heap has no room for them.
pub(crate) fn spawn_raw(entry: Box<dyn FnOnce()>, stack_size: usize) -> Option<(ThreadId, u64)> {
    let stack_size = stack_size.max(4096).next_multiple_of(16);
    // Not zeroed: a stack is written before it is read, and untouched
    // pages of a fresh allocation are never faulted in (each first touch
    // costs the kernel a page fault).
    let mut stack = Vec::new();
    stack.try_reserve_exact(stack_size).ok()?;
    // SAFETY: the capacity is reserved; MaybeUninit bytes need no
    // initialisation.
    unsafe { stack.set_len(stack_size) };
    let mut stack: Box<[core::mem::MaybeUninit<u8>]> = stack.into_boxed_slice();
    let tls = crate::tls::new_block();
    if tls.is_none() && crate::tls::wanted() {
        return None;
    }
    // The first switch pops six registers and returns into thread_start with
    // the stack as a call would leave it (16-byte aligned before the call).
    let top = (stack.as_mut_ptr() as u64 + stack_size as u64) & !15;
    let return_slot = top - 16;
    // SAFETY: `return_slot`, the 48 bytes below it and the 8 above it lie
    // inside `stack`, which the thread table keeps alive until the thread
    // has finished. A zero frame pointer (popped into rbp) and a zero return
    // address above thread_start's frame end a backtrace there.
    unsafe {
        ((return_slot) as *mut u64).write(thread_start as *const () as u64);
        ((return_slot - 8) as *mut u64).write(0);
        ((return_slot + 8) as *mut u64).write(0);
    }
    let rsp = return_slot - 6 * 8;
    Some(with(|rt| {
        let mut thread = Thread::new(rsp, Some(stack), Some(entry));
        if let Some((block, fs_base)) = tls {
            thread.tls = Some(block);
            thread.fs_base = fs_base;
        }
        let id = match rt.free.pop() {
            Some(id) => {
                thread.generation = rt.threads[id].generation + 1;
                rt.threads[id] = thread;
                id
            }
            None => {
                rt.threads.push(thread);
                rt.threads.len() - 1
            }
        };
        rt.ready.push_back(id);
        (id, rt.threads[id].generation)
    }))
}

/// Gives the running thread (at start-up, the main thread) its own
/// thread-local storage; false if the heap has no room.
#[cfg(target_os = "hermit")]
pub(crate) fn give_main_thread_tls() -> bool {
    let Some((block, fs_base)) = crate::tls::new_block() else { return !crate::tls::wanted() };
    crate::tls::set_fs_base(fs_base);
    with(|rt| {
        let current = rt.current;
        rt.threads[current].tls = Some(block);
        rt.threads[current].fs_base = fs_base;
    });
    true
}
