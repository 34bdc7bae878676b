//! `InMemoryPubSub`: the default provider. Handler-form sessions on the in-memory engine.
//!
//! It owns the background tasks: one per handler-form session (the engine's session task,
//! which drains the session's mailbox and runs its handlers one message at a time, [G4]), and a
//! reaper task that retires sessions that broadcasters disconnected as slow consumers. `stop`
//! ends them all, within the configured grace ([G7], [G8]).
//!
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G7]: crate::docs::contract#g7-bounded-memory
//! [G8]: crate::docs::contract#g8-lifecycle

use async_trait::async_trait;
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use crate::config::{Config, ConfigError};
use crate::engine::{Engine, Notice, SessionReceiver, SessionTask};
use crate::error::{PubSubError, Result};
use crate::handler::Handler;
use crate::provider::PubSubProvider;
use crate::stats::{SessionStats, StatsSnapshot};
use crate::sync::{lock, Mutex};

/// The in-process provider: lock-free fanout to handler-form sessions.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fanout::PubSubError> {
/// use fanout::{Handler, InMemoryPubSub, PubSubProvider};
///
/// let pubsub = InMemoryPubSub::new();
/// pubsub.start().await?;
/// pubsub
///     .subscribe_topic("tab-1", "chat:42", Handler::new(|topic, message| async move {
///         println!("{topic}: {}", String::from_utf8_lossy(&message));
///     }))
///     .await?;
/// pubsub.broadcast("chat:42", "hello".into()).await?;
/// pubsub.stop().await?;
/// # Ok(()) }
/// ```
pub struct InMemoryPubSub {
    engine: Engine,
    tasks: Mutex<RunningTasks>,
}

#[derive(Default)]
struct RunningTasks {
    /// One task per live handler-form session, plus the reaper.
    set: JoinSet<()>,
    reaper_started: bool,
}

impl RunningTasks {
    /// Starts the reaper task unless it already runs.
    fn start_reaper(&mut self, engine: &Engine, runtime: &Handle) {
        if !self.reaper_started {
            self.reaper_started = true;
            let engine = engine.clone();
            self.set
                .spawn_on(async move { engine.run_reaper().await }, runtime);
        }
    }
}

impl Default for InMemoryPubSub {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryPubSub {
    /// A provider with [`Config::default`].
    pub fn new() -> Self {
        Self::from_engine(Engine::new(Config::default()).expect("the default config is valid"))
    }

    /// A provider with `config` (validated).
    pub fn with_config(config: Config) -> std::result::Result<Self, ConfigError> {
        Ok(Self::from_engine(Engine::new(config)?))
    }

    pub(crate) fn from_engine(engine: Engine) -> Self {
        Self {
            engine,
            tasks: Mutex::new(RunningTasks::default()),
        }
    }

    /// The engine underneath, for pull-form sessions and direct broadcasts.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Opens a pull-form session on the same engine (see [`Engine::open_session`]).
    pub fn open_session(&self, session_id: &str) -> Result<SessionReceiver> {
        self.engine.open_session(session_id)
    }

    /// Sets the callback for [`Notice`]s (slow-consumer disconnects, missed messages). Only the
    /// first call takes effect; returns `false` if a hook was already set.
    pub fn on_notice(&self, hook: impl Fn(&Notice) + Send + Sync + 'static) -> bool {
        self.engine.set_notice_hook(hook)
    }

    /// Figures for one live session.
    pub fn session_stats(&self, session_id: &str) -> Option<SessionStats> {
        self.engine.session_stats(session_id)
    }

    /// Background tasks still running (session tasks and the reaper).
    pub fn running_tasks(&self) -> usize {
        let mut tasks = lock(&self.tasks);
        while tasks.set.try_join_next().is_some() {}
        tasks.set.len()
    }

    fn spawn_session_task(&self, runtime: &Handle, task: SessionTask) {
        let mut tasks = lock(&self.tasks);
        while tasks.set.try_join_next().is_some() {}
        tasks.start_reaper(&self.engine, runtime);
        tasks.set.spawn_on(task.run(), runtime);
    }
}

#[async_trait]
impl PubSubProvider for InMemoryPubSub {
    async fn subscribe_topic(&self, session_id: &str, topic: &str, handler: Handler) -> Result<()> {
        let runtime = Handle::try_current().map_err(|_| PubSubError::NoRuntime)?;
        if let Some(task) = self.engine.subscribe_handler(session_id, topic, handler).await? {
            self.spawn_session_task(&runtime, task);
        }
        Ok(())
    }

    async fn unsubscribe_topic(&self, session_id: &str, topic: &str) -> Result<()> {
        self.engine.unsubscribe_topic(session_id, topic).await
    }

    async fn unsubscribe_all(&self, session_id: &str) -> Result<()> {
        self.engine.unsubscribe_all(session_id).await
    }

    async fn broadcast(&self, topic: &str, message: Bytes) -> Result<()> {
        self.engine.broadcast(topic, message).await.map(drop)
    }

    async fn broadcast_from(&self, session_id: &str, topic: &str, message: Bytes) -> Result<()> {
        self.engine
            .broadcast_from(session_id, topic, message)
            .await
            .map(drop)
    }

    async fn start(&self) -> Result<()> {
        if self.engine.is_stopped() {
            return Err(PubSubError::Stopped);
        }
        let mut tasks = lock(&self.tasks);
        if let Ok(runtime) = Handle::try_current() {
            tasks.start_reaper(&self.engine, &runtime);
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        self.engine.stop();
        let mut set = std::mem::take(&mut lock(&self.tasks).set);
        let grace = self.engine.config().stop_grace;
        let drained = tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                remaining = set.len(),
                grace_ms = grace.as_millis() as u64,
                "handlers still running after the stop grace period; aborting them"
            );
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        Ok(())
    }

    fn stats(&self) -> StatsSnapshot {
        self.engine.stats()
    }
}

impl std::fmt::Debug for InMemoryPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryPubSub")
            .field("engine", &self.engine)
            .finish()
    }
}
