//! `RedisPubSub`: the provider for deployments of several server processes, carried by Redis
//! pub/sub (cargo feature `redis`).
//!
//! Run several instances of your server behind a load balancer, each with a `RedisPubSub`
//! pointing at the same Redis and the same channel prefix: a broadcast on any instance reaches
//! the subscribed sessions on every instance.
//!
//! ```no_run
//! use fanout::redis::{RedisConfig, RedisPubSub};
//! use fanout::{Config, Handler, PubSubProvider};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pubsub = RedisPubSub::with_config(RedisConfig::from_env(), Config::default())?;
//! pubsub.start().await?; // fails with a clear error if Redis cannot be reached
//! pubsub
//!     .subscribe_topic("tab-1", "room:lobby", Handler::new(|topic, message| async move {
//!         println!("{topic}: {}", String::from_utf8_lossy(&message));
//!     }))
//!     .await?; // returns once Redis has confirmed the channel
//! pubsub.broadcast("room:lobby", "hello".into()).await?; // every instance's sessions
//! pubsub.stop().await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! The provider is the [bridge](crate::bridge) over Redis: the local fast path, echo skip,
//! batching, order, reconnection and what each call returns are described there, the same for
//! every broker. What is Redis's own:
//!
//! - **Channels.** A topic's channel is the configured prefix followed by the topic,
//!   subscribed with `SUBSCRIBE` (never `PSUBSCRIBE`), so `*`, `?`, `[`, `]` and `\` in a topic
//!   stay literal ([G6]).
//! - **Connections.** Two connections, through a RESP2 client of the provider's own (the
//!   `redis` crate only reads the URL): one subscribes, one publishes, named
//!   `fanout-<instance>-subscriber` and `fanout-<instance>-publisher` in `CLIENT LIST`. A
//!   batch of broadcasts goes out as pipelined `PUBLISH` commands in one write; each reply is
//!   read without an allocation, and each pushed message into one allocation holding its
//!   channel and payload. A silent connection is found by `PING`, a closed one at once.
//! - **Envelopes** are at most [`RedisConfig::max_envelope_bytes`]; a broadcast whose envelope
//!   would be larger is refused with [`RedisPubSubError::EnvelopeTooLarge`] before anything is
//!   delivered.
//! - **Redis Cluster.** Pointed at any node of a cluster, the provider uses sharded pub/sub
//!   (see [below](#redis-cluster)).
//! - **Outages.** Redis pub/sub is at-most-once: messages other instances publish while a
//!   connection is down are lost, nothing is replayed.
//! - **Memory.** The subscription connection's reader keeps at most 4,096 messages and
//!   64 MiB of them ahead of the listener; past that it stops reading, and Redis holds the
//!   backlog up to its `client-output-buffer-limit pubsub` (32 MB by default), past which
//!   it closes the connection: an outage, counted and reconnected, and what it held is lost.
//!   Stalls and the outages that begin during one are counted ([`RedisStats::inbound_stalls`],
//!   [`RedisStats::slow_consumer_outages`]). An instance whose sessions cannot take what the
//!   others publish, for longer than that backlog lasts, is such a slow consumer: the sizing
//!   tool (`tools/sizing`) reports the messages lost this way for a workload.
//!
//! # Redis Cluster
//!
//! Each connection starts with `CLUSTER SLOTS`. Against a cluster (Redis 7 or later) the
//! provider keeps a publishing and a subscribing connection to every primary and uses sharded
//! pub/sub: a topic's channel is published with `SPUBLISH` to, and subscribed with `SSUBSCRIBE`
//! on, the primary that owns its slot, so a message travels only within that shard rather than
//! to every node. No hash tags are added: a topic's slot is its own (a topic that contains a
//! `{tag}` lands where the tag says, as for any Redis client).
//!
//! - **Slots that move.** A primary that no longer owns a slot answers a publish with `-MOVED`;
//!   the provider reads the map again and sends those messages to the new owner, in order
//!   (Redis did not take them, so nothing is duplicated). A subscription whose slot moves (a
//!   migration, or a failover that demotes its primary) is ended by the server; the provider
//!   then subscribes every channel again on the new map. Messages published in that gap are
//!   lost, as in any outage.
//! - **A failed primary.** Its connections close; the provider reconnects as after any outage,
//!   and reaches the promoted replica once the cluster has agreed on it.
//! - **Which node is asked.** A reconnection asks for the map on the configured node and on
//!   every node last seen, in a staggered race: the configured node first, the next one as
//!   soon as an attempt fails or after 250 ms without an answer (less when there are many
//!   nodes, so that all have started within half of [`RedisConfig::connect_timeout`]), the
//!   first to answer used and the others closed. A configured node that is down, or takes
//!   connections and never answers, delays the reconnection by about 250 ms rather than
//!   using up the connect timeout.
//! - **Order.** Topics on different shards travel over different connections, so one
//!   publisher's order holds per topic, not across topics on different shards (the [G4]
//!   relaxation); within one instance it holds whole.
//!
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G6]: crate::docs::contract#g6-topic-isolation

mod broker;
mod cluster;
mod config;
mod connection;
mod slot;
mod wire;
mod wire_check;

pub use self::config::{RedisConfig, DEFAULT_REDIS_URL, MAX_ENVELOPE_BYTES, REDIS_URL_ENV};
#[doc(hidden)]
pub use self::wire_check::check_parser;
pub use crate::provider::bridge::{BrokerError as RedisPubSubError, BrokerStats as RedisStats, InstanceId};

use self::broker::RedisBroker;
use crate::config::{Config, ConfigError};
use crate::provider::bridge::{bridge_provider, Bridge};

/// A distributed provider over Redis pub/sub: local sessions are served by the embedded
/// in-memory engine, Redis carries messages between instances. See the [module docs](self).
pub struct RedisPubSub {
    bridge: Bridge<RedisBroker>,
}

impl RedisPubSub {
    /// A provider for the Redis at `redis`, with the default local [`Config`].
    pub fn new(redis: RedisConfig) -> std::result::Result<Self, ConfigError> {
        Self::with_config(redis, Config::default())
    }

    /// A provider for the Redis at `redis`, whose local engine runs with `config`. Both are
    /// validated; nothing connects until [`start`](crate::PubSubProvider::start).
    pub fn with_config(redis: RedisConfig, config: Config) -> std::result::Result<Self, ConfigError> {
        redis.validate()?;
        let endpoint = redis.endpoint()?;
        let instance = InstanceId::random();
        let settings = redis.bridge_settings();
        let broker = RedisBroker::new(redis, endpoint, instance);
        Ok(Self {
            bridge: Bridge::new(instance, broker, settings, config)?,
        })
    }

    /// The Redis settings.
    pub fn redis_config(&self) -> &RedisConfig {
        &self.bridge.broker().config
    }

    /// The same as [`broker_stats`](Self::broker_stats), under its Redis name.
    pub fn redis_stats(&self) -> RedisStats {
        self.bridge.broker_stats()
    }
}

bridge_provider!(RedisPubSub);

impl std::fmt::Debug for RedisPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPubSub")
            .field("instance", &self.bridge.instance_id())
            .field("redis", self.redis_config())
            .field("local", self.bridge.local())
            .finish()
    }
}
