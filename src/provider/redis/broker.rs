//! Redis as the bridge's broker: channel names, the two connections, `PUBLISH` pipelines and
//! `SUBSCRIBE` / `UNSUBSCRIBE` on the RESP2 pub/sub connection, through a protocol client of
//! the provider's own ([`connection`](super::connection), [`wire`](super::wire)).

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::config::RedisConfig;
use super::connection::{Connection, ConnectionSettings, Endpoint, Pushed, Replies};
use super::wire::{self, Message};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{
    Answers, Broker, ConnectError, Inbound, Outgoing, PipelineLost, Reason, Refusals, Subscription,
};
use crate::provider::bridge::handoff::{handoff, Handoff, Taker};
use crate::provider::bridge::BrokerError;
use crate::sync::Arc;

/// A Redis server, as the bridge sees it.
pub(crate) struct RedisBroker {
    pub(crate) config: RedisConfig,
    endpoint: Endpoint,
    /// Names the connections in `CLIENT LIST`.
    instance: InstanceId,
}

impl RedisBroker {
    pub(crate) fn new(config: RedisConfig, endpoint: Endpoint, instance: InstanceId) -> Self {
        Self {
            config,
            endpoint,
            instance,
        }
    }

    async fn connect(
        &self,
        role: &'static str,
        pushed: Option<Handoff<Pushed>>,
    ) -> Result<Connection, ConnectError> {
        let settings = ConnectionSettings {
            endpoint: &self.endpoint,
            instance: self.instance,
            role,
            max_bulk: self.config.max_envelope_bytes.max(INBOUND_BULK),
        };
        tokio::time::timeout(self.config.connect_timeout, Connection::open(settings, pushed))
            .await
            .map_err(|_| {
                format!(
                    "no connection within {} ms",
                    self.config.connect_timeout.as_millis()
                )
            })?
    }
}

/// The longest message read whatever `max_envelope_bytes` says, so that another client's large
/// message on one of our channels is read and skipped, not taken for a broken stream: Redis's
/// own default `proto-max-bulk-len`.
const INBOUND_BULK: usize = super::config::MAX_ENVELOPE_BYTES;

impl Broker for RedisBroker {
    type Subscription = RedisSubscription;
    type Publisher = Connection;

    const NAME: &'static str = "redis";

    fn target(&self) -> String {
        self.endpoint.target()
    }

    /// The configured prefix followed by the topic, subscribed with `SUBSCRIBE` (never
    /// `PSUBSCRIBE`), so `*`, `?`, `[`, `]` and `\` in a topic stay literal.
    fn channel(&self, topic: &str) -> String {
        let mut channel = String::with_capacity(self.config.channel_prefix.len() + topic.len());
        channel.push_str(&self.config.channel_prefix);
        channel.push_str(topic);
        channel
    }

    fn carries(&self, channel: &str, topic: &str) -> bool {
        channel.strip_prefix(self.config.channel_prefix.as_str()) == Some(topic)
    }

    fn check_envelope(&self, envelope_len: usize) -> Result<(), BrokerError> {
        BrokerError::check_envelope_len(envelope_len, self.config.max_envelope_bytes)
    }

    async fn open_subscription(&self) -> Result<RedisSubscription, ConnectError> {
        let (forward, pushed) = handoff();
        let connection = self.connect("subscriber", Some(forward)).await?;
        Ok(RedisSubscription {
            connection: Arc::new(connection),
            pushed,
            instance: self.instance,
        })
    }

    /// Opens the publishing connection, named `fanout-<instance>-publisher` in `CLIENT LIST`.
    async fn open_publisher(&self) -> Result<Connection, ConnectError> {
        self.connect("publisher", None).await
    }

    /// One `PUBLISH` per envelope, in one write, each reply read on its own: a command the
    /// server refuses (say, `NOPERM` for a channel the user may not publish on) refuses its
    /// envelope alone.
    async fn publish(
        &self,
        publisher: &mut Connection,
        envelopes: &[Outgoing<'_>],
    ) -> Result<Answers, PipelineLost> {
        let prefix = self.config.channel_prefix.as_bytes();
        let bytes: usize = envelopes
            .iter()
            .map(|outgoing| outgoing.envelope.len() + outgoing.topic.len() + prefix.len() + 48)
            .sum();
        let mut commands = Vec::with_capacity(bytes);
        for outgoing in envelopes {
            wire::put_publish(
                &mut commands,
                b"PUBLISH",
                prefix,
                outgoing.topic.as_bytes(),
                outgoing.envelope,
            );
        }
        let replies = publisher.round_trip(commands, envelopes.len()).await?;
        Ok(answers(replies, "PUBLISH"))
    }

    async fn ping_publisher(&self, publisher: &mut Connection) -> Result<(), Reason> {
        publisher
            .query(&[b"PING"])
            .await
            .map(drop)
            .map_err(|error| format!("PING failed: {error}"))
    }

    fn publisher_closed(&self, publisher: &Connection) -> BoxFuture<'static, ()> {
        publisher.closed()
    }
}

/// Each reply as the answer to the command it replies to: refused with the server's error, or
/// taken.
pub(crate) fn answers(replies: Replies, verb: &str) -> Answers {
    replies
        .into_iter()
        .map(|reply| {
            reply
                .map(drop)
                .map_err(|error| format!("{verb} refused: {error}"))
        })
        .collect()
}

/// The RESP2 pub/sub connection: `SUBSCRIBE` / `UNSUBSCRIBE` one channel per command, each
/// confirmed by its reply, and the messages its reader hands on, in arrival order.
pub(crate) struct RedisSubscription {
    connection: Arc<Connection>,
    pushed: Taker<Pushed>,
    instance: InstanceId,
}

/// `verb` for each of `channels`, one command each, so that each draws one reply.
pub(crate) fn per_channel(verb: &[u8], channels: &[String]) -> Vec<u8> {
    let mut commands = Vec::with_capacity(channels.iter().map(|channel| channel.len() + 32).sum());
    for channel in channels {
        wire::put_command(&mut commands, &[verb, channel.as_bytes()]);
    }
    commands
}

/// The channels whose `SUBSCRIBE` the server refused, with why.
pub(crate) fn refusals(channels: Vec<String>, replies: Replies, verb: &str) -> Refusals {
    channels
        .into_iter()
        .zip(replies)
        .filter_map(|(channel, reply)| {
            reply
                .err()
                .map(|error| (channel, format!("{verb} refused: {error}")))
        })
        .collect()
}

impl Subscription for RedisSubscription {
    type Message = Message;

    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<Refusals, Reason>> {
        let confirmed = self
            .connection
            .round_trip(per_channel(b"SUBSCRIBE", &channels), channels.len());
        async move {
            let replies = confirmed.await?;
            Ok(refusals(channels, replies, "SUBSCRIBE"))
        }
        .boxed()
    }

    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<(), Reason>> {
        let commands = per_channel(b"UNSUBSCRIBE", &channels);
        self.connection
            .unsubscribe(commands, channels)
            .map(|done| done.map(drop))
            .boxed()
    }

    /// `PING`: on a connection with subscriptions Redis answers `pong` as a push-like array,
    /// which is its reply all the same.
    fn ping(&self) -> BoxFuture<'static, Result<(), Reason>> {
        let mut command = Vec::new();
        wire::put_command(&mut command, &[b"PING"]);
        self.connection
            .round_trip(command, 1)
            .map(|answered| match answered?.pop() {
                Some(Err(error)) => Err(format!("PING failed: {error}")),
                _ => Ok(()),
            })
            .boxed()
    }

    /// Cancel-safe, as the hand-off's `take`.
    async fn next(&mut self) -> Option<Message> {
        loop {
            match self.pushed.take().await? {
                Pushed::Message(message) => return Some(message),
                // A single server ends a subscription only when asked to.
                Pushed::Unsubscribed(channel) => {
                    tracing::warn!(instance = %self.instance, channel, "redis ended a subscription nobody asked to end");
                }
            }
        }
    }

    fn channel(message: &Message) -> &str {
        message.channel()
    }

    async fn envelope<'a>(&'a self, message: &'a Message) -> Result<Bytes, Inbound> {
        Ok(message.payload.clone())
    }
}
