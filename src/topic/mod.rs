//! Topic and session names, and the checks every provider applies to them ([G6], [G9]).
//!
//! [G6]: crate::docs::contract#g6-topic-isolation
//! [G9]: crate::docs::contract#g9-errors-are-values

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use crate::config::Limits;
use crate::error::PubSubError;

/// A topic name: an immutable, cheaply cloned string.
///
/// Names of up to 23 bytes are stored inline, so a clone copies them and writes nothing
/// shared, and two are compared as whole words; longer names share one reference-counted
/// allocation. (Every delivery in the handler form clones the topic; a count shared by all of a
/// topic's subscribers would be a cache line written from every core once per delivery.)
/// A `Topic` is 24 bytes; a handler-form subscription to a name over 23 bytes keeps its own
/// copy of the name (see the engine's handler table).
///
/// Topics are always literal ([G6]): no character is a wildcard or an escape, in any provider.
///
/// [G6]: crate::docs::contract#g6-topic-isolation
#[derive(Clone, PartialEq, Eq)]
pub struct Topic(Name);

mod name;

use name::Name;

impl Topic {
    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// An equal topic that shares no reference count with `self`: a copy for a name stored
    /// inline, a new allocation for a longer one.
    pub(crate) fn unshared(&self) -> Topic {
        Topic(Name::new(self.as_str()))
    }

    /// Whether clones of this topic share a reference count (names over 23 bytes).
    #[cfg(test)]
    pub(crate) fn is_shared(&self) -> bool {
        self.0.is_shared()
    }
}

/// Hashes as the `str` does, so a map keyed by `Topic` is searched by `&str` (`Borrow<str>`).
impl Hash for Topic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// Ordered as the strings are.
impl Ord for Topic {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Topic {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Deref for Topic {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Topic {
    fn from(value: &str) -> Self {
        Topic(Name::new(value))
    }
}

impl From<String> for Topic {
    fn from(value: String) -> Self {
        Topic(Name::new(&value))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Topic {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Topic {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Checks a topic against the configured limits ([G9]).
///
/// [G9]: crate::docs::contract#g9-errors-are-values
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

/// Checks a session id against the configured limits ([G9]).
///
/// [G9]: crate::docs::contract#g9-errors-are-values
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

/// Checks a payload against the configured limits ([G9]).
///
/// [G9]: crate::docs::contract#g9-errors-are-values
pub(crate) fn check_payload(payload: &[u8], limits: &Limits) -> Result<(), PubSubError> {
    if payload.len() > limits.max_payload_bytes {
        return Err(PubSubError::PayloadTooLarge {
            len: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::Topic;

    const NAMES: [&str; 6] = [
        "",
        "room:1",
        "room:10",
        "héllo wörld",
        "x23-xxxxxxxxxxxxxxxxxxx",
        "a name well over twenty-three bytes",
    ];

    #[test]
    fn a_map_keyed_by_topic_is_searched_by_str() {
        let map: HashMap<Topic, usize> = NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| (Topic::from(*n), i))
            .collect();
        for (i, name) in NAMES.iter().enumerate() {
            assert_eq!(map.get(*name), Some(&i), "{name:?}");
            assert_eq!(map.get(&Topic::from(name.to_string())), Some(&i), "{name:?}");
        }
        assert_eq!(map.get("room:2"), None);
    }

    #[test]
    fn topics_order_and_print_as_their_strings() {
        let topics: BTreeSet<Topic> = NAMES.iter().map(|n| Topic::from(*n)).collect();
        let strings: BTreeSet<&str> = NAMES.iter().copied().collect();
        assert!(topics.iter().map(Topic::as_str).eq(strings.iter().copied()));
        for name in NAMES {
            let topic = Topic::from(name);
            assert_eq!(topic.to_string(), name);
            assert_eq!(format!("{topic:?}"), format!("{name:?}"));
            assert!(topic == name && topic == *name && topic.unshared() == topic);
            assert_eq!(topic.is_shared(), name.len() > 23);
        }
    }
}
