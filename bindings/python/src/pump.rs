//! `_core.Pump`: one asyncio loop's runner of its sessions' handlers.
//!
//! Each loop that subscribes sessions has one pump, a task on that loop (the Python layer's
//! `_Pump`) that calls [`Pump::step`] until it parks. A step visits the sessions of the
//! loop's [ready queue](crate::wake), takes each one's messages in mailbox order and runs the
//! handler of each: it calls the coroutine function and drives the coroutine's first step
//! right here, with `PyIter_Send`, in the session's context ([`crate::start`]). A handler that
//! returns without awaiting anything that is not ready costs no task, no future and no trip
//! through the loop. While it runs the handler of one session, the pump asks the CPU for the
//! memory of the next two (with many sessions, each one's lines are cold).
//!
//! Invariants:
//!
//! - **One handler of a session at a time, in mailbox order (G4).** A session's messages are
//!   taken only by the pump, one after another. A handler that does await something not
//!   ready is handed to the Python layer with what it yielded: the session is `busy`, the
//!   pump takes none of its messages, and the task that was the pump goes on as that
//!   handler's task while a new task takes the pump over. When the handler ends, the Python
//!   layer releases the session ([`crate::session::Session::release`]) and it is queued
//!   again.
//! - **A stalled session delays no other (G5).** Only a busy session's own messages wait; a
//!   step visits at most [`VISIT_BUDGET`] messages of a session before the next session's
//!   turn, and at most [`STEP_BUDGET`] in all before the loop's other callbacks run.
//! - **A handler runs in one task from start to end, in its session's context.** Its first
//!   step runs in the pump's task; if it awaits, that task becomes its own. So
//!   `asyncio.current_task()` and what binds to it (`asyncio.timeout`, cancellation) act on
//!   the task running the handler, as with a task per handler. Every step runs in the
//!   session's `contextvars.Context`, as in a task made by the session's first subscribe.
//! - **A session is never left without a pump.** A step that ends in an error queues its
//!   session again; a pump task cancelled while its loop goes on is replaced, and one whose
//!   loop shuts down ends its sessions (the Python layer's `_Pump`).
//! - **Nothing lost, nothing kept.** Each message taken is handled, or skipped and counted
//!   by the Python layer (a failed decode), or reported as a handler error; the pump keeps
//!   no reference to a message past the step that handled it (within the step, the last
//!   payload for its next recipient, [`Unwrapper`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use fanout::Message;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::payload::Unwrapper;
use crate::session::SessionCore;
use crate::start;
use crate::wake::{Next, ReadyQueue};

/// Messages one visit takes from a session before the next session's turn.
const VISIT_BUDGET: usize = 64;

/// Messages one step takes before it returns, so that the loop's other callbacks run.
const STEP_BUDGET: usize = 1024;

/// One loop's pump.
#[pyclass(frozen, module = "pyview_fanout._core")]
pub(crate) struct Pump {
    queue: Arc<ReadyQueue>,
    /// Turns received bytes into the handler's message; `None` in memory.
    decode: Option<Py<PyAny>>,
}

/// A handler that awaited something not ready: its awaitable's iterator and what it yielded.
struct Suspended<'py> {
    topic: Bound<'py, PyAny>,
    iterator: Bound<'py, PyAny>,
    yielded: Bound<'py, PyAny>,
}

impl Pump {
    pub(crate) fn queue(&self) -> &Arc<ReadyQueue> {
        &self.queue
    }

    /// Runs `session`'s handler for `message`. A handler's error, and a payload that does
    /// not decode, are reported to `events`; only a `BaseException` that is not an
    /// `Exception` (`KeyboardInterrupt`, `SystemExit`) comes back as an error.
    fn deliver<'py>(
        &self,
        py: Python<'py>,
        session: &SessionCore,
        message: &Message,
        unwrapper: &mut Unwrapper<'py>,
        events: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Suspended<'py>>> {
        let Some(handler) = session.handler(py, message.topic()) else {
            return Ok(None);
        };
        let handler = handler.into_bound(py);
        let args = if session.encoded {
            let topic = PyString::new(py, message.topic().as_str());
            let payload = PyBytes::new(py, message.payload());
            let decoded = match &self.decode {
                Some(decode) => match decode.bind(py).call1((payload,)) {
                    Ok(decoded) => decoded,
                    Err(error) => {
                        report(events, session, topic.as_any(), error, true)?;
                        return Ok(None);
                    }
                },
                None => payload.into_any(),
            };
            if session.is_closed() {
                // The decoder is Python code: another thread may have ended the session
                // meanwhile, and its handlers must not start after that (G2).
                return Ok(None);
            }
            PyTuple::new(py, [topic.into_any(), decoded])?
        } else {
            let Some(pair) = unwrapper.unwrap(py, message.payload()) else {
                return Ok(None);
            };
            pair
        };
        match start::first_step(session.context.bind(py), &handler, &args) {
            Ok(None) => Ok(None),
            Ok(Some((iterator, yielded))) => Ok(Some(Suspended {
                topic: args.get_item(0)?,
                iterator,
                yielded,
            })),
            Err(error) => self.failed(events, session, &args, error),
        }
    }

    /// Reports a handler's error to `events`; a `KeyboardInterrupt` or `SystemExit` is
    /// returned instead, to end the step.
    fn failed<'py>(
        &self,
        events: &Bound<'py, PyAny>,
        session: &SessionCore,
        args: &Bound<'py, PyTuple>,
        error: PyErr,
    ) -> PyResult<Option<Suspended<'py>>> {
        let py = events.py();
        if error.is_instance_of::<PyKeyboardInterrupt>(py) || error.is_instance_of::<PySystemExit>(py) {
            return Err(error);
        }
        report(events, session, &args.get_item(0)?, error, false)?;
        Ok(None)
    }
}

/// `events._failed(key, topic, error, decoding)`: the Python layer counts and logs it.
fn report(
    events: &Bound<'_, PyAny>,
    session: &SessionCore,
    topic: &Bound<'_, PyAny>,
    error: PyErr,
    decoding: bool,
) -> PyResult<()> {
    let py = events.py();
    events.call_method1(
        intern!(py, "_failed"),
        (session.key, topic, error.into_value(py), decoding),
    )?;
    Ok(())
}

#[pymethods]
impl Pump {
    /// A pump for `event_loop`, which runs on the calling thread; `decode` turns a
    /// distributed provider's bytes into messages.
    #[new]
    #[pyo3(signature = (event_loop, decode = None))]
    fn new(event_loop: Py<PyAny>, decode: Option<Py<PyAny>>) -> Self {
        Self {
            queue: Arc::new(ReadyQueue::new(event_loop)),
            decode,
        }
    }

    /// Runs the handlers of the sessions that are ready. Returns `True` when it stopped for
    /// the loop's other callbacks, or ran out of sessions with `park` false after running
    /// some (call again after a turn of the loop); `False` when it found none and `park` is
    /// false; a future when no session is ready and `park` is true (await it, then call
    /// again); `(key, topic, iterator, yielded)` when the handler of session `key` for
    /// `topic` awaited something not ready (the caller goes on with it, as `await` would
    /// have, and a new task goes on with the pump); `None` once stopped. Reports to
    /// `events`: `_failed(key, topic, error, decoding)` for a handler that raised or a
    /// message that did not decode, `_ended(key)` for a session closed.
    fn step<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyAny>,
        park: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut budget = STEP_BUDGET;
        let mut visited = false;
        let mut unwrapper = Unwrapper::default();
        loop {
            let slot = match self.queue.next(py, park)? {
                Next::Session(slot) => slot,
                Next::Park(waiter) => return Ok(Some(waiter)),
                Next::Empty => return Ok(Some(PyBool::new(py, visited).to_owned().into_any())),
                Next::Stopped => return Ok(None),
            };
            visited = true;
            let Some(session) = slot.session.upgrade() else {
                continue;
            };
            if session.busy.load(Ordering::Acquire) {
                continue;
            }
            let limit = VISIT_BUDGET.min(budget);
            let mut taken = 0;
            // Held for the visit, handlers included: only the pump reads a receiver.
            let mut receiver = session.receiver();
            while taken < limit {
                match session.poll(&mut receiver) {
                    Poll::Pending => break,
                    Poll::Ready(None) => {
                        events.call_method1(intern!(py, "_ended"), (session.key,))?;
                        break;
                    }
                    Poll::Ready(Some(message)) => {
                        taken += 1;
                        let suspended = match self.deliver(py, &session, &message, &mut unwrapper, events) {
                            Ok(suspended) => suspended,
                            Err(error) => {
                                // The step ends here; the session's later messages wait for
                                // the next.
                                slot.queue();
                                return Err(error);
                            }
                        };
                        drop(message);
                        if let Some(Suspended {
                            topic,
                            iterator,
                            yielded,
                        }) = suspended
                        {
                            session.busy.store(true, Ordering::Release);
                            let key = session.key.into_pyobject(py)?.into_any();
                            return Ok(Some(
                                PyTuple::new(py, [key, topic, iterator, yielded])?.into_any(),
                            ));
                        }
                    }
                }
            }
            if taken == limit {
                // Messages may remain: the session's turn comes again.
                slot.queue();
            }
            budget -= taken;
            if budget == 0 {
                return Ok(Some(PyBool::new(py, true).to_owned().into_any()));
            }
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.decode)?;
        self.queue.traverse(&visit)
    }

    fn __clear__(&self) {
        self.queue.clear();
    }

    /// Whether the pump was stopped.
    #[getter]
    fn stopped(&self) -> bool {
        self.queue.is_stopped()
    }

    /// Ends the pump: its step returns `None` from now on. Any thread.
    fn stop(&self) {
        self.queue.stop();
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        // Queued slots refer to the queue: emptying it frees both.
        self.queue.stop();
    }
}
