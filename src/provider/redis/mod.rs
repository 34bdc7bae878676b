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
//! - **Local fast path.** Each instance embeds the in-memory engine. A broadcast is delivered to
//!   this instance's sessions directly, and handed to Redis for the others. Every instance has a
//!   random [`InstanceId`] carried in the envelope, and skips its own messages when Redis echoes
//!   them back, so local sessions get each message once.
//! - **One channel per topic.** The channel is the configured prefix followed by the topic,
//!   subscribed with `SUBSCRIBE` (never `PSUBSCRIBE`), so `*`, `?`, `[`, `]` and `\` in a topic
//!   stay literal ([G6]). The instance subscribes when the topic gets its first local session and
//!   unsubscribes when the last one leaves ([G7]). `subscribe_topic` returns only once Redis has
//!   confirmed the channel, so a broadcast that begins afterwards on any instance reaches the
//!   session ([G1] across instances).
//! - **`broadcast_from`** excludes the sending session on every instance: the envelope carries
//!   its id.
//! - **Batching.** The publishing task coalesces each run of consecutive queued broadcasts on
//!   one topic into one envelope, so a busy topic costs Redis one `PUBLISH` per batch rather
//!   than per message. It takes only what is already queued: a lone broadcast is never held
//!   back waiting for company.
//! - **Order ([G4]).** One publishing connection, fed by one queue, sends pipelined `PUBLISH`
//!   commands in queue order; batching never moves a message past one on another topic; Redis
//!   forwards one connection's messages in order; the listener delivers an envelope's records
//!   in order. So one publisher's messages reach every session, on every instance, in publish
//!   order.
//! - **Envelope.** The backend-neutral [`envelope`](crate::envelope) format: versioned, with the
//!   origin and topic, then each message's optional sender and payload, at most
//!   [`RedisConfig::max_envelope_bytes`]. A malformed or foreign message on one of our channels
//!   is counted ([`RedisStats::malformed`]), logged and skipped whole; the listener keeps
//!   running ([G9]).
//!
//! # What `broadcast` and `subscribe_topic` return
//!
//! - `Ok(())` from `broadcast`: local sessions have the message (as with
//!   [`InMemoryPubSub`]) and it is queued for Redis. Redis pub/sub is
//!   fire-and-forget: a message queued when the connection breaks is lost and counted
//!   ([`RedisStats::publish_errors`]).
//! - [`RedisPubSubError::PublishUnavailable`] (inside [`PubSubError::Backend`]) when the
//!   publishing connection is down: local sessions **did** get the message; other instances did
//!   not, and will not (it is not queued for later). Retrying would deliver it twice locally.
//! - [`RedisPubSubError::SubscribeUnconfirmed`] from `subscribe_topic` when the subscription
//!   connection is down: the session **is** subscribed on this instance, and the channel is
//!   subscribed as soon as the connection is back.
//! - Bad input (empty or oversized topic, payload or session id, an envelope over the limit)
//!   is refused before anything is delivered, with the same typed errors as the in-memory
//!   provider, or [`RedisPubSubError::EnvelopeTooLarge`].
//!
//! # Outages
//!
//! Both connections are watched: a closed or killed connection is noticed at once, a silent
//! one (a network cut) by a `PING` every [`RedisConfig::health_check_interval`] that must be
//! answered within [`RedisConfig::response_timeout`]. The provider then reconnects with capped
//! exponential backoff (first attempt immediate, then [`RedisConfig::reconnect_backoff_min`]
//! doubling up to [`RedisConfig::reconnect_backoff_max`]) and subscribes every topic again.
//! Each outage is counted in [`RedisStats`] and logged with its length when it ends.
//!
//! While Redis is down, sessions on each instance keep receiving what is broadcast on that
//! instance. **Messages other instances publish during the gap are lost**: Redis pub/sub is
//! at-most-once, nothing is replayed after a reconnect.
//!
//! # Memory
//!
//! The publish queue is bounded ([`RedisConfig::publish_queue`]); broadcasts wait for room.
//! Inbound messages are handed to the engine as they arrive, under each topic's overflow
//! policy; while a `block` policy makes the listener wait, Redis holds the backlog, up to its
//! `client-output-buffer-limit` for pub/sub clients, past which it drops the connection (an
//! outage, as above).
//!
//! [G1]: crate::docs::contract#g1-delivery
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G6]: crate::docs::contract#g6-topic-isolation
//! [G7]: crate::docs::contract#g7-bounded-memory
//! [G9]: crate::docs::contract#g9-errors-are-values

mod config;
mod connection;
mod error;
mod listener;
mod publisher;
mod stats;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::config::{RedisConfig, DEFAULT_REDIS_URL, MAX_ENVELOPE_BYTES, REDIS_URL_ENV};
pub use self::error::RedisPubSubError;
pub use self::stats::RedisStats;
pub use crate::envelope::InstanceId;

use self::connection::{open_publisher, open_subscriber};
use self::listener::{Intake, Listener};
use self::publisher::{Outbound, Publisher, PublisherState};
use self::stats::RedisCounters;
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, Notice};
use crate::envelope::{single_encoded_len, EnvelopeLimits, Record};
use crate::error::{PubSubError, Result};
use crate::handler::Handler;
use crate::provider::memory::InMemoryPubSub;
use crate::provider::PubSubProvider;
use crate::stats::{SessionStats, StatsSnapshot};
use crate::sync::{lock, Mutex};
use crate::topic::{check_payload, check_session_id, check_topic, Topic};

/// This instance's Redis side, shared by the provider and its two tasks (listener, publisher):
/// settings, client, instance id and limits, immutable; the counters and the publisher's state.
pub(crate) struct InstanceState {
    config: RedisConfig,
    client: redis::Client,
    instance: InstanceId,
    envelope_limits: EnvelopeLimits,
    counters: RedisCounters,
    publisher: PublisherState,
}

impl InstanceState {
    /// The Redis channel of `topic`.
    fn channel(&self, topic: &str) -> String {
        let mut channel = String::with_capacity(self.config.channel_prefix.len() + topic.len());
        channel.push_str(&self.config.channel_prefix);
        channel.push_str(topic);
        channel
    }

    /// The server address, for messages (never the password).
    fn target(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }
}

/// A distributed provider over Redis pub/sub: local sessions are served by the embedded
/// in-memory engine, Redis carries messages between instances. See the [module docs](self).
pub struct RedisPubSub {
    local: InMemoryPubSub,
    shared: Arc<InstanceState>,
    intake: Arc<Intake>,
    /// Broadcasts push here; the publisher task drains it. Bounded.
    queue: mpsc::Sender<Outbound>,
    lifecycle: Mutex<Lifecycle>,
}

enum Lifecycle {
    /// Built; holds what `start` hands the tasks.
    Idle(mpsc::Receiver<Outbound>),
    /// Between a `start` that is connecting and its end.
    Starting,
    Running(BackgroundTasks),
    Stopped,
}

struct BackgroundTasks {
    shutdown: watch::Sender<bool>,
    listener: JoinHandle<()>,
    publisher: JoinHandle<()>,
}

impl RedisPubSub {
    /// A provider for the Redis at `redis`, with the default local [`Config`].
    pub fn new(redis: RedisConfig) -> std::result::Result<Self, ConfigError> {
        Self::with_config(redis, Config::default())
    }

    /// A provider for the Redis at `redis`, whose local engine runs with `config`. Both are
    /// validated; nothing connects until [`start`](PubSubProvider::start).
    pub fn with_config(redis: RedisConfig, config: Config) -> std::result::Result<Self, ConfigError> {
        redis.validate()?;
        let client = redis::Client::open(redis.url.as_str())
            .map_err(|error| ConfigError::at_key("redis.url", error.to_string()))?;
        let intake = Arc::new(Intake::new());
        let engine = Engine::with_observer(
            config,
            Arc::clone(&intake) as Arc<dyn crate::engine::TopicObserver>,
        )?;
        let envelope_limits = EnvelopeLimits::new(&engine.config().limits, redis.max_envelope_bytes);
        let (queue, outbound) = mpsc::channel(redis.publish_queue);
        let shared = Arc::new(InstanceState {
            config: redis,
            client,
            instance: InstanceId::random(),
            envelope_limits,
            counters: RedisCounters::default(),
            publisher: PublisherState::new(),
        });
        Ok(Self {
            local: InMemoryPubSub::from_engine(engine),
            shared,
            intake,
            queue,
            lifecycle: Mutex::new(Lifecycle::Idle(outbound)),
        })
    }

    /// This instance's id, as carried in its envelopes.
    pub fn instance_id(&self) -> InstanceId {
        self.shared.instance
    }

    /// The Redis settings.
    pub fn redis_config(&self) -> &RedisConfig {
        &self.shared.config
    }

    /// The local engine's settings.
    pub fn config(&self) -> &Config {
        self.local.engine().config()
    }

    /// The Redis channel that carries `topic`.
    pub fn channel_for(&self, topic: &str) -> String {
        self.shared.channel(topic)
    }

    /// A snapshot of the Redis-side counters (outages, reconnects, messages sent, received and
    /// skipped).
    pub fn redis_stats(&self) -> RedisStats {
        self.shared.counters.snapshot(self.shared.publisher.is_up())
    }

    /// Figures for one live local session.
    pub fn session_stats(&self, session_id: &str) -> Option<SessionStats> {
        self.local.session_stats(session_id)
    }

    /// Sets the callback for [`Notice`]s about local sessions. Only the first call takes
    /// effect; returns `false` if a hook was already set.
    pub fn on_notice(&self, hook: impl Fn(&Notice) + Send + Sync + 'static) -> bool {
        self.local.on_notice(hook)
    }

    /// Background tasks still running: local session tasks, and the listener and publisher
    /// while started.
    pub fn running_tasks(&self) -> usize {
        let redis_tasks = match &*lock(&self.lifecycle) {
            Lifecycle::Running(tasks) => [&tasks.listener, &tasks.publisher]
                .iter()
                .filter(|task| !task.is_finished())
                .count(),
            _ => 0,
        };
        self.local.running_tasks() + redis_tasks
    }

    fn check_running(&self) -> Result<()> {
        match &*lock(&self.lifecycle) {
            Lifecycle::Running(_) => Ok(()),
            Lifecycle::Stopped => Err(PubSubError::Stopped),
            Lifecycle::Idle(_) | Lifecycle::Starting => Err(RedisPubSubError::NotStarted.into()),
        }
    }

    async fn publish(&self, sender: Option<&str>, topic: &str, payload: Bytes) -> Result<()> {
        self.check_running()?;
        let limits = &self.config().limits;
        check_topic(topic, limits)?;
        check_payload(&payload, limits)?;
        if let Some(sender) = sender {
            check_session_id(sender, limits)?;
        }
        let record = Record {
            sender,
            payload: &payload,
        };
        let len = single_encoded_len(topic, &record);
        let limit = self.shared.config.max_envelope_bytes;
        if len > limit {
            return Err(RedisPubSubError::EnvelopeTooLarge { len, limit }.into());
        }
        let engine = self.local.engine();
        match sender {
            Some(sender) => engine.broadcast_from(sender, topic, payload.clone()).await?,
            None => engine.broadcast(topic, payload.clone()).await?,
        };
        let publisher = &self.shared.publisher;
        if !publisher.is_up() {
            RedisCounters::add(&self.shared.counters.unavailable, 1);
            return Err(RedisPubSubError::PublishUnavailable {
                down_for: publisher.down_for(),
            }
            .into());
        }
        let outbound = Outbound {
            topic: Topic::from(topic),
            sender: sender.map(Box::from),
            payload,
        };
        self.queue.send(outbound).await.map_err(|_| PubSubError::Stopped)
    }
}

#[async_trait]
impl PubSubProvider for RedisPubSub {
    /// Subscribes locally, then waits until Redis has confirmed the topic's channel ([G1] across
    /// instances). See the module docs for [`RedisPubSubError::SubscribeUnconfirmed`].
    ///
    /// [G1]: crate::docs::contract#g1-delivery
    async fn subscribe_topic(&self, session_id: &str, topic: &str, handler: Handler) -> Result<()> {
        self.check_running()?;
        self.local.subscribe_topic(session_id, topic, handler).await?;
        match self.intake.wait_for(Topic::from(topic)).await {
            Ok(confirmed) => confirmed.map_err(Into::into),
            // The listener ended: the provider is stopping.
            Err(_) => Err(PubSubError::Stopped),
        }
    }

    async fn unsubscribe_topic(&self, session_id: &str, topic: &str) -> Result<()> {
        self.check_running()?;
        self.local.unsubscribe_topic(session_id, topic).await
    }

    async fn unsubscribe_all(&self, session_id: &str) -> Result<()> {
        self.check_running()?;
        self.local.unsubscribe_all(session_id).await
    }

    async fn broadcast(&self, topic: &str, message: Bytes) -> Result<()> {
        self.publish(None, topic, message).await
    }

    async fn broadcast_from(&self, session_id: &str, topic: &str, message: Bytes) -> Result<()> {
        self.publish(Some(session_id), topic, message).await
    }

    /// Connects both connections and starts the listener and publisher tasks. Fails with
    /// [`RedisPubSubError::Connect`] if Redis cannot be reached (nothing is left running).
    /// Idempotent while running.
    async fn start(&self) -> Result<()> {
        let outbound = {
            let mut lifecycle = lock(&self.lifecycle);
            match std::mem::replace(&mut *lifecycle, Lifecycle::Starting) {
                Lifecycle::Idle(outbound) => outbound,
                other => {
                    let result = match &other {
                        Lifecycle::Running(_) => Ok(()),
                        Lifecycle::Stopped => Err(PubSubError::Stopped),
                        _ => Err(RedisPubSubError::NotStarted.into()),
                    };
                    *lifecycle = other;
                    return result;
                }
            }
        };
        let shared = &self.shared;
        let connected = async {
            let subscriber = open_subscriber(shared).await?;
            let publisher = open_publisher(shared).await?;
            Ok::<_, connection::ConnectError>((subscriber, publisher))
        }
        .await;
        let (subscriber, publisher) = match connected {
            Ok(pair) => pair,
            Err(source) => {
                *lock(&self.lifecycle) = Lifecycle::Idle(outbound);
                let target = shared.target();
                tracing::error!(instance = %shared.instance, target, error = %source, "cannot connect to redis");
                return Err(RedisPubSubError::Connect { target, source }.into());
            }
        };
        self.local.start().await?;
        let (shutdown, stopping) = watch::channel(false);
        let listener = Listener::new(
            Arc::clone(shared),
            Arc::clone(&self.intake),
            self.local.engine().clone(),
            stopping.clone(),
        );
        let tasks = BackgroundTasks {
            shutdown,
            listener: tokio::spawn(listener.run(subscriber)),
            publisher: tokio::spawn(Publisher::new(Arc::clone(shared), outbound, stopping).run(publisher)),
        };
        let mut lifecycle = lock(&self.lifecycle);
        if matches!(*lifecycle, Lifecycle::Stopped) {
            // `stop` ran while we connected.
            let _ = tasks.shutdown.send(true);
            return Err(PubSubError::Stopped);
        }
        *lifecycle = Lifecycle::Running(tasks);
        tracing::info!(
            instance = %shared.instance,
            target = shared.target(),
            prefix = shared.config.channel_prefix,
            "redis provider started"
        );
        Ok(())
    }

    /// Stops local sessions, then the listener and the publisher (which first sends what was
    /// queued), and closes both connections. Idempotent.
    async fn stop(&self) -> Result<()> {
        let previous = std::mem::replace(&mut *lock(&self.lifecycle), Lifecycle::Stopped);
        self.local.stop().await?;
        if let Lifecycle::Running(tasks) = previous {
            let _ = tasks.shutdown.send(true);
            let grace = self.config().stop_grace.max(self.shared.config.response_timeout);
            for mut task in [tasks.listener, tasks.publisher] {
                if tokio::time::timeout(grace, &mut task).await.is_err() {
                    tracing::warn!(instance = %self.shared.instance, "a redis task outlived the stop grace period; aborting it");
                    task.abort();
                    let _ = task.await;
                }
            }
            tracing::info!(instance = %self.shared.instance, "redis provider stopped");
        }
        Ok(())
    }

    fn stats(&self) -> StatsSnapshot {
        self.local.stats()
    }
}

impl std::fmt::Debug for RedisPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPubSub")
            .field("instance", &self.shared.instance)
            .field("redis", &self.shared.config)
            .field("local", &self.local)
            .finish()
    }
}
