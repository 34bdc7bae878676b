//! Topic name → topic entry, readable without locks under insert/remove churn.
//!
//! # Structure
//!
//! A `papaya::HashMap` (through `crate::sync::ConcurrentMap`): reads never block and never write
//! shared memory beyond an epoch pin, and removal is reclaimed safely after readers leave.
//! Resizes are blocking for writers: the insert that grows the table copies it (a pause for
//! that one subscribe, long with a million topics, while other writers wait and readers go on).
//! papaya's incremental mode avoids that pause but leaves every read probing two tables until
//! later writes finish the move, which makes every lookup slower and building many topics
//! slower too. The alternatives not taken: `scc::HashMap` (reads take bucket locks; its
//! lock-free `HashIndex` makes every update copy an entry), `dashmap` (a `RwLock` per shard:
//! broadcasts would take read locks) and one copy-on-write map per shard (every topic creation
//! copies a shard: churn on a million topics copies thousands of entries each time).
//!
//! # Invariants
//!
//! - Each entry's `writer` mutex serialises subscribe / unsubscribe on that topic. `retired` is
//!   set, and the entry removed from the map, under that lock, by the unsubscribe that empties the
//!   set; removal is by identity (`remove_if` + `Arc::ptr_eq`), so it never removes a newer entry.
//! - A subscribe takes the entry (inserting one if absent), locks it, and retries from the map if
//!   the entry is retired. So a subscribe racing the last unsubscribe either lands in the old
//!   entry before it is retired (and the unsubscribe then finds it non-empty) or in a new entry:
//!   it is never lost.
//! - A broadcast that reads a retired entry finds its set empty: nothing is delivered that [G1]
//!   requires, since every live subscriber is in the current entry.
//!
//! [G1]: crate::docs::contract#g1-delivery

use futures_util::future::BoxFuture;

use crate::config::DeliveryRule;
use crate::error::Result;
use crate::sync::{lock, Arc, ConcurrentMap, Mutex};
use crate::topic::Topic;

use super::session::Session;
use super::subscribers::{Layout, SubscriberSet};

pub(crate) struct TopicEntry {
    pub(crate) name: Topic,
    /// The policy for this topic, resolved from the config once, when the entry is created.
    pub(crate) rule: DeliveryRule,
    pub(crate) subscribers: SubscriberSet,
    pub(crate) writer: Mutex<TopicWriter>,
}

pub(crate) struct TopicWriter {
    pub(crate) retired: bool,
    pub(crate) layout: Layout,
}

pub(crate) struct TopicRegistry {
    map: ConcurrentMap<Topic, Arc<TopicEntry>>,
    /// Told of each topic's first subscriber and of its retirement, under the entry's writer
    /// lock, so the calls for one topic arrive in order.
    observer: Option<std::sync::Arc<dyn TopicObserver>>,
}

/// Told when a topic gains its first subscriber and when it loses its last, for providers that
/// mirror the set of live topics elsewhere (a broker subscription per topic).
///
/// Calls for one topic are made under that topic's writer lock, so they alternate
/// added/removed in the order they happened. They must be quick, must not block, and must not
/// call back into the engine (queue the work, e.g. on a channel).
pub trait TopicObserver: Send + Sync + 'static {
    /// `topic` now has a subscriber on this engine.
    fn topic_added(&self, topic: &Topic);
    /// `topic` has no subscriber left on this engine.
    fn topic_removed(&self, topic: &Topic);
    /// What a subscribe to `topic` waits for once its local change is made (a pull-form
    /// session's `subscribe`; a distributed provider's `subscribe_topic` waits for it too): a
    /// future that resolves when the observer's mirror of the topic is in place (a broker's
    /// confirmation of its subscription), or with why not. `None`, the default: nothing.
    fn confirmation(&self, topic: &Topic) -> Option<BoxFuture<'static, Result<()>>> {
        let _ = topic;
        None
    }
}

/// What removing a subscriber did to its topic.
pub(crate) struct Removed {
    pub(crate) was_member: bool,
    pub(crate) topic_retired: bool,
}

impl TopicRegistry {
    /// What a subscribe to `topic` waits for after its local change (see
    /// [`TopicObserver::confirmation`]).
    pub(crate) fn confirmation(&self, topic: &str) -> Option<BoxFuture<'static, Result<()>>> {
        // No observer (one process): nothing to build, nothing to wait for.
        let observer = self.observer.as_ref()?;
        observer.confirmation(&Topic::from(topic))
    }

    pub(crate) fn new(observer: Option<std::sync::Arc<dyn TopicObserver>>) -> Self {
        Self {
            map: ConcurrentMap::new(),
            observer,
        }
    }

    /// Runs `f` on the entry of `topic`, if any, without locking.
    #[inline]
    pub(crate) fn with_entry<R>(&self, topic: &str, f: impl FnOnce(&TopicEntry) -> R) -> Option<R> {
        self.map.with(topic, |entry| f(entry))
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The name of `topic`'s live entry, if any: a clone of the entry's own allocation.
    pub(crate) fn name_of(&self, topic: &str) -> Option<Topic> {
        self.with_entry(topic, |entry| entry.name.clone())
    }

    /// Adds `session` to `topic`; returns the entry and slot it landed in, and whether it is the
    /// entry's first subscriber (the topic came into existence).
    pub(crate) fn subscribe(
        &self,
        topic: &Topic,
        session: &Arc<Session>,
        rule: impl Fn() -> DeliveryRule,
    ) -> (Arc<TopicEntry>, usize, bool) {
        loop {
            let entry = match self.map.get(topic.as_str()) {
                Some(existing) => existing,
                None => self.map.get_or_insert_with(topic.clone(), || {
                    Arc::new(TopicEntry {
                        name: topic.clone(),
                        rule: rule(),
                        subscribers: SubscriberSet::new(),
                        writer: Mutex::new(TopicWriter {
                            retired: false,
                            layout: Layout::default(),
                        }),
                    })
                }),
            };
            let mut writer = lock(&entry.writer);
            if writer.retired {
                continue;
            }
            // Entries start empty and retire when they empty again, so the first subscriber of
            // an entry is the one that brings the topic into existence, whoever inserted it.
            let is_new = writer.layout.len == 0;
            if is_new {
                if let Some(observer) = &self.observer {
                    observer.topic_added(&entry.name);
                }
            }
            let slot = entry.subscribers.insert(&mut writer.layout, session);
            drop(writer);
            return (entry, slot, is_new);
        }
    }

    /// Removes `session` from `entry` at `slot`; retires the entry when it empties.
    pub(crate) fn unsubscribe(
        &self,
        entry: &Arc<TopicEntry>,
        session: &Arc<Session>,
        slot: usize,
    ) -> Removed {
        let mut writer = lock(&entry.writer);
        if writer.retired {
            return Removed {
                was_member: false,
                topic_retired: false,
            };
        }
        let was_member = entry.subscribers.remove(&mut writer.layout, session, slot);
        let topic_retired = writer.layout.len == 0;
        if topic_retired {
            writer.retired = true;
            self.map
                .remove_if(entry.name.as_str(), |_, current| Arc::ptr_eq(current, entry));
            if let Some(observer) = &self.observer {
                observer.topic_removed(&entry.name);
            }
        }
        Removed {
            was_member,
            topic_retired,
        }
    }
}
