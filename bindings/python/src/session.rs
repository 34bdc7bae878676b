//! `_core.Session`: a pull-form session of the engine, read by its pump on an asyncio loop.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use fanout::{SessionHandle, SessionReceiver};
use futures_core::Stream;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::call::{self, detached};
use crate::payload;
use crate::wake::SessionWaker;

/// One session: its receiver, read by one pump, and a handle that subscribes meanwhile.
#[pyclass(frozen, module = "pyview_fanout._core")]
pub(crate) struct Session {
    /// Read only by the session's pump, one `next` at a time.
    receiver: Mutex<SessionReceiver>,
    handle: SessionHandle,
    waker: Arc<SessionWaker>,
    /// `waker` as the engine's mailbox takes it.
    mailbox_waker: Waker,
    /// Messages are encoded bytes (a distributed provider), handed to the pump as `bytes`
    /// for the Python layer to decode; else they are payloads of [`payload::wrap`].
    encoded: bool,
}

impl Session {
    pub(crate) fn new(receiver: SessionReceiver, event_loop: Py<PyAny>, encoded: bool) -> Self {
        let waker = Arc::new(SessionWaker::new(event_loop));
        Self {
            handle: receiver.handle(),
            receiver: Mutex::new(receiver),
            mailbox_waker: Waker::from(Arc::clone(&waker)),
            waker,
            encoded,
        }
    }
}

#[pymethods]
impl Session {
    /// The session's id.
    #[getter]
    fn id(&self) -> &str {
        self.handle.id()
    }

    /// Whether the session is closed (unsubscribed from everything, disconnected as a slow
    /// consumer, or stopped).
    #[getter]
    fn closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// The next message as `(topic, message)`; else an asyncio future that is done when
    /// there may be one (await it, then call again); else `None`: the session is closed.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        loop {
            let polled = detached(py, || {
                let mut receiver = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
                Pin::new(&mut *receiver).poll_next(&mut Context::from_waker(&self.mailbox_waker))
            });
            match polled {
                Poll::Ready(Some(message)) if self.encoded => {
                    let topic = PyString::new(py, message.topic().as_str());
                    let payload = PyBytes::new(py, message.payload());
                    return Ok(Some(
                        PyTuple::new(py, [topic.into_any(), payload.into_any()])?.into_any(),
                    ));
                }
                Poll::Ready(Some(message)) => {
                    if let Some(pair) = payload::unwrap(py, message.payload()) {
                        return Ok(Some(pair.into_any()));
                    }
                }
                Poll::Ready(None) => return Ok(None),
                Poll::Pending => {
                    if let Some(waiter) = self.waker.park(py)? {
                        return Ok(Some(waiter));
                    }
                }
            }
        }
    }

    /// Subscribes the session to `topic`; returns an awaitable if the engine has to wait.
    fn subscribe<'py>(&self, py: Python<'py>, topic: String) -> PyResult<Option<Bound<'py, PyAny>>> {
        let handle = self.handle.clone();
        call::run(py, async move { handle.subscribe(&topic).await })
    }

    /// Closes the session and unsubscribes it from everything; what it still holds is
    /// discarded and counted.
    fn close(&self, py: Python<'_>) {
        detached(py, || self.handle.close());
    }
}
