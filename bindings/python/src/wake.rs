//! The ready queue of one asyncio loop's pump: the sessions whose mailbox may hold a message
//! or whose session closed, and waking the pump when it is parked, without touching Python on
//! the waking thread.
//!
//! Invariants:
//!
//! - **A session is in the queue at most once.** Its `queued` flag is set by whoever pushes
//!   it and cleared by the pump as it pops it, before it polls the mailbox. A wake that comes
//!   after that clear pushes it again, so no wake is lost; one that comes before is already
//!   covered by the poll to come. The flag only removes duplicates: what a poll sees is the
//!   mailbox's own protocol (a consumer that finds nothing leaves its waker, and a later push
//!   wakes it), and the mailbox wakes a registered waker once. The clear precedes the poll
//!   that registers the waker, which precedes the wake that takes it, so that wake's swap
//!   reads the clear (or a later push) and queues the session.
//! - **Wakes during an engine call from Python are queued when it returns** ([`deferring`]):
//!   the engine wakes by value, so noting the slot reads nothing of it, and the return fetches
//!   all the slots together before queuing them. A wake on any other thread is queued at
//!   once.
//! - **The pump parks only on an empty queue.** It makes its future outside the lock, then
//!   stores it only if the queue is still empty and the pump not stopped; a push takes the
//!   stored future and resolves it. So a push either lands before the check (the pump goes
//!   on) or finds the future (and resolves it).
//! - **Resolving.** On the loop's own thread during an engine call (a broadcast, unsubscribe
//!   or `stop` made from that loop, the common case) the future goes on the thread's
//!   [`READY`] list, and the engine call that woke it resolves it as it returns, attached
//!   ([`resolve_ready`]): no system call and no wait for the GIL inside the engine. On the
//!   loop's thread outside an engine call (a handler handing its session back, the pump's
//!   stop) it is resolved at once. On another thread (a tokio worker
//!   finishing a `block` broadcast, a broadcast from another thread's loop) a blocking-pool
//!   thread attaches and hands the future to the loop with `call_soon_threadsafe`; that
//!   thread holds no engine lock, so its wait for the GIL cannot deadlock with a Python
//!   thread in an engine call.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Wake;
use std::thread::{self, ThreadId};

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::session::SessionCore;

thread_local! {
    /// Slots woken on this thread during [`deferring`]'s call, queued when it returns; `None`
    /// outside such a call (its flush included).
    static DEFERRED: RefCell<Option<Vec<Arc<SessionSlot>>>> = const { RefCell::new(None) };

    /// Futures of pumps on this thread's loop, woken during an engine call made on this
    /// thread and resolved when it returns. Pushed while detached (no refcount changes).
    static READY: RefCell<Vec<Py<PyAny>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `call`, an engine call made from Python on this thread, queuing the sessions it wakes
/// here once it returns (or unwinds), their slots fetched together.
pub(crate) fn deferring<T>(call: impl FnOnce() -> T) -> T {
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            // Until the queue is empty: queuing wakes no session, but a slot noted meanwhile
            // would otherwise wait for the next call.
            loop {
                let slots = DEFERRED.with(|deferred| deferred.borrow_mut().as_mut().map(std::mem::take));
                let slots = slots.unwrap_or_default();
                if slots.is_empty() {
                    break;
                }
                for slot in &slots {
                    prefetch(Arc::as_ptr(slot).cast(), 1);
                }
                // A broadcast's recipients are mostly on one loop: one lock per run of them.
                let mut slots = slots.into_iter().peekable();
                while let Some(first) = slots.next() {
                    let queue = Arc::clone(&first.queue);
                    let run = std::iter::once(first).chain(std::iter::from_fn(|| {
                        slots.next_if(|slot| Arc::ptr_eq(&slot.queue, &queue))
                    }));
                    queue.push_claimed(run.filter(|slot| slot.claim()));
                }
            }
            DEFERRED.with(|deferred| *deferred.borrow_mut() = None);
        }
    }
    let outermost = DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        let outermost = deferred.is_none();
        if outermost {
            *deferred = Some(Vec::new());
        }
        outermost
    });
    let _flush = outermost.then_some(Flush);
    call()
}

/// Whether this thread is inside [`deferring`]'s call (its flush included).
fn in_call() -> bool {
    DEFERRED.with(|deferred| deferred.borrow().is_some())
}

/// Resolves the futures woken on this thread. Called, attached, after every engine call.
pub(crate) fn resolve_ready(py: Python<'_>) {
    let ready = READY.with(|ready| std::mem::take(&mut *ready.borrow_mut()));
    for waiter in ready {
        resolve(waiter.bind(py));
    }
}

/// Sets a parked pump's future done, unless it is already (its task was cancelled). A loop
/// that is closed refuses; its pump is gone.
fn resolve(waiter: &Bound<'_, PyAny>) {
    let pending = waiter
        .call_method0("done")
        .and_then(|done| done.is_truthy())
        .is_ok_and(|done| !done);
    if pending {
        let _ = waiter.call_method1("set_result", (waiter.py().None(),));
    }
}

/// `call_soon_threadsafe`'s callback for a wake from another thread.
#[pyfunction]
pub(crate) fn resolve_waiter(waiter: &Bound<'_, PyAny>) {
    resolve(waiter);
}

/// One loop's ready queue.
pub(crate) struct ReadyQueue {
    /// The thread running the loop.
    owner: ThreadId,
    event_loop: Py<PyAny>,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Arc<SessionSlot>>,
    /// The future the parked pump awaits, taken by the first push.
    waiter: Option<Py<PyAny>>,
    stopped: bool,
}

/// What the pump finds when it asks for the next session.
pub(crate) enum Next<'py> {
    /// A session to visit.
    Session(Arc<SessionSlot>),
    /// The queue is empty: await this future, then ask again.
    Park(Bound<'py, PyAny>),
    /// The queue is empty, and the pump asked not to park.
    Empty,
    Stopped,
}

impl ReadyQueue {
    /// The queue of a pump on `event_loop`, which runs on the calling thread.
    pub(crate) fn new(event_loop: Py<PyAny>) -> Self {
        Self {
            owner: thread::current().id(),
            event_loop,
            state: Mutex::new(QueueState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `slot` unless it is queued already; wakes the pump if it is parked.
    pub(crate) fn push(self: &Arc<Self>, slot: &Arc<SessionSlot>) {
        if slot.claim() {
            self.push_claimed(std::iter::once(Arc::clone(slot)));
        }
    }

    /// Queues `slots`, each claimed by its caller ([`SessionSlot::claim`]); wakes the pump
    /// once if it is parked.
    fn push_claimed(self: &Arc<Self>, slots: impl Iterator<Item = Arc<SessionSlot>>) {
        let waiter = {
            let mut state = self.state();
            if state.stopped {
                return;
            }
            let before = state.ready.len();
            state.ready.extend(slots);
            if state.ready.len() == before {
                return;
            }
            state.waiter.take()
        };
        if let Some(waiter) = waiter {
            self.wake(waiter);
        }
    }

    /// The next session to visit, its `queued` flag cleared; else, if `park`, a future to
    /// park on.
    pub(crate) fn next<'py>(&self, py: Python<'py>, park: bool) -> PyResult<Next<'py>> {
        loop {
            {
                let mut state = self.state();
                if state.stopped {
                    return Ok(Next::Stopped);
                }
                if let Some(slot) = state.ready.pop_front() {
                    slot.queued.store(false, Ordering::Release);
                    // The session after next: its lines are likely cold (many sessions, each
                    // with a message now and then), and on their way in by its turn.
                    if let Some(later) = state.ready.get(1) {
                        prefetch(later.session.as_ptr().cast(), 4);
                    }
                    // The next one's lines were asked for a turn ago; now those it points to.
                    if let Some(following) = state.ready.front() {
                        following.prefetch_session(py);
                    }
                    return Ok(Next::Session(slot));
                }
            }
            if !park {
                return Ok(Next::Empty);
            }
            let waiter = self.event_loop.bind(py).call_method0("create_future")?;
            let mut state = self.state();
            if state.ready.is_empty() && !state.stopped {
                state.waiter = Some(waiter.clone().unbind());
                return Ok(Next::Park(waiter));
            }
        }
    }

    /// Visits the Python objects the queue holds, for the cycle collector.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        // Held only briefly, never across Python code: a collection cannot find it locked.
        if let Ok(state) = self.state.try_lock() {
            visit.call(&state.waiter)?;
        }
        Ok(())
    }

    /// Drops the parked pump's future: what a cycle through it (future, task, pump) holds.
    pub(crate) fn clear(&self) {
        let waiter = self.state().waiter.take();
        drop(waiter);
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.state().stopped
    }

    /// Ends the pump: its next ask finds it stopped. Wakes it if it is parked.
    pub(crate) fn stop(self: &Arc<Self>) {
        let (waiter, ready) = {
            let mut state = self.state();
            state.stopped = true;
            (state.waiter.take(), std::mem::take(&mut state.ready))
        };
        drop(ready);
        if let Some(waiter) = waiter {
            self.wake(waiter);
        }
    }

    fn wake(self: &Arc<Self>, waiter: Py<PyAny>) {
        if thread::current().id() == self.owner {
            if in_call() {
                // Resolved, attached, when the engine call returns.
                READY.with(|ready| ready.borrow_mut().push(waiter));
            } else {
                // The loop's thread outside an engine call runs Python code: it is attached
                // (a release, a session dropped, the pump's own drop).
                Python::attach(|py| resolve(waiter.bind(py)));
            }
            return;
        }
        let this = Arc::clone(self);
        pyo3_async_runtimes::tokio::get_runtime().spawn_blocking(move || {
            Python::attach(|py| {
                if let Ok(callback) = wrap_pyfunction!(resolve_waiter, py) {
                    // A closed loop refuses: its pump is gone.
                    let _ = this
                        .event_loop
                        .bind(py)
                        .call_method1("call_soon_threadsafe", (callback, waiter));
                }
            });
        });
    }
}

/// A session's place in its pump's queue, and its waker as the engine's mailbox takes it.
///
/// It holds the session weakly (the session owns its mailbox, which owns this waker), and a
/// wake never upgrades it: the pump does, on its loop's thread, so that the last reference to
/// a session, and the Python objects it holds, is never dropped inside an engine call.
pub(crate) struct SessionSlot {
    /// Set while the slot is in the queue.
    queued: AtomicBool,
    pub(crate) session: Weak<SessionCore>,
    queue: Arc<ReadyQueue>,
}

impl SessionSlot {
    pub(crate) fn new(session: Weak<SessionCore>, queue: Arc<ReadyQueue>) -> Self {
        Self {
            queued: AtomicBool::new(false),
            session,
            queue,
        }
    }

    /// Marks the slot queued; `false` if it was already.
    fn claim(&self) -> bool {
        !self.queued.swap(true, Ordering::AcqRel)
    }

    /// Queues the session on its pump (the pump polls it next time round).
    pub(crate) fn queue(self: &Arc<Self>) {
        self.queue.push(self);
    }

    /// Asks the CPU for the memory of the session's next visit ([`SessionCore::prefetch`]),
    /// if the session is alive. Attached: a session is dropped only with the GIL held (its
    /// Python object's deallocation, or the pump's own reference), so one alive now stays
    /// alive while this runs no Python code, and needs no reference counted to read.
    fn prefetch_session(&self, _attached: Python<'_>) {
        if self.session.strong_count() > 0 {
            // SAFETY: alive, as above; `prefetch` only reads addresses and takes the
            // handler table's lock, running no Python code.
            unsafe { (*self.session.as_ptr()).prefetch() };
        }
    }
}

impl Wake for SessionSlot {
    /// During an engine call made from Python on this thread ([`deferring`]) the slot is only
    /// noted, without reading it: a broadcast wakes many sessions, each slot a cold line with
    /// many sessions, and [`deferring`]'s end reads them all with their loads overlapped.
    fn wake(self: Arc<Self>) {
        let this = DEFERRED.with(|deferred| {
            let mut deferred = deferred.borrow_mut();
            match deferred.as_mut() {
                Some(slots) => {
                    slots.push(self);
                    None
                }
                None => Some(self),
            }
        });
        if let Some(this) = this {
            this.queue();
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue();
    }
}

/// Asks the CPU to load `lines` cache lines from `at` (a hint; nothing on other targets).
pub(crate) fn prefetch(at: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..lines {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                at.wrapping_add(line * 64).cast(),
            );
        }
    }
}
