//! How the binding calls the engine: detached from the interpreter, then resolving the pumps
//! the call woke on this thread (see `wake`).

use std::future::Future;
use std::task::{Context, Poll, Waker};

use fanout::PubSubError;
use pyo3::prelude::*;

use crate::errors;
use crate::wake;

/// Runs `call` detached (other Python threads run meanwhile, and the engine never waits for
/// the GIL), then queues the sessions it woke here and resolves the pumps they woke.
pub(crate) fn detached<T, F>(py: Python<'_>, call: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    /// Resolves the woken pumps also when the call unwinds.
    struct Resolve<'py>(Python<'py>);
    impl Drop for Resolve<'_> {
        fn drop(&mut self) {
            wake::resolve_ready(self.0);
        }
    }
    let _resolve = Resolve(py);
    py.detach(|| wake::deferring(call))
}

/// Runs an engine future. It is polled once, detached and inside the tokio runtime's context:
/// the in-memory engine's operations finish there (a broadcast's whole fanout), and `None`
/// says so. What is left, a `block` policy's wait for room or `stop`'s wait for its tasks,
/// goes on on the runtime, and the returned asyncio awaitable ends with it.
///
/// The first poll's waker is a no-op: the runtime's task polls the future again at once,
/// and the engine's futures register their waker at every poll.
pub(crate) fn run<'py, F>(py: Python<'py>, future: F) -> PyResult<Option<Bound<'py, PyAny>>>
where
    F: Future<Output = Result<(), PubSubError>> + Send + 'static,
{
    let mut future = Box::pin(future);
    let first = detached(py, || {
        let _runtime = pyo3_async_runtimes::tokio::get_runtime().enter();
        future.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    });
    match first {
        Poll::Ready(Ok(())) => Ok(None),
        Poll::Ready(Err(error)) => Err(errors::pubsub(py, error)),
        Poll::Pending => {
            let rest = async move {
                future
                    .await
                    .map_err(|error| Python::attach(|py| errors::pubsub(py, error)))
            };
            pyo3_async_runtimes::tokio::future_into_py(py, rest).map(Some)
        }
    }
}
