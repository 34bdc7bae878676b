//! The subscription connection's task: mirrors the engine's live topics as broker channel
//! subscriptions, delivers other instances' messages to local sessions, and reconnects.
//!
//! # Input
//!
//! The engine tells an [`Intake`] (its [`TopicObserver`]) when a topic gains its first local
//! subscriber or loses its last. The intake keeps the latest wanted state per topic, so churn on
//! one topic never queues more than one entry, and wakes the task. `subscribe_topic` adds a
//! [`Waiter`] for its topic *after* its local subscribe, under the same lock, so the task always
//! sees the topic's change before the waiter that depends on it.
//!
//! # State (owned by the task, no locks)
//!
//! - `wanted`: topics with a local subscriber, as the intake reported them.
//! - `sharing`: how many wanted topics each channel carries. A broker may give two topics one
//!   channel (PostgreSQL hashes names past 63 bytes); a topic that leaves does not unsubscribe a
//!   channel another wanted topic still needs.
//! - `confirmed`: channels the broker has confirmed on the current connection.
//! - `busy`: topics with a subscribe or unsubscribe in flight; at most one per topic, so the
//!   commands for one topic reach the broker in order. When one completes the topic is reconciled
//!   again against `wanted`.
//! - `parked`: waiters for topics not yet confirmed, answered when the topic is confirmed (and
//!   not busy), or with an error when the connection is lost.
//!
//! # Delivery
//!
//! Each envelope's records go to the engine in order. While the listener keeps up with the
//! broker it yields every 32 records of an envelope, so a session on a busy topic drains its
//! mailbox between the listener's turns and a burst of envelopes larger than the mailbox
//! reaches a session that keeps up; once 256 KiB of messages wait after the batch it takes
//! from, it delivers without yielding, and sessions that fall behind drop by their policies
//! (see [`give_way`]).
//!
//! # Connection loss
//!
//! The stream ending, a command failing, or a command or ping left unanswered past the
//! response timeout while no message arrived either (a silent network cut) all count as a
//! loss. A command on a connection that is still handing over messages is waited for longer,
//! up to 30 response timeouts: the broker's answer may wait behind a backlog of messages
//! (PostgreSQL sends every pending notification before its next reply), and it is logged.
//! On a loss the outage is counted and
//! logged, parked waiters fail, and the task reconnects with capped exponential backoff,
//! subscribing every wanted topic again; the outage ends, and is logged with its length, when all are confirmed. Messages
//! published by other instances in between are lost: the brokers' pub/sub is at-most-once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{oneshot, watch, Notify};

use crate::engine::{Engine, TopicObserver, SESSION_TURN};
use crate::envelope::Envelope;
use crate::error::PubSubError;
use crate::sync::atomic::{AtomicU64, Ordering::Relaxed};
use crate::sync::{lock, Mutex};
use crate::topic::Topic;

use super::backoff::Backoff;
use super::broker::{Broker, Inbound, Reason, Refusals, Subscription};
use super::error::BrokerError;
use super::stats::BrokerCounters;
use super::Shared;

/// Most channels named in one subscribe or unsubscribe command.
const CHANNELS_PER_COMMAND: usize = 1024;

/// Inbound messages handled before the task looks at its other inputs again.
const INBOUND_BATCH: usize = 64;

/// Records the listener delivers between yields while it keeps up: half a session's turn.
const GIVE_WAY_EVERY: u32 = SESSION_TURN / 2;

/// How far behind the subscription's readers the listener still gives way to sessions: bytes
/// of messages read and waiting after the batch it takes from (about 3,300 records of 64-byte
/// messages).
const GIVE_WAY_WITHIN: usize = 256 << 10;

/// Told by `subscribe_topic` once its topic is confirmed by the broker (or not).
pub(crate) type Waiter = oneshot::Sender<Result<(), BrokerError>>;

/// What the engine and `subscribe_topic` hand the task.
pub(crate) struct Intake {
    /// Written by the engine's observer calls (under each topic's writer lock) and by
    /// `subscribe_topic`; emptied by the task. Held only to insert or swap.
    pending: Mutex<Pending>,
    /// Wakes the task after `pending` gained something.
    wake: Notify,
}

#[derive(Default)]
struct Pending {
    /// Topic → whether it has a local subscriber; the latest report wins.
    changes: HashMap<Topic, bool>,
    /// In arrival order, after the change of their topic.
    waiters: Vec<(Topic, Waiter)>,
}

impl Intake {
    pub(crate) fn new() -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
        }
    }

    /// Asks the task to report when `topic` is confirmed by the broker (at once if it already
    /// is); the future ends with the broker's refusal or unconfirmed state, or `Stopped` if
    /// the task ends first. The request is made now, not when the future is first polled.
    pub(crate) fn confirmed(&self, topic: Topic) -> impl Future<Output = crate::Result<()>> + Send + 'static {
        let (waiter, confirmed) = oneshot::channel();
        lock(&self.pending).waiters.push((topic, waiter));
        self.wake.notify_one();
        async move {
            match confirmed.await {
                Ok(confirmed) => confirmed.map_err(Into::into),
                Err(_) => Err(PubSubError::Stopped),
            }
        }
    }

    fn change(&self, topic: &Topic, wanted: bool) {
        lock(&self.pending).changes.insert(topic.clone(), wanted);
        self.wake.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *lock(&self.pending))
    }
}

impl TopicObserver for Intake {
    fn topic_added(&self, topic: &Topic) {
        self.change(topic, true);
    }

    fn topic_removed(&self, topic: &Topic) {
        self.change(topic, false);
    }

    /// The broker's confirmation of `topic`'s channel; `Stopped` if the listener ends first.
    fn confirmation(&self, topic: &Topic) -> Option<BoxFuture<'static, crate::Result<()>>> {
        Some(self.confirmed(topic.clone()).boxed())
    }
}

/// The subscription connection task.
pub(crate) struct Listener<B: Broker> {
    shared: Arc<Shared<B>>,
    intake: Arc<Intake>,
    engine: Engine,
    shutdown: watch::Receiver<bool>,
    wanted: HashSet<Topic>,
    /// Channel → wanted topics it carries (at least 1; absent at 0).
    sharing: HashMap<String, usize>,
    confirmed: HashSet<Topic>,
    /// Topics whose subscription the broker refused on the current connection, and why.
    refused: HashMap<Topic, Reason>,
    busy: HashSet<Topic>,
    /// Topics to reconcile against `wanted` at the next chance.
    dirty: HashSet<Topic>,
    parked: HashMap<Topic, Vec<Waiter>>,
    /// When the current outage began, until every wanted topic is confirmed again.
    outage: Option<Instant>,
    /// Messages the current connection has handed over, read by commands in flight: an
    /// answer late while this grows waits behind a backlog, not on a dead connection.
    progress: Arc<AtomicU64>,
}

/// One open subscription connection and the commands in flight on it.
struct Live<S> {
    subscription: S,
    commands: FuturesUnordered<BoxFuture<'static, Done>>,
}

#[derive(Clone, Copy)]
enum Command {
    Subscribe,
    Unsubscribe,
    Ping,
}

struct Done {
    command: Command,
    topics: Vec<Topic>,
    /// The channels the broker refused (a subscribe's), or why the connection failed.
    result: Result<Refusals, Reason>,
}

/// How many response timeouts a command may wait for its answer while the connection keeps
/// handing over messages (the answer waits behind them) before the connection is taken as lost.
const BACKLOG_TIMEOUTS: u32 = 30;

enum Exit {
    Shutdown,
    Lost(String),
}

impl<B: Broker> Listener<B> {
    pub(crate) fn new(
        shared: Arc<Shared<B>>,
        intake: Arc<Intake>,
        engine: Engine,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared,
            intake,
            engine,
            shutdown,
            wanted: HashSet::new(),
            sharing: HashMap::new(),
            confirmed: HashSet::new(),
            refused: HashMap::new(),
            busy: HashSet::new(),
            dirty: HashSet::new(),
            parked: HashMap::new(),
            outage: None,
            progress: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) async fn run(mut self, first: B::Subscription) {
        let counters = &self.shared.counters;
        counters.connected.store(true, Relaxed);
        let mut connection = Some(first);
        loop {
            let subscription = match connection.take() {
                Some(subscription) => subscription,
                None => match self.reconnect().await {
                    Some(subscription) => subscription,
                    None => break,
                },
            };
            let live = Live {
                subscription,
                commands: FuturesUnordered::new(),
            };
            match self.serve(live).await {
                Exit::Shutdown => break,
                Exit::Lost(reason) => self.lost(&reason),
            }
        }
        let counters = &self.shared.counters;
        counters.connected.store(false, Relaxed);
        counters.channels.store(0, Relaxed);
        tracing::debug!(instance = %self.shared.instance, broker = B::NAME, "listener stopped");
    }

    async fn serve(&mut self, mut live: Live<B::Subscription>) -> Exit {
        let interval = self.shared.settings.health_check_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.take_intake(true);
        self.reconcile(&mut live);
        loop {
            if *self.shutdown.borrow() {
                return Exit::Shutdown;
            }
            tokio::select! {
                _ = self.shutdown.changed() => return Exit::Shutdown,
                message = live.subscription.next() => {
                    let Some(message) = message else {
                        return Exit::Lost("the connection closed".into());
                    };
                    if let Err(reason) = self.inbound(&live.subscription, message).await {
                        return Exit::Lost(reason);
                    }
                    for _ in 1..INBOUND_BATCH {
                        match live.subscription.next().now_or_never() {
                            Some(Some(message)) => {
                                if let Err(reason) = self.inbound(&live.subscription, message).await {
                                    return Exit::Lost(reason);
                                }
                            }
                            Some(None) => return Exit::Lost("the connection closed".into()),
                            None => break,
                        }
                    }
                }
                Some(done) = live.commands.next(), if !live.commands.is_empty() => {
                    if let Err(reason) = self.finish(done) {
                        return Exit::Lost(reason);
                    }
                    self.reconcile(&mut live);
                }
                () = self.intake.wake.notified() => {
                    self.take_intake(true);
                    self.reconcile(&mut live);
                }
                _ = ping.tick() => live.commands.push(command(
                    &self.shared,
                    &self.progress,
                    Command::Ping,
                    Vec::new(),
                    nothing_refused(live.subscription.ping()),
                )),
            }
        }
    }

    /// Applies what the intake gathered: topic changes first, then waiters.
    fn take_intake(&mut self, connected: bool) {
        let pending = self.intake.take();
        for (topic, wanted) in pending.changes {
            // Its subscribers changed: a refusal is tried again.
            self.refused.remove(&topic);
            if wanted {
                if self.wanted.insert(topic.clone()) {
                    *self
                        .sharing
                        .entry(self.shared.broker.channel(&topic))
                        .or_default() += 1;
                }
            } else if self.wanted.remove(&topic) {
                // Its sessions left: nothing to wait for.
                for waiter in self.parked.remove(&topic).into_iter().flatten() {
                    let _ = waiter.send(Ok(()));
                }
                let channel = self.shared.broker.channel(&topic);
                if let Some(users) = self.sharing.get_mut(&channel) {
                    *users -= 1;
                    if *users == 0 {
                        self.sharing.remove(&channel);
                    }
                }
            }
            self.dirty.insert(topic);
        }
        for (topic, waiter) in pending.waiters {
            if !self.wanted.contains(&topic) || self.is_settled(&topic) {
                // Confirmed, or no longer wanted (its sessions left again): nothing to wait for.
                let _ = waiter.send(Ok(()));
            } else if let Some(reason) = self.refused.get(&topic) {
                let _ = waiter.send(Err(BrokerError::SubscribeRefused {
                    reason: reason.clone(),
                }));
            } else if connected {
                self.parked.entry(topic).or_default().push(waiter);
            } else {
                let _ = waiter.send(Err(BrokerError::SubscribeUnconfirmed));
            }
        }
    }

    fn is_settled(&self, topic: &Topic) -> bool {
        self.confirmed.contains(topic) && !self.busy.contains(topic)
    }

    /// Starts the commands that bring the dirty topics to their wanted state.
    fn reconcile(&mut self, live: &mut Live<B::Subscription>) {
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for topic in self.dirty.drain() {
            if self.busy.contains(&topic) {
                // Reconciled again when its command completes.
                continue;
            }
            match (self.wanted.contains(&topic), self.confirmed.contains(&topic)) {
                (true, false) => subscribe.push(topic),
                (false, true) if self.sharing.contains_key(&self.shared.broker.channel(&topic)) => {
                    // Another wanted topic's channel too: it stays subscribed.
                    self.confirmed.remove(&topic);
                    self.shared.counters.channels.fetch_sub(1, Relaxed);
                }
                (false, true) => unsubscribe.push(topic),
                _ => {}
            }
        }
        for (command, topics) in [
            (Command::Subscribe, subscribe),
            (Command::Unsubscribe, unsubscribe),
        ] {
            for chunk in topics.chunks(CHANNELS_PER_COMMAND) {
                self.busy.extend(chunk.iter().cloned());
                let channels = chunk
                    .iter()
                    .map(|topic| self.shared.broker.channel(topic))
                    .collect();
                let sent = match command {
                    Command::Subscribe => live.subscription.subscribe(channels),
                    _ => nothing_refused(live.subscription.unsubscribe(channels)),
                };
                live.commands.push(self::command(
                    &self.shared,
                    &self.progress,
                    command,
                    chunk.to_vec(),
                    sent,
                ));
            }
        }
        self.end_outage_if_recovered();
    }

    /// Records a completed command. An error means the connection is lost.
    fn finish(&mut self, done: Done) -> Result<(), String> {
        for topic in &done.topics {
            self.busy.remove(topic);
        }
        let refusals = done.result?;
        let shared = Arc::clone(&self.shared);
        let counters = &shared.counters;
        match done.command {
            Command::Ping => {}
            Command::Subscribe => {
                for topic in done.topics {
                    let channel = shared.broker.channel(&topic);
                    if let Some((_, reason)) = refusals.iter().find(|(refused, _)| *refused == channel) {
                        self.refuse(topic, reason);
                        continue;
                    }
                    if self.confirmed.insert(topic.clone()) {
                        BrokerCounters::add(&counters.channels, 1);
                    }
                    if let Some(waiters) = self.parked.remove(&topic) {
                        for waiter in waiters {
                            let _ = waiter.send(Ok(()));
                        }
                    }
                    self.dirty.insert(topic);
                }
            }
            Command::Unsubscribe => {
                for topic in done.topics {
                    if self.confirmed.remove(&topic) {
                        counters.channels.fetch_sub(1, Relaxed);
                    }
                    self.dirty.insert(topic);
                }
            }
        }
        Ok(())
    }

    /// The broker refused `topic`'s subscription on a working connection: its waiters are told
    /// why, and it is not tried again until its subscribers change or the connection is
    /// replaced (a refusal is not an outage: nothing reconnects for it).
    fn refuse(&mut self, topic: Topic, reason: &str) {
        let skipped = self.shared.counters.subscribe_refusals.fetch_add(1, Relaxed) + 1;
        if skipped <= 10 || skipped.is_power_of_two() {
            tracing::warn!(
                instance = %self.shared.instance,
                broker = B::NAME,
                topic = %topic,
                reason,
                "the broker refused a topic's subscription; its sessions receive from this instance only"
            );
        }
        for waiter in self.parked.remove(&topic).into_iter().flatten() {
            let _ = waiter.send(Err(BrokerError::SubscribeRefused {
                reason: reason.to_string(),
            }));
        }
        self.refused.insert(topic, reason.to_string());
    }

    fn end_outage_if_recovered(&mut self) {
        let Some(began) = self.outage else {
            return;
        };
        let settled = |topic: &Topic| self.confirmed.contains(topic) || self.refused.contains_key(topic);
        if !self.busy.is_empty() || !self.wanted.iter().all(settled) {
            return;
        }
        self.outage = None;
        let length = began.elapsed();
        let counters = &self.shared.counters;
        BrokerCounters::add(&counters.reconnects, 1);
        BrokerCounters::add(
            &counters.outage_time,
            u64::try_from(length.as_nanos()).unwrap_or(u64::MAX),
        );
        counters.connected.store(true, Relaxed);
        tracing::info!(
            instance = %self.shared.instance,
            broker = B::NAME,
            outage_ms = length.as_millis() as u64,
            topics = self.wanted.len(),
            "the subscription connection is back; every topic is subscribed again"
        );
    }

    fn lost(&mut self, reason: &str) {
        let counters = &self.shared.counters;
        BrokerCounters::add(&counters.outages, 1);
        let behind = self
            .shared
            .broker
            .inbound_pressure()
            .is_some_and(|pressure| pressure.stalled_recently());
        if behind {
            BrokerCounters::add(&counters.slow_consumer_outages, 1);
            tracing::warn!(
                instance = %self.shared.instance,
                broker = B::NAME,
                slow_consumer_outages = counters.slow_consumer_outages.load(Relaxed),
                "the subscription connection was lost while this instance was a full backlog behind: most likely the server closed it as a slow consumer"
            );
        }
        counters.connected.store(false, Relaxed);
        counters.channels.store(0, Relaxed);
        self.confirmed.clear();
        self.busy.clear();
        // A new connection tries refused topics again.
        self.refused.clear();
        self.dirty = self.wanted.clone();
        for (_, waiters) in self.parked.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(BrokerError::SubscribeUnconfirmed));
            }
        }
        if self.outage.is_none() {
            self.outage = Some(Instant::now());
        }
        tracing::warn!(
            instance = %self.shared.instance,
            broker = B::NAME,
            reason,
            topics = self.wanted.len(),
            "lost the subscription connection; reconnecting (messages other instances publish meanwhile are lost)"
        );
    }

    /// Reconnects with backoff; `None` if the provider stops first.
    async fn reconnect(&mut self) -> Option<B::Subscription> {
        let shared = Arc::clone(&self.shared);
        let mut backoff = Backoff::from_settings(&shared.settings);
        loop {
            let attempt = backoff.after_next_delay(shared.open_subscription());
            tokio::pin!(attempt);
            loop {
                if *self.shutdown.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = self.shutdown.changed() => return None,
                    () = self.intake.wake.notified() => self.take_intake(false),
                    result = &mut attempt => match result {
                        Ok(subscription) => return Some(subscription),
                        Err(error) => {
                            tracing::debug!(
                                instance = %shared.instance,
                                broker = B::NAME,
                                attempt = backoff.attempts(),
                                %error,
                                "reconnecting the subscription connection failed"
                            );
                            break;
                        }
                    },
                }
            }
        }
    }

    /// One message from the broker: decode (the whole envelope is checked before any record
    /// is delivered), skip our own, deliver each record to local sessions in order. An error
    /// means the connection is lost.
    async fn inbound(&self, subscription: &B::Subscription, message: SubMessage<B>) -> Result<(), Reason> {
        self.progress.fetch_add(1, Relaxed);
        let shared = &*self.shared;
        let channel = <B::Subscription as Subscription>::channel(&message);
        let bytes = match subscription.envelope(&message).await {
            Ok(bytes) => bytes,
            Err(Inbound::Malformed(reason)) => {
                self.skip(channel, &reason);
                return Ok(());
            }
            Err(Inbound::Lost(reason)) => return Err(reason),
        };
        let envelope = match Envelope::decode(&bytes, &shared.envelope_limits) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.skip(channel, &error);
                return Ok(());
            }
        };
        let count = envelope.record_count() as u64;
        if envelope.origin == shared.instance {
            BrokerCounters::add(&shared.counters.echoes_skipped, count);
            return Ok(());
        }
        if !shared.broker.carries(channel, envelope.topic) {
            self.skip(channel, &"the envelope's topic is not the channel's");
            return Ok(());
        }
        BrokerCounters::add(&shared.counters.envelopes_received, 1);
        let mut received = 0;
        let mut since_yield = 0;
        for record in envelope.records() {
            let payload = record_payload(&bytes, record.payload);
            let delivered = match record.sender {
                Some(sender) => self.engine.broadcast_from(sender, envelope.topic, payload).await,
                None => self.engine.broadcast(envelope.topic, payload).await,
            };
            match delivered {
                Ok(_) => received += 1,
                Err(PubSubError::Stopped) => break,
                Err(error) => self.skip(channel, &error),
            }
            give_way(&mut since_yield, subscription).await;
        }
        BrokerCounters::add(&shared.counters.received, received);
        Ok(())
    }

    /// Counts and logs an inbound message skipped as malformed. The first ten are logged as
    /// warnings, then every power of two, so a flood cannot flood the log.
    fn skip(&self, channel: &str, reason: &dyn std::fmt::Display) {
        let skipped = self.shared.counters.malformed.fetch_add(1, Relaxed) + 1;
        if skipped <= 10 || skipped.is_power_of_two() {
            tracing::warn!(
                instance = %self.shared.instance,
                channel,
                broker = B::NAME,
                reason = %reason,
                skipped_total = skipped,
                "skipped a malformed message from the broker"
            );
        } else {
            tracing::debug!(channel, reason = %reason, skipped_total = skipped, "skipped a malformed message from the broker");
        }
    }
}

/// Yields to the scheduler every [`GIVE_WAY_EVERY`] records of an envelope delivered, while
/// less than [`GIVE_WAY_WITHIN`] bytes of messages read from the broker wait for the listener.
///
/// A busy topic's records come in envelopes of hundreds, and a read often brings several:
/// delivered back to back they would fill a session's mailbox in one go, past its capacity,
/// and the session's policy would drop messages it keeps up with. Yielding lets the sessions
/// it woke take their turn first; a session takes up to [`SESSION_TURN`] messages a turn,
/// more than the listener queues between yields, so a session that keeps up stays ahead.
/// A session's mailbox must hold at least [`GIVE_WAY_EVERY`] messages for this to help. An
/// envelope of fewer records (many topics, each message its own) never yields.
///
/// Once [`GIVE_WAY_WITHIN`] bytes wait after the batch being taken, the listener takes what
/// waits without giving way: sessions that cannot keep up drop by their policies, and the
/// backlog in front of the listener, where the broker would end up closing the whole
/// connection as a slow consumer, stops growing for the sessions' sake. A burst of more than
/// that many bytes (large payloads) is delivered without giving way too.
async fn give_way(since_yield: &mut u32, subscription: &impl Subscription) {
    *since_yield += 1;
    if *since_yield < GIVE_WAY_EVERY {
        return;
    }
    *since_yield = 0;
    if subscription
        .behind()
        .is_some_and(|behind| behind < GIVE_WAY_WITHIN)
    {
        tokio::task::yield_now().await;
    }
}

/// A record's payload for the engine: a slice of the envelope's own allocation when the
/// record is at least a quarter of it (a lone message, the common case with many topics),
/// so a queued message holds at most four times its own bytes; otherwise a copy, so that a
/// small message queued long never pins a whole batch.
fn record_payload(envelope: &Bytes, payload: &[u8]) -> Bytes {
    if payload.len().saturating_mul(4) >= envelope.len() {
        envelope.slice_ref(payload)
    } else {
        Bytes::copy_from_slice(payload)
    }
}

/// A command that refuses no channel, as a subscribe's result.
fn nothing_refused(
    sent: BoxFuture<'static, Result<(), Reason>>,
) -> BoxFuture<'static, Result<Refusals, Reason>> {
    sent.map(|done| done.map(|()| Refusals::new())).boxed()
}

type SubMessage<B> = <<B as Broker>::Subscription as Subscription>::Message;

/// A command in flight, bounded by the response timeout.
/// A command in flight, bounded by the response timeout; while the connection keeps handing
/// over messages (`progress` grows) its answer may wait behind them, up to
/// [`BACKLOG_TIMEOUTS`] response timeouts. The command is never given up while it may still
/// run: the broker answers one connection's commands in order, so the topic stays busy until
/// its answer, or until the connection is taken as lost.
fn command<B: Broker>(
    shared: &Shared<B>,
    progress: &Arc<AtomicU64>,
    command: Command,
    topics: Vec<Topic>,
    mut sent: BoxFuture<'static, Result<Refusals, Reason>>,
) -> BoxFuture<'static, Done> {
    let timeout = shared.settings.response_timeout;
    let (instance, progress) = (shared.instance, Arc::clone(progress));
    async move {
        let name = match command {
            Command::Subscribe => "subscribe",
            Command::Unsubscribe => "unsubscribe",
            Command::Ping => "ping",
        };
        let mut seen = progress.load(Relaxed);
        let mut waited = 0;
        let result = loop {
            match tokio::time::timeout(timeout, &mut sent).await {
                Ok(result) => break result,
                Err(_) => {
                    waited += 1;
                    let now = progress.load(Relaxed);
                    if now == seen || waited >= BACKLOG_TIMEOUTS {
                        break Err(format!(
                            "no answer to {name} within {} ms{}",
                            (timeout * waited).as_millis(),
                            if now == seen {
                                ""
                            } else {
                                " of a backlog of messages"
                            }
                        ));
                    }
                    if waited == 1 {
                        tracing::warn!(
                            %instance,
                            command = name,
                            "the broker's answer waits behind a backlog of messages"
                        );
                    }
                    seen = now;
                }
            }
        };
        Done {
            command,
            topics,
            result,
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(envelope: &Bytes, payload: &Bytes) -> bool {
        let range = envelope.as_ptr_range();
        range.contains(&payload.as_ptr())
    }

    #[test]
    fn a_record_of_a_quarter_of_its_envelope_shares_it_and_a_smaller_one_is_copied() {
        let all = Bytes::from(vec![7u8; 400]);
        let shared = all.clone();
        let quarter = record_payload(&shared, &all[300..]);
        assert!(shares(&all, &quarter));
        assert_eq!(&quarter[..], &all[300..]);
        let smaller = record_payload(&shared, &all[301..]);
        assert!(!shares(&all, &smaller));
        assert_eq!(&smaller[..], &all[301..]);
    }
}
