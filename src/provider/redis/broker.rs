//! Redis as the bridge's broker: channel names, the connections, `PUBLISH` pipelines and
//! `SUBSCRIBE` / `UNSUBSCRIBE` on RESP2 pub/sub connections, through a protocol client of the
//! provider's own ([`connection`](super::connection), [`wire`](super::wire)).
//!
//! Each connection starts by asking `CLUSTER SLOTS`: a server without cluster support is used
//! as one server (`PUBLISH`, `SUBSCRIBE`); a cluster with sharded pub/sub on every primary
//! (`SPUBLISH`, `SSUBSCRIBE`; see [`cluster`](super::cluster)).

use bytes::Bytes;
use futures_util::future::{join_all, select_all, BoxFuture};
use futures_util::FutureExt;

use super::cluster::{moved, not_a_cluster, Topology};
use super::config::RedisConfig;
use super::connection::{Connection, ConnectionSettings, Endpoint, Pushed, Replies};
use super::wire::{self, Message};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{
    Answers, Broker, ConnectError, Inbound, Outgoing, PipelineLost, Reason, Refusals, Subscription,
};
use crate::provider::bridge::handoff::{handoff, Handoff, Taker};
use crate::provider::bridge::BrokerError;
use crate::sync::{lock, Arc, Mutex};

/// A Redis server or cluster, as the bridge sees it.
pub(crate) struct RedisBroker {
    pub(crate) config: RedisConfig,
    /// The configured server.
    endpoint: Endpoint,
    /// Names the connections in `CLIENT LIST`.
    instance: InstanceId,
    /// A cluster's nodes as last seen, asked for the map after the configured one (which may
    /// be the node that failed).
    known_nodes: Mutex<Vec<Endpoint>>,
}

/// The longest message read whatever `max_envelope_bytes` says, so that another client's large
/// message on one of our channels is read and skipped, not taken for a broken stream: Redis's
/// own default `proto-max-bulk-len`.
const INBOUND_BULK: usize = super::config::MAX_ENVELOPE_BYTES;

/// What a server turned out to be when first connected to.
enum Found {
    /// One server: this connection is the one to use.
    Server(Connection),
    /// A cluster, and the connection that told, to the node at `at`.
    Cluster {
        topology: Topology,
        at: Endpoint,
        connection: Connection,
    },
}

impl RedisBroker {
    pub(crate) fn new(config: RedisConfig, endpoint: Endpoint, instance: InstanceId) -> Self {
        Self {
            config,
            endpoint,
            instance,
            known_nodes: Mutex::new(Vec::new()),
        }
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        role: &'static str,
        pushed: Option<Handoff<Pushed>>,
    ) -> Result<Connection, ConnectError> {
        let settings = ConnectionSettings {
            endpoint,
            instance: self.instance,
            role,
            max_bulk: self.config.max_envelope_bytes.max(INBOUND_BULK),
        };
        let timeout = self.config.connect_timeout;
        tokio::time::timeout(timeout, Connection::open(settings, pushed))
            .await
            .map_err(|_| {
                format!(
                    "no connection to {} within {} ms",
                    endpoint.target(),
                    timeout.as_millis()
                )
            })?
    }

    /// Connects to the configured server, or failing that to a cluster node last seen, and
    /// asks `CLUSTER SLOTS`.
    async fn find(
        &self,
        role: &'static str,
        pushed: Option<&Handoff<Pushed>>,
    ) -> Result<Found, ConnectError> {
        let mut candidates = vec![self.endpoint.clone()];
        candidates.extend(
            lock(&self.known_nodes)
                .iter()
                .filter(|node| **node != self.endpoint)
                .cloned(),
        );
        let mut last_error: ConnectError = "no server to connect to".into();
        for candidate in candidates {
            match self.ask(&candidate, role, pushed.cloned()).await {
                Ok(found) => return Ok(found),
                Err(error) => last_error = format!("{}: {error}", candidate.target()).into(),
            }
        }
        Err(last_error)
    }

    async fn ask(
        &self,
        at: &Endpoint,
        role: &'static str,
        pushed: Option<Handoff<Pushed>>,
    ) -> Result<Found, ConnectError> {
        let connection = self.connect(at, role, pushed).await?;
        let timeout = self.config.response_timeout;
        let answer = tokio::time::timeout(timeout, connection.query(&[b"CLUSTER", b"SLOTS"]))
            .await
            .map_err(|_| format!("no answer to CLUSTER SLOTS within {} ms", timeout.as_millis()))?;
        match answer {
            Err(error) if not_a_cluster(&error) => Ok(Found::Server(connection)),
            Err(error) => Err(format!("CLUSTER SLOTS failed: {error}").into()),
            Ok(reply) => {
                let host = match &at.address {
                    super::connection::Address::Tcp { host, .. } => host.as_str(),
                    super::connection::Address::Unix(_) => "127.0.0.1",
                };
                let topology = Topology::parse(&reply, host)?;
                *lock(&self.known_nodes) = topology
                    .nodes()
                    .iter()
                    .map(|(host, port)| self.endpoint.at(host.clone(), *port))
                    .collect();
                Ok(Found::Cluster {
                    topology,
                    at: at.clone(),
                    connection,
                })
            }
        }
    }

    /// A connection to each primary of `topology`, `first` (to `at`) among them if it is one.
    async fn connect_primaries(
        &self,
        topology: &Topology,
        at: &Endpoint,
        first: Connection,
        role: &'static str,
        pushed: Option<&Handoff<Pushed>>,
    ) -> Result<Vec<Arc<Connection>>, ConnectError> {
        let mut first = Some(first);
        let endpoints = topology.endpoints(&self.endpoint);
        let opened = join_all(endpoints.iter().map(|endpoint| {
            let reuse = if endpoint == at { first.take() } else { None };
            let pushed = pushed.cloned();
            async move {
                match reuse {
                    Some(connection) => Ok(connection),
                    None => self.connect(endpoint, role, pushed).await,
                }
            }
        }))
        .await;
        opened.into_iter().map(|opened| opened.map(Arc::new)).collect()
    }
}

impl Broker for RedisBroker {
    type Subscription = RedisSubscription;
    type Publisher = RedisPublisher;

    const NAME: &'static str = "redis";

    fn target(&self) -> String {
        self.endpoint.target()
    }

    /// The configured prefix followed by the topic, subscribed with `SUBSCRIBE` or
    /// `SSUBSCRIBE` (never a pattern), so `*`, `?`, `[`, `]` and `\` in a topic stay literal.
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
        let nodes = match self.find("subscriber", Some(&forward)).await? {
            Found::Server(connection) => Nodes::Server(Arc::new(connection)),
            Found::Cluster {
                topology,
                at,
                connection,
            } => {
                let connections = self
                    .connect_primaries(&topology, &at, connection, "subscriber", Some(&forward))
                    .await?;
                Nodes::Cluster(Arc::new(Cluster {
                    topology,
                    connections,
                }))
            }
        };
        // The readers hold the only senders: the hand-off ends when they all have.
        drop(forward);
        let any_closed = std::sync::Mutex::new(nodes.any_closed());
        Ok(RedisSubscription {
            nodes,
            pushed,
            any_closed,
            instance: self.instance,
        })
    }

    /// Opens the publishing connections, named `fanout-<instance>-publisher` in `CLIENT LIST`.
    async fn open_publisher(&self) -> Result<RedisPublisher, ConnectError> {
        Ok(match self.find("publisher", None).await? {
            Found::Server(connection) => RedisPublisher::Server(connection),
            Found::Cluster {
                topology,
                at,
                connection,
            } => {
                let connections = self
                    .connect_primaries(&topology, &at, connection, "publisher", None)
                    .await?;
                RedisPublisher::Cluster(Cluster {
                    topology,
                    connections,
                })
            }
        })
    }

    /// One `PUBLISH` (`SPUBLISH` on a cluster) per envelope, in one write per primary, each
    /// reply read on its own: a command the server refuses (say, `NOPERM` for a channel the
    /// user may not publish on) refuses its envelope alone.
    async fn publish(
        &self,
        publisher: &mut RedisPublisher,
        envelopes: &[Outgoing<'_>],
    ) -> Result<Answers, PipelineLost> {
        let prefix = self.config.channel_prefix.as_bytes();
        match publisher {
            RedisPublisher::Server(connection) => {
                let commands = publishes(b"PUBLISH", prefix, envelopes.iter());
                let replies = connection.round_trip(commands, envelopes.len()).await?;
                Ok(answers(replies, "PUBLISH"))
            }
            RedisPublisher::Cluster(cluster) => {
                let mut answers = cluster.publish(prefix, envelopes).await?;
                let moved: Vec<usize> = (0..envelopes.len())
                    .filter(|&i| matches!(&answers[i], Err(error) if moved(error)))
                    .collect();
                if !moved.is_empty() {
                    // The map changed: read it again, and send those again to their owners.
                    self.refresh(cluster).await?;
                    let again: Vec<Outgoing<'_>> = moved.iter().map(|&i| envelopes[i]).collect();
                    let retried = cluster.publish(prefix, &again).await?;
                    for (i, answer) in moved.into_iter().zip(retried) {
                        answers[i] = answer;
                    }
                }
                Ok(answers
                    .into_iter()
                    .map(|answer| answer.map_err(|error| format!("SPUBLISH refused: {error}")))
                    .collect())
            }
        }
    }

    async fn ping_publisher(&self, publisher: &mut RedisPublisher) -> Result<(), Reason> {
        let connections: Vec<&Connection> = match publisher {
            RedisPublisher::Server(connection) => vec![connection],
            RedisPublisher::Cluster(cluster) => cluster.connections.iter().map(|c| &**c).collect(),
        };
        for answer in join_all(
            connections
                .into_iter()
                .map(|connection| connection.query(&[b"PING"])),
        )
        .await
        {
            answer.map_err(|error| format!("PING failed: {error}"))?;
        }
        Ok(())
    }

    fn publisher_closed(&self, publisher: &RedisPublisher) -> BoxFuture<'static, ()> {
        match publisher {
            RedisPublisher::Server(connection) => connection.closed(),
            RedisPublisher::Cluster(cluster) => cluster.any_closed(),
        }
    }
}

impl RedisBroker {
    /// Reads a cluster's map again, on any of its connections, and connects to primaries it
    /// did not know.
    async fn refresh(&self, cluster: &mut Cluster) -> Result<(), PipelineLost> {
        let reply = cluster.connections[0]
            .query(&[b"CLUSTER", b"SLOTS"])
            .await
            .map_err(|error| format!("CLUSTER SLOTS failed: {error}"))?;
        let topology = Topology::parse(&reply, "127.0.0.1")?;
        let old = cluster.topology.endpoints(&self.endpoint);
        let mut connections = Vec::new();
        for endpoint in topology.endpoints(&self.endpoint) {
            match old.iter().position(|known| *known == endpoint) {
                Some(i) => connections.push(Arc::clone(&cluster.connections[i])),
                None => connections.push(Arc::new(
                    self.connect(&endpoint, "publisher", None)
                        .await
                        .map_err(|error| error.to_string())?,
                )),
            }
        }
        *cluster = Cluster {
            topology,
            connections,
        };
        Ok(())
    }
}

/// `verb` of each envelope to its channel, one after another.
fn publishes<'a>(
    verb: &[u8],
    prefix: &[u8],
    envelopes: impl Iterator<Item = &'a Outgoing<'a>> + Clone,
) -> Vec<u8> {
    let bytes: usize = envelopes
        .clone()
        .map(|outgoing| outgoing.envelope.len() + outgoing.topic.len() + prefix.len() + 48)
        .sum();
    let mut commands = Vec::with_capacity(bytes);
    for outgoing in envelopes {
        wire::put_publish(
            &mut commands,
            verb,
            prefix,
            outgoing.topic.as_bytes(),
            outgoing.envelope,
        );
    }
    commands
}

/// Each reply as the answer to the command it replies to: refused with the server's error, or
/// taken.
fn answers(replies: Replies, verb: &str) -> Answers {
    replies
        .into_iter()
        .map(|reply| {
            reply
                .map(drop)
                .map_err(|error| format!("{verb} refused: {error}"))
        })
        .collect()
}

/// The publishing side: one server's connection, or a connection per primary.
pub(crate) enum RedisPublisher {
    Server(Connection),
    Cluster(Cluster),
}

/// A cluster's map and a connection to each of its primaries, by index.
pub(crate) struct Cluster {
    topology: Topology,
    connections: Vec<Arc<Connection>>,
}

impl Cluster {
    /// `SPUBLISH`es each envelope to its slot's primary, the primaries' pipelines in parallel;
    /// the answers in the envelopes' order, with the server's errors as they are.
    async fn publish(&self, prefix: &[u8], envelopes: &[Outgoing<'_>]) -> Result<Answers, PipelineLost> {
        let mut owners = Vec::with_capacity(envelopes.len());
        let mut channel = Vec::new();
        for outgoing in envelopes {
            channel.clear();
            channel.extend_from_slice(prefix);
            channel.extend_from_slice(outgoing.topic.as_bytes());
            owners.push(self.topology.owner(&channel)?);
        }
        let sent = (0..self.connections.len()).filter_map(|node| {
            let mine: Vec<usize> = (0..envelopes.len()).filter(|&i| owners[i] == node).collect();
            if mine.is_empty() {
                return None;
            }
            let commands = publishes(b"SPUBLISH", prefix, mine.iter().map(|&i| &envelopes[i]));
            let replies = self.connections[node].round_trip(commands, mine.len());
            Some(replies.map(move |replies| (mine, replies)))
        });
        let mut answers: Vec<Option<Result<(), Reason>>> = vec![None; envelopes.len()];
        let mut failure = None;
        for (mine, replies) in join_all(sent).await {
            match replies {
                Ok(replies) => {
                    for (i, reply) in mine.into_iter().zip(replies) {
                        answers[i] = Some(reply.map(drop));
                    }
                }
                Err(reason) => failure = Some(reason),
            }
        }
        match failure {
            None => Ok(answers
                .into_iter()
                .map(|answer| answer.unwrap_or(Ok(())))
                .collect()),
            Some(reason) => Err(PipelineLost {
                // The answers before the first envelope left unanswered.
                answered: answers.into_iter().map_while(|answer| answer).collect(),
                reason,
            }),
        }
    }

    fn any_closed(&self) -> BoxFuture<'static, ()> {
        select_all(self.connections.iter().map(|connection| connection.closed()))
            .map(drop)
            .boxed()
    }
}

/// The subscribing side's connections.
enum Nodes {
    Server(Arc<Connection>),
    Cluster(Arc<Cluster>),
}

impl Nodes {
    fn any_closed(&self) -> BoxFuture<'static, ()> {
        match self {
            // The hand-off ends with the one reader.
            Nodes::Server(_) => futures_util::future::pending().boxed(),
            Nodes::Cluster(cluster) => cluster.any_closed(),
        }
    }
}

/// The RESP2 pub/sub connections: `SUBSCRIBE` / `UNSUBSCRIBE` (`SSUBSCRIBE` / `SUNSUBSCRIBE`
/// on a cluster's primaries) one channel per command, each confirmed by its reply, and the
/// messages their readers hand on, in arrival order.
pub(crate) struct RedisSubscription {
    nodes: Nodes,
    pushed: Taker<Pushed>,
    /// Resolves once any of the connections has closed. In a mutex only to be `Sync`: it is
    /// polled through `&mut self`, never locked.
    any_closed: std::sync::Mutex<BoxFuture<'static, ()>>,
    instance: InstanceId,
}

/// `verb` for each of `channels`, one command each, so that each draws one reply.
fn per_channel(verb: &[u8], channels: &[String]) -> Vec<u8> {
    let mut commands = Vec::with_capacity(channels.iter().map(|channel| channel.len() + 32).sum());
    for channel in channels {
        wire::put_command(&mut commands, &[verb, channel.as_bytes()]);
    }
    commands
}

/// The channels whose subscription the server refused, with why.
fn refusals(channels: Vec<String>, replies: Replies, verb: &str) -> Refusals {
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

/// `channels` grouped by the index of their slot's primary.
fn by_owner(cluster: &Cluster, channels: Vec<String>) -> Result<Vec<Vec<String>>, Reason> {
    let mut groups = vec![Vec::new(); cluster.connections.len()];
    for channel in channels {
        let owner = cluster.topology.owner(channel.as_bytes())?;
        groups[owner].push(channel);
    }
    Ok(groups)
}

impl Subscription for RedisSubscription {
    type Message = Message;

    /// On a cluster a `-MOVED` answer means the map is stale: the subscription fails, and the
    /// bridge reconnects it with the map read again.
    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<Refusals, Reason>> {
        match &self.nodes {
            Nodes::Server(connection) => {
                let confirmed = connection.round_trip(per_channel(b"SUBSCRIBE", &channels), channels.len());
                async move { Ok(refusals(channels, confirmed.await?, "SUBSCRIBE")) }.boxed()
            }
            Nodes::Cluster(cluster) => {
                let cluster = Arc::clone(cluster);
                async move {
                    let groups = by_owner(&cluster, channels)?;
                    let sent = groups.into_iter().enumerate().map(|(node, group)| {
                        let confirmed = cluster.connections[node]
                            .round_trip(per_channel(b"SSUBSCRIBE", &group), group.len());
                        async move { confirmed.await.map(|replies| (group, replies)) }
                    });
                    let mut refused = Refusals::new();
                    for confirmed in join_all(sent).await {
                        let (group, replies) = confirmed?;
                        if let Some(Err(error)) = replies
                            .iter()
                            .find(|reply| matches!(reply, Err(error) if moved(error)))
                        {
                            return Err(format!("SSUBSCRIBE answered {error}: the cluster's map changed"));
                        }
                        refused.extend(refusals(group, replies, "SSUBSCRIBE"));
                    }
                    Ok(refused)
                }
                .boxed()
            }
        }
    }

    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<(), Reason>> {
        match &self.nodes {
            Nodes::Server(connection) => {
                let commands = per_channel(b"UNSUBSCRIBE", &channels);
                connection
                    .unsubscribe(commands, channels)
                    .map(|done| done.map(drop))
                    .boxed()
            }
            Nodes::Cluster(cluster) => {
                let cluster = Arc::clone(cluster);
                async move {
                    let groups = by_owner(&cluster, channels)?;
                    let sent = groups.into_iter().enumerate().map(|(node, group)| {
                        let commands = per_channel(b"SUNSUBSCRIBE", &group);
                        cluster.connections[node].unsubscribe(commands, group)
                    });
                    for done in join_all(sent).await {
                        done?;
                    }
                    Ok(())
                }
                .boxed()
            }
        }
    }

    /// `PING` on each connection: on one with subscriptions Redis answers `pong` as a push-like
    /// array, which is its reply all the same.
    fn ping(&self) -> BoxFuture<'static, Result<(), Reason>> {
        let connections: Vec<Arc<Connection>> = match &self.nodes {
            Nodes::Server(connection) => vec![Arc::clone(connection)],
            Nodes::Cluster(cluster) => cluster.connections.clone(),
        };
        async move {
            let pinged = join_all(connections.iter().map(|connection| connection.query(&[b"PING"]))).await;
            for answer in pinged {
                answer.map_err(|error| format!("PING failed: {error}"))?;
            }
            Ok(())
        }
        .boxed()
    }

    /// Cancel-safe, as the hand-off's `take`. Ends when a connection does, or when a cluster
    /// node ends a subscription on its own (the channel's slot moved).
    async fn next(&mut self) -> Option<Message> {
        let any_closed = self
            .any_closed
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            let pushed = tokio::select! {
                biased;
                pushed = self.pushed.take() => pushed?,
                () = &mut *any_closed => return None,
            };
            match pushed {
                Pushed::Message(message) => return Some(message),
                Pushed::Unsubscribed(channel) => match &self.nodes {
                    Nodes::Cluster(_) => {
                        tracing::info!(instance = %self.instance, channel, "a cluster node ended a subscription (its slot moved); resubscribing");
                        return None;
                    }
                    // A single server ends a subscription only when asked to.
                    Nodes::Server(_) => {
                        tracing::warn!(instance = %self.instance, channel, "redis ended a subscription nobody asked to end");
                    }
                },
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
