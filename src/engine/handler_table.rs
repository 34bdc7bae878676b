//! A handler-form session's handlers by topic: read by the session's task once per delivery,
//! replaced copy-on-write by subscribe / unsubscribe (see `Session::handlers`).
//!
//! # Why not a plain `HashMap`
//!
//! The lookup is on the delivery path. With `HashMap<Topic, Handler>` it hashes the topic with
//! SipHash and compares the strings for every message, a visible share of a handler-form
//! delivery (`perf record` of `end_to_end/fanout-handlers/1000` shows it). Most sessions hold a
//! handful of topics, so up to [`FEW`] handlers live in a vector scanned in order (a short name
//! is compared inline, without a pointer to follow). A session with more topics than that gets a
//! `HashMap`.
//!
//! # Why the keys are the session's own
//!
//! A handler takes its topic by value, so every delivery clones one. The key is what is handed
//! out, and it is [`Topic::unshared`]: for a name over 23 bytes, cloning the topic entry's name
//! would increment a count that every subscriber of the topic writes, from every core, once per
//! delivery; the key's own allocation is touched only by this session.
//!
//! # Invariants
//!
//! - A topic appears at most once, in whichever representation is current.
//! - `Few` holds at most [`FEW`] entries; an insert beyond that moves everything to `Many`. A
//!   table never moves back (removals from a large table leave a `HashMap`), so a session that
//!   hovers at the threshold does not convert on every change.

use std::collections::HashMap;

use crate::handler::Handler;
use crate::topic::Topic;

/// The most handlers kept in a scanned vector.
pub(crate) const FEW: usize = 8;

#[derive(Clone)]
pub(crate) enum HandlerTable {
    Few(Vec<(Topic, Handler)>),
    Many(HashMap<Topic, Handler>),
}

impl Default for HandlerTable {
    fn default() -> Self {
        HandlerTable::Few(Vec::new())
    }
}

impl HandlerTable {
    /// The handler for `topic`, and the session's own copy of the topic to hand it.
    #[inline]
    pub(crate) fn get(&self, topic: &Topic) -> Option<(&Topic, &Handler)> {
        match self {
            HandlerTable::Few(entries) => entries
                .iter()
                .find(|(key, _)| key == topic)
                .map(|(key, handler)| (key, handler)),
            HandlerTable::Many(map) => map.get_key_value(topic),
        }
    }

    /// Sets the handler for `topic`; returns the one it replaced ([G3]). A new key is an
    /// unshared copy of `topic` (see the module docs).
    ///
    /// [G3]: crate::docs::contract#g3-idempotence
    pub(crate) fn insert(&mut self, topic: &Topic, handler: Handler) -> Option<Handler> {
        match self {
            HandlerTable::Few(entries) => {
                if let Some((_, existing)) = entries.iter_mut().find(|(key, _)| key == topic) {
                    return Some(std::mem::replace(existing, handler));
                }
                if entries.len() < FEW {
                    entries.push((topic.unshared(), handler));
                    return None;
                }
                let mut map: HashMap<Topic, Handler> = entries.drain(..).collect();
                map.insert(topic.unshared(), handler);
                *self = HandlerTable::Many(map);
                None
            }
            HandlerTable::Many(map) => match map.get_mut(topic.as_str()) {
                Some(existing) => Some(std::mem::replace(existing, handler)),
                None => map.insert(topic.unshared(), handler),
            },
        }
    }

    /// Removes the handler for `topic`, if any, and returns it.
    pub(crate) fn remove(&mut self, topic: &str) -> Option<Handler> {
        match self {
            HandlerTable::Few(entries) => {
                let at = entries.iter().position(|(key, _)| key.as_str() == topic)?;
                Some(entries.swap_remove(at).1)
            }
            HandlerTable::Many(map) => map.remove(topic),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            HandlerTable::Few(entries) => entries.len(),
            HandlerTable::Many(map) => map.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> Handler {
        Handler::new(|_topic, _message| std::future::ready(()))
    }

    fn topics(n: usize) -> Vec<Topic> {
        (0..n).map(|i| Topic::from(format!("t{i}"))).collect()
    }

    #[test]
    fn finds_by_string_when_the_allocation_differs() {
        let mut table = HandlerTable::default();
        table.insert(&Topic::from("room"), handler());
        assert!(table.get(&Topic::from("room")).is_some());
        assert!(table.get(&Topic::from("roo")).is_none());
    }

    #[test]
    fn grows_into_a_map_past_few_and_keeps_every_topic() {
        let mut table = HandlerTable::default();
        let names = topics(FEW + 3);
        for (i, topic) in names.iter().enumerate() {
            assert!(table.insert(topic, handler()).is_none());
            assert_eq!(table.len(), i + 1);
            assert_eq!(matches!(table, HandlerTable::Few(_)), i < FEW);
        }
        for topic in &names {
            assert!(table.get(topic).is_some(), "{topic} lost in the move to a map");
        }
    }

    #[test]
    fn insert_replaces_and_remove_forgets_in_both_forms() {
        for n in [2, FEW + 2] {
            let mut table = HandlerTable::default();
            let names = topics(n);
            for topic in &names {
                table.insert(topic, handler());
            }
            assert!(
                table.insert(&Topic::from("t1"), handler()).is_some(),
                "G3: replaced"
            );
            assert_eq!(table.len(), n);
            assert!(table.remove("t1").is_some());
            assert!(table.remove("t1").is_none());
            assert!(table.get(&names[1]).is_none());
            assert!(table.get(&names[0]).is_some());
            assert_eq!(table.len(), n - 1);
        }
    }

    #[test]
    fn keys_handed_to_handlers_are_not_the_topic_entrys_allocation() {
        for name in ["room:1", "a-topic-name-longer-than-twenty-three-bytes"] {
            let mut table = HandlerTable::default();
            let entry_name = Topic::from(name);
            table.insert(&entry_name, handler());
            let (key, _) = table.get(&entry_name).expect("handler");
            assert_eq!(key, &entry_name);
            assert_eq!(key.is_shared(), name.len() > 23, "{name}");
            if key.is_shared() {
                // (An inline name has no count; its bytes are always a copy.)
                assert_ne!(
                    key.as_ptr(),
                    entry_name.as_ptr(),
                    "{name}: the entry's count is shared"
                );
            }
            table.insert(&entry_name, handler());
            let (replaced, _) = table.get(&entry_name).expect("handler");
            assert_eq!(replaced, &entry_name, "G3: still one key");
        }
    }
}
