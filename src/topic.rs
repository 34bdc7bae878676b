//! Topic and session names, and the checks every provider applies to them (G6, G9).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::config::Limits;
use crate::error::PubSubError;

/// A topic name: an immutable, cheaply cloned string.
///
/// Topics are always literal (G6): no character is a wildcard or an escape, in any provider.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both are clones of one allocation (then they are equal, without reading either).
    #[inline]
    pub(crate) fn same_allocation(&self, other: &Topic) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for Topic {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Topic {
    fn from(value: &str) -> Self {
        Topic(Arc::from(value))
    }
}

impl From<String> for Topic {
    fn from(value: String) -> Self {
        Topic(Arc::from(value))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for Topic {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Topic {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// Checks a topic against the configured limits (G9).
pub(crate) fn check_topic(topic: &str, limits: &Limits) -> Result<(), PubSubError> {
    if topic.is_empty() {
        return Err(PubSubError::EmptyTopic);
    }
    if topic.len() > limits.max_topic_bytes {
        return Err(PubSubError::TopicTooLong {
            len: topic.len(),
            limit: limits.max_topic_bytes,
        });
    }
    Ok(())
}

/// Checks a session id against the configured limits (G9).
pub(crate) fn check_session_id(session_id: &str, limits: &Limits) -> Result<(), PubSubError> {
    if session_id.is_empty() {
        return Err(PubSubError::EmptySessionId);
    }
    if session_id.len() > limits.max_session_id_bytes {
        return Err(PubSubError::SessionIdTooLong {
            len: session_id.len(),
            limit: limits.max_session_id_bytes,
        });
    }
    Ok(())
}

/// Checks a payload against the configured limits (G9).
pub(crate) fn check_payload(payload: &[u8], limits: &Limits) -> Result<(), PubSubError> {
    if payload.len() > limits.max_payload_bytes {
        return Err(PubSubError::PayloadTooLarge {
            len: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}
