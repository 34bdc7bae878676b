//! The native core of the `pyview_fanout` Python package: fanout's in-memory engine, with
//! Python objects as messages, whose handlers one pump per asyncio loop runs.
//!
//! The Python layer (`python/pyview_fanout/`) holds the design's interface
//! (`InMemoryPubSub`, `SessionPubSub`) and the tasks that step the pumps; this module holds
//! what touches the engine:
//!
//! - `payload`: a Python object as an engine payload, released with its last copy.
//! - `session`: a pull-form session, polled by its loop's pump.
//! - `handlers`: a session's handlers by topic.
//! - `pump`: one loop's runner of its sessions' handlers, in mailbox order.
//! - `start`: a handler's call and first step, in its session's context.
//! - `wake`: a pump's ready queue, and waking a parked pump without touching Python on the
//!   waking thread.
//! - `call`: how engine calls run (detached; futures polled once, the rest on tokio).
//! - `provider`, `config`, `errors`: the provider, its config, its exceptions.

mod backend;
mod call;
mod config;
mod errors;
mod handlers;
mod payload;
mod provider;
mod pump;
mod session;
mod start;
mod wake;

use pyo3::prelude::*;

/// `pyview_fanout._core`.
#[pymodule]
#[pyo3(name = "_core")]
fn core_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<provider::Provider>()?;
    module.add_class::<session::Session>()?;
    module.add_class::<pump::Pump>()?;
    module.add_function(wrap_pyfunction!(wake::resolve_waiter, module)?)?;
    module.add_function(wrap_pyfunction!(payload::live_messages, module)?)?;
    Ok(())
}
