//! Counters of the broker side: connections lost and regained, messages sent and received,
//! inbound messages skipped.
//!
//! All counters are `Relaxed`: they order nothing, and a snapshot is a sum taken during the
//! call, not an atomic cut. Each is written by one task (the listener or the publisher) or, for
//! `unavailable`, by broadcasting callers.

use std::time::Duration;

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// A snapshot of a distributed provider's broker-side counters. The local engine's counters
/// are [`PubSubProvider::stats`](crate::PubSubProvider::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Times the subscription connection was lost (closed, killed, or silent past the health
    /// check).
    pub outages: u64,
    /// Times it came back: reconnected and every topic subscribed again.
    pub reconnects: u64,
    /// Total length of the subscription connection's outages that have ended.
    pub outage_time: Duration,
    /// Whether the subscription connection is up with every topic confirmed.
    pub connected: bool,
    /// Times the publishing connection was lost.
    pub publisher_outages: u64,
    /// Times it came back.
    pub publisher_reconnects: u64,
    /// Whether the publishing connection is up.
    pub publisher_connected: bool,
    /// Messages sent to the broker (their publish command answered).
    pub published: u64,
    /// Publish commands that carried them: envelopes, each holding a run of consecutive
    /// messages on one topic (`published / envelopes_published` is the mean batch).
    pub envelopes_published: u64,
    /// Messages not confirmed sent: the publishing connection failed while they were queued or
    /// in flight (some in flight may have reached the broker before the failure), the broker
    /// refused their publish, or the provider stopped before they were sent.
    pub publish_errors: u64,
    /// Publish commands (envelopes) the broker answered with an error on a connection that
    /// still works (a full notification queue, a missing table, a channel the user may not
    /// publish on); their messages are in `publish_errors`.
    pub publish_refusals: u64,
    /// Topic subscriptions the broker refused on a working connection (a permissions
    /// violation, a subscription limit): those topics' sessions get
    /// [`SubscribeRefused`](super::BrokerError::SubscribeRefused) and receive from this
    /// instance only.
    pub subscribe_refusals: u64,
    /// Broadcasts whose remote part was refused because the publishing connection was down
    /// (they returned [`PublishUnavailable`](super::BrokerError::PublishUnavailable)).
    pub unavailable: u64,
    /// Messages from other instances delivered to this instance's engine.
    pub received: u64,
    /// Envelopes from other instances that carried them.
    pub envelopes_received: u64,
    /// This instance's own messages, echoed by the broker and skipped (counted per message).
    pub echoes_skipped: u64,
    /// Inbound broker messages skipped as malformed: undecodable, foreign, oversized or on the
    /// wrong channel (a malformed envelope counts once, however many records it claims), and
    /// records refused by the local engine.
    pub malformed: u64,
    /// Broker channels currently subscribed (one per topic with a local subscriber).
    pub channels: u64,
    /// Times the subscription connection's reader stopped reading because this instance was a
    /// full backlog (4,096 messages or 64 MiB) behind: the server holds what follows, up to
    /// its limit for a client. (NATS and Redis; PostgreSQL's client reads on regardless.)
    pub inbound_stalls: u64,
    /// Outages of the subscription connection that began while its reader was stalled, or
    /// within a second of a stall: most likely the server closing a slow consumer (it does not
    /// say so). Also counted in `outages`.
    pub slow_consumer_outages: u64,
}

#[derive(Default)]
pub(crate) struct BrokerCounters {
    pub(crate) outages: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// Nanoseconds.
    pub(crate) outage_time: AtomicU64,
    pub(crate) connected: AtomicBool,
    pub(crate) publisher_outages: AtomicU64,
    pub(crate) publisher_reconnects: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) envelopes_published: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) publish_refusals: AtomicU64,
    pub(crate) subscribe_refusals: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) envelopes_received: AtomicU64,
    pub(crate) echoes_skipped: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) channels: AtomicU64,
    pub(crate) slow_consumer_outages: AtomicU64,
}

impl BrokerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, publisher_connected: bool, inbound_stalls: u64) -> BrokerStats {
        BrokerStats {
            outages: self.outages.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            outage_time: Duration::from_nanos(self.outage_time.load(Relaxed)),
            connected: self.connected.load(Relaxed),
            publisher_outages: self.publisher_outages.load(Relaxed),
            publisher_reconnects: self.publisher_reconnects.load(Relaxed),
            publisher_connected,
            published: self.published.load(Relaxed),
            envelopes_published: self.envelopes_published.load(Relaxed),
            publish_errors: self.publish_errors.load(Relaxed),
            publish_refusals: self.publish_refusals.load(Relaxed),
            subscribe_refusals: self.subscribe_refusals.load(Relaxed),
            unavailable: self.unavailable.load(Relaxed),
            received: self.received.load(Relaxed),
            envelopes_received: self.envelopes_received.load(Relaxed),
            echoes_skipped: self.echoes_skipped.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            channels: self.channels.load(Relaxed),
            inbound_stalls,
            slow_consumer_outages: self.slow_consumer_outages.load(Relaxed),
        }
    }
}
