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
//! reconnected (capped exponential backoff). A broadcast that read the connection up just
//! before it went down may still queue its message; while reconnecting, the task drops such
//! messages as they arrive, so none waits for the connection to come back.
//!
//! # Refusals
//!
//! The broker answers each envelope of a pipeline on its own. One it refuses on a connection
//! that still works (a full queue, a missing table, a channel the user may not publish on) is
//! counted lost (`publish_errors`, `publish_refusals`); the others, and the connection, go on.
//!
//! # Acknowledgements
//!
//! An acknowledged broadcast's message carries a one-shot sender, told exactly once: `Ok` once
//! the broker's answer to the envelope that carries it was read, or
//! [`Unacknowledged`](super::Unacknowledged) saying why not: refused, no answer within the
//! response timeout, the connection lost (in flight, queued, or queued as it went down), or
//! the provider stopped first.
//!
//! # Stop
//!
//! On `stop()` the task closes the queue (a racing broadcast is refused with `Stopped`), sends
//! what is queued once, within the stop grace (no pipeline waits past it), and ends; after a
//! failure of the connection, or past the grace, the rest is counted lost and not sent.
//!
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};

use crate::envelope::{single_encoded_len, EnvelopeWriter, Record};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{lock, Mutex};
use crate::topic::Topic;

use super::backoff::Backoff;
use super::broker::{Broker, Outgoing, PipelineLost, Reason};
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

/// A batch's envelopes, encoded one after another in one buffer.
pub(crate) struct Coalesced<'a> {
    bytes: Vec<u8>,
    /// (topic, where its envelope stands in `bytes`, records), in queue order.
    envelopes: Vec<(&'a Topic, std::ops::Range<usize>, usize)>,
}

impl Coalesced<'_> {
    /// (topic, envelope, records), in queue order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&Topic, &[u8], usize)> + '_ {
        self.envelopes
            .iter()
            .map(|(topic, range, records)| (*topic, &self.bytes[range.clone()], *records))
    }
}

/// Encodes `batch` as envelopes: each run of consecutive messages on one topic becomes one
/// envelope, split where it would exceed `max_envelope_bytes`; all of them in one allocation.
pub(crate) fn coalesce(
    batch: &[Outbound],
    origin: crate::envelope::InstanceId,
    max_envelope_bytes: usize,
) -> Coalesced<'_> {
    // Enough for every message in an envelope of its own: one allocation for the batch.
    let capacity = batch
        .iter()
        .map(|message| single_encoded_len(&message.topic, &message.record()))
        .sum();
    let mut bytes = Vec::with_capacity(capacity);
    let mut envelopes = Vec::new();
    let mut open: Option<(&Topic, EnvelopeWriter)> = None;
    for message in batch {
        let record = message.record();
        let joins = open.as_ref().is_some_and(|(topic, writer)| {
            **topic == message.topic && writer.encoded_len() + record.encoded_len() <= max_envelope_bytes
        });
        if !joins {
            if let Some((topic, writer)) = open.take() {
                let (start, records) = (writer.start(), writer.record_count());
                bytes = writer.finish();
                envelopes.push((topic, start..bytes.len(), records));
            }
        }
        let (_, writer) = open.get_or_insert_with(|| {
            let writer = EnvelopeWriter::append_to(std::mem::take(&mut bytes), origin, &message.topic);
            (&message.topic, writer)
        });
        writer.push(record.sender, record.payload);
    }
    if let Some((topic, writer)) = open {
        let (start, records) = (writer.start(), writer.record_count());
        bytes = writer.finish();
        envelopes.push((topic, start..bytes.len(), records));
    }
    Coalesced { bytes, envelopes }
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

    pub(crate) fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_down(&self) {
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
    /// How long the flush at stop may take, from when the task sees the stop.
    flush_grace: Duration,
}

impl<B: Broker> Publisher<B> {
    pub(crate) fn new(
        shared: Arc<Shared<B>>,
        queue: mpsc::Receiver<Outbound>,
        shutdown: watch::Receiver<bool>,
        flush_grace: Duration,
    ) -> Self {
        Self {
            shared,
            queue,
            shutdown,
            flush_grace,
        }
    }

    /// Runs the task on `first`, a connection `start` opened (and marked up).
    pub(crate) async fn run(mut self, first: B::Publisher) {
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
                    if let Err((reason, unconfirmed)) = self.send(conn, &mut batch, None).await {
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
        // Stopped: whatever is still queued is not sent. After `close`, `recv` also waits for
        // a broadcast that had already reserved room, then ends.
        self.queue.close();
        let mut unsent = 0;
        while let Some(message) = self.queue.recv().await {
            self.discard(message, &Unacknowledged::Stopped);
            unsent += 1;
        }
        tracing::debug!(instance = %self.shared.instance, broker = B::NAME, unsent, "publisher stopped");
    }

    /// Sends `batch`, coalesced, as pipelines of at most [`PIPELINE_BYTES`] (or one larger
    /// envelope), each answered within the response timeout. Envelopes the broker refuses are
    /// counted lost and the rest go on. On a failure of the connection, the batch's messages
    /// not confirmed sent are counted lost, and returned with the reason.
    ///
    /// With a `deadline` (the flush at stop), no pipeline waits past it: one still unanswered
    /// then, and those not yet sent, are counted lost and answered
    /// [`Stopped`](Unacknowledged::Stopped).
    async fn send(
        &self,
        conn: &mut B::Publisher,
        batch: &mut [Outbound],
        deadline: Option<Instant>,
    ) -> Result<(), (Reason, usize)> {
        let shared = &*self.shared;
        // Acknowledged broadcasts, by their place in the batch (none, the common case, costs
        // no allocation).
        let mut acks = Acks::take(batch);
        let batch = &*batch;
        let mut records = Vec::new();
        let coalesced = coalesce(batch, shared.instance, shared.settings.batch_envelope_bytes);
        let envelopes: Vec<Outgoing<'_>> = coalesced
            .iter()
            .map(|(topic, envelope, count)| {
                records.push(count);
                Outgoing { topic, envelope }
            })
            .collect();
        let timeout = shared.settings.response_timeout;
        // `start..end`: the pipeline's envelopes; `confirmed`: the batch's messages before it.
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
            // At stop, the time left before the deadline, if shorter than the response timeout.
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let stopping = left.is_some_and(|left| left < timeout);
            let wait = left.map_or(timeout, |left| left.min(timeout));
            let failure = match tokio::time::timeout(wait, shared.broker.publish(conn, pipeline)).await {
                Ok(Ok(answers)) if answers.len() == pipeline.len() => {
                    self.answered(&answers, &records[start..end], confirmed, &mut acks);
                    None
                }
                Ok(Ok(answers)) => Some((
                    format!("{} answers to {} envelopes", answers.len(), pipeline.len()),
                    Unacknowledged::Lost("the broker's answers did not match the envelopes sent".into()),
                )),
                Ok(Err(PipelineLost { answered, reason })) => {
                    // What the broker answered before the connection failed counts as answered.
                    let answered = &answered[..answered.len().min(end - start)];
                    let records = &records[start..start + answered.len()];
                    self.answered(answered, records, confirmed, &mut acks);
                    confirmed += records.iter().sum::<usize>();
                    Some((reason.clone(), Unacknowledged::Lost(reason)))
                }
                Err(_) if stopping => Some((
                    "the provider stopped before the broker answered".into(),
                    Unacknowledged::Stopped,
                )),
                Err(_) => Some((
                    format!(
                        "no answer to {} envelopes ({messages} messages, {bytes} bytes) within {} ms",
                        pipeline.len(),
                        timeout.as_millis()
                    ),
                    Unacknowledged::TimedOut { after: timeout },
                )),
            };
            if let Some((reason, why)) = failure {
                // Down and counted before anyone is told, so a caller that reads the stats or
                // broadcasts again finds the connection down.
                shared.publisher.set_down();
                let unconfirmed = self.unconfirmed(batch.len() - confirmed);
                acks.answer(confirmed..batch.len(), &Err(why));
                return Err((reason, unconfirmed));
            }
            confirmed += messages;
            start = end;
        }
        Ok(())
    }

    /// Counts and acknowledges a pipeline the broker answered: `answers` and `records` (the
    /// messages each envelope carries) are per envelope; its first message is the batch's
    /// `first`. Counted before acknowledged, so a caller told `Ok` finds its message counted.
    fn answered(&self, answers: &[Result<(), Reason>], records: &[usize], first: usize, acks: &mut Acks) {
        let counters = &self.shared.counters;
        let (mut published, mut envelopes) = (0, 0);
        let mut refusal: Option<(&Reason, u64, usize)> = None;
        for (answer, &count) in answers.iter().zip(records) {
            match answer {
                Ok(()) => {
                    published += count;
                    envelopes += 1;
                }
                Err(reason) => {
                    let (_, refused, lost) = refusal.get_or_insert((reason, 0, 0));
                    *refused += 1;
                    *lost += count;
                }
            }
        }
        BrokerCounters::add(&counters.published, published as u64);
        BrokerCounters::add(&counters.envelopes_published, envelopes);
        if let Some((reason, refused, lost)) = refusal {
            self.refused(reason, refused, lost);
        }
        if acks.0.is_none() {
            return;
        }
        let mut place = first;
        for (answer, &count) in answers.iter().zip(records) {
            let answer = answer.clone().map_err(Unacknowledged::Refused);
            acks.answer(place..place + count, &answer);
            place += count;
        }
    }

    /// Counts `messages` lost with the connection (before their acknowledgements are told);
    /// returns them.
    fn unconfirmed(&self, messages: usize) -> usize {
        BrokerCounters::add(&self.shared.counters.publish_errors, messages as u64);
        messages
    }

    /// On stop: sends what broadcasts queued before it, once, within the flush grace, then
    /// gives up. The queue is closed first, so a broadcast racing the stop is refused rather
    /// than left behind. What is not confirmed sent (after a failure of the connection, or
    /// past the grace) is counted lost, and acknowledgements are told why.
    async fn flush(&mut self, conn: &mut B::Publisher, batch: &mut Vec<Outbound>) {
        let deadline = Instant::now() + self.flush_grace;
        self.queue.close();
        while let Some(message) = self.queue.recv().await {
            batch.push(message);
        }
        let mut failed: Option<Reason> = None;
        for chunk in batch.chunks_mut(self.shared.settings.max_pipeline) {
            let unsent = match &failed {
                _ if Instant::now() >= deadline => Unacknowledged::Stopped,
                None => {
                    if let Err((reason, _counted)) = self.send(conn, chunk, Some(deadline)).await {
                        failed = Some(reason);
                    }
                    continue;
                }
                Some(reason) => Unacknowledged::Lost(reason.clone()),
            };
            self.unconfirmed(chunk.len());
            Acks::take(chunk).answer(0..chunk.len(), &Err(unsent));
        }
        if let Some(reason) = failed {
            tracing::warn!(
                instance = %self.shared.instance,
                broker = B::NAME,
                reason,
                "sending what was queued at stop failed; the rest is counted lost"
            );
        }
        batch.clear();
    }

    /// The broker refused `refused` envelopes carrying `messages` messages on a connection
    /// that still works: the messages are counted lost and the connection kept. The first ten
    /// refusals are logged as warnings, then every power of two, so a broker that refuses
    /// everything cannot flood the log.
    fn refused(&self, reason: &str, refused: u64, messages: usize) {
        let counters = &self.shared.counters;
        let errors = counters
            .publish_errors
            .fetch_add(messages as u64, Ordering::Relaxed)
            + messages as u64;
        let before = counters.publish_refusals.fetch_add(refused, Ordering::Relaxed);
        let refusals = before + refused;
        let crossed_power_of_two = (before + 1..=refusals).any(u64::is_power_of_two);
        if before < 10 || crossed_power_of_two {
            tracing::warn!(
                instance = %self.shared.instance,
                broker = B::NAME,
                reason,
                lost = messages,
                publish_errors = errors,
                publish_refusals = refusals,
                "the broker refused a publish; the connection is kept"
            );
        }
    }

    /// The connection failed with `in_flight` messages unconfirmed (already counted): marks it
    /// down and drops what is queued.
    fn lost(&mut self, reason: &str, in_flight: usize) {
        self.shared.publisher.set_down();
        let queued = self.discard_queued(&Unacknowledged::Lost(reason.to_owned()));
        let counters = &self.shared.counters;
        BrokerCounters::add(&counters.publisher_outages, 1);
        tracing::warn!(
            instance = %self.shared.instance,
            broker = B::NAME,
            reason,
            lost = in_flight + queued,
            "lost the publishing connection; reconnecting (broadcasts reach local sessions only meanwhile)"
        );
    }

    /// Drops every queued message unsent, counted lost, telling acknowledged ones `why`;
    /// returns how many.
    fn discard_queued(&mut self, why: &Unacknowledged) -> usize {
        let mut discarded = 0;
        while let Ok(message) = self.queue.try_recv() {
            self.discard(message, why);
            discarded += 1;
        }
        discarded
    }

    /// Drops `message` unsent, counted lost, telling its acknowledgement, if it has one, `why`.
    fn discard(&self, mut message: Outbound, why: &Unacknowledged) {
        BrokerCounters::add(&self.shared.counters.publish_errors, 1);
        if let Some(ack) = message.ack.take() {
            let _ = ack.send(Err(why.clone()));
        }
    }

    /// Reconnects with backoff; `None` if the provider stops first. Meanwhile broadcasts see
    /// the connection down and queue nothing, but one that read it up just before it went down
    /// may still queue a message: such messages are dropped as they arrive (counted lost,
    /// acknowledgements told), not left waiting for the connection.
    async fn reconnect(&mut self) -> Option<B::Publisher> {
        let shared = Arc::clone(&self.shared);
        let mut backoff = Backoff::from_settings(&shared.settings);
        let stale = Unacknowledged::Lost("queued as the publishing connection went down".into());
        loop {
            let attempt = backoff.after_next_delay(shared.open_publisher());
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    _ = self.shutdown.changed() => return None,
                    result = &mut attempt => break result,
                    Some(message) = self.queue.recv() => self.discard(message, &stale),
                }
            };
            match result {
                Ok(connection) => {
                    self.discard_queued(&stale);
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
            }
            if *self.shutdown.borrow() {
                return None;
            }
        }
    }
}

#[cfg(test)]
#[path = "publisher_scripted.rs"]
mod scripted;

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
    fn shape(envelopes: &Coalesced<'_>) -> Vec<(String, Vec<Record>)> {
        envelopes
            .iter()
            .map(|(topic, bytes, count)| {
                let envelope = Envelope::decode(bytes, &EnvelopeLimits::default()).unwrap();
                assert_eq!((envelope.topic, envelope.record_count()), (topic.as_str(), count));
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
        let counts: Vec<usize> = envelopes.iter().map(|(_, _, n)| n).collect();
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
        assert_eq!(coalesce(&[], InstanceId(1), usize::MAX).iter().len(), 0);
    }
}
