//! `_core.Session`: a pull-form session of the engine, whose handlers its loop's pump runs.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use fanout::{Message, SessionHandle, SessionReceiver, Topic};
use futures_core::Stream;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::call::{self, detached};
use crate::handlers::HandlerTable;
use crate::wake::{self, ReadyQueue, SessionSlot};

/// Keys of sessions, never reused in a process.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// What the pump reads and runs of one session.
pub(crate) struct SessionCore {
    /// How the pump names the session to the Python layer.
    pub(crate) key: u64,
    /// Read only by the session's pump, one poll at a time.
    receiver: Mutex<SessionReceiver>,
    handle: SessionHandle,
    /// The session's handlers, looked up by the pump for each message.
    handlers: Mutex<HandlerTable>,
    /// The `contextvars.Context` the session's handlers run in: a copy of the one its first
    /// subscribe ran in, as a task of its own would have.
    pub(crate) context: Py<PyAny>,
    /// Messages are encoded bytes (a distributed provider), for the pump to decode; else
    /// they are payloads of [`crate::payload::wrap`].
    pub(crate) encoded: bool,
    /// Set while a handler of the session that awaited something runs on a task of its own:
    /// the pump takes no message of the session meanwhile (G4).
    pub(crate) busy: AtomicBool,
    pub(crate) slot: Arc<SessionSlot>,
    /// `slot` as the engine's mailbox takes it.
    mailbox_waker: Waker,
}

impl SessionCore {
    /// The receiver, for a visit of the pump: the only code that locks it.
    pub(crate) fn receiver(&self) -> MutexGuard<'_, SessionReceiver> {
        self.receiver.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next message of `receiver` (this session's), if the mailbox has one;
    /// `Ready(None)` once the session is closed. Never waits; a `Pending` poll leaves the
    /// slot's waker with the mailbox.
    pub(crate) fn poll(&self, receiver: &mut SessionReceiver) -> Poll<Option<Message>> {
        Pin::new(receiver).poll_next(&mut Context::from_waker(&self.mailbox_waker))
    }

    pub(crate) fn id(&self) -> &str {
        self.handle.id()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    fn handlers(&self) -> MutexGuard<'_, HandlerTable> {
        self.handlers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the CPU for the memory the pump's next visit reads: the handler table, the
    /// mailbox's consumer side, and the context object it enters.
    pub(crate) fn prefetch(&self) {
        self.handlers().prefetch();
        self.handle.prefetch_receive();
        wake::prefetch(self.context.as_ptr().cast(), 1);
    }

    /// The handler of `topic`, if the session has one.
    pub(crate) fn handler(&self, py: Python<'_>, topic: &Topic) -> Option<Py<PyAny>> {
        self.handlers().get(py, topic)
    }
}

impl Drop for SessionCore {
    /// A session still open is closed here, as a pump's call into the engine is: the wakes
    /// of the close are queued after it, so no Python code runs while the engine holds the
    /// session's locks.
    fn drop(&mut self) {
        if !self.handle.is_closed() {
            wake::deferring(|| self.handle.close());
            Python::attach(wake::resolve_ready);
        }
    }
}

/// One session, as the Python layer holds it.
#[pyclass(frozen, module = "pyview_fanout._core")]
pub(crate) struct Session {
    pub(crate) core: Arc<SessionCore>,
}

impl Session {
    /// A session read by the pump of `queue`, with no handler yet, queued there at once so that its first poll
    /// leaves its waker with the mailbox.
    pub(crate) fn new(
        receiver: SessionReceiver,
        queue: Arc<ReadyQueue>,
        context: Py<PyAny>,
        encoded: bool,
    ) -> Self {
        let core = Arc::new_cyclic(|session| {
            let slot = Arc::new(SessionSlot::new(session.clone(), queue));
            SessionCore {
                key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
                handle: receiver.handle(),
                receiver: Mutex::new(receiver),
                handlers: Mutex::default(),
                context,
                encoded,
                busy: AtomicBool::new(false),
                mailbox_waker: Waker::from(Arc::clone(&slot)),
                slot,
            }
        });
        core.slot.queue();
        Self { core }
    }
}

#[pymethods]
impl Session {
    /// The core is this object's alone among Python objects (the pump holds it only while it
    /// runs a step), so what it holds is visited here.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.core.context)?;
        // Held only briefly, never across Python code: a collection cannot find it locked.
        if let Ok(handlers) = self.core.handlers.try_lock() {
            handlers.traverse(&visit)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let handlers = self.core.handlers().take();
        drop(handlers);
    }

    /// The session's id.
    #[getter]
    fn id(&self) -> &str {
        self.core.id()
    }

    /// The key the pump reports the session by: unique in the process.
    #[getter]
    fn key(&self) -> u64 {
        self.core.key
    }

    /// The `contextvars.Context` the session's handlers run in.
    #[getter]
    fn context(&self, py: Python<'_>) -> Py<PyAny> {
        self.core.context.clone_ref(py)
    }

    /// Whether the session is closed (unsubscribed from everything, disconnected as a slow
    /// consumer, or stopped).
    #[getter]
    fn closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Subscribes the session to `topic`; returns an awaitable if the engine has to wait.
    fn subscribe<'py>(&self, py: Python<'py>, topic: String) -> PyResult<Option<Bound<'py, PyAny>>> {
        let handle = self.core.handle.clone();
        call::run(py, async move { handle.subscribe(&topic).await })
    }

    /// Closes the session and unsubscribes it from everything; what it still holds is
    /// discarded and counted.
    fn close(&self, py: Python<'_>) {
        detached(py, || self.core.handle.close());
    }

    /// Sets the handler of `topic`; returns the one it replaces.
    fn set_handler(&self, topic: &str, handler: Py<PyAny>) -> Option<Py<PyAny>> {
        self.core.handlers().insert(topic, handler)
    }

    /// Removes the handler of `topic`; returns it.
    fn remove_handler(&self, topic: &str) -> Option<Py<PyAny>> {
        self.core.handlers().remove(topic)
    }

    /// How many topics the session has a handler for.
    #[getter]
    fn handler_count(&self) -> usize {
        self.core.handlers().len()
    }

    /// Hands the session back to its pump after a handler that ran on a task of its own.
    fn release(&self) {
        self.core.busy.store(false, Ordering::Release);
        self.core.slot.queue();
    }
}
