//! NATS as the bridge's broker: subjects, the two connections, `PUB` pipelines and `SUB` /
//! `UNSUB`, each batch confirmed by a `PING` / `PONG` round trip.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::config::{Endpoint, NatsConfig};
use super::connection::{Connection, ConnectionSettings, ERRORS_DROPPED};
use super::subject::SubjectNames;
use super::wire::{self, Message};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{
    Answers, Broker, ConnectError, Inbound, Outgoing, PipelineLost, Reason, Refusals, Subscription,
};
use crate::provider::bridge::handoff::{handoff, Handoff, Pressure, Taker};
use crate::provider::bridge::BrokerError;
use crate::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use crate::sync::{lock, Arc, Mutex};

/// A NATS server, as the bridge sees it.
pub(crate) struct NatsBroker {
    pub(crate) config: NatsConfig,
    endpoint: Endpoint,
    subjects: SubjectNames,
    instance: InstanceId,
    /// The server's `max_payload` from the latest `INFO` on either connection (the configured
    /// `max_envelope_bytes` before the first). Written by the connections; read relaxed by
    /// `check_envelope` and `publish`, a lone value ordering nothing else.
    max_payload: Arc<AtomicUsize>,
    /// The stalls of the subscription connections' readers.
    pressure: Arc<Pressure>,
}

impl NatsBroker {
    pub(crate) fn new(config: NatsConfig, endpoint: Endpoint, instance: InstanceId) -> Self {
        Self {
            subjects: SubjectNames::new(&config.subject_prefix),
            max_payload: Arc::new(AtomicUsize::new(config.max_envelope_bytes)),
            pressure: Arc::new(Pressure::default()),
            endpoint,
            instance,
            config,
        }
    }

    /// The largest envelope sent: `max_envelope_bytes`, or the server's `max_payload` if
    /// smaller.
    pub(crate) fn envelope_limit(&self) -> usize {
        self.config.max_envelope_bytes.min(self.max_payload.load(Relaxed))
    }

    async fn connect(
        &self,
        role: &'static str,
        messages: Option<Handoff<Message>>,
    ) -> Result<Connection, ConnectError> {
        Connection::open(
            ConnectionSettings {
                endpoint: &self.endpoint,
                instance: self.instance,
                role,
                max_control_line: self.config.max_control_line,
                max_inbound_payload: self.config.max_envelope_bytes,
                max_payload: Arc::clone(&self.max_payload),
            },
            messages,
        )
        .await
    }
}

impl Broker for NatsBroker {
    type Subscription = NatsSubscription;
    type Publisher = Connection;

    const NAME: &'static str = "nats";

    fn target(&self) -> String {
        self.endpoint.target()
    }

    fn channel(&self, topic: &str) -> String {
        self.subjects.subject(topic)
    }

    fn carries(&self, channel: &str, topic: &str) -> bool {
        self.subjects.carries(channel, topic)
    }

    fn check_envelope(&self, envelope_len: usize) -> Result<(), BrokerError> {
        BrokerError::check_envelope_len(envelope_len, self.envelope_limit())
    }

    async fn open_subscription(&self) -> Result<NatsSubscription, ConnectError> {
        let (forward, messages) = handoff(Arc::clone(&self.pressure));
        let connection = self.connect("subscribe", Some(forward)).await?;
        Ok(NatsSubscription {
            connection: Arc::new(connection),
            sids: Arc::new(Mutex::new(Sids::default())),
            messages,
        })
    }

    async fn open_publisher(&self) -> Result<Connection, ConnectError> {
        self.connect("publish", None).await
    }

    /// One `PUB` per envelope and a `PING`, in one write; resolves on the `PONG`. Core NATS
    /// does not answer a `PUB`: the `PONG` says the server has processed every one of them.
    /// An envelope over the server's current `max_payload` is refused here, unsent (the
    /// server would close the connection). The server reports a `PUB` it refuses for
    /// permissions as `-ERR 'Permissions Violation for Publish to "<subject>"'`, before the
    /// `PONG`: every envelope of the pipeline on that subject is answered refused.
    ///
    /// A connection lost before the `PONG` leaves every envelope of the pipeline unconfirmed:
    /// the server does not answer a `PUB`, so nothing tells which of them it processed.
    async fn publish(
        &self,
        publisher: &mut Connection,
        envelopes: &[Outgoing<'_>],
    ) -> Result<Answers, PipelineLost> {
        let limit = self.max_payload.load(Relaxed);
        let bytes: usize = envelopes
            .iter()
            .map(|outgoing| outgoing.envelope.len() + 64)
            .sum();
        let mut commands = Vec::with_capacity(bytes);
        let mut answers = Vec::with_capacity(envelopes.len());
        for outgoing in envelopes {
            if outgoing.envelope.len() > limit {
                answers.push(Err(format!(
                    "envelope is {} bytes; the server's max_payload is {limit}",
                    outgoing.envelope.len()
                )));
            } else {
                let subject = |out: &mut Vec<u8>| self.subjects.push_subject(out, outgoing.topic);
                wire::put_pub(&mut commands, subject, outgoing.envelope);
                answers.push(Ok(()));
            }
        }
        let errors = publisher.round_trip(commands).await?;
        if errors.iter().any(|error| error == ERRORS_DROPPED) {
            // Some refusals were not kept: none of the batch can be said to be taken.
            for answer in answers.iter_mut().filter(|answer| answer.is_ok()) {
                *answer = Err("the server reported more errors for this batch than were kept".into());
            }
        }
        for error in errors {
            let refused = refused_subject(&error);
            let mut attributed = false;
            for (answer, outgoing) in answers.iter_mut().zip(envelopes) {
                if refused.is_some_and(|refused| self.subjects.carries(refused, outgoing.topic)) {
                    *answer = Err(format!("PUB refused: {error}"));
                    attributed = true;
                }
            }
            if !attributed {
                tracing::warn!(instance = %self.instance, error, "nats server error on the publishing connection, not attributed to a message");
            }
        }
        Ok(answers)
    }

    async fn ping_publisher(&self, publisher: &mut Connection) -> Result<(), Reason> {
        publisher.round_trip(Vec::new()).await.map(drop)
    }

    fn inbound_pressure(&self) -> Option<&Pressure> {
        Some(&self.pressure)
    }

    fn publisher_closed(&self, publisher: &Connection) -> BoxFuture<'static, ()> {
        publisher.closed()
    }
}

/// The subject of `-ERR 'Permissions Violation for Publish to "<subject>"'`.
fn refused_subject(error: &str) -> Option<&str> {
    error
        .strip_prefix("Permissions Violation for Publish to \"")?
        .strip_suffix('"')
}

/// Subscription ids by subject, on the subscription connection.
#[derive(Default)]
struct Sids {
    by_subject: HashMap<String, u64>,
    next: u64,
}

/// The subscription connection: `SUB` / `UNSUB` with a round trip each batch, and the
/// messages its reader hands on, in arrival order.
pub(crate) struct NatsSubscription {
    connection: Arc<Connection>,
    /// Written by `subscribe` and `unsubscribe` before they write their commands.
    sids: Arc<Mutex<Sids>>,
    messages: Taker<Message>,
}

impl NatsSubscription {
    /// Sends `commands` and waits for the round trip; the `-ERR`s the server sent meanwhile
    /// are logged by the reader and returned.
    fn confirm(&self, commands: Vec<u8>) -> BoxFuture<'static, Result<Vec<String>, Reason>> {
        self.connection.round_trip(commands).boxed()
    }
}

/// Which of `channels`, just subscribed, the server refused, given the `-ERR`s it sent before
/// the round trip's `PONG`: a permissions violation names its subject; any other error (a
/// subscription limit) names none, so every channel not named otherwise is taken as refused by
/// it, never as confirmed.
fn refused_channels(channels: &[String], errors: &[String]) -> Refusals {
    let mut refused = Refusals::new();
    let mut unnamed: Option<&String> = None;
    for error in errors {
        match refused_subscription(error) {
            Some(subject) => {
                if let Some(channel) = channels.iter().find(|channel| channel.as_str() == subject) {
                    refused.push((channel.clone(), format!("SUB refused: {error}")));
                }
            }
            None => unnamed = unnamed.or(Some(error)),
        }
    }
    if let Some(error) = unnamed {
        for channel in channels {
            if !refused.iter().any(|(named, _)| named == channel) {
                refused.push((channel.clone(), format!("SUB not confirmed: {error}")));
            }
        }
    }
    refused
}

/// The subject of `-ERR 'Permissions Violation for Subscription to "<subject>"'`.
fn refused_subscription(error: &str) -> Option<&str> {
    let subject = error.strip_prefix("Permissions Violation for Subscription to \"")?;
    // The server may add a queue group after the subject: `"<subject>" using queue "<q>"`.
    subject.split('"').next()
}

impl Subscription for NatsSubscription {
    type Message = Message;

    /// `SUB`s and a round trip. A channel the server refused loses its subscription id (an
    /// `UNSUB` for it goes out, in case the server kept it), so a later subscribe tries again.
    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<Refusals, Reason>> {
        let mut commands = Vec::new();
        {
            let mut sids = lock(&self.sids);
            for subject in &channels {
                if sids.by_subject.contains_key(subject) {
                    continue;
                }
                sids.next += 1;
                let sid = sids.next;
                wire::put_sub(&mut commands, subject, sid);
                sids.by_subject.insert(subject.clone(), sid);
            }
        }
        let confirmed = self.confirm(commands);
        let (connection, sids) = (Arc::clone(&self.connection), Arc::clone(&self.sids));
        async move {
            let errors = confirmed.await?;
            let refused = refused_channels(&channels, &errors);
            if !refused.is_empty() {
                let mut unsubscribe = Vec::new();
                {
                    let mut sids = lock(&sids);
                    for (channel, _) in &refused {
                        if let Some(sid) = sids.by_subject.remove(channel) {
                            wire::put_unsub(&mut unsubscribe, sid);
                        }
                    }
                }
                connection.round_trip(unsubscribe).await?;
            }
            Ok(refused)
        }
        .boxed()
    }

    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<(), Reason>> {
        let mut commands = Vec::new();
        {
            let mut sids = lock(&self.sids);
            for subject in &channels {
                if let Some(sid) = sids.by_subject.remove(subject) {
                    wire::put_unsub(&mut commands, sid);
                }
            }
        }
        self.confirm(commands).map(|done| done.map(drop)).boxed()
    }

    fn ping(&self) -> BoxFuture<'static, Result<(), Reason>> {
        self.connection
            .round_trip(Vec::new())
            .map(|answered| answered.map(drop))
            .boxed()
    }

    /// Cancel-safe, as the hand-off's `take`.
    async fn next(&mut self) -> Option<Message> {
        self.messages.take().await
    }

    fn behind(&self) -> Option<usize> {
        Some(self.messages.behind())
    }

    fn channel(message: &Message) -> &str {
        message.subject()
    }

    async fn envelope<'a>(&'a self, message: &'a Message) -> Result<Bytes, Inbound> {
        if message.headers {
            return Err(Inbound::Malformed(
                "a message with NATS headers (no instance publishes with headers)".into(),
            ));
        }
        Ok(message.payload.clone())
    }
}
