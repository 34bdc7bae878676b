//! A session's handlers by topic, as its pump looks them up for every message.
//!
//! Kept in the session's native part rather than in a Python dict: with many sessions, a
//! delivery's lookup touches memory that no other delivery has touched lately, and a dict
//! lookup reads the dict, its keys table, its entry and the key's text. Here a session's few
//! topics sit in one short vector next to the session; a name of up to 23 bytes is stored in
//! its entry ([`Topic`]), so finding it reads nothing else. Sessions with many topics switch
//! to a hash map.

use std::collections::HashMap;

use fanout::Topic;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::wake;

/// Past this many topics, a session's handlers are kept in a hash map.
const LINEAR: usize = 16;

/// `topic → handler` for one session.
pub(crate) enum HandlerTable {
    Few(Vec<(Topic, Py<PyAny>)>),
    Many(HashMap<Topic, Py<PyAny>>),
}

impl Default for HandlerTable {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl HandlerTable {
    /// The handler of `topic`, if the session has one. Topics compare as the engine's do:
    /// a short name as whole words.
    pub(crate) fn get(&self, py: Python<'_>, topic: &Topic) -> Option<Py<PyAny>> {
        let handler = match self {
            Self::Few(entries) => entries
                .iter()
                .find(|(entry, _)| entry == topic)
                .map(|(_, handler)| handler),
            Self::Many(entries) => entries.get(topic),
        };
        handler.map(|handler| handler.clone_ref(py))
    }

    /// Asks the CPU for the entries [`HandlerTable::get`] reads (a short table's).
    pub(crate) fn prefetch(&self) {
        if let Self::Few(entries) = self {
            let bytes = std::mem::size_of_val(entries.as_slice());
            wake::prefetch(entries.as_ptr().cast(), bytes.div_ceil(64));
        }
    }

    /// Sets `topic`'s handler; returns the one it replaces.
    pub(crate) fn insert(&mut self, topic: &str, handler: Py<PyAny>) -> Option<Py<PyAny>> {
        match self {
            Self::Few(entries) => {
                if let Some((_, slot)) = entries.iter_mut().find(|(entry, _)| entry.as_str() == topic) {
                    return Some(std::mem::replace(slot, handler));
                }
                if entries.len() < LINEAR {
                    entries.push((Topic::from(topic), handler));
                } else {
                    let mut many: HashMap<Topic, Py<PyAny>> = entries.drain(..).collect();
                    many.insert(Topic::from(topic), handler);
                    *self = Self::Many(many);
                }
                None
            }
            Self::Many(entries) => entries.insert(Topic::from(topic), handler),
        }
    }

    /// Removes `topic`'s handler; returns it.
    pub(crate) fn remove(&mut self, topic: &str) -> Option<Py<PyAny>> {
        match self {
            Self::Few(entries) => {
                let at = entries.iter().position(|(entry, _)| entry.as_str() == topic)?;
                Some(entries.swap_remove(at).1)
            }
            Self::Many(entries) => entries.remove(topic),
        }
    }

    /// Visits the handlers, for the cycle collector.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Self::Few(entries) => entries.iter().try_for_each(|(_, handler)| visit.call(handler)),
            Self::Many(entries) => entries.values().try_for_each(|handler| visit.call(handler)),
        }
    }

    /// Removes every handler; returns the table as it was.
    pub(crate) fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few(entries) => entries.len(),
            Self::Many(entries) => entries.len(),
        }
    }
}
