//! The bridge: what every distributed provider does that is not about its broker. Redis and
//! PostgreSQL (and later brokers) each implement a small `Broker` trait —
//! open the two connections, subscribe and unsubscribe a channel, publish a batch, yield
//! inbound messages — and the bridge does the rest, the same way for all of them.
//!
//! # How it works
//!
//! - **Local fast path.** Each instance embeds the in-memory engine. A broadcast is delivered to
//!   this instance's sessions directly, and handed to the broker for the others. Every instance
//!   has a random [`InstanceId`] carried in the envelope, and skips its own messages when the
//!   broker echoes them back, so local sessions get each message once.
//! - **One channel per topic.** The instance subscribes the topic's channel when the topic gets
//!   its first local session and unsubscribes when the last one leaves ([G7]).
//!   `subscribe_topic` returns only once the broker has confirmed the channel, so a broadcast
//!   that begins afterwards on any instance reaches the session ([G1] across instances). The
//!   envelope carries the full topic, and a receiver delivers only an envelope whose topic is
//!   the one its channel carries ([G6]).
//! - **`broadcast_from`** excludes the sending session on every instance: the envelope carries
//!   its id.
//! - **Both session forms.** Handler-form sessions (`subscribe_topic`) and pull-form ones
//!   (`open_session`, then the session's `subscribe`) take the same broker subscriptions, and both
//!   subscribes return once the broker has confirmed the channel.
//! - **Batching.** The publishing task coalesces each run of consecutive queued broadcasts on
//!   one topic into one envelope, so a busy topic costs the broker one message per batch rather
//!   than per broadcast. It takes only what is already queued: a lone broadcast is never held
//!   back waiting for company.
//! - **Order ([G4]).** One publishing connection, fed by one queue, sends pipelined commands
//!   in queue order; batching never moves a message past one on another topic; the broker
//!   forwards one connection's messages in order; the listener delivers an envelope's records
//!   in order. So one publisher's messages reach every session, on every instance, in publish
//!   order.
//! - **Envelope.** The backend-neutral [`envelope`](crate::envelope) format: versioned, with the
//!   origin and topic, then each message's optional sender and payload. A malformed or foreign
//!   message on one of our channels is counted ([`BrokerStats::malformed`]), logged and skipped
//!   whole; the listener keeps running ([G9]).
//!
//! # What `broadcast` and `subscribe_topic` return
//!
//! - `Ok(())` from `broadcast`: local sessions have the message (as with
//!   [`InMemoryPubSub`]) and it is queued for the broker. The brokers' pub/sub is
//!   fire-and-forget: a queued message is lost, and counted ([`BrokerStats::publish_errors`]),
//!   when the connection breaks, when the broker refuses its publish, or when `stop()` ends the
//!   flush before it was sent.
//! - `Ok(())` from `broadcast_acknowledged`: the same, and the broker's reply to this
//!   message's publish was read. Otherwise [`BrokerError::Unacknowledged`] says what happened
//!   (refused, unanswered within `response_timeout`, the connection lost, or the provider
//!   stopped first); local sessions have the message either way. It costs the caller a round
//!   trip; other broadcasts are not slowed.
//! - [`BrokerError::PublishUnavailable`] (inside [`PubSubError::Backend`]) when the publishing
//!   connection is down: local sessions **did** get the message; other instances did not, and
//!   will not (it is not queued for later). Retrying would deliver it twice locally.
//! - [`BrokerError::SubscribeUnconfirmed`] from `subscribe_topic` when the subscription
//!   connection is down: the session **is** subscribed on this instance, and the channel is
//!   subscribed as soon as the connection is back.
//! - Bad input (empty or oversized topic, payload or session id, an envelope the broker cannot
//!   carry) is refused before anything is delivered, with the same typed errors as the
//!   in-memory provider, or a [`BrokerError`].
//!
//! # Outages
//!
//! Both connections are watched. A closed or killed connection is noticed at once where the
//! broker's client reports it (every subscription connection; PostgreSQL's publishing
//! connection), otherwise at its next use; a silent one (a network cut) by a ping every
//! `health_check_interval` that must be answered within `response_timeout`. The provider then reconnects with capped exponential backoff (first
//! attempt immediate, then `reconnect_backoff_min` doubling up to `reconnect_backoff_max`) and
//! subscribes every topic again. Each outage is counted in [`BrokerStats`] and logged with its
//! length when it ends.
//!
//! While the broker is down, sessions on each instance keep receiving what is broadcast on that
//! instance. **Messages other instances publish during the gap are lost**: nothing is replayed
//! after a reconnect.
//!
//! # Memory
//!
//! The publish queue is bounded (`publish_queue` messages, and 64 MiB of payloads of 1 KiB or
//! more, a single larger one let through alone); broadcasts wait for room. Inbound messages are
//! handed to the engine as they arrive, under each topic's overflow policy.
//!
//! [G1]: crate::docs::contract#g1-delivery
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G6]: crate::docs::contract#g6-topic-isolation
//! [G7]: crate::docs::contract#g7-bounded-memory
//! [G9]: crate::docs::contract#g9-errors-are-values

mod backoff;
pub(crate) mod broker;
mod error;
// The brokers whose client is the provider's own use it; the trait names its `Pressure`.
#[cfg_attr(not(any(feature = "nats", feature = "redis")), allow(dead_code))]
pub(crate) mod handoff;
mod listener;
// The brokers whose client is the provider's own connect through it; each uses a part only
// it needs (NATS answers the server's keep-alive, Redis reaches Unix sockets).
#[cfg(any(feature = "nats", feature = "redis"))]
#[cfg_attr(not(all(feature = "nats", feature = "redis")), allow(dead_code))]
pub(crate) mod pipeline;
mod publisher;
pub(crate) mod settings;
mod stats;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

pub use self::error::{BrokerError, Unacknowledged};
pub use self::stats::BrokerStats;
pub use crate::envelope::InstanceId;

use self::broker::{Broker, ConnectError};
use self::listener::{Intake, Listener};
use self::publisher::{Outbound, Publisher, PublisherState};
use self::settings::BridgeSettings;
use self::stats::BrokerCounters;
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, Notice, SessionReceiver};
use crate::envelope::{single_encoded_len, EnvelopeLimits, Record};
use crate::error::{PubSubError, Result};
use crate::handler::Handler;
use crate::provider::memory::InMemoryPubSub;
use crate::provider::PubSubProvider;
use crate::stats::{SessionStats, StatsSnapshot};
use crate::sync::{lock, Mutex};
use crate::topic::{check_payload, check_session_id, check_topic, Topic};

/// This instance's broker side, shared by the bridge and its two tasks (listener, publisher):
/// the broker, settings, instance id and limits, immutable; the counters and the publisher's
/// state.
pub(crate) struct Shared<B> {
    broker: B,
    settings: BridgeSettings,
    instance: InstanceId,
    envelope_limits: EnvelopeLimits,
    counters: BrokerCounters,
    publisher: PublisherState,
}

impl<B: Broker> Shared<B> {
    async fn open_subscription(&self) -> std::result::Result<B::Subscription, ConnectError> {
        within(self.settings.connect_timeout, self.broker.open_subscription()).await
    }

    async fn open_publisher(&self) -> std::result::Result<B::Publisher, ConnectError> {
        within(self.settings.connect_timeout, self.broker.open_publisher()).await
    }

    /// The broker-side counters, now.
    fn stats(&self) -> BrokerStats {
        let stalls = self
            .broker
            .inbound_pressure()
            .map_or(0, |pressure| pressure.stalls());
        self.counters.snapshot(self.publisher.is_up(), stalls)
    }
}

async fn within<T>(
    timeout: std::time::Duration,
    connecting: impl std::future::Future<Output = std::result::Result<T, ConnectError>>,
) -> std::result::Result<T, ConnectError> {
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| format!("connecting timed out after {} ms", timeout.as_millis()))?
}

/// A distributed provider over broker `B`: local sessions are served by the embedded in-memory
/// engine, the broker carries messages between instances. Each provider wraps one.
pub(crate) struct Bridge<B: Broker> {
    local: InMemoryPubSub,
    shared: Arc<Shared<B>>,
    intake: Arc<Intake>,
    /// Broadcasts push here; the publisher task drains it. Bounded.
    queue: mpsc::Sender<Outbound>,
    /// Bytes of large payloads the queue may hold ([`QUEUE_BYTES`]).
    queue_bytes: Arc<Semaphore>,
    lifecycle: Mutex<Lifecycle>,
}

/// The publish queue holds at most `publish_queue` messages and, of payloads of at least
/// [`BUDGETED_PAYLOAD`] bytes, at most this many bytes (a single larger payload is let through
/// alone): a broadcast waits for room in both.
const QUEUE_BYTES: usize = 64 << 20;

/// Payloads from this size on count against [`QUEUE_BYTES`]; smaller ones are bounded by the
/// queue's message count alone.
const BUDGETED_PAYLOAD: usize = 1024;

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

impl<B: Broker> Bridge<B> {
    /// A bridge over `broker` for the instance `instance`, whose local engine runs with
    /// `config`. Nothing connects until [`start`](Self::start).
    pub(crate) fn new(
        instance: InstanceId,
        broker: B,
        settings: BridgeSettings,
        config: Config,
    ) -> std::result::Result<Self, ConfigError> {
        let intake = Arc::new(Intake::new());
        let engine = Engine::with_observer(
            config,
            Arc::clone(&intake) as Arc<dyn crate::engine::TopicObserver>,
        )?;
        let envelope_limits = EnvelopeLimits::new(&engine.config().limits, settings.max_envelope_bytes);
        let (queue, outbound) = mpsc::channel(settings.publish_queue);
        let shared = Arc::new(Shared {
            broker,
            settings,
            instance,
            envelope_limits,
            counters: BrokerCounters::default(),
            publisher: PublisherState::new(),
        });
        Ok(Self {
            local: InMemoryPubSub::from_engine(engine),
            shared,
            intake,
            queue,
            queue_bytes: Arc::new(Semaphore::new(QUEUE_BYTES)),
            lifecycle: Mutex::new(Lifecycle::Idle(outbound)),
        })
    }

    pub(crate) fn broker(&self) -> &B {
        &self.shared.broker
    }

    pub(crate) fn instance_id(&self) -> InstanceId {
        self.shared.instance
    }

    pub(crate) fn config(&self) -> &Config {
        self.local.engine().config()
    }

    pub(crate) fn broker_stats(&self) -> BrokerStats {
        self.shared.stats()
    }

    pub(crate) fn session_stats(&self, session_id: &str) -> Option<SessionStats> {
        self.local.session_stats(session_id)
    }

    pub(crate) fn on_notice(&self, hook: impl Fn(&Notice) + Send + Sync + 'static) -> bool {
        self.local.on_notice(hook)
    }

    pub(crate) fn running_tasks(&self) -> usize {
        let broker_tasks = match &*lock(&self.lifecycle) {
            Lifecycle::Running(tasks) => [&tasks.listener, &tasks.publisher]
                .iter()
                .filter(|task| !task.is_finished())
                .count(),
            _ => 0,
        };
        self.local.running_tasks() + broker_tasks
    }

    fn check_running(&self) -> Result<()> {
        match &*lock(&self.lifecycle) {
            Lifecycle::Running(_) => Ok(()),
            Lifecycle::Stopped => Err(PubSubError::Stopped),
            Lifecycle::Idle(_) | Lifecycle::Starting => Err(BrokerError::NotStarted.into()),
        }
    }

    /// A broadcast: delivered locally, then queued for the broker; with `acknowledged`,
    /// returns only once the broker's reply to its publish was read (or with why not).
    pub(crate) async fn publish(
        &self,
        sender: Option<&str>,
        topic: &str,
        payload: Bytes,
        acknowledged: bool,
    ) -> Result<()> {
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
        self.shared
            .broker
            .check_envelope(single_encoded_len(topic, &record))?;
        // Borrowed: cloned only if a session here is on the topic.
        self.local
            .engine()
            .broadcast_payload(sender, topic, &payload)
            .await?;
        let publisher = &self.shared.publisher;
        if !publisher.is_up() {
            BrokerCounters::add(&self.shared.counters.unavailable, 1);
            return Err(BrokerError::PublishUnavailable {
                down_for: publisher.down_for(),
            }
            .into());
        }
        let budget = if payload.len() >= BUDGETED_PAYLOAD {
            let bytes = u32::try_from(payload.len().min(QUEUE_BYTES)).unwrap_or(u32::MAX);
            let permit = Arc::clone(&self.queue_bytes).acquire_many_owned(bytes).await;
            Some(permit.map_err(|_| PubSubError::Stopped)?)
        } else {
            None
        };
        let (ack, acknowledgement) = match acknowledged {
            true => {
                let (ack, acknowledgement) = oneshot::channel();
                (Some(ack), Some(acknowledgement))
            }
            false => (None, None),
        };
        let outbound = Outbound {
            topic: Topic::from(topic),
            sender: sender.map(Box::from),
            payload,
            ack,
            _budget: budget,
        };
        self.queue
            .send(outbound)
            .await
            .map_err(|_| PubSubError::Stopped)?;
        let Some(acknowledgement) = acknowledgement else {
            return Ok(());
        };
        match acknowledgement.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(BrokerError::Unacknowledged { why }.into()),
            // Dropped unanswered: `stop` aborted the publisher task (its flush outlived the
            // grace) before the broker answered.
            Err(_) => Err(BrokerError::Unacknowledged {
                why: Unacknowledged::Stopped,
            }
            .into()),
        }
    }

    /// Subscribes locally, then waits until the broker has confirmed the topic's channel.
    pub(crate) async fn subscribe_topic(
        &self,
        session_id: &str,
        topic: &str,
        handler: Handler,
    ) -> Result<()> {
        self.check_running()?;
        self.local.subscribe_topic(session_id, topic, handler).await?;
        self.confirmed(topic).await
    }

    /// Waits until the broker has confirmed `topic`'s channel (at once if it already has).
    async fn confirmed(&self, topic: &str) -> Result<()> {
        self.intake.confirmed(Topic::from(topic)).await
    }

    /// Opens a pull-form session on this instance; its `subscribe` waits for the broker.
    pub(crate) fn open_session(&self, session_id: &str) -> Result<SessionReceiver> {
        self.check_running()?;
        self.local.open_session(session_id)
    }

    pub(crate) async fn unsubscribe_topic(&self, session_id: &str, topic: &str) -> Result<()> {
        self.check_running()?;
        self.local.unsubscribe_topic(session_id, topic).await
    }

    pub(crate) async fn unsubscribe_all(&self, session_id: &str) -> Result<()> {
        self.check_running()?;
        self.local.unsubscribe_all(session_id).await
    }

    /// Connects both connections and starts the listener and publisher tasks. Fails with
    /// [`BrokerError::Connect`] if the broker cannot be reached (nothing is left running).
    /// Idempotent while running.
    pub(crate) async fn start(&self) -> Result<()> {
        let outbound = {
            let mut lifecycle = lock(&self.lifecycle);
            match std::mem::replace(&mut *lifecycle, Lifecycle::Starting) {
                Lifecycle::Idle(outbound) => outbound,
                other => {
                    let result = match &other {
                        Lifecycle::Running(_) => Ok(()),
                        Lifecycle::Stopped => Err(PubSubError::Stopped),
                        _ => Err(BrokerError::NotStarted.into()),
                    };
                    *lifecycle = other;
                    return result;
                }
            }
        };
        let shared = &self.shared;
        let connected = async {
            let subscription = shared.open_subscription().await?;
            let publisher = shared.open_publisher().await?;
            Ok::<_, ConnectError>((subscription, publisher))
        }
        .await;
        let (subscription, publisher) = match connected {
            Ok(pair) => pair,
            Err(source) => {
                *lock(&self.lifecycle) = Lifecycle::Idle(outbound);
                let target = shared.broker.target();
                tracing::error!(instance = %shared.instance, broker = B::NAME, target, error = %source, "cannot connect");
                return Err(BrokerError::Connect {
                    broker: B::NAME,
                    target,
                    source,
                }
                .into());
            }
        };
        self.local.start().await?;
        // Up before `start` returns, not when the tasks first run: a broadcast the moment
        // `start` returned must not find the connection down, nor `broker_stats` show either
        // connection down.
        shared.publisher.set_up();
        shared
            .counters
            .connected
            .store(true, crate::sync::atomic::Ordering::Relaxed);
        let (shutdown, stopping) = watch::channel(false);
        let listener = Listener::new(
            Arc::clone(shared),
            Arc::clone(&self.intake),
            self.local.engine().clone(),
            stopping.clone(),
        );
        let tasks = BackgroundTasks {
            shutdown,
            listener: tokio::spawn(listener.run(subscription)),
            publisher: tokio::spawn(
                Publisher::new(Arc::clone(shared), outbound, stopping, self.flush_grace()).run(publisher),
            ),
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
            broker = B::NAME,
            target = shared.broker.target(),
            "provider started"
        );
        Ok(())
    }

    /// Stops local sessions, then the listener and the publisher (which first sends what was
    /// queued), and closes both connections. Idempotent.
    pub(crate) async fn stop(&self) -> Result<()> {
        let previous = std::mem::replace(&mut *lock(&self.lifecycle), Lifecycle::Stopped);
        self.local.stop().await?;
        if let Lifecycle::Running(tasks) = previous {
            let _ = tasks.shutdown.send(true);
            // The publisher bounds its own flush by the grace; the margin is for the answer in
            // flight at its end. Aborting is the last resort: what it drops is not counted.
            let grace = self.flush_grace();
            let margin = self.shared.settings.response_timeout;
            for (mut task, wait) in [(tasks.listener, grace), (tasks.publisher, grace + margin)] {
                if tokio::time::timeout(wait, &mut task).await.is_err() {
                    tracing::warn!(instance = %self.shared.instance, broker = B::NAME, "a broker task outlived the stop grace period; aborting it");
                    task.abort();
                    let _ = task.await;
                    self.shared.publisher.set_down();
                }
            }
            tracing::info!(instance = %self.shared.instance, broker = B::NAME, "provider stopped");
        }
        Ok(())
    }

    /// How long `stop()` gives the broker tasks: the stop grace, at least one response
    /// timeout.
    fn flush_grace(&self) -> std::time::Duration {
        self.config()
            .stop_grace
            .max(self.shared.settings.response_timeout)
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        self.local.stats()
    }

    pub(crate) fn local(&self) -> &InMemoryPubSub {
        &self.local
    }
}

/// Implements [`PubSubProvider`](crate::PubSubProvider), and the accessors every distributed
/// provider has, for a provider that wraps a [`Bridge`] in a field named `bridge`.
macro_rules! bridge_provider {
    ($provider:ty) => {
        impl $provider {
            /// This instance's id, as carried in its envelopes.
            pub fn instance_id(&self) -> $crate::bridge::InstanceId {
                self.bridge.instance_id()
            }

            /// The local engine's settings.
            pub fn config(&self) -> &$crate::Config {
                self.bridge.config()
            }

            /// The local engine: this instance's sessions, topics and subscribers, and their
            /// counts (`session_count`, `topic_count`, `subscriber_count`, `session_topics`).
            /// A broadcast through it reaches this instance's sessions only, and its `stop`
            /// ends them only: stop the provider with its own `stop()`, which also ends the
            /// broker tasks and closes their connections.
            pub fn engine(&self) -> &$crate::Engine {
                self.bridge.local().engine()
            }

            /// Opens a pull-form session on this instance: read its messages with
            /// [`recv`](crate::SessionReceiver::recv); its
            /// [`subscribe`](crate::SessionHandle::subscribe) (also through a
            /// [`handle`](crate::SessionReceiver::handle)) returns once the broker has
            /// confirmed the topic's channel, so a broadcast that begins afterwards on any
            /// instance reaches it (G1). Messages from every instance reach it, as they reach
            /// handler-form sessions.
            pub fn open_session(&self, session_id: &str) -> $crate::Result<$crate::SessionReceiver> {
                self.bridge.open_session(session_id)
            }

            /// The broker channel that carries `topic`.
            pub fn channel_for(&self, topic: &str) -> String {
                use $crate::provider::bridge::broker::Broker as _;
                self.bridge.broker().channel(topic)
            }

            /// A snapshot of the broker-side counters (outages, reconnects, messages sent,
            /// received and skipped).
            pub fn broker_stats(&self) -> $crate::bridge::BrokerStats {
                self.bridge.broker_stats()
            }

            /// Figures for one live local session.
            pub fn session_stats(&self, session_id: &str) -> Option<$crate::SessionStats> {
                self.bridge.session_stats(session_id)
            }

            /// Sets the callback for [`Notice`](crate::Notice)s about local sessions. Only the
            /// first call takes effect; returns `false` if a hook was already set.
            pub fn on_notice(&self, hook: impl Fn(&$crate::Notice) + Send + Sync + 'static) -> bool {
                self.bridge.on_notice(hook)
            }

            /// Background tasks still running: local session tasks, and the listener and
            /// publisher while started.
            pub fn running_tasks(&self) -> usize {
                self.bridge.running_tasks()
            }
        }

        #[async_trait::async_trait]
        impl $crate::PubSubProvider for $provider {
            /// Subscribes locally, then waits until the broker has confirmed the topic's
            /// channel ([G1] across instances). See the module docs for
            /// [`BrokerError::SubscribeUnconfirmed`](crate::bridge::BrokerError::SubscribeUnconfirmed).
            ///
            /// [G1]: crate::docs::contract#g1-delivery
            async fn subscribe_topic(
                &self,
                session_id: &str,
                topic: &str,
                handler: $crate::Handler,
            ) -> $crate::Result<()> {
                self.bridge
                    .subscribe_topic(session_id, topic, handler)
                    .await
            }

            async fn unsubscribe_topic(&self, session_id: &str, topic: &str) -> $crate::Result<()> {
                self.bridge.unsubscribe_topic(session_id, topic).await
            }

            async fn unsubscribe_all(&self, session_id: &str) -> $crate::Result<()> {
                self.bridge.unsubscribe_all(session_id).await
            }

            async fn broadcast(&self, topic: &str, message: $crate::Bytes) -> $crate::Result<()> {
                self.bridge.publish(None, topic, message, false).await
            }

            async fn broadcast_acknowledged(
                &self,
                topic: &str,
                message: $crate::Bytes,
            ) -> $crate::Result<()> {
                self.bridge.publish(None, topic, message, true).await
            }

            async fn broadcast_from(
                &self,
                session_id: &str,
                topic: &str,
                message: $crate::Bytes,
            ) -> $crate::Result<()> {
                self.bridge
                    .publish(Some(session_id), topic, message, false)
                    .await
            }

            async fn broadcast_from_acknowledged(
                &self,
                session_id: &str,
                topic: &str,
                message: $crate::Bytes,
            ) -> $crate::Result<()> {
                self.bridge
                    .publish(Some(session_id), topic, message, true)
                    .await
            }

            /// Connects both connections and starts the listener and publisher tasks. Fails
            /// with [`BrokerError::Connect`](crate::bridge::BrokerError::Connect) if the
            /// broker cannot be reached (nothing is left running). Idempotent while running.
            async fn start(&self) -> $crate::Result<()> {
                self.bridge.start().await
            }

            /// Stops local sessions, then the listener and the publisher (which first sends
            /// what was queued), and closes both connections. Idempotent.
            async fn stop(&self) -> $crate::Result<()> {
                self.bridge.stop().await
            }

            fn stats(&self) -> $crate::StatsSnapshot {
                self.bridge.stats()
            }
        }
    };
}
pub(crate) use bridge_provider;
