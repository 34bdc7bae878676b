//! The implementations compared, all driven through one trait so every criterion group runs
//! them on the same workload in the same run.
//!
//! Each peer builds `sessions` consumers; session `s` subscribes to the topics `topics_of(s)`.
//! Every consumer runs in its own tokio task and reports what it received to a [`Sink`]; a
//! publisher calls [`Peer::publish`] and then waits on the sink until the expected number of
//! deliveries has arrived.

pub mod async_broadcast_peer;
pub mod fanout_handlers;
pub mod fanout_pull;
pub mod seed_port;
pub mod tokio_broadcast;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_utils::CachePadded;

pub use async_broadcast_peer::AsyncBroadcastPeer;
pub use fanout_handlers::FanoutHandlers;
pub use fanout_pull::FanoutPull;
pub use seed_port::SeedPort;
pub use tokio_broadcast::TokioBroadcast;

/// What a scenario asks a peer to build.
#[derive(Clone)]
pub struct Layout {
    pub sessions: usize,
    pub topics: usize,
    /// Topics per session; session `s` takes topics `(s * 7 + k * stride) % topics` for `k` in
    /// `0..per_session` (deduplicated).
    pub per_session: usize,
    /// See `per_session`; 13 unless a scenario needs every session on distinct topics.
    pub stride: usize,
    /// Mailbox / channel capacity per session or channel.
    pub capacity: usize,
}

impl Layout {
    pub fn topics_of(&self, session: usize) -> Vec<usize> {
        let mut topics: Vec<usize> = (0..self.per_session)
            .map(|k| (session * 7 + k * self.stride) % self.topics)
            .collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }

    /// Subscribers of each topic.
    pub fn fanout_of_topics(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.topics];
        for s in 0..self.sessions {
            for t in self.topics_of(s) {
                counts[t] += 1;
            }
        }
        counts
    }
}

pub fn topic_name(topic: usize) -> String {
    format!("room:{topic}")
}

/// Deliveries counted by consumers: sharded, added in batches, summed by the publisher.
pub struct Sink {
    shards: Box<[CachePadded<AtomicU64>]>,
}

impl Default for Sink {
    fn default() -> Self {
        Self {
            shards: (0..64).map(|_| CachePadded::new(AtomicU64::new(0))).collect(),
        }
    }
}

impl Sink {
    pub fn add(&self, consumer: usize, n: u64) {
        if n > 0 {
            self.shards[consumer % self.shards.len()].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn total(&self) -> u64 {
        self.shards.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    /// Waits until at least `target` deliveries have been counted; panics after `limit`.
    ///
    /// Yields (letting consumers on this worker run) for up to [`SPIN`] before it sleeps:
    /// tokio's timer ticks once a millisecond, so sleeping as soon as the count lags would add
    /// up to a millisecond to a round that needed microseconds more, and that noise would swamp
    /// the shorter scenarios. Slow peers (whole seconds a round) sleep after the spin.
    pub async fn wait_for(&self, target: u64, limit: Duration) {
        const SPIN: Duration = Duration::from_millis(5);
        let start = Instant::now();
        while self.total() < target {
            let waited = start.elapsed();
            if waited > limit {
                panic!("only {} of {target} deliveries after {limit:?}", self.total());
            }
            if waited < SPIN {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_micros(50)).await;
            }
        }
    }
}

/// One implementation under test.
pub trait Peer: Sized + Send + Sync + 'static {
    const NAME: &'static str;
    /// Builds the sessions and starts their consumer tasks on the current runtime.
    fn build(layout: &Layout, sink: Arc<Sink>) -> impl Future<Output = Self> + Send;
    /// Publishes one message on `topic`.
    fn publish(&self, topic: usize, payload: Bytes) -> impl Future<Output = ()> + Send;
    /// How many sessions subscribe to the topic named `name`: one lookup in the peer's topic
    /// registry (registry scenario).
    fn subscriber_count(&self, name: &str) -> impl Future<Output = usize> + Send;
    /// Adds and removes one subscription on `topic` (churn scenario).
    fn churn(&self, topic: usize, id: usize) -> impl Future<Output = ()> + Send;
    /// Tears down consumers.
    fn shutdown(self) -> impl Future<Output = ()> + Send;
}
