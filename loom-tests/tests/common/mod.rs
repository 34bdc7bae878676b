//! What every model shares: tiny engines, payloads, and the accounting check.

#![allow(dead_code)]

use std::time::Duration;

use fanout::{Bytes, Config, Engine, Fallback, Message, OverflowPolicy, SessionReceiver, TryRecvError};

/// An engine whose sessions hold `capacity` messages, under `policy` for every topic.
pub fn engine(capacity: usize, policy: OverflowPolicy) -> Engine {
    Engine::new(Config::default().with_capacity(capacity).with_policy(policy)).unwrap()
}

/// The `block` policy; under loom its timeout never fires (there are no timers), so a blocked
/// broadcaster is released only by a pop or a close, or the model deadlocks.
pub fn block() -> OverflowPolicy {
    OverflowPolicy::Block {
        timeout: Duration::from_secs(60),
        then: Fallback::DropNewest,
    }
}

/// A pull-form session subscribed to `topics`.
pub fn session(engine: &Engine, id: &str, topics: &[&str]) -> SessionReceiver {
    let receiver = engine.open_session(id).unwrap();
    for topic in topics {
        subscribe(&receiver, topic);
    }
    receiver
}

/// Subscribes `receiver` to `topic`: in one process the subscribe is done when first polled.
pub fn subscribe(receiver: &SessionReceiver, topic: &str) {
    loom::future::block_on(receiver.subscribe(topic)).unwrap();
}

pub fn payload(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

pub fn text(message: &Message) -> &str {
    std::str::from_utf8(message.payload()).unwrap()
}

/// Broadcasts on `topic` and waits for it (under `block`, until released).
pub fn broadcast(engine: &Engine, topic: &str, text: &'static str) -> fanout::Fanout {
    loom::future::block_on(engine.broadcast(topic, payload(text))).unwrap()
}

/// Broadcasts on `topic` from a new loom thread: the publisher side of a race.
pub fn broadcast_in_thread(
    engine: &Engine,
    topic: &'static str,
    text: &'static str,
) -> loom::thread::JoinHandle<fanout::Fanout> {
    let engine = engine.clone();
    loom::thread::spawn(move || broadcast(&engine, topic, text))
}

/// Everything queued for `receiver` now, in order; stops at `Empty` or `Closed`.
pub fn drain(receiver: &mut SessionReceiver) -> Vec<Message> {
    let mut messages = Vec::new();
    loop {
        match receiver.try_recv() {
            Ok(message) => messages.push(message),
            Err(TryRecvError::Empty) | Err(TryRecvError::Closed(_)) => return messages,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// Every (broadcast, recipient) pair ended exactly once: delivered, dropped for one reason, or
/// still queued in a live session.
pub fn assert_accounted(engine: &Engine, live: &[&SessionReceiver]) {
    let stats = engine.stats();
    let queued: u64 = live.iter().map(|r| r.queued() as u64).sum();
    assert_eq!(
        stats.recipients,
        stats.delivered + stats.dropped.total() + queued,
        "every message delivered or counted once, never both: {stats:?}, queued {queued}"
    );
}

/// A model's closing check for its one live session: everything is accounted for while it
/// lives ([`assert_accounted`]), and nothing is left once it is dropped ([`assert_empty`]).
pub fn assert_accounted_then_empty(engine: &Engine, receiver: SessionReceiver) {
    assert_accounted(engine, &[&receiver]);
    drop(receiver);
    assert_empty(engine);
}

/// The engine holds nothing once every session is gone (G7).
pub fn assert_empty(engine: &Engine) {
    // Retires sessions a broadcaster disconnected and nobody reaped yet.
    loom::future::block_on(engine.unsubscribe_all("nobody")).unwrap();
    let stats = engine.stats();
    assert_eq!(engine.topic_count(), 0, "topic entries left: {stats:?}");
    assert_eq!(engine.session_count(), 0, "session entries left: {stats:?}");
    assert_eq!(
        (stats.sessions, stats.topics, stats.subscriptions),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// Outcomes a model's executions reached, checked after `loom::model` returns: proof that the
/// exploration reached both sides of the race, not just one interleaving.
pub struct Seen(std::sync::Mutex<std::collections::BTreeSet<&'static str>>);

impl Seen {
    pub const fn new() -> Self {
        Seen(std::sync::Mutex::new(std::collections::BTreeSet::new()))
    }

    pub fn saw(&self, outcome: &'static str) {
        self.0.lock().unwrap().insert(outcome);
    }

    pub fn assert_saw(&self, expected: &[&'static str]) {
        let seen = self.0.lock().unwrap();
        for outcome in expected {
            assert!(
                seen.contains(outcome),
                "no execution reached {outcome:?}; saw {seen:?}"
            );
        }
    }
}

/// The set-up of the races on a blocked broadcaster: session `s` on `t` with its one-slot
/// mailbox holding "1", a broadcaster of "2" on another loom thread (waiting for room unless the
/// pop came first), and the consumer's pop of "1".
pub fn blocked_broadcast_then_pop(
    engine: &Engine,
) -> (SessionReceiver, loom::thread::JoinHandle<fanout::Fanout>) {
    let mut receiver = session(engine, "s", &["t"]);
    broadcast(engine, "t", "1");
    let publisher = broadcast_in_thread(engine, "t", "2");
    assert_eq!(text(&receiver.try_recv().unwrap()), "1");
    (receiver, publisher)
}
