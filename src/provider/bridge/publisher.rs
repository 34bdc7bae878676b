//! The publishing connection's task: coalesces queued broadcasts into envelopes and sends them
//! to the broker, pipelined.
//!
//! Broadcasting callers push their message (topic, sender, payload: no encoding, no copy of
//! the payload) on a bounded queue; they wait for room when it is full (backpressure, never
//! unbounded buffering). The one task drains the queue — everything waiting, up to
//! `max_pipeline` messages — and never waits for more: at rest a lone message goes out at
//! once, under load the batches grow on their own while the previous pipeline is in flight.
//!
//! # Coalescing
//!
//! Within what it drained, the task turns each run of *consecutive* messages on one topic into
//! one envelope (one broker message), as long as the envelope stays within the broker's batch
//! bound (the provider's `max_envelope_bytes`, or less where large envelopes take a slower
//! path); a longer run is split. Each
//! record keeps its own sender, so `broadcast_from` is honoured per message. Messages are never
//! moved past a message on another topic, so the queue's order is kept exactly; only the
//! number of broker messages shrinks. This is what lets a topic under load go through the
//! broker at the rate it forwards *messages*, not one broadcast per broker message.
//!
//! # Order ([G4])
//!
//! One queue, one task, one connection: envelopes reach the broker in queue order, records within
//! an envelope are in queue order, and the broker delivers one connection's messages to each
//! subscriber in order, so one publisher's messages arrive on every instance in publish order.
//!
//! # Connection loss
//!
//! A failed or unanswered pipeline, an idle ping left unanswered, or the broker's client
//! reporting the connection closed marks it down:
//! the messages in flight and those still queued are lost and counted (`publish_errors`), and
//! broadcasts refuse their remote part with
//! [`PublishUnavailable`](super::BrokerError::PublishUnavailable) until the task has
//! reconnected (capped exponential backoff).
//!
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};

use crate::envelope::{EnvelopeWriter, Record};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{lock, Mutex};
use crate::topic::Topic;

use super::backoff::Backoff;
use super::broker::{Broker, Outgoing, PublishFailure, Reason};
use super::error::Unacknowledged;
use super::stats::BrokerCounters;
use super::Shared;

/// One broadcast for the broker, already checked against every limit (the envelope limit as an
/// envelope of its own).
pub(crate) struct Outbound {
    pub(crate) topic: Topic,
    pub(crate) sender: Option<Box<str>>,
    pub(crate) payload: Bytes,
    /// For an acknowledged broadcast: told the broker's answer to its publish.
    pub(crate) ack: Option<Ack>,
    /// The payload's share of the queue's byte budget, given back when the message is
    /// dropped (sent, lost or discarded); none for a small payload.
    pub(crate) _budget: Option<OwnedSemaphorePermit>,
}

impl Outbound {
    fn record(&self) -> Record<'_> {
        Record {
            sender: self.sender.as_deref(),
            payload: &self.payload,
        }
    }
}

/// Encodes `batch` as envelopes: each run of consecutive messages on one topic becomes one
/// envelope, split where it would exceed `max_envelope_bytes`. Returns (topic, envelope,
/// records) in queue order.
pub(crate) fn coalesce(
    batch: &[Outbound],
    origin: crate::envelope::InstanceId,
    max_envelope_bytes: usize,
) -> Vec<(&Topic, Vec<u8>, usize)> {
    let mut envelopes = Vec::new();
    let mut open: Option<(&Topic, EnvelopeWriter)> = None;
    for message in batch {
        let record = message.record();
        let joins = open.as_ref().is_some_and(|(topic, writer)| {
            **topic == message.topic && writer.encoded_len() + record.encoded_len() <= max_envelope_bytes
        });
        if !joins {
            if let Some((topic, writer)) = open.take() {
                let records = writer.record_count();
                envelopes.push((topic, writer.finish(), records));
            }
        }
        let (_, writer) =
            open.get_or_insert_with(|| (&message.topic, EnvelopeWriter::new(origin, &message.topic)));
        writer.push(record.sender, record.payload);
    }
    if let Some((topic, writer)) = open {
        let records = writer.record_count();
        envelopes.push((topic, writer.finish(), records));
    }
    envelopes
}

/// Whether the publishing connection is up, read by every broadcast.
pub(crate) struct PublisherState {
    /// Written by the publisher task; read by broadcasts without ordering anything else (a
    /// broadcast that reads a stale `true` queues a message the task then counts as lost).
    up: AtomicBool,
    /// When the connection went down; meaningful while `up` is false.
    down_since: Mutex<Instant>,
}

impl PublisherState {
    pub(crate) fn new() -> Self {
        Self {
            up: AtomicBool::new(false),
            down_since: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn down_for(&self) -> Duration {
        lock(&self.down_since).elapsed()
    }

    fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    fn set_down(&self) {
        *lock(&self.down_since) = Instant::now();
        self.up.store(false, Ordering::Relaxed);
    }
}

/// Where an acknowledged broadcast waits for the broker's answer to its publish.
pub(crate) type Ack = oneshot::Sender<Result<(), Unacknowledged>>;

/// The acknowledgements a batch's acknowledged broadcasts wait for, by place in the batch.
struct Acks(Option<Vec<Option<Ack>>>);

impl Acks {
    /// Takes them out of `batch`.
    fn take(batch: &mut [Outbound]) -> Self {
        if batch.iter().all(|message| message.ack.is_none()) {
            return Acks(None);
        }
        Acks(Some(batch.iter_mut().map(|message| message.ack.take()).collect()))
    }

    /// Tells those in `places` the broker's answer.
    fn answer(&mut self, places: std::ops::Range<usize>, answer: &Result<(), Unacknowledged>) {
        let Some(acks) = &mut self.0 else {
            return;
        };
        for ack in acks[places].iter_mut().filter_map(Option::take) {
            let _ = ack.send(answer.clone());
        }
    }
}

/// Most bytes of envelopes sent in one pipeline (one response timeout), so a batch of large
/// messages is answered piece by piece rather than all within one timeout. A single larger
/// envelope travels alone.
const PIPELINE_BYTES: usize = 4 << 20;

pub(crate) struct Publisher<B: Broker> {
    shared: Arc<Shared<B>>,
    queue: mpsc::Receiver<Outbound>,
    shutdown: watch::Receiver<bool>,
}

impl<B: Broker> Publisher<B> {
    pub(crate) fn new(
        shared: Arc<Shared<B>>,
        queue: mpsc::Receiver<Outbound>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared,
            queue,
            shutdown,
        }
    }

    pub(crate) async fn run(mut self, first: B::Publisher) {
        self.shared.publisher.set_up();
        let max = self.shared.settings.max_pipeline;
        let idle = self.shared.settings.health_check_interval;
        let mut batch = Vec::with_capacity(max);
        let mut closed = self.shared.broker.publisher_closed(&first);
        let mut connection = Some(first);
        loop {
            let Some(conn) = connection.as_mut() else {
                connection = self.reconnect().await;
                match &connection {
                    Some(conn) => closed = self.shared.broker.publisher_closed(conn),
                    None => break,
                }
                continue;
            };
            if *self.shutdown.borrow() {
                self.flush(conn, &mut batch).await;
                break;
            }
            tokio::select! {
                _ = self.shutdown.changed() => {
                    self.flush(conn, &mut batch).await;
                    break;
                }
                received = self.queue.recv_many(&mut batch, max) => {
                    if received == 0 {
                        break;
                    }
                    if let Err((reason, unconfirmed)) = self.send(conn, &mut batch).await {
                        self.lost(&reason, unconfirmed);
                        connection = None;
                    }
                    batch.clear();
                }
                () = &mut closed => {
                    self.lost("the connection closed", 0);
                    connection = None;
                }
                () = tokio::time::sleep(idle) => {
                    let timeout = self.shared.settings.response_timeout;
                    let answered = tokio::time::timeout(timeout, self.shared.broker.ping_publisher(conn)).await;
                    let failure = match answered {
                        Ok(Ok(())) => None,
                        Ok(Err(reason)) => Some(reason),
                        Err(_) => Some(format!("no answer to a ping within {} ms", timeout.as_millis())),
                    };
                    if let Some(reason) = failure {
                        self.lost(&reason, 0);
                        connection = None;
                    }
                }
            }
        }
        self.shared.publisher.set_down();
        tracing::debug!(instance = %self.shared.instance, broker = B::NAME, "publisher stopped");
    }

    /// Sends `batch`, coalesced, as pipelines of at most [`PIPELINE_BYTES`] (or one larger
    /// envelope), each answered within the response timeout. On a failure, how many of the
    /// batch's messages were not confirmed sent.
    async fn send(&self, conn: &mut B::Publisher, batch: &mut [Outbound]) -> Result<(), (Reason, usize)> {
        let shared = &*self.shared;
        // Acknowledged broadcasts, by their place in the batch (none, the common case, costs
        // no allocation).
        let mut acks = Acks::take(batch);
        let batch = &*batch;
        let mut records = Vec::new();
        let envelopes: Vec<Outgoing<'_>> =
            coalesce(batch, shared.instance, shared.settings.batch_envelope_bytes)
                .into_iter()
                .map(|(topic, envelope, count)| {
                    records.push(count);
                    Outgoing { topic, envelope }
                })
                .collect();
        let timeout = shared.settings.response_timeout;
        let (mut start, mut confirmed) = (0, 0);
        while start < envelopes.len() {
            let mut end = start + 1;
            let mut bytes = envelopes[start].envelope.len();
            while end < envelopes.len() && bytes + envelopes[end].envelope.len() <= PIPELINE_BYTES {
                bytes += envelopes[end].envelope.len();
                end += 1;
            }
            let messages: usize = records[start..end].iter().sum();
            let pipeline = &envelopes[start..end];
            match tokio::time::timeout(timeout, shared.broker.publish(conn, pipeline)).await {
                Ok(Ok(())) => {
                    BrokerCounters::add(&shared.counters.published, messages as u64);
                    BrokerCounters::add(&shared.counters.envelopes_published, pipeline.len() as u64);
                    acks.answer(confirmed..confirmed + messages, &Ok(()));
                }
                Ok(Err(PublishFailure::Refused(reason))) => {
                    self.refused(&reason, messages);
                    acks.answer(
                        confirmed..confirmed + messages,
                        &Err(Unacknowledged::Refused(reason.clone())),
                    );
                }
                Ok(Err(PublishFailure::Lost(reason))) => {
                    acks.answer(confirmed..batch.len(), &Err(Unacknowledged::Lost(reason.clone())));
                    return Err((reason, batch.len() - confirmed));
                }
                Err(_) => {
                    let reason = format!(
                        "no answer to {} envelopes ({messages} messages, {bytes} bytes) within {} ms",
                        pipeline.len(),
                        timeout.as_millis()
                    );
                    acks.answer(
                        confirmed..batch.len(),
                        &Err(Unacknowledged::TimedOut { after: timeout }),
                    );
                    return Err((reason, batch.len() - confirmed));
                }
            }
            confirmed += messages;
            start = end;
        }
        Ok(())
    }

    /// On stop: sends what broadcasts queued before it, once, then gives up.
    async fn flush(&mut self, conn: &mut B::Publisher, batch: &mut Vec<Outbound>) {
        while let Ok(message) = self.queue.try_recv() {
            batch.push(message);
        }
        for chunk in batch.chunks_mut(self.shared.settings.max_pipeline) {
            if let Err((_, unconfirmed)) = self.send(conn, chunk).await {
                BrokerCounters::add(&self.shared.counters.publish_errors, unconfirmed as u64);
            }
        }
        batch.clear();
    }

    /// The broker refused a pipeline on a connection that still works: its messages are
    /// counted lost and the connection kept. The first ten are logged as warnings, then every
    /// power of two, so a broker that refuses everything cannot flood the log.
    fn refused(&self, reason: &str, messages: usize) {
        let counters = &self.shared.counters;
        let errors = counters
            .publish_errors
            .fetch_add(messages as u64, Ordering::Relaxed)
            + messages as u64;
        let refusals = counters.publish_refusals.fetch_add(1, Ordering::Relaxed) + 1;
        if refusals <= 10 || refusals.is_power_of_two() {
            tracing::warn!(
                instance = %self.shared.instance,
                broker = B::NAME,
                reason,
                lost = messages,
                publish_errors = errors,
                "the broker refused a publish; the connection is kept"
            );
        }
    }

    fn lost(&mut self, reason: &str, in_flight: usize) {
        self.shared.publisher.set_down();
        let queued = self.discard_queued();
        let counters = &self.shared.counters;
        BrokerCounters::add(&counters.publisher_outages, 1);
        BrokerCounters::add(&counters.publish_errors, (in_flight + queued) as u64);
        tracing::warn!(
            instance = %self.shared.instance,
            broker = B::NAME,
            reason,
            lost = in_flight + queued,
            "lost the publishing connection; reconnecting (broadcasts reach local sessions only meanwhile)"
        );
    }

    fn discard_queued(&mut self) -> usize {
        let mut discarded = 0;
        while self.queue.try_recv().is_ok() {
            discarded += 1;
        }
        discarded
    }

    async fn reconnect(&mut self) -> Option<B::Publisher> {
        let shared = Arc::clone(&self.shared);
        let mut backoff = Backoff::from_settings(&shared.settings);
        loop {
            let attempt = backoff.after_next_delay(shared.open_publisher());
            tokio::select! {
                _ = self.shutdown.changed() => return None,
                result = attempt => match result {
                    Ok(connection) => {
                        // Raced in before broadcasts saw the connection down: too late to send.
                        let stale = self.discard_queued();
                        BrokerCounters::add(&shared.counters.publish_errors, stale as u64);
                        let down_for = shared.publisher.down_for();
                        shared.publisher.set_up();
                        BrokerCounters::add(&shared.counters.publisher_reconnects, 1);
                        tracing::info!(
                            instance = %shared.instance,
                            broker = B::NAME,
                            outage_ms = down_for.as_millis() as u64,
                            attempts = backoff.attempts(),
                            "the publishing connection is back"
                        );
                        return Some(connection);
                    }
                    Err(error) => tracing::debug!(
                        instance = %shared.instance,
                        broker = B::NAME,
                        attempt = backoff.attempts(),
                        %error,
                        "reconnecting the publishing connection failed"
                    ),
                },
            }
            if *self.shutdown.borrow() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, EnvelopeLimits, InstanceId};

    fn outbound(topic: &str, sender: Option<&str>, payload: &str) -> Outbound {
        Outbound {
            topic: Topic::from(topic),
            sender: sender.map(Box::from),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            ack: None,
            _budget: None,
        }
    }

    /// (sender, payload) of one message in an envelope.
    type Record = (Option<String>, String);

    /// (topic, [(sender, payload)]) for each envelope.
    fn shape(envelopes: &[(&Topic, Vec<u8>, usize)]) -> Vec<(String, Vec<Record>)> {
        envelopes
            .iter()
            .map(|(topic, bytes, count)| {
                let envelope = Envelope::decode(bytes, &EnvelopeLimits::default()).unwrap();
                assert_eq!(
                    (envelope.topic, envelope.record_count()),
                    (topic.as_str(), *count)
                );
                let records = envelope
                    .records()
                    .map(|r| {
                        (
                            r.sender.map(String::from),
                            String::from_utf8_lossy(r.payload).into(),
                        )
                    })
                    .collect();
                (topic.to_string(), records)
            })
            .collect()
    }

    #[test]
    fn coalesce_joins_only_consecutive_runs_of_one_topic() {
        let batch = [
            outbound("a", None, "1"),
            outbound("a", Some("tab"), "2"),
            outbound("b", None, "3"),
            outbound("a", None, "4"),
            outbound("a", None, "5"),
        ];
        let envelopes = coalesce(&batch, InstanceId(1), usize::MAX);
        let s = |x: &str| x.to_string();
        assert_eq!(
            shape(&envelopes),
            [
                (s("a"), vec![(None, s("1")), (Some(s("tab")), s("2"))]),
                (s("b"), vec![(None, s("3"))]),
                (s("a"), vec![(None, s("4")), (None, s("5"))]),
            ]
        );
    }

    #[test]
    fn coalesce_splits_a_run_at_the_envelope_limit() {
        let batch: Vec<Outbound> = (0..5).map(|i| outbound("t", None, &format!("{i:04}"))).collect();
        let one = crate::envelope::single_encoded_len("t", &batch[0].record());
        // Room for two records per envelope, not three.
        let limit = one + batch[0].record().encoded_len();
        let envelopes = coalesce(&batch, InstanceId(1), limit);
        let counts: Vec<usize> = envelopes.iter().map(|(_, _, n)| *n).collect();
        assert_eq!(counts, [2, 2, 1]);
        assert!(envelopes.iter().all(|(_, bytes, _)| bytes.len() <= limit));
        let payloads: Vec<String> = shape(&envelopes)
            .into_iter()
            .flat_map(|(_, records)| records.into_iter().map(|(_, p)| p))
            .collect();
        assert_eq!(payloads, ["0000", "0001", "0002", "0003", "0004"]);
    }

    #[test]
    fn coalesce_of_nothing_is_nothing() {
        assert!(coalesce(&[], InstanceId(1), usize::MAX).is_empty());
    }
}
