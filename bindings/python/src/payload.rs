//! Python objects as engine payloads.
//!
//! The engine carries `Bytes`; a broadcast from Python carries an empty `Bytes` that owns a
//! [`Token`]. The token's address names the message in [`LIVE`], which holds the
//! `(topic, message)` tuple every recipient is handed: one tuple per broadcast, the same
//! message object for every subscriber. When the last copy of the `Bytes` is dropped (taken by
//! the last recipient, evicted, or discarded by an unsubscribe, a disconnect or `stop`), the
//! token's drop removes the entry and releases the tuple.
//!
//! The payload is empty, so the engine's `max_payload_bytes` never refuses a Python object;
//! [`check_size`] applies that limit to messages whose size is known (`bytes`, `bytearray`,
//! `str`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use fanout::{Limits, PubSubError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString, PyTuple};

/// Live messages: a token's address → the `(topic, message)` tuple it stands for. An entry is
/// inserted before its `Bytes` reaches the engine and removed by its token's drop, so a
/// `Bytes` that is alive finds its entry. Its values are dropped outside the lock: a release
/// may run Python code (`__del__`) that broadcasts again.
static LIVE: LazyLock<Mutex<LiveMap>> = LazyLock::new(Default::default);

/// Keyed by addresses, which need no hashing against collisions chosen by an attacker: one
/// multiplication spreads them (every recipient of a message looks it up).
type LiveMap = HashMap<usize, Py<PyTuple>, BuildHasherDefault<AddressHasher>>;

fn live() -> MutexGuard<'static, LiveMap> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hashes an address by one multiplication (Fibonacci hashing), its high bits folded onto
/// the low ones the table's buckets are chosen by (an aligned address's low bits are zero).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, address: usize) {
        let spread = (address as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = spread ^ (spread >> 32);
    }
}

/// Owned by a message's `Bytes`; its address is the message's key in [`LIVE`].
struct Token {
    /// Gives the token a size, so that its address is its own.
    anchor: u8,
}

impl Token {
    fn key(&self) -> usize {
        std::ptr::from_ref(&self.anchor) as usize
    }
}

impl AsRef<[u8]> for Token {
    /// The empty slice at the anchor: the `Bytes` points at the token without holding a byte.
    fn as_ref(&self) -> &[u8] {
        &std::slice::from_ref(&self.anchor)[..0]
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let released = live().remove(&self.key());
        // Attached (a recipient on its loop, an engine call returning): released now.
        // Elsewhere (a tokio thread): PyO3 defers it to the next time a thread attaches.
        drop(released);
    }
}

/// A payload for the engine that carries `(topic, message)`.
pub(crate) fn wrap(topic: Bound<'_, PyString>, message: Bound<'_, PyAny>) -> PyResult<Bytes> {
    let pair = PyTuple::new(topic.py(), [topic.into_any(), message])?;
    let bytes = Bytes::from_owner(Token { anchor: 0 });
    live().insert(bytes.as_ptr() as usize, pair.unbind());
    Ok(bytes)
}

/// The `(topic, message)` tuple a payload from [`wrap`] carries, or `None` for a payload that
/// did not come from it.
pub(crate) fn unwrap<'py>(py: Python<'py>, payload: &Bytes) -> Option<Bound<'py, PyTuple>> {
    live()
        .get(&(payload.as_ptr() as usize))
        .map(|pair| pair.bind(py).clone())
}

/// [`unwrap`] with a memory of the last payload: a broadcast's recipients are visited one
/// after another, and all but the first find its tuple here without the live map's lock. The
/// payload is kept with it (a copy of the `Bytes`), so its address names no other message
/// meanwhile; it is released when the next payload comes, or with this.
#[derive(Default)]
pub(crate) struct Unwrapper<'py> {
    last: Option<(Bytes, Bound<'py, PyTuple>)>,
}

impl<'py> Unwrapper<'py> {
    pub(crate) fn unwrap(&mut self, py: Python<'py>, payload: &Bytes) -> Option<Bound<'py, PyTuple>> {
        if let Some((bytes, pair)) = &self.last {
            if bytes.as_ptr() == payload.as_ptr() {
                return Some(pair.clone());
            }
        }
        let pair = unwrap(py, payload)?;
        // The previous payload, if this held its last copy, is released here, attached.
        self.last = Some((payload.clone(), pair.clone()));
        Some(pair)
    }
}

/// How many messages broadcast from Python are still held somewhere in the engine (queued,
/// or taken and not yet dropped), across every provider of the process.
#[pyfunction]
pub(crate) fn live_messages() -> usize {
    live().len()
}

/// Applies `max_payload_bytes` to a message whose size is known: the length of `bytes` and
/// `bytearray`, the UTF-8 length of `str`. Other objects have no size in memory.
pub(crate) fn check_size(message: &Bound<'_, PyAny>, limits: &Limits) -> Result<(), PubSubError> {
    let len = if let Ok(bytes) = message.cast::<PyBytes>() {
        bytes.as_bytes().len()
    } else if let Ok(array) = message.cast::<PyByteArray>() {
        array.len()
    } else if let Ok(text) = message.cast::<PyString>() {
        text.to_str().map_or(0, str::len)
    } else {
        return Ok(());
    };
    if len > limits.max_payload_bytes {
        return Err(PubSubError::PayloadTooLarge {
            len,
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}
