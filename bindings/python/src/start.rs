//! Starting a handler: calling it and running the first step of what it returns, as `await`
//! would, inside its session's `contextvars.Context`.
//!
//! The context is entered with `PyContext_Enter` / `PyContext_Exit`: public CPython functions
//! since 3.7 with an unchanged signature, though not in the limited API. `Context.run` does
//! the same through a Python call, which cost a fifth of a delivery's time with many sessions.
//! CPython's shared library exports them on Linux and macOS; Windows's `python3.dll` (the
//! abi3 import library) does not, so the package does not build there.

use std::os::raw::c_int;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};
use pyo3::{ffi, intern};

#[cfg(windows)]
compile_error!("pyview-fanout enters contexts with PyContext_Enter, which python3.dll does not export");

unsafe extern "C" {
    fn PyContext_Enter(context: *mut ffi::PyObject) -> c_int;
    fn PyContext_Exit(context: *mut ffi::PyObject) -> c_int;
}

/// Calls `handler(*args)` in `context` and runs the first step of what it returns: `None`
/// if that returned, else what to go on with (the iterator) and what it yielded.
pub(crate) fn first_step<'py>(
    context: &Bound<'py, PyAny>,
    handler: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let py = context.py();
    // SAFETY: `context` is a `contextvars.Context` (the session's, made by the Python
    // layer); entering it fails, with an exception set, if it is entered already.
    if unsafe { PyContext_Enter(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let stepped = call_and_send(handler, args);
    // SAFETY: the context entered above, and still the thread's current one: Python code
    // cannot leave a context it did not enter.
    if unsafe { PyContext_Exit(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    stepped
}

fn call_and_send<'py>(
    handler: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let py = handler.py();
    let iterator = awaited(handler.call1(args)?)?;
    let mut result = std::ptr::null_mut();
    // SAFETY: `iterator` is a coroutine, a generator or an iterator (see `awaited`), and
    // `result` receives a new reference unless the call fails.
    let status = unsafe { ffi::PyIter_Send(iterator.as_ptr(), ffi::Py_None(), &raw mut result) };
    match status {
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: on return, `result` is a new reference to the return value.
            drop(unsafe { Bound::from_owned_ptr(py, result) });
            Ok(None)
        }
        ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: on a yield, `result` is a new reference to the yielded value.
            let yielded = unsafe { Bound::from_owned_ptr(py, result) };
            Ok(Some((iterator, yielded)))
        }
        ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
    }
}

/// What `await awaitable` iterates: a coroutine, or a generator-based one
/// (`@types.coroutine`), itself; else what its `__await__` gives.
fn awaited(awaitable: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    static COROUTINE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static GENERATOR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    /// `CO_ITERABLE_COROUTINE`: a generator that `types.coroutine` made awaitable.
    const ITERABLE_COROUTINE: u32 = 0x100;
    let py = awaitable.py();
    let kind = awaitable.get_type();
    if kind.is(COROUTINE.import(py, "types", "CoroutineType")?) {
        return Ok(awaitable);
    }
    if kind.is(GENERATOR.import(py, "types", "GeneratorType")?) {
        let flags: u32 = awaitable
            .getattr(intern!(py, "gi_code"))?
            .getattr(intern!(py, "co_flags"))?
            .extract()?;
        if flags & ITERABLE_COROUTINE != 0 {
            return Ok(awaitable);
        }
    }
    let type_name = || {
        kind.name()
            .map_or_else(|_| "?".to_owned(), |name| name.to_string())
    };
    let Ok(method) = awaitable.getattr(intern!(py, "__await__")) else {
        return Err(PyTypeError::new_err(format!(
            "object {} can't be used in 'await' expression",
            type_name()
        )));
    };
    let iterator = method.call0()?;
    // SAFETY: `iterator` is a live object.
    if unsafe { ffi::PyIter_Check(iterator.as_ptr()) } == 0 {
        return Err(PyTypeError::new_err(format!(
            "__await__() of {} returned a non-iterator",
            type_name()
        )));
    }
    Ok(iterator)
}
