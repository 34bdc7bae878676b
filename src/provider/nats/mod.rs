//! `NatsPubSub`: the provider for high-throughput deployments, carried by core NATS
//! publish/subscribe (cargo feature `nats`).
//!
//! Run several instances of your server, each with a `NatsPubSub` on the same NATS server and
//! the same subject prefix: a broadcast on any instance reaches the subscribed sessions on
//! every instance.
//!
//! ```no_run
//! use fanout::nats::{NatsConfig, NatsPubSub};
//! use fanout::{Config, Handler, PubSubProvider};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // NATS_URL, or nats://127.0.0.1:4222
//! let pubsub = NatsPubSub::with_config(NatsConfig::from_env(), Config::default())?;
//! pubsub.start().await?; // fails with a clear error if the server cannot be reached
//! pubsub
//!     .subscribe_topic("tab-1", "room:lobby", Handler::new(|topic, message| async move {
//!         println!("{topic}: {}", String::from_utf8_lossy(&message));
//!     }))
//!     .await?; // returns once the server has processed the SUB
//! pubsub.broadcast("room:lobby", "hello".into()).await?; // every instance's sessions
//! pubsub.stop().await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! The provider is the [bridge](crate::bridge) over NATS: the local fast path, echo skip,
//! batching, order, reconnection and what each call returns are described there, the same for
//! every broker. What is NATS's own:
//!
//! - **Subjects ([G6]).** A topic's subject is the prefix (default `fanout`), a dot, and the
//!   topic as one token in which `.`, `*`, `>`, `%`, whitespace and every byte outside
//!   printable ASCII are written `%XX`: `a.*` is `fanout.a%2E%2A`, `$SYS.x` is
//!   `fanout.$SYS%2Ex`. No topic is a wildcard or spans another number of tokens, and no two
//!   topics share a subject; every envelope also carries its full topic, checked against the
//!   subject it came on.
//! - **Control lines.** The server closes a connection that sends a command line longer than
//!   its `max_control_line` (4096 bytes by default, not announced to clients): set
//!   [`NatsConfig::max_control_line`] to the server's value. A topic byte takes up to three in
//!   its subject, so construction fails with a [`ConfigError`] naming
//!   `nats.max_control_line` and `limits.max_topic_bytes` if the longest topic the engine
//!   accepts could need a longer line; then no topic can break a connection.
//! - **Payloads.** Each connection reads the server's `max_payload` from its `INFO`; a
//!   broadcast whose envelope would exceed it, or [`NatsConfig::max_envelope_bytes`], is
//!   refused with [`NatsPubSubError::EnvelopeTooLarge`] naming both sizes, before anything is
//!   delivered. The publisher joins messages into envelopes of at most 64 KiB, so a batch
//!   never exceeds the server's limit (set `max_envelope_bytes` at most the server's
//!   `max_payload` if that is below 64 KiB).
//! - **Connections.** Two TCP connections per instance, named `fanout-<instance>-publish` and
//!   `fanout-<instance>-subscribe` (in the server's `/connz`). A batch of broadcasts is one
//!   write of pipelined `PUB`s followed by `PING`; the `PONG` says the server has processed
//!   them all (core NATS does not answer a `PUB`). A `PUB` the server refuses for permissions
//!   is reported as `-ERR 'Permissions Violation for Publish to "<subject>"'` before that
//!   `PONG`: the envelopes of the batch on that subject are counted refused (and an
//!   acknowledged broadcast among them gets [`Unacknowledged::Refused`]); any other `-ERR` is
//!   logged. `subscribe_topic` writes `SUB` and `PING` and returns on the `PONG`: the server
//!   has processed the `SUB`, so a broadcast that begins afterwards on any instance reaches
//!   the session ([G1]).
//! - **Echo.** Connections say `echo: true`, and an instance skips its own messages by the
//!   instance id in the envelope, as with every broker. `no_echo` would not do it: it applies
//!   per connection, and the publishing and subscribing connections differ, so the server would
//!   deliver our messages to our subscription connection anyway.
//! - **Inbound messages** are checked like every broker's (G9): a payload that is not an
//!   envelope, or an envelope for another topic than its subject's, is counted in
//!   `malformed` and skipped. Connections say `headers: false`, so the server strips NATS
//!   headers from what a foreign client publishes with them and delivers the payload alone; a
//!   reply subject is ignored. A byte stream out of step with the protocol (a length that
//!   lies, a control line over its bound) closes the connection, which the bridge reconnects.
//! - **Outages.** A closed connection is noticed at once (its reader sees the end of stream),
//!   a silent one by a `PING` every `health_check_interval`; the provider reconnects and
//!   subscribes every topic again. Core NATS is at-most-once: **messages other instances
//!   publish while a connection is down are lost**, nothing is replayed.
//! - **Configuration files.** `NatsConfig::from_toml_file` (feature `toml`) reads a file that
//!   holds a `[nats]` table alone; the engine's [`Config`](crate::Config) is a file of its own.
//!
//! # Why a protocol client of its own
//!
//! The provider speaks the NATS client protocol itself (`wire.rs` and `connection.rs`, about
//! 570 lines of code without comments and tests) rather than through `async-nats`:
//!
//! 1. **Order across topics ([G4]).** `async-nats` hands each subscription's messages to a
//!    channel of its own, so a listener reading many subscriptions cannot tell in which order
//!    the server delivered messages on different subjects, and one publisher's order across
//!    topics, which G4 requires, would be lost. The server delivers one connection's messages
//!    in order; reading that one connection in order keeps it.
//! 2. **Confirmation by the server.** `subscribe_topic` must return only after the server has
//!    processed the `SUB`, and an acknowledged broadcast needs a reply after its `PUB`.
//!    `async-nats`'s `flush` resolves once the socket write is flushed, not on a reply from
//!    the server; on a connection of our own, a `PING` after the commands and its `PONG` is
//!    that reply, because the server processes a connection's commands in order.
//! 3. **One owner of reconnection.** The bridge already reconnects, backs off, counts and
//!    logs outages for every broker; a client that also reconnects and resubscribes by itself
//!    would duplicate that and hide outages from the bridge's accounting.
//!
//! # Limits
//!
//! - **No TLS**, and no `tls://` URLs: a server that requires TLS is refused at connect with a
//!   clear error.
//! - **Credentials**: user and password (`nats://user:password@host`) or a token
//!   (`nats://token@host`) from the URL, sent in `CONNECT`. No NKEY, JWT or credentials files.
//! - **One server.** No cluster server list and no discovery of cluster members from `INFO`:
//!   the provider reconnects to the server its URL names.
//! - **Memory.** The subscription connection's reader hands up to 4,096 messages and 64 MiB
//!   of them ahead of the listener, each in an allocation of its own, in batches of up to
//!   256 messages and about 1 MiB (a batch over 64 MiB, which only a message near the
//!   server's largest can make, goes alone); past that it stops reading and the server holds the backlog, up to its
//!   per-client `max_pending` (64 MB by default), beyond which the server closes the
//!   connection as a slow consumer: an outage, reconnected like any other. Each time the
//!   reader stops so is counted ([`NatsStats::inbound_stalls`]); the server closes a slow
//!   consumer without saying why, so an outage that begins while the reader is stalled, or
//!   within a second of a stall, is counted as a slow consumer's
//!   ([`NatsStats::slow_consumer_outages`]) and logged as such, its length logged on the
//!   reconnect like every outage's.
//!
//! # Measured
//!
//! Two instances in one process on one NATS 2.9.10 server on the same 2-core machine, every
//! session on the receiving instance (one per topic), 64-byte messages, a random topic per
//! message; against the same traffic through a plain client with no fanout, on the same
//! server, run alternately with ours. Medians of five 3-second runs of each side:
//!
//! - against `async-nats` 0.52 with its default options (`Client::publish` on one client, a
//!   subscription per subject on another, read in one task): `scripts/broker_ratio.py
//!   --provider nats --rounds 5 --latency-at-half` at `871e02f`, flat out, then both sides at
//!   half ours' median rate;
//! - against the client protocol written and read directly (no client library in between):
//!   `scripts/broker_ratio.py --provider nats --rounds 5 --nats-baseline protocol` at
//!   `2962074`, flat out.
//!
//! | topics | ours | `async-nats` | ratio | at half ours' rate, p50 / p99: ours | `async-nats` | ratio to protocol |
//! | ---: | ---: | ---: | ---: | --- | --- | ---: |
//! | 1 | 1,263,057/s | 614,713/s | **1.61x** | 0.81 / 6.2 ms | 2.3 / 14 ms | 0.79x |
//! | 100 | 711,989/s | 641,043/s | **1.16x** | 0.92 / 10 ms | 1.7 / 11 ms | 0.50x |
//! | 10,000 | 241,719/s | 144,228/s | **1.64x** | 0.98 / 13 ms | 2.8 / 31 ms | 0.64x |
//!
//! "Ours" counts the messages that crossed to the receiving instance. With 100 and 10,000
//! topics each of them reached its session's handler, flat out and at half rate. One topic,
//! flat out, is a flood of one session: its handler ran for 33% to 37% of the messages that
//! crossed (457,962 a second, median), its `drop_oldest` policy (the tool's default) dropping
//! the rest, which is 0.58x the rate `async-nats`'s reader took messages at (it dropped 20% to
//! 44% of them as a slow consumer). At half ours' rate (631,528 a second offered to both)
//! the session handled 96.7% to 98.5% of them and `async-nats` all.
//!
//! `async-nats` gives each subscription a channel of its own, which one reader drains: with
//! 100 or 10,000 subjects flat out its messages waited in those channels (p50 1.5 s and
//! 4.0 s). The protocol spoken directly is a stricter bar: one task reading one connection,
//! with nothing per subject. Against it the provider's gap is in the crossing: with many
//! topics each message is an envelope of its own that crosses the bridge's publish queue,
//! the listener, and a session task of the receiving engine, on the two cores `nats-server`
//! also runs on. In the protocol runs' reports at 100 topics (medians), our process used
//! 1.4 µs of CPU per message and the server 0.95 µs, against 0.39 µs for the baseline's
//! process; at 10,000, 4.2 µs and 4.0 µs against 0.67 µs. One busy topic is batched, about
//! 150 to 190 messages per `PUB`.
//!
//! [G1]: crate::docs::contract#g1-delivery
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G6]: crate::docs::contract#g6-topic-isolation
//! [`ConfigError`]: crate::ConfigError
//! [`Unacknowledged::Refused`]: crate::bridge::Unacknowledged::Refused

mod broker;
mod config;
#[cfg(feature = "toml")]
mod config_file;
mod connection;
mod subject;
mod wire;
mod wire_check;

pub use self::config::{
    NatsConfig, DEFAULT_MAX_CONTROL_LINE, DEFAULT_NATS_PORT, DEFAULT_NATS_URL, MAX_ENVELOPE_BYTES,
    NATS_URL_ENV,
};
pub use self::subject::DEFAULT_SUBJECT_PREFIX;
#[doc(hidden)]
pub use self::wire_check::check_parser;
pub use crate::provider::bridge::{BrokerError as NatsPubSubError, BrokerStats as NatsStats, InstanceId};

use self::broker::NatsBroker;
use crate::config::{Config, ConfigError};
use crate::provider::bridge::{bridge_provider, Bridge};

/// A distributed provider over core NATS: local sessions are served by the embedded in-memory
/// engine, the NATS server carries messages between instances. See the [module docs](self).
pub struct NatsPubSub {
    bridge: Bridge<NatsBroker>,
}

impl NatsPubSub {
    /// A provider for the NATS server of `nats`, with the default local [`Config`].
    pub fn new(nats: NatsConfig) -> Result<Self, ConfigError> {
        Self::with_config(nats, Config::default())
    }

    /// A provider for the NATS server of `nats`, whose local engine runs with `config`. Both
    /// are validated, and together: the longest topic `config` allows must fit the server's
    /// control line ([`NatsConfig::max_control_line`]). Nothing connects until
    /// [`start`](crate::PubSubProvider::start).
    pub fn with_config(nats: NatsConfig, config: Config) -> Result<Self, ConfigError> {
        nats.validate()?;
        nats.check_control_line(&config.limits)?;
        let endpoint = nats.endpoint()?;
        let instance = InstanceId::random();
        let settings = nats.bridge_settings();
        let broker = NatsBroker::new(nats, endpoint, instance);
        Ok(Self {
            bridge: Bridge::new(instance, broker, settings, config)?,
        })
    }

    /// The NATS settings.
    pub fn nats_config(&self) -> &NatsConfig {
        &self.bridge.broker().config
    }

    /// The largest envelope a broadcast may need: [`NatsConfig::max_envelope_bytes`], or the
    /// server's `max_payload` (learned at each connection) if smaller.
    pub fn max_envelope_bytes(&self) -> usize {
        self.bridge.broker().envelope_limit()
    }

    /// The same as [`broker_stats`](Self::broker_stats), under its NATS name.
    pub fn nats_stats(&self) -> NatsStats {
        self.bridge.broker_stats()
    }

    /// The name of this instance's connection in `role` (`"publish"` or `"subscribe"`), as
    /// the server's `/connz` shows it.
    pub fn connection_name(&self, role: &str) -> String {
        format!("fanout-{}-{role}", self.instance_id())
    }
}

bridge_provider!(NatsPubSub);

impl std::fmt::Debug for NatsPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPubSub")
            .field("instance", &self.bridge.instance_id())
            .field("nats", self.nats_config())
            .field("local", self.bridge.local())
            .finish()
    }
}
