//! Waking a session's pump, a task on an asyncio loop, when its mailbox gains a message or
//! its session closes, without touching Python on the waking thread.
//!
//! A pump that finds its mailbox empty parks on an asyncio future ([`SessionWaker::park`]).
//! The engine wakes the session's waker from wherever the push or the close happens:
//!
//! - **On the loop's own thread** (a broadcast, unsubscribe or `stop` made from that loop,
//!   the common case): the future goes on the thread's [`READY`] list, and the engine call
//!   that woke it resolves it as it returns, attached ([`resolve_ready`]). No system call and
//!   no wait for the GIL inside the engine.
//! - **On another thread** (a tokio worker finishing a `block` broadcast, a broadcast from
//!   another thread's loop): a blocking-pool thread attaches and hands the future to the loop
//!   with `call_soon_threadsafe`. That thread holds no engine lock, so its wait for the GIL
//!   cannot deadlock with a Python thread in an engine call.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Wake;
use std::thread::{self, ThreadId};

use pyo3::prelude::*;

thread_local! {
    /// Futures of pumps on this thread's loop, woken during an engine call made on this
    /// thread and resolved when it returns. Pushed while detached (no refcount changes).
    static READY: RefCell<Vec<Py<PyAny>>> = const { RefCell::new(Vec::new()) };
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

/// One session's waker: what the engine's mailbox calls, and where its pump parks.
pub(crate) struct SessionWaker {
    /// The thread running the session's loop.
    owner: ThreadId,
    event_loop: Py<PyAny>,
    parked: Mutex<Parked>,
}

#[derive(Default)]
struct Parked {
    /// The future the pump awaits, set by `park`, taken by the first wake.
    waiter: Option<Py<PyAny>>,
    /// A wake found no future: the pump was between its poll and its park.
    woken: bool,
}

impl SessionWaker {
    /// A waker for a pump on `event_loop`, which runs on the calling thread.
    pub(crate) fn new(event_loop: Py<PyAny>) -> Self {
        Self {
            owner: thread::current().id(),
            event_loop,
            parked: Mutex::new(Parked::default()),
        }
    }

    fn parked(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks the pump after a poll found nothing: returns the future to await, or `None` if a
    /// wake came since that poll (poll again).
    pub(crate) fn park<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let waiter = self.event_loop.bind(py).call_method0("create_future")?;
        let mut parked = self.parked();
        if std::mem::take(&mut parked.woken) {
            return Ok(None);
        }
        parked.waiter = Some(waiter.clone().unbind());
        Ok(Some(waiter))
    }
}

impl Wake for SessionWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiter = {
            let mut parked = self.parked();
            let waiter = parked.waiter.take();
            parked.woken = waiter.is_none();
            waiter
        };
        let Some(waiter) = waiter else { return };
        if thread::current().id() == self.owner {
            READY.with(|ready| ready.borrow_mut().push(waiter));
            return;
        }
        let this = Arc::clone(self);
        pyo3_async_runtimes::tokio::get_runtime().spawn_blocking(move || {
            Python::attach(|py| {
                let callback = wrap_pyfunction!(resolve_waiter, py);
                if let Ok(callback) = callback {
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
