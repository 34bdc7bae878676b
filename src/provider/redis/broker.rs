//! Redis as the bridge's broker: channel names, the connections, `PUBLISH` pipelines and
//! `SUBSCRIBE` / `UNSUBSCRIBE` on RESP2 pub/sub connections, through a protocol client of the
//! provider's own ([`connection`](super::connection), [`wire`](super::wire)).
//!
//! Each connection starts by asking `CLUSTER SLOTS`: a server without cluster support is used
//! as one server (`PUBLISH`, `SUBSCRIBE`); a cluster with sharded pub/sub on every primary
//! (`SPUBLISH`, `SSUBSCRIBE`; see [`cluster`](super::cluster)).

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, select_all, BoxFuture};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use super::cluster::{moved, transient, Topology};
use super::config::RedisConfig;
use super::connection::{Connection, ConnectionSettings, Endpoint, Pushed, Replies};
use super::wire::{self, Message};
use crate::envelope::InstanceId;
use crate::provider::bridge::broker::{
    Answers, Broker, ConnectError, Inbound, Outgoing, PipelineLost, Reason, Refusals, Subscription,
};
use crate::provider::bridge::handoff::{handoff, Handoff, Pressure, Taker};
use crate::provider::bridge::BrokerError;
use crate::sync::{lock, Arc, Mutex};

/// How long [`RedisBroker::find`] waits for an attempt before starting the next candidate
/// beside it, the "connection attempt delay" RFC 8305 recommends.
const CONNECT_STAGGER: Duration = Duration::from_millis(250);

/// The delay between the starts of `candidates` connection attempts within `budget`:
/// [`CONNECT_STAGGER`], or less when there are so many candidates that the last would start
/// after half the budget, so that each has at least half of it to answer.
fn stagger(budget: Duration, candidates: usize) -> Duration {
    match u32::try_from(candidates.saturating_sub(1)) {
        Ok(0) => CONNECT_STAGGER,
        Ok(later) => CONNECT_STAGGER.min(budget / 2 / later),
        Err(_) => Duration::ZERO,
    }
}

/// A Redis server or cluster, as the bridge sees it.
pub(crate) struct RedisBroker {
    pub(crate) config: RedisConfig,
    /// The configured server.
    endpoint: Endpoint,
    /// Names the connections in `CLIENT LIST`.
    instance: InstanceId,
    /// A cluster's nodes as last seen, asked for the map beside the configured one (which may
    /// be the node that failed; see [`find`](Self::find)).
    known_nodes: Mutex<Vec<Endpoint>>,
    /// The stalls of the subscription connections' readers.
    pressure: Arc<Pressure>,
}

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
            pressure: Arc::new(Pressure::default()),
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
            // At least enough for any reply (a `CLUSTER SLOTS` node id, an error's text).
            max_bulk: self.config.max_envelope_bytes.max(64 * 1024),
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

    /// Connects to the configured server or to a cluster node last seen, whichever answers
    /// first, and asks `CLUSTER SLOTS`.
    ///
    /// The candidates are tried in a staggered race (RFC 8305's "happy eyeballs"): the
    /// configured server first, then each node last seen ([`remember`](Self::remember)), the
    /// next one starting as soon as an attempt fails or once the latest has gone
    /// [`stagger`] without an answer. The first to answer wins and the other attempts are
    /// dropped, closing their sockets. So a configured node that takes connections but never
    /// answers (a host that drops packets, a hung process) costs the others one stagger, not
    /// the whole connect budget, while a healthy one is still preferred.
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
        let stagger = stagger(self.config.connect_timeout, candidates.len());
        let mut waiting = candidates.iter();
        let mut attempts = FuturesUnordered::new();
        let mut failures = Vec::new();
        loop {
            if let Some(candidate) = waiting.next() {
                attempts.push(async move { (candidate, self.ask(candidate, role, pushed.cloned()).await) });
            }
            let next_start = tokio::time::sleep(stagger);
            tokio::pin!(next_start);
            // Until an attempt ends, or the stagger passes with a candidate still to start.
            let ended = tokio::select! {
                ended = attempts.next() => ended,
                () = &mut next_start, if waiting.len() > 0 => continue,
            };
            match ended {
                Some((_, Ok(found))) => return Ok(found),
                Some((candidate, Err(error))) => failures.push(format!("{}: {error}", candidate.target())),
                None => break,
            }
        }
        if failures.is_empty() {
            return Err("no server to connect to".into());
        }
        Err(failures.join("; ").into())
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
            // Cluster support disabled, or no `CLUSTER` for this user (an ACL, a renamed
            // command, a proxy): a server to use as one.
            Err(error) => {
                tracing::debug!(instance = %self.instance, server = at.target(), error, "not a cluster");
                Ok(Found::Server(connection))
            }
            Ok(reply) => {
                let topology = Topology::parse(&reply, at.host())?;
                self.remember(&topology);
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
        let (forward, pushed) = handoff(Arc::clone(&self.pressure));
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
                Nodes::Cluster(Arc::new(Cluster::new(topology, connections)))
            }
        };
        // The readers hold the only senders: the hand-off ends when they all have.
        drop(forward);
        let any_closed = std::sync::Mutex::new(nodes.any_closed());
        Ok(RedisSubscription {
            nodes,
            pushed,
            any_closed,
            unsubscribed: Arc::new(Mutex::new(std::collections::HashSet::new())),
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
                RedisPublisher::Cluster(Cluster::new(topology, connections))
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
                let (mut answers, mut failure) = cluster.publish(prefix, envelopes).await;
                let moved: Vec<usize> = (0..envelopes.len())
                    .filter(|&i| matches!(&answers[i], Some(Err(error)) if moved(error)))
                    .collect();
                if failure.is_none() && !moved.is_empty() {
                    // The map changed: read it again, and send those again, in order, to
                    // their owners (Redis did not take them).
                    match self.refresh(cluster).await {
                        Ok(()) => {
                            let again: Vec<Outgoing<'_>> = moved.iter().map(|&i| envelopes[i]).collect();
                            let (retried, retry_failure) = cluster.publish(prefix, &again).await;
                            for (i, answer) in moved.into_iter().zip(retried) {
                                answers[i] = answer;
                            }
                            failure = retry_failure;
                        }
                        Err(reason) => {
                            for i in moved {
                                answers[i] = None;
                            }
                            failure = Some(reason);
                        }
                    }
                }
                let refused =
                    |answer: Result<(), Reason>| answer.map_err(|error| format!("SPUBLISH refused: {error}"));
                match failure {
                    None => Ok(answers
                        .into_iter()
                        .map(|answer| refused(answer.unwrap_or_else(|| Err("unanswered".into()))))
                        .collect()),
                    Some(reason) => Err(PipelineLost {
                        // The answers before the first envelope left unanswered.
                        answered: answers
                            .into_iter()
                            .map_while(|answer| answer.map(refused))
                            .collect(),
                        reason,
                    }),
                }
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

    fn inbound_pressure(&self) -> Option<&Pressure> {
        Some(&self.pressure)
    }

    fn publisher_closed(&self, publisher: &RedisPublisher) -> BoxFuture<'static, ()> {
        match publisher {
            RedisPublisher::Server(connection) => connection.closed(),
            RedisPublisher::Cluster(cluster) => cluster.any_closed(),
        }
    }
}

impl RedisBroker {
    /// Reads a cluster's map again, on the first of its connections that answers, and
    /// connects to primaries it did not know. Connections to nodes that are no longer
    /// primaries are kept (retired) until the publisher reconnects, so that their closing is
    /// not taken for an outage.
    async fn refresh(&self, cluster: &mut Cluster) -> Result<(), Reason> {
        let old = cluster.topology.endpoints(&self.endpoint);
        let mut last_error = "no connection to ask".to_string();
        let mut topology = None;
        for (connection, endpoint) in cluster.connections.iter().zip(&old) {
            match connection.query(&[b"CLUSTER", b"SLOTS"]).await {
                Ok(reply) => {
                    topology = Some(Topology::parse(&reply, endpoint.host())?);
                    break;
                }
                Err(error) => last_error = format!("CLUSTER SLOTS failed: {error}"),
            }
        }
        let topology = topology.ok_or(last_error)?;
        self.remember(&topology);
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
        for connection in std::mem::replace(&mut cluster.connections, connections) {
            if !cluster
                .connections
                .iter()
                .any(|kept| Arc::ptr_eq(kept, &connection))
            {
                cluster.retired.push(connection);
            }
        }
        cluster.topology = topology;
        Ok(())
    }

    /// Keeps the nodes of `topology`, to ask for the map when the configured node is down.
    fn remember(&self, topology: &Topology) {
        *lock(&self.known_nodes) = topology
            .nodes()
            .iter()
            .map(|(host, port)| self.endpoint.at(host.clone(), *port))
            .collect();
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
    /// Connections to nodes that stopped being primaries since the map was first read.
    retired: Vec<Arc<Connection>>,
}

impl Cluster {
    fn new(topology: Topology, connections: Vec<Arc<Connection>>) -> Self {
        Cluster {
            topology,
            connections,
            retired: Vec::new(),
        }
    }

    /// `SPUBLISH`es each envelope to its slot's primary, the primaries' pipelines in parallel:
    /// each envelope's answer, with the server's errors as they are (an envelope whose slot
    /// has no primary is refused unsent), and why a connection failed, if one did (its
    /// envelopes are then unanswered).
    async fn publish(
        &self,
        prefix: &[u8],
        envelopes: &[Outgoing<'_>],
    ) -> (Vec<Option<Result<(), Reason>>>, Option<Reason>) {
        let mut answers: Vec<Option<Result<(), Reason>>> = vec![None; envelopes.len()];
        let mut owners = Vec::with_capacity(envelopes.len());
        let mut channel = Vec::new();
        for (i, outgoing) in envelopes.iter().enumerate() {
            channel.clear();
            channel.extend_from_slice(prefix);
            channel.extend_from_slice(outgoing.topic.as_bytes());
            match self.topology.owner(&channel) {
                Ok(owner) => owners.push(Some(owner)),
                Err(why) => {
                    owners.push(None);
                    answers[i] = Some(Err(why));
                }
            }
        }
        let sent = (0..self.connections.len()).filter_map(|node| {
            let mine: Vec<usize> = (0..envelopes.len())
                .filter(|&i| owners[i] == Some(node))
                .collect();
            if mine.is_empty() {
                return None;
            }
            let commands = publishes(b"SPUBLISH", prefix, mine.iter().map(|&i| &envelopes[i]));
            let replies = self.connections[node].round_trip(commands, mine.len());
            Some(replies.map(move |replies| (mine, replies)))
        });
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
        (answers, failure)
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
    /// Channels this subscription was asked to end, not subscribed again since: a cluster
    /// node's `sunsubscribe` for one of them is no news (it may even be the reply to our own
    /// `SUNSUBSCRIBE`, the server's push having taken the reply's place). At most
    /// [`UNSUBSCRIBED_KEPT`]; past that it is cleared, and such a push costs a resubscribe.
    unsubscribed: Arc<Mutex<std::collections::HashSet<String>>>,
    instance: InstanceId,
}

/// The most channels [`RedisSubscription::unsubscribed`] keeps.
const UNSUBSCRIBED_KEPT: usize = 4096;

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

/// `channels` grouped by the index of their slot's primary, and those whose slot has none,
/// with why.
fn by_owner(cluster: &Cluster, channels: Vec<String>) -> (Vec<Vec<String>>, Refusals) {
    let mut groups = vec![Vec::new(); cluster.connections.len()];
    let mut unowned = Refusals::new();
    for channel in channels {
        match cluster.topology.owner(channel.as_bytes()) {
            Ok(owner) => groups[owner].push(channel),
            Err(why) => unowned.push((channel, why)),
        }
    }
    (groups, unowned)
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
                {
                    let mut unsubscribed = lock(&self.unsubscribed);
                    for channel in &channels {
                        unsubscribed.remove(channel);
                    }
                }
                let cluster = Arc::clone(cluster);
                async move {
                    let (groups, mut refused) = by_owner(&cluster, channels);
                    let sent = groups.into_iter().enumerate().map(|(node, group)| {
                        let confirmed = cluster.connections[node]
                            .round_trip(per_channel(b"SSUBSCRIBE", &group), group.len());
                        async move { confirmed.await.map(|replies| (group, replies)) }
                    });
                    for confirmed in join_all(sent).await {
                        let (group, replies) = confirmed?;
                        // A stale map, or a cluster that cannot serve it for now: not a
                        // refusal of the channel. The subscription is made again on the map
                        // read anew.
                        let again = replies
                            .iter()
                            .find(|reply| matches!(reply, Err(error) if moved(error) || transient(error)));
                        if let Some(Err(error)) = again {
                            return Err(format!("SSUBSCRIBE answered {error}"));
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
                {
                    let mut unsubscribed = lock(&self.unsubscribed);
                    if unsubscribed.len() + channels.len() > UNSUBSCRIBED_KEPT {
                        unsubscribed.clear();
                    }
                    unsubscribed.extend(channels.iter().cloned());
                }
                let cluster = Arc::clone(cluster);
                async move {
                    // A channel whose slot has no primary has no subscription to end.
                    let (groups, _) = by_owner(&cluster, channels);
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

    fn behind(&self) -> Option<usize> {
        Some(self.pushed.behind())
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
                    Nodes::Cluster(_) if lock(&self.unsubscribed).contains(&channel) => {}
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
        match message.oversized {
            Some(len) => Err(Inbound::Malformed(format!(
                "a message of {len} bytes, past max_envelope_bytes, discarded unread"
            ))),
            None => Ok(message.payload.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidate_starts_within_half_the_budget() {
        for budget_ms in [1, 100, 500, 2_000, 10_000] {
            let budget = Duration::from_millis(budget_ms);
            for candidates in 2..=64u32 {
                let step = stagger(budget, candidates as usize);
                assert!(step <= CONNECT_STAGGER);
                assert!(
                    step * (candidates - 1) <= budget / 2,
                    "{candidates} candidates in {budget:?}: {step:?} apart"
                );
            }
        }
        // A small cluster in the default budget is raced at the full stagger.
        assert_eq!(stagger(Duration::from_secs(2), 4), CONNECT_STAGGER);
        assert_eq!(stagger(Duration::from_secs(2), 1), CONNECT_STAGGER);
    }
}
