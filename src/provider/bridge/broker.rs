//! What a broker implements for the bridge: its two connections, how a topic names a
//! channel, and how envelopes go out and come in.
//!
//! The bridge owns everything else: the tasks, their state, reconnection, counting and logging.
//! Each method does one round trip (or prepares one) and reports failure as a reason for the
//! log; the bridge bounds each by [`response_timeout`](super::settings::BridgeSettings) and
//! takes any failure of a command on a connection as the loss of that connection.

use std::future::Future;

use bytes::Bytes;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::error::BrokerError;
use crate::topic::Topic;

/// What opening a connection failed with.
pub(crate) type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// Why a command on a connection failed, or why the broker refused it, for the log.
pub(crate) type Reason = String;

/// One envelope for the broker: the topic it is on and its encoded bytes.
#[derive(Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub(crate) topic: &'a Topic,
    pub(crate) envelope: &'a [u8],
}

/// A message broker the bridge can carry envelopes over.
pub(crate) trait Broker: Send + Sync + Sized + 'static {
    /// An open subscription connection.
    type Subscription: Subscription;
    /// An open publishing connection.
    type Publisher: Send + 'static;

    /// The broker's kind, for logs and errors: `redis`, `postgres`, `nats`.
    const NAME: &'static str;

    /// The server, for messages: never the password.
    fn target(&self) -> String;

    /// The broker channel that carries `topic`.
    fn channel(&self, topic: &str) -> String;

    /// Whether `channel` is the channel of `topic` (an inbound envelope's topic is checked
    /// against the channel it came on).
    fn carries(&self, channel: &str, topic: &str) -> bool;

    /// Refuses a message whose envelope, alone, would be `envelope_len` bytes, if the broker
    /// cannot carry it. Called before the message is delivered anywhere.
    fn check_envelope(&self, envelope_len: usize) -> Result<(), BrokerError>;

    /// Opens the subscription connection, with no channel subscribed.
    fn open_subscription(&self) -> impl Future<Output = Result<Self::Subscription, ConnectError>> + Send;

    /// Opens the publishing connection.
    fn open_publisher(&self) -> impl Future<Output = Result<Self::Publisher, ConnectError>> + Send;

    /// Sends `envelopes` in order, pipelined; resolves once the broker has answered every one,
    /// with its answer to each, in order, or with why the connection failed and the answers
    /// read before it did.
    fn publish(
        &self,
        publisher: &mut Self::Publisher,
        envelopes: &[Outgoing<'_>],
    ) -> impl Future<Output = Result<Answers, PipelineLost>> + Send;

    /// A round trip on an idle publishing connection, so that a silent one is noticed. A
    /// broker with housekeeping to do on its publishing connection does it here.
    fn ping_publisher(
        &self,
        publisher: &mut Self::Publisher,
    ) -> impl Future<Output = Result<(), Reason>> + Send;
    /// The stalls of the subscription connections' readers, for a broker whose client hands
    /// messages on through the bridge's [hand-off](super::handoff).
    fn inbound_pressure(&self) -> Option<&super::handoff::Pressure> {
        None
    }

    /// Resolves once `publisher`'s connection is known to have closed, so that an idle one is
    /// noticed at once rather than at its next use. A client that does not tell never
    /// resolves it; its loss is found by the next send or ping.
    fn publisher_closed(&self, publisher: &Self::Publisher) -> BoxFuture<'static, ()> {
        let _ = publisher;
        futures_util::future::pending().boxed()
    }
}

/// An open subscription connection: commands, each resolving once the broker confirmed it,
/// and the stream of inbound messages.
pub(crate) trait Subscription: Send + Sync + 'static {
    /// One inbound message.
    type Message: Send + 'static;

    /// Subscribes `channels`; resolves once the broker confirmed them, with the ones it
    /// refused on a connection that goes on (a permissions violation, a subscription limit)
    /// and why, or with why the connection failed.
    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<Refusals, Reason>>;

    /// Unsubscribes `channels`.
    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<(), Reason>>;

    /// A round trip, so that a silent connection is noticed.
    fn ping(&self) -> BoxFuture<'static, Result<(), Reason>>;

    /// The next inbound message; `None` once the connection has closed.
    fn next(&mut self) -> impl Future<Output = Option<Self::Message>> + Send;

    /// How far the listener is behind the subscription's readers: bytes of messages read from
    /// the broker that wait after those being taken. `None` if the subscription cannot tell;
    /// the listener then never gives way to the sessions it wakes (see the listener's
    /// `give_way`).
    fn behind(&self) -> Option<usize> {
        None
    }

    /// The channel `message` came on.
    fn channel(message: &Self::Message) -> &str;

    /// The envelope `message` carries, or why it is skipped.
    fn envelope<'a>(
        &'a self,
        message: &'a Self::Message,
    ) -> impl Future<Output = Result<Bytes, Inbound>> + Send + 'a;
}

/// The broker's answer to each envelope of a pipeline, in order: `Ok` if it took it, or why
/// it refused it on a connection that still works (a full queue, a missing table). A refused
/// envelope's messages are counted lost; the connection is kept. A failure of the connection
/// itself is the pipeline's `Err`: it is taken as lost and reconnected.
pub(crate) type Answers = Vec<Result<(), Reason>>;

/// Channels a broker refused to subscribe, each with why; the connection goes on.
pub(crate) type Refusals = Vec<(String, Reason)>;

/// The connection failed during a pipeline: why, and the broker's answers to the envelopes
/// before the failure (a prefix of the pipeline, often empty). The rest are unconfirmed.
pub(crate) struct PipelineLost {
    pub(crate) answered: Answers,
    pub(crate) reason: Reason,
}

impl From<Reason> for PipelineLost {
    /// Lost with nothing answered.
    fn from(reason: Reason) -> Self {
        PipelineLost {
            answered: Vec::new(),
            reason,
        }
    }
}

/// Why an inbound message yields no envelope.
// Redis hands every message's bytes over as they are; PostgreSQL decodes and fetches.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum Inbound {
    /// It is not one of ours, or is damaged: counted and skipped.
    Malformed(Reason),
    /// Fetching its envelope failed on the connection: the connection is taken as lost.
    Lost(Reason),
}
