//! Counters kept without locks on the hot path, and the snapshot users read.
//!
//! Hot counters (publish, enqueue, deliver, drop) are sharded: each thread adds to its own
//! cache-padded shard, so publishers on different cores never write the same cache line. A
//! broadcast adds its totals once, not once per subscriber. Gauges (sessions, topics,
//! subscriptions) change only on the writer side (subscribe / unsubscribe) and are single atomics.
//! All counters use `Relaxed`: they order nothing, and a snapshot is a sum taken at some moment
//! during the call, not an atomic cut across counters.

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Why a (message, session) pair ended without a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// `drop_newest`: the mailbox was full, the new message was not queued.
    DropNewest,
    /// `drop_oldest`: a queued message was evicted to make room.
    DropOldest,
    /// `disconnect`: the message found the mailbox full and the session was disconnected, or it
    /// was still queued when that happened.
    SlowConsumer,
    /// The session unsubscribed (or its receiver was dropped) before the message was handled.
    Unsubscribed,
    /// The provider was stopped before the message was handled.
    Stopped,
}

const REASONS: usize = 5;

impl DropReason {
    fn index(self) -> usize {
        match self {
            DropReason::DropNewest => 0,
            DropReason::DropOldest => 1,
            DropReason::SlowConsumer => 2,
            DropReason::Unsubscribed => 3,
            DropReason::Stopped => 4,
        }
    }
}

/// Drops, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DropCounts {
    /// See [`DropReason::DropNewest`].
    pub drop_newest: u64,
    /// See [`DropReason::DropOldest`].
    pub drop_oldest: u64,
    /// See [`DropReason::SlowConsumer`].
    pub slow_consumer: u64,
    /// See [`DropReason::Unsubscribed`].
    pub unsubscribed: u64,
    /// See [`DropReason::Stopped`].
    pub stopped: u64,
}

impl DropCounts {
    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.drop_newest + self.drop_oldest + self.slow_consumer + self.unsubscribed + self.stopped
    }
}

/// A snapshot of a provider's counters.
///
/// Accounting identity: every (broadcast, recipient) pair ends exactly once, delivered or dropped
/// for one reason, so `recipients == delivered + dropped.total() + queued` where `queued` is
/// what sessions still hold ([`SessionStats::queued`]). It holds exactly whenever no session is
/// in the middle of a burst: a handler-form session's task adds its deliveries once per burst
/// (before it waits for its mailbox or a handler's future, yields, or ends), not one by one. A
/// session removed by `unsubscribe_all` or the reaper may still have its last burst to add:
/// its task adds it as it ends, shortly after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Broadcasts accepted by this engine. A distributed provider's engine also counts each
    /// broadcast that arrives from another instance and is delivered to its local sessions.
    pub published: u64,
    /// (broadcast, session) pairs: sessions each broadcast found subscribed.
    pub recipients: u64,
    /// Messages handed to a handler or returned by a receiver.
    pub delivered: u64,
    /// Drops by reason.
    pub dropped: DropCounts,
    /// Sessions disconnected as slow consumers.
    pub disconnects: u64,
    /// Broadcasts that waited for room under the `block` policy.
    pub block_waits: u64,
    /// Of those, waits that timed out and fell back.
    pub block_timeouts: u64,
    /// Full mailboxes under `block_once` that were not waited for: an earlier wait for the same
    /// session timed out and it has taken no message since, so the fallback applied at once.
    pub block_skips: u64,
    /// Handler invocations that panicked (caught; the session goes on).
    pub handler_panics: u64,
    /// Handler invocations that returned an error.
    pub handler_errors: u64,
    /// Handler invocations cancelled unfinished: their future was dropped at an `.await`
    /// because their session ended and [`Config::close_grace`](crate::Config::close_grace)
    /// ran out, or because `stop()` ran out of
    /// [`Config::stop_grace`](crate::Config::stop_grace). Counted as the future is dropped.
    pub handlers_cancelled: u64,
    /// Live sessions.
    pub sessions: u64,
    /// Topics with at least one subscriber.
    pub topics: u64,
    /// Live (session, topic) subscriptions.
    pub subscriptions: u64,
}

/// Per-session figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Messages waiting in the mailbox (a broadcast or a receive in progress may already be
    /// counted).
    pub queued: usize,
    /// The mailbox capacity.
    pub capacity: usize,
    /// Topics the session is subscribed to.
    pub topics: usize,
}

#[derive(Default)]
struct Shard {
    published: AtomicU64,
    recipients: AtomicU64,
    delivered: AtomicU64,
    dropped: [AtomicU64; REASONS],
    disconnects: AtomicU64,
    block_waits: AtomicU64,
    block_timeouts: AtomicU64,
    block_skips: AtomicU64,
    handler_panics: AtomicU64,
    handler_errors: AtomicU64,
    handlers_cancelled: AtomicU64,
}

/// The live counters of one engine.
pub(crate) struct Counters {
    shards: Box<[CachePadded<Shard>]>,
    sessions: CachePadded<AtomicUsize>,
    topics: AtomicUsize,
    subscriptions: AtomicUsize,
}

/// Per-broadcast tallies, added to the shared counters once per broadcast.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) recipients: u64,
    pub(crate) queued: u64,
    pub(crate) dropped: [u64; REASONS],
    pub(crate) disconnects: u64,
    pub(crate) block_waits: u64,
    pub(crate) block_timeouts: u64,
    pub(crate) block_skips: u64,
}

impl Tally {
    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }

    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

fn shard_count() -> usize {
    if cfg!(fanout_loom) {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(8, |n| n.get())
        .clamp(1, 64)
        .next_power_of_two()
}

/// Under loom there is one shard, and no thread-local to model.
#[cfg(fanout_loom)]
#[inline]
fn shard_index(_shards: usize) -> usize {
    0
}

/// This thread's shard: threads are numbered once, round robin. The numbering is a placement
/// hint, not synchronisation: any shard is correct.
#[cfg(not(fanout_loom))]
fn shard_index(shards: usize) -> usize {
    use std::cell::Cell;

    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let index = INDEX.with(|i| {
        if i.get() == usize::MAX {
            i.set(NEXT.fetch_add(1, Relaxed));
        }
        i.get()
    });
    index & (shards - 1)
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..shard_count())
                .map(|_| CachePadded::new(Shard::default()))
                .collect(),
            sessions: CachePadded::new(AtomicUsize::new(0)),
            topics: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn shard(&self) -> &Shard {
        &self.shards[shard_index(self.shards.len())]
    }

    pub(crate) fn add_tally(&self, tally: &Tally) {
        let shard = self.shard();
        shard.published.fetch_add(1, Relaxed);
        add_nonzero(&shard.recipients, tally.recipients);
        for (counter, n) in shard.dropped.iter().zip(tally.dropped) {
            add_nonzero(counter, n);
        }
        add_nonzero(&shard.disconnects, tally.disconnects);
        add_nonzero(&shard.block_waits, tally.block_waits);
        add_nonzero(&shard.block_timeouts, tally.block_timeouts);
        add_nonzero(&shard.block_skips, tally.block_skips);
    }

    pub(crate) fn delivered(&self, n: u64) {
        add_nonzero(&self.shard().delivered, n);
    }

    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        add_nonzero(&self.shard().dropped[reason.index()], n);
    }

    pub(crate) fn handler_panic(&self) {
        self.shard().handler_panics.fetch_add(1, Relaxed);
    }

    pub(crate) fn handler_error(&self) {
        self.shard().handler_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn handler_cancelled(&self) {
        self.shard().handlers_cancelled.fetch_add(1, Relaxed);
    }

    pub(crate) fn session_opened(&self) {
        self.sessions.fetch_add(1, Relaxed);
    }

    pub(crate) fn session_closed(&self) {
        self.sessions.fetch_sub(1, Relaxed);
    }

    pub(crate) fn topic_created(&self) {
        self.topics.fetch_add(1, Relaxed);
    }

    pub(crate) fn topic_removed(&self) {
        self.topics.fetch_sub(1, Relaxed);
    }

    pub(crate) fn subscribed(&self) {
        self.subscriptions.fetch_add(1, Relaxed);
    }

    pub(crate) fn unsubscribed(&self) {
        self.subscriptions.fetch_sub(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        let mut dropped = [0u64; REASONS];
        for shard in self.shards.iter() {
            s.published += shard.published.load(Relaxed);
            s.recipients += shard.recipients.load(Relaxed);
            s.delivered += shard.delivered.load(Relaxed);
            for (total, counter) in dropped.iter_mut().zip(&shard.dropped) {
                *total += counter.load(Relaxed);
            }
            s.disconnects += shard.disconnects.load(Relaxed);
            s.block_waits += shard.block_waits.load(Relaxed);
            s.block_timeouts += shard.block_timeouts.load(Relaxed);
            s.block_skips += shard.block_skips.load(Relaxed);
            s.handler_panics += shard.handler_panics.load(Relaxed);
            s.handler_errors += shard.handler_errors.load(Relaxed);
            s.handlers_cancelled += shard.handlers_cancelled.load(Relaxed);
        }
        s.dropped = DropCounts {
            drop_newest: dropped[0],
            drop_oldest: dropped[1],
            slow_consumer: dropped[2],
            unsubscribed: dropped[3],
            stopped: dropped[4],
        };
        s.sessions = self.sessions.load(Relaxed) as u64;
        s.topics = self.topics.load(Relaxed) as u64;
        s.subscriptions = self.subscriptions.load(Relaxed) as u64;
        s
    }
}

#[inline]
fn add_nonzero(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Relaxed);
    }
}
