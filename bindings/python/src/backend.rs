//! The providers a `_core.Provider` can be: fanout's in-memory engine, or a distributed
//! provider carrying messages between instances through a broker.
//!
//! The in-memory provider carries Python objects as they are ([`payload`](crate::payload));
//! a distributed one carries bytes, encoded by the Python layer (`_codec`).

use std::sync::Arc;

use fanout::postgres::{PostgresConfig, PostgresPubSub};
use fanout::redis::{RedisConfig, RedisPubSub};
use fanout::{Config, Engine, InMemoryPubSub, PubSubProvider, SessionReceiver, SessionStats};

/// One provider, of one of the kinds the package offers.
#[derive(Clone)]
pub(crate) enum Backend {
    /// Messages are Python objects, the same object for every subscriber.
    Memory(Arc<InMemoryPubSub>),
    /// Messages are encoded bytes; Redis carries them to other instances.
    Redis(Arc<RedisPubSub>),
    /// Messages are encoded bytes; PostgreSQL's `NOTIFY` carries them to other instances.
    Postgres(Arc<PostgresPubSub>),
}

impl Backend {
    /// An in-memory provider.
    pub(crate) fn memory(config: Config) -> Result<Self, fanout::ConfigError> {
        InMemoryPubSub::with_config(config).map(|pubsub| Self::Memory(Arc::new(pubsub)))
    }

    /// A Redis provider.
    pub(crate) fn redis(redis: RedisConfig, config: Config) -> Result<Self, fanout::ConfigError> {
        RedisPubSub::with_config(redis, config).map(|pubsub| Self::Redis(Arc::new(pubsub)))
    }

    /// A PostgreSQL provider.
    pub(crate) fn postgres(postgres: PostgresConfig, config: Config) -> Result<Self, fanout::ConfigError> {
        PostgresPubSub::with_config(postgres, config).map(|pubsub| Self::Postgres(Arc::new(pubsub)))
    }

    /// The provider, for the operations every kind has.
    pub(crate) fn provider(&self) -> Arc<dyn PubSubProvider> {
        match self {
            Self::Memory(pubsub) => Arc::clone(pubsub) as Arc<dyn PubSubProvider>,
            Self::Redis(pubsub) => Arc::clone(pubsub) as Arc<dyn PubSubProvider>,
            Self::Postgres(pubsub) => Arc::clone(pubsub) as Arc<dyn PubSubProvider>,
        }
    }

    /// Whether messages are encoded bytes rather than Python objects.
    pub(crate) fn encoded(&self) -> bool {
        !matches!(self, Self::Memory(_))
    }

    /// This instance's engine: its sessions, config and counters.
    pub(crate) fn engine(&self) -> &Engine {
        match self {
            Self::Memory(pubsub) => pubsub.engine(),
            Self::Redis(pubsub) => pubsub.engine(),
            Self::Postgres(pubsub) => pubsub.engine(),
        }
    }

    /// Opens a pull-form session on this instance.
    pub(crate) fn open_session(&self, session_id: &str) -> fanout::Result<SessionReceiver> {
        match self {
            Self::Memory(pubsub) => pubsub.open_session(session_id),
            Self::Redis(pubsub) => pubsub.open_session(session_id),
            Self::Postgres(pubsub) => pubsub.open_session(session_id),
        }
    }

    /// Figures for one live session of this instance.
    pub(crate) fn session_stats(&self, session_id: &str) -> Option<SessionStats> {
        match self {
            Self::Memory(pubsub) => pubsub.session_stats(session_id),
            Self::Redis(pubsub) => pubsub.session_stats(session_id),
            Self::Postgres(pubsub) => pubsub.session_stats(session_id),
        }
    }

    /// The broker's counters, for a distributed provider.
    pub(crate) fn broker_stats(&self) -> Option<fanout::bridge::BrokerStats> {
        match self {
            Self::Memory(_) => None,
            Self::Redis(pubsub) => Some(pubsub.broker_stats()),
            Self::Postgres(pubsub) => Some(pubsub.broker_stats()),
        }
    }
}
