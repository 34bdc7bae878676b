//! `PostgresPubSub`: the provider for deployments that already run PostgreSQL and want no
//! other infrastructure, carried by `LISTEN` / `NOTIFY` (cargo feature `postgres`).
//!
//! Run several instances of your server, each with a `PostgresPubSub` on the same database and
//! the same channel prefix: a broadcast on any instance reaches the subscribed sessions on
//! every instance.
//!
//! ```no_run
//! use fanout::postgres::{PostgresConfig, PostgresPubSub};
//! use fanout::{Config, Handler, PubSubProvider};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // DATABASE_URL, or postgres://postgres@127.0.0.1:5432/test
//! let pubsub = PostgresPubSub::with_config(PostgresConfig::from_env(), Config::default())?;
//! pubsub.start().await?; // fails with a clear error if the database cannot be reached
//! pubsub
//!     .subscribe_topic("tab-1", "room:lobby", Handler::new(|topic, message| async move {
//!         println!("{topic}: {}", String::from_utf8_lossy(&message));
//!     }))
//!     .await?; // returns once PostgreSQL has confirmed the LISTEN
//! pubsub.broadcast("room:lobby", "hello".into()).await?; // every instance's sessions
//! pubsub.stop().await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! The provider is the [bridge](crate::bridge) over PostgreSQL: the local fast path, echo
//! skip, batching, order, reconnection and what each call returns are described there, the
//! same for every broker. What is PostgreSQL's own:
//!
//! - **Two connections** per instance (three with large payloads), each named in
//!   `pg_stat_activity` by its `application_name`, `fanout-postgres-<instance>-listen`,
//!   `…-publish` and `…-fetch` ([`PostgresPubSub::application_name`]). The listening connection
//!   is driven by its own task, which reads notifications as they arrive, up to 4,096 ahead of
//!   the listener; the listener never waits on a handler, so a slow session does not hold back
//!   PostgreSQL's shared notification queue.
//! - **No SQL is built from input.** A broadcast is `SELECT pg_notify($1, $2)`, the channel
//!   and the notification as bound parameters, pipelined. `LISTEN` / `UNLISTEN` name a
//!   channel, always as a quoted identifier. Every statement is its own transaction, so two
//!   identical broadcasts are two notifications (PostgreSQL collapses identical notifications
//!   only within one transaction).
//! - **Channels.** A topic's channel is the prefix followed by the topic when that is printable
//!   ASCII of at most 63 bytes (PostgreSQL's identifier limit); otherwise the prefix, `#` and a
//!   stable 128-bit hash of the topic. Every envelope carries its full topic, and a receiver
//!   delivers only an envelope whose topic the channel carries, so two topics that share a
//!   hashed channel stay apart ([G6]).
//! - **Size.** A notification's payload is text under 8000 bytes: the envelope travels
//!   base64-encoded, at most [`NOTIFY_PAYLOAD_LIMIT`] (7,999) bytes, which leaves room for a
//!   raw payload of 5,953 bytes on a short topic (`room:1`) with no sender
//!   ([`max_inline_payload`] for others). A larger
//!   broadcast is refused with
//!   [`BrokerError::NotificationTooLarge`](crate::bridge::BrokerError::NotificationTooLarge),
//!   naming the limit and the size, before anything is delivered; it is never truncated or
//!   split.
//! - **Large payloads**, opt in with [`LargePayloads::Table`] (`large_payloads = "table"`):
//!   an envelope over the limit is stored in an `UNLOGGED` table in the same database
//!   ([`PostgresConfig::payload_table`], created by `start()` if missing) by the same statement
//!   that notifies its row's id; receivers fetch it by id. Rows are deleted after
//!   [`PostgresConfig::payload_ttl`]: an instance that fetches later (it was far behind)
//!   skips the message and counts it as malformed. Batches stay under the inline limit, so
//!   small messages never take this slower path.
//! - **Outages.** A closed connection (a server restart, `pg_terminate_backend`) is noticed at
//!   once, a silent one by a health query (`SELECT 1`) every `health_check_interval`; the
//!   provider reconnects and `LISTEN`s on every channel again. `NOTIFY` is not stored for
//!   absent listeners: **messages other instances publish while the listening connection is
//!   down are lost**.
//! - **TLS** is not supported yet: the connections are plain TCP or Unix sockets, so a server
//!   that requires TLS (most hosted PostgreSQL services) refuses them; `sslmode` in the URL
//!   changes nothing.
//! - **Connection poolers.** `LISTEN` and prepared statements need a session of their own:
//!   point the provider at the server, or at a pooler in session mode, never at a pooler in
//!   transaction mode (PgBouncer's default for many hosted services).
//! - **Configuration files.** `PostgresConfig::from_toml_file` (feature `toml`) reads a file
//!   that holds a `[postgres]` table alone; the engine's [`Config`](crate::Config) is a file of
//!   its own.
//!
//! # Memory
//!
//! Notifications are handed to the local engine as they arrive, under each topic's overflow
//! policy. Under a `block` policy the listener waits, for at most the policy's timeout per
//! message, for room in a full mailbox; meanwhile messages on every other topic wait behind it:
//! up to 4,096 notifications in this process, then in PostgreSQL's notification queue (8 GB
//! by default; when it is full, `NOTIFY` fails for every publisher on the server). The health
//! query reads `pg_notification_queue_usage()` and logs a warning while the queue is past half
//! full.
//!
//! # Measured
//!
//! Two instances in one process on one PostgreSQL 15 server (AMD EPYC, 2 cores), every
//! session on the receiving one, 64-byte messages, a random topic per message; against a
//! plain tokio-postgres loop of pipelined `pg_notify` with one connection listening on every
//! channel. `scripts/broker_ratio.py` (flat out) and `scripts/broker_ratio.py --rate
//! 20000` at commit `2bd3b0d`, medians of five alternating 3-second runs, while other builds
//! shared the machine:
//!
//! | topics | flat out: ours | baseline | ratio | at 20,000/s: p50 / p99, ours | baseline |
//! | --- | --- | --- | --- | --- | --- |
//! | 1 | 676,000/s | 45,700/s | 14.5x | 0.29 / 3.5 ms | 1.1 / 69 ms |
//! | 100 | 45,300/s | 47,500/s | 0.95x | 0.74 / 6.8 ms | 0.20 / 19 ms |
//! | 10,000 | 29,600/s | 29,100/s | 0.99x | 1.7 / 34 ms | 3.9 / 66 ms |
//!
//! One busy topic gains from batching: consecutive queued broadcasts share a notification,
//! where the baseline sends one `pg_notify` per message. With many topics both sides are bound
//! by the server, and at 10,000 channels by the listening backend, which checks each
//! notification against its channels one by one. Flat out, latency is queueing (our publish
//! queue holds up to `publish_queue` messages); the rate-limited columns compare the paths
//! themselves, where ours adds the local engine and a task hop to each delivery.
//!
//! Large payloads through the table, 100 topics, flat out: `fanout-sizing --provider postgres
//! --large-payloads-table --rate 0 --topics 100 --sessions 100 --topics-per-session 1
//! --duration 3 --message-size N` at commit `ca23eb7`: 7,855 messages/s at 16 KB (peak heap
//! 90 MiB) and 680/s at 256 KB (107 MiB), none lost, no outage.
//!
//! [G6]: crate::docs::contract#g6-topic-isolation

mod broker;
mod channel;
mod config;
#[cfg(feature = "toml")]
mod config_file;
mod wire;

pub use self::channel::{MAX_CHANNEL_PREFIX_BYTES, MAX_IDENTIFIER_BYTES};
pub use self::config::{
    LargePayloads, PostgresConfig, DATABASE_URL_ENV, DEFAULT_DATABASE_URL, MAX_ENVELOPE_BYTES,
    MAX_PAYLOAD_TTL,
};
pub use self::wire::{encoded_len, max_inline_envelope, max_inline_payload, NOTIFY_PAYLOAD_LIMIT};

use self::broker::PostgresBroker;
use crate::config::{Config, ConfigError};
use crate::provider::bridge::{bridge_provider, Bridge, InstanceId};

/// A distributed provider over PostgreSQL `LISTEN` / `NOTIFY`: local sessions are served by
/// the embedded in-memory engine, PostgreSQL carries messages between instances. See the
/// [module docs](self).
pub struct PostgresPubSub {
    bridge: Bridge<PostgresBroker>,
}

impl PostgresPubSub {
    /// A provider for the database at `postgres`, with the default local [`Config`].
    pub fn new(postgres: PostgresConfig) -> Result<Self, ConfigError> {
        Self::with_config(postgres, Config::default())
    }

    /// A provider for the database at `postgres`, whose local engine runs with `config`. Both
    /// are validated; nothing connects until [`start`](crate::PubSubProvider::start).
    pub fn with_config(postgres: PostgresConfig, config: Config) -> Result<Self, ConfigError> {
        postgres.validate()?;
        let connect = postgres.connect_config()?;
        let instance = InstanceId::random();
        let settings = postgres.bridge_settings();
        let broker = PostgresBroker::new(postgres, connect, instance)
            .map_err(|error| ConfigError::at_key("postgres.payload_table", error))?;
        Ok(Self {
            bridge: Bridge::new(instance, broker, settings, config)?,
        })
    }

    /// The PostgreSQL settings.
    pub fn postgres_config(&self) -> &PostgresConfig {
        &self.bridge.broker().config
    }

    /// The `application_name` of this instance's connection in `role` (`"listen"`,
    /// `"publish"`, or with large payloads `"fetch"`), as `pg_stat_activity` shows it.
    pub fn application_name(&self, role: &str) -> String {
        format!("fanout-postgres-{}-{role}", self.instance_id())
    }
}

bridge_provider!(PostgresPubSub);

impl std::fmt::Debug for PostgresPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresPubSub")
            .field("instance", &self.bridge.instance_id())
            .field("postgres", self.postgres_config())
            .field("local", self.bridge.local())
            .finish()
    }
}
