//! `InMemoryPubSub`: the default provider. Handler-form sessions on the in-memory engine.
//!
//! Each session gets one task that drains its mailbox and runs its handlers one message at a
//! time (G4), instead of a task per delivery: a LiveView's renders never interleave, and memory
//! per session stays bounded by its mailbox. A reaper task retires sessions that broadcasters
//! disconnected as slow consumers.

use std::any::Any;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use crate::close_reason::CloseReason;
use crate::config::{Config, ConfigError};
use crate::engine::handler_table::HandlerTable;
use crate::engine::mailbox::Pop;
use crate::engine::session::{InvokingGuard, Session};
use crate::engine::{Engine, Notice, SessionReceiver};
use crate::error::{PubSubError, Result};
use crate::handler::{Handler, HandlerResult};
use crate::provider::PubSubProvider;
use crate::stats::{Counters, DropReason, SessionStats, StatsSnapshot};
use crate::sync::{lock, Arc, Mutex, SnapshotCache};

/// Messages a session task handles before yielding to the scheduler.
const BATCH: u32 = 64;

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
    tasks: Mutex<Tasks>,
}

#[derive(Default)]
struct Tasks {
    /// One task per live handler-form session, plus the reaper.
    set: JoinSet<()>,
    reaper_started: bool,
}

impl Tasks {
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
            tasks: Mutex::new(Tasks::default()),
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

    fn spawn_session_task(&self, runtime: &Handle, session: Arc<Session>) {
        let mut tasks = lock(&self.tasks);
        while tasks.set.try_join_next().is_some() {}
        tasks.start_reaper(&self.engine, runtime);
        let engine = self.engine.clone();
        tasks.set.spawn_on(run_session(engine, session), runtime);
    }
}

#[async_trait]
impl PubSubProvider for InMemoryPubSub {
    async fn subscribe_topic(&self, session_id: &str, topic: &str, handler: Handler) -> Result<()> {
        let runtime = Handle::try_current().map_err(|_| PubSubError::NoRuntime)?;
        if let Some(session) = self.engine.subscribe_handler(session_id, topic, handler)? {
            self.spawn_session_task(&runtime, session);
        }
        Ok(())
    }

    async fn unsubscribe_topic(&self, session_id: &str, topic: &str) -> Result<()> {
        self.engine.unsubscribe_topic(session_id, topic)
    }

    async fn unsubscribe_all(&self, session_id: &str) -> Result<()> {
        self.engine.unsubscribe_all(session_id)
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

/// Deliveries a session's task has counted and not yet added to the engine's counters: added
/// whenever the task is about to wait or yield, and when it ends (on drop, also if aborted),
/// so the counters are exact whenever the session is idle, for one locked add per burst
/// instead of one per delivery.
struct UnreportedDeliveries<'a> {
    counters: &'a Counters,
    count: u64,
}

impl UnreportedDeliveries<'_> {
    fn report(&mut self) {
        self.counters.delivered(std::mem::take(&mut self.count));
    }
}

impl Drop for UnreportedDeliveries<'_> {
    fn drop(&mut self) {
        self.report();
    }
}

/// A handler-form session's task: drains its mailbox, one handler invocation at a time.
async fn run_session(engine: Engine, session: Arc<Session>) {
    let counters = engine.counters();
    // The handler table, read once per delivery: a cached load writes nothing while the table
    // is unchanged. Held only while this task runs handlers back to back: let go before it
    // waits for its mailbox, for a handler's future, or for its turn after a yield, so a
    // handler removed by an unsubscribe is dropped by the unsubscribe or by this task's next
    // step, never kept while the session waits.
    let mut handlers: Option<SnapshotCache<'_, HandlerTable>> = None;
    let mut delivered = UnreportedDeliveries { counters, count: 0 };
    let mut since_yield = 0;
    loop {
        let popped = match session.mailbox.pop() {
            Some(popped) => Some(popped),
            None => {
                handlers = None;
                delivered.report();
                Pop {
                    mailbox: &session.mailbox,
                    is_closed: || !session.is_open(),
                }
                .await
            }
        };
        let Some((envelope, missed)) = popped else {
            break;
        };
        if missed > 0 {
            engine.notice(Notice::Missed {
                session_id: session.id.to_string(),
                count: missed,
            });
        }
        // G2: this decides whether the invocation starts. A close ordered before it wins; a
        // close ordered after it waits (in whoever retires the session, before it leaves the
        // session map) until the handler has been called.
        if !session.begin_invocation() {
            let reason = session.close_reason().unwrap_or(CloseReason::Unsubscribed);
            counters.dropped(reason.drop_reason(), 1);
            break;
        }
        // The invocation (the handler's future) ends with this block: a finished future is not
        // kept across the next wait or yield.
        let outcome = {
            // The handler is called from the cached table, not cloned out of it.
            let mut invocation = {
                let table = handlers.get_or_insert_with(|| SnapshotCache::new(&session.handlers));
                let Some((topic, handler)) = table.load().get(&envelope.topic) else {
                    session.end_invocation_start();
                    // Unsubscribed from this topic after the broadcast queued it.
                    counters.dropped(DropReason::Unsubscribed, 1);
                    continue;
                };
                delivered.count += 1;
                // The table's key: the session's own copy of the topic (see `handler_table`).
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let _invoking = InvokingGuard::enter(&session);
                    handler.call_with_clones(topic, &envelope.payload)
                }))
            };
            session.end_invocation_start();
            match invocation {
                // Most handlers finish in their first poll, with the table still cached; one
                // that has to wait lets go of the table first.
                Ok(ref mut future) => {
                    finish_caught(future, || {
                        handlers = None;
                        delivered.report();
                    })
                    .await
                }
                Err(panic) => Err(panic),
            }
        };
        let topic = &*envelope.topic;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                counters.handler_error();
                tracing::warn!(session_id = &*session.id, topic, %error, "handler returned an error");
            }
            Err(panic) => {
                counters.handler_panic();
                tracing::warn!(
                    session_id = &*session.id,
                    topic,
                    panic = panic_message(&*panic),
                    "handler panicked; the session goes on"
                );
            }
        }
        since_yield += 1;
        if since_yield == BATCH {
            since_yield = 0;
            handlers = None;
            delivered.report();
            tokio::task::yield_now().await;
        }
    }
    delivered.report();
    engine.retire(&session);
    if session.close_reason() == Some(CloseReason::Stopped) {
        tracing::trace!(session_id = &*session.id, "session task ended: provider stopped");
    }
}

/// Polls a handler's future to its end where it lies, catching a panic. (Moving the boxed future
/// to another of the task's fields reloads what was just stored, in a wider load than the
/// stores, which waits for them: on every delivery.) Polls once first; if that poll returns
/// `Pending`, `before_waiting` runs, once, before the next poll (which follows at once, and
/// from then on as the future's waker asks).
async fn finish_caught(
    future: &mut BoxFuture<'static, HandlerResult>,
    before_waiting: impl FnOnce(),
) -> std::thread::Result<HandlerResult> {
    // A panic ends the future as its result would.
    let mut poll_caught = |cx: &mut Context<'_>| {
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
        caught.map_or_else(|panic| Poll::Ready(Err(panic)), |polled| polled.map(Ok))
    };
    if let Poll::Ready(outcome) = poll_fn(|cx| Poll::Ready(poll_caught(cx))).await {
        return outcome;
    }
    before_waiting();
    poll_fn(poll_caught).await
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
