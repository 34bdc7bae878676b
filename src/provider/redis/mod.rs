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
//! - **Connections.** One RESP2 pub/sub connection subscribes; one multiplexed connection
//!   publishes, named `fanout-<instance>-publisher` in `CLIENT LIST`, sending each batch as
//!   pipelined `PUBLISH` commands. A silent connection is found by `PING`; the publishing
//!   connection's close, which the client does not report, by the next `PUBLISH` or `PING`
//!   (a broadcast queued in between is lost and counted).
//! - **Envelopes** are at most [`RedisConfig::max_envelope_bytes`]; a broadcast whose envelope
//!   would be larger is refused with [`RedisPubSubError::EnvelopeTooLarge`] before anything is
//!   delivered.
//! - **Outages.** Redis pub/sub is at-most-once: messages other instances publish while a
//!   connection is down are lost, nothing is replayed.
//! - **Memory.** The `redis` client reads the subscription connection as fast as Redis sends,
//!   into a buffer of its own with no bound: while the listener waits (a `block` policy, for at
//!   most its timeout per message), a backlog grows in this process, not in Redis.
//!
//! [G6]: crate::docs::contract#g6-topic-isolation

mod broker;
mod config;

pub use self::config::{RedisConfig, DEFAULT_REDIS_URL, MAX_ENVELOPE_BYTES, REDIS_URL_ENV};
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
        let client = redis::Client::open(redis.url.as_str())
            .map_err(|error| ConfigError::at_key("redis.url", error.to_string()))?;
        let instance = InstanceId::random();
        let settings = redis.bridge_settings();
        let broker = RedisBroker::new(redis, client, instance);
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
