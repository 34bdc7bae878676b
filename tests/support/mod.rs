//! Helpers shared by the integration tests. Each test file is its own crate and uses only some
//! of them.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout::{Bytes, Config, Handler, InMemoryPubSub, PubSubProvider, StatsSnapshot};
use tokio::sync::Semaphore;

/// The longest any condition is waited for.
pub const WAIT: Duration = Duration::from_secs(5);

/// Polls `done` every millisecond until it holds or [`WAIT`] has passed; returns whether it held.
pub async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Polls `done` every millisecond until it holds; fails the test after [`WAIT`].
pub async fn wait_until(what: &str, done: impl FnMut() -> bool) {
    assert!(
        eventually(done).await,
        "timed out after {WAIT:?} waiting for {what}"
    );
}

/// A payload as text (lossy).
pub fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Payloads a handler-form session received, in order.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<String>>>);

impl Inbox {
    pub fn push(&self, message: &Bytes) {
        self.0.lock().unwrap().push(text(message));
    }

    pub fn payloads(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Records each message.
    pub fn handler(&self) -> Handler {
        let inbox = self.clone();
        Handler::new(move |_topic, message: Bytes| {
            inbox.push(&message);
            async {}
        })
    }

    /// Records each message, then holds it until the test adds a permit to `gate`.
    pub fn stalled_handler(&self, gate: &Arc<Semaphore>) -> Handler {
        let inbox = self.clone();
        let gate = Arc::clone(gate);
        Handler::new(move |_topic, message: Bytes| {
            inbox.push(&message);
            let gate = Arc::clone(&gate);
            async move {
                gate.acquire().await.expect("the gate is never closed").forget();
            }
        })
    }
}

/// A started in-memory provider with `config`.
pub async fn started(config: Config) -> InMemoryPubSub {
    let pubsub = InMemoryPubSub::with_config(config).expect("the test config is valid");
    pubsub.start().await.expect("start");
    pubsub
}

/// Every (broadcast, recipient) pair has ended: delivered or dropped, none still queued.
pub fn settled(stats: &StatsSnapshot) -> bool {
    stats.recipients == stats.delivered + stats.dropped.total()
}

/// xorshift64*: a small seeded generator, so a failing sequence replays from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
