//! Helpers shared by the integration tests. Each test file is its own crate and uses only some
//! of them.
#![allow(dead_code)]

#[cfg(unix)]
pub mod redis_cluster;
// `conformance/mod.rs` loads this file too; a test crate with both modules holds two copies of
// its few functions, which is harmless.
#[allow(clippy::duplicate_mod)]
pub mod services;

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

/// A handler-form session `slow` on topic `room`, under `disconnect` with a one-message mailbox,
/// whose handler's call for its first message (`first`) is stalled in its synchronous part
/// until [`release`](Self::release) is sent to: the window between the task's open check and
/// the call's return (G2).
pub struct StalledSession {
    pub pubsub: Arc<InMemoryPubSub>,
    pub release: std::sync::mpsc::Sender<()>,
    /// The messages the handler was called with, in order.
    pub handled: Arc<Mutex<Vec<Bytes>>>,
}

impl StalledSession {
    /// Starts a provider, subscribes the session and returns once its handler's call for
    /// `first` has begun.
    pub async fn start() -> Self {
        let config = Config::default()
            .with_capacity(1)
            .with_policy(fanout::OverflowPolicy::Disconnect);
        let pubsub = Arc::new(InMemoryPubSub::with_config(config).unwrap());
        pubsub.start().await.unwrap();
        let (entered, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let window = Mutex::new((entered, release_rx));
        let handled = Arc::new(Mutex::new(Vec::new()));
        let handler = {
            let handled = Arc::clone(&handled);
            Handler::new(move |_topic, message: Bytes| {
                handled.lock().unwrap().push(message.clone());
                if message == "first" {
                    let window = window.lock().unwrap();
                    window.0.send(()).unwrap();
                    window.1.recv_timeout(WAIT).unwrap();
                }
                async {}
            })
        };
        pubsub.subscribe_topic("slow", "room", handler).await.unwrap();
        pubsub.broadcast("room", "first".into()).await.unwrap();
        entered_rx
            .recv_timeout(WAIT)
            .expect("the handler's call to begin");
        StalledSession {
            pubsub,
            release,
            handled,
        }
    }

    /// Two broadcasts: the first fills the one-slot mailbox, the second finds it full and
    /// disconnects the session.
    pub async fn disconnect(&self) {
        self.pubsub.broadcast("room", "queued".into()).await.unwrap();
        self.pubsub.broadcast("room", "overflow".into()).await.unwrap();
        assert_eq!(self.pubsub.stats().disconnects, 1);
    }
}

/// Polls `future`, and the first time it returns `Pending` (parked, its waker registered),
/// sends on `parked`.
pub async fn announcing_park<F: std::future::Future>(
    future: F,
    parked: tokio::sync::oneshot::Sender<()>,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut parked = Some(parked);
    std::future::poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if poll.is_pending() {
            if let Some(parked) = parked.take() {
                let _ = parked.send(());
            }
        }
        poll
    })
    .await
}
