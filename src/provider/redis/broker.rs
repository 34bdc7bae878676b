//! Redis as the bridge's broker: channel names, the two connections, `PUBLISH` pipelines and
//! `SUBSCRIBE` / `UNSUBSCRIBE` on the RESP2 pub/sub connection.

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::AsyncConnectionConfig;

use super::config::RedisConfig;
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{
    Answers, Broker, ConnectError, EnvelopeBytes, Inbound, Outgoing, PipelineLost, Reason, Refusals,
    Subscription,
};
use crate::provider::bridge::BrokerError;

/// A Redis server, as the bridge sees it.
pub(crate) struct RedisBroker {
    pub(crate) config: RedisConfig,
    client: redis::Client,
    /// Names the publishing connection in `CLIENT LIST`.
    instance: InstanceId,
}

impl RedisBroker {
    pub(crate) fn new(config: RedisConfig, client: redis::Client, instance: InstanceId) -> Self {
        Self {
            config,
            client,
            instance,
        }
    }
}

impl Broker for RedisBroker {
    type Subscription = RedisSubscription;
    type Publisher = MultiplexedConnection;

    const NAME: &'static str = "redis";

    fn target(&self) -> String {
        self.client.get_connection_info().addr().to_string()
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
        let (sink, stream) = self.client.get_async_pubsub().await?.split();
        Ok(RedisSubscription { sink, stream })
    }

    /// Opens the publishing connection and names it `fanout-<instance>-publisher` in
    /// `CLIENT LIST`.
    async fn open_publisher(&self) -> Result<MultiplexedConnection, ConnectError> {
        // The bridge bounds every command by `response_timeout`; the client's own cap (500 ms
        // by default) would cut shorter ones off and take the connection as lost.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(None);
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("fanout-{}-publisher", self.instance))
            .exec_async(&mut connection)
            .await?;
        Ok(connection)
    }

    /// One `PUBLISH` per envelope, pipelined, each reply read on its own: a command the server
    /// refuses (say, `NOPERM` for a channel the user may not publish on) refuses its envelope
    /// alone.
    async fn publish(
        &self,
        publisher: &mut MultiplexedConnection,
        envelopes: &[Outgoing<'_>],
    ) -> Result<Answers, PipelineLost> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut channel = String::new();
        for outgoing in envelopes {
            channel.clear();
            channel.push_str(&self.config.channel_prefix);
            channel.push_str(outgoing.topic);
            pipe.cmd("PUBLISH").arg(channel.as_bytes()).arg(outgoing.envelope);
        }
        let replies: Vec<redis::Value> = pipe
            .query_async(publisher)
            .await
            .map_err(|error| format!("PUBLISH failed: {error}"))?;
        if replies.len() != envelopes.len() {
            return Err(format!(
                "PUBLISH pipeline of {} commands got {} replies",
                envelopes.len(),
                replies.len()
            )
            .into());
        }
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                redis::Value::ServerError(error) => Err(format!("PUBLISH refused: {error}")),
                _ => Ok(()),
            })
            .collect())
    }

    async fn ping_publisher(&self, publisher: &mut MultiplexedConnection) -> Result<(), Reason> {
        redis::cmd("PING")
            .exec_async(publisher)
            .await
            .map_err(|error| format!("PING failed: {error}"))
    }
}

/// The RESP2 pub/sub connection: commands go through the sink, messages come from the stream,
/// which ends when the connection does.
pub(crate) struct RedisSubscription {
    sink: PubSubSink,
    stream: PubSubStream,
}

impl Subscription for RedisSubscription {
    type Message = redis::Msg;

    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<Refusals, Reason>> {
        let mut sink = self.sink.clone();
        async move {
            sink.subscribe(&channels)
                .await
                .map(|()| Refusals::new())
                .map_err(|error| format!("SUBSCRIBE failed: {error}"))
        }
        .boxed()
    }

    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<(), Reason>> {
        let mut sink = self.sink.clone();
        async move {
            sink.unsubscribe(&channels)
                .await
                .map_err(|error| format!("UNSUBSCRIBE failed: {error}"))
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'static, Result<(), Reason>> {
        let mut sink = self.sink.clone();
        async move {
            sink.ping::<redis::Value>()
                .await
                .map(drop)
                .map_err(|error| format!("PING failed: {error}"))
        }
        .boxed()
    }

    async fn next(&mut self) -> Option<redis::Msg> {
        self.stream.next().await
    }

    fn channel(message: &redis::Msg) -> &str {
        message.get_channel_name()
    }

    async fn envelope<'a>(&'a self, message: &'a redis::Msg) -> Result<EnvelopeBytes<'a>, Inbound> {
        Ok(EnvelopeBytes::Borrowed(message.get_payload_bytes()))
    }
}
