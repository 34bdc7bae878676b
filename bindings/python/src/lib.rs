//! The native core of the `pyview_fanout` Python package: fanout's in-memory engine, with
//! Python objects as messages, read by one asyncio task per session.
//!
//! The Python layer (`python/pyview_fanout/`) holds the design's interface
//! (`InMemoryPubSub`, `SessionPubSub`) and the pumps; this module holds what touches the
//! engine:
//!
//! - `payload`: a Python object as an engine payload, released with its last copy.
//! - `session`: a pull-form session, polled by its pump.
//! - `wake`: waking a parked pump on its loop without touching Python on the waking thread.
//! - `call`: how engine calls run (detached; futures polled once, the rest on tokio).
//! - `provider`, `config`, `errors`: the provider, its config, its exceptions.

mod backend;
mod call;
mod config;
mod errors;
mod payload;
mod provider;
mod session;
mod wake;

use pyo3::prelude::*;

/// `pyview_fanout._core`.
#[pymodule]
#[pyo3(name = "_core")]
fn core_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<provider::Provider>()?;
    module.add_class::<session::Session>()?;
    module.add_function(wrap_pyfunction!(wake::resolve_waiter, module)?)?;
    module.add_function(wrap_pyfunction!(payload::live_messages, module)?)?;
    Ok(())
}
