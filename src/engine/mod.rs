//! The in-memory fanout engine: topics, sessions, mailboxes, and the broadcast path.
//!
//! [`InMemoryPubSub`](crate::InMemoryPubSub) runs handlers on top of it; Rust users can also use
//! it directly and read sessions with a [`SessionReceiver`].
//!
//! # Shape
//!
//! - `topic_registry`: topic name → entry, a lock-free map (`papaya`).
//! - `subscribers`: each entry's subscriber set, a table of immutable chunks replaced
//!   copy-on-write (`arc_swap` through `crate::sync::AtomicSnapshot`).
//! - `mailbox`: one bounded lock-free queue per session, shared by all its topics.
//! - `session`: a session's open/closed state and its writer-side subscription record.
//! - `receiver`, `session_handle`: the pull form's reader and its cloneable handle on the
//!   session's subscriptions.
//! - `session_task`: a handler-form session's task, which drains its mailbox into its handlers.
//! - `claimed`: a broadcast's pushes to one chunk of subscribers, claimed together, written
//!   together, and fenced once.
//! - `broadcast`: the broadcast path, from the lock-free pass to the `block` policy's wait.
//! - `reaper`: retiring sessions that broadcasters disconnected, off the broadcast path.
//!
//! # Who writes what
//!
//! | state | written by | under |
//! | --- | --- | --- |
//! | topic map | subscribe (insert), last unsubscribe (remove) | the topic entry's writer lock |
//! | a topic's chunk table and chunks | subscribe, unsubscribe | the topic entry's writer lock |
//! | session map | first subscribe / `open_session` (insert), retire (remove) | the session's writer lock (remove) |
//! | a session's topic record and handler table | subscribe, unsubscribe, retire | the session's writer lock |
//! | a session's state | `close`: open → closed once (CAS) | none (atomic) |
//! | a session's mailbox | broadcasters push, its consumer pops | none (lock-free) |
//!
//! Lock order: a session's writer lock, then a topic's. Broadcast takes no lock: it pins the
//! topic map, loads the chunk table and each chunk, and pushes into the chunk's mailboxes
//! (claims a place in each, then writes them all).
//!
//! # Guarantees and where they come from
//!
//! - **[G1]**: subscribe stores the new chunk before it returns; a broadcast that starts later loads
//!   the map, the table and the chunk after that store.
//! - **[G2]**: unsubscribe stores the chunk without the session before it returns. `unsubscribe_all`
//!   closes the session (a `SeqCst` CAS) before it returns; consumers check the state before each
//!   delivery, and what was queued is discarded and counted. While the engine runs, a
//!   handler-form session leaves the session map only after a wait at its start gate that
//!   follows its close (`retire`, `reap`), so an `unsubscribe_all` that finds no session, or a
//!   newer one, has no earlier start to wait for. (`stop` removes sessions without waiting.)
//! - **[G4]**: one FIFO mailbox per session, one consumer; a publisher's broadcast has pushed to
//!   every recipient (or waited, under `block`) before it returns.
//! - **[G5]**: a full mailbox is handled by its policy at push time; the broadcaster never waits on
//!   a consumer except under `block`, and then only for the blocked sessions, after every other
//!   recipient already has the message.
//! - **[G7]**: mailboxes are bounded; a topic entry is removed with its last subscriber and a
//!   session entry when it retires.
//!
//! # Disconnects
//!
//! A broadcaster that disconnects a slow session closes it (lock-free) and queues it for
//! retirement; the retirement itself (removing it from its topics) takes writer locks, so it runs
//! off the broadcast path: in the provider's reaper task, in the session's consumer, and at the
//! start of every subscribe / unsubscribe. Retiring waits for a handler call the session's task
//! began before the close ([G2]); only the reaper task waits for one of another session, and it
//! waits as a task (yielding, then pausing), so an operation on one session never waits on
//! another's handler.
//!
//! [G1]: crate::docs::contract#g1-delivery
//! [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G5]: crate::docs::contract#g5-isolation
//! [G7]: crate::docs::contract#g7-bounded-memory

mod broadcast;
mod claimed;
mod handler_table;
mod mailbox;
mod reaper;
mod receiver;
mod session;
mod session_handle;
mod session_task;
mod subscribers;
mod topic_registry;

use std::sync::OnceLock;

use bytes::Bytes;

pub use crate::close_reason::CloseReason;
use crate::config::{Config, ConfigError};
use crate::error::{PubSubError, Result};
use crate::handler::Handler;
use crate::session_form::SessionForm;
use crate::stats::{Counters, SessionStats, StatsSnapshot};
use crate::sync::atomic::{fence, AtomicBool, Ordering};
use crate::sync::{lock, Arc, AtomicWaker, ConcurrentMap, Mutex, MutexGuard, SegQueue};
use crate::topic::{check_session_id, check_topic, Topic};

pub(crate) use broadcast::Payload;
pub use receiver::{Closed, SessionReceiver, TryRecvError};
use session::{Placement, Session, SessionId, SessionWriter};
pub use session_handle::SessionHandle;
use session_task::CancelLog;
pub(crate) use session_task::{SessionTask, BATCH as SESSION_TURN};
pub use topic_registry::TopicObserver;
use topic_registry::TopicRegistry;

/// What one broadcast did, for the caller's information.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fanout {
    /// Sessions subscribed to the topic when the broadcast read its subscriber set (less the
    /// excluded sender).
    pub recipients: usize,
    /// Of those, sessions whose mailbox took the message. A session closed right after the
    /// push is counted here, though its queued messages are then discarded (and counted in
    /// [`Engine::stats`] as dropped for the close's reason).
    pub queued: usize,
    /// Messages dropped by overflow policies during this broadcast (the new one or evicted ones).
    pub dropped: usize,
}

/// Something a session should know about, delivered to the hook set with
/// [`Engine::set_notice_hook`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The session was disconnected (slow consumer) and unsubscribed from everything.
    Disconnected {
        /// The session.
        session_id: String,
        /// Why.
        reason: CloseReason,
    },
    /// `drop_oldest` evicted messages from the session's mailbox (handler form; receivers see
    /// [`Message::missed_before`](crate::Message::missed_before)).
    Missed {
        /// The session.
        session_id: String,
        /// How many messages it missed since the last notice.
        count: u64,
    },
}

/// A callback for [`Notice`]s. It runs on the thread that noticed; keep it short.
pub type NoticeHook = std::sync::Arc<dyn Fn(&Notice) + Send + Sync>;

/// The in-memory fanout engine. Cheap to clone (one shared core).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    config: Config,
    topics: TopicRegistry,
    /// Session id → session. Inserted by the first subscribe or `open_session`, removed by
    /// retire under the session's writer lock.
    sessions: ConcurrentMap<SessionId, Arc<Session>>,
    counters: Arc<Counters>,
    /// Set once by `stop`. Writers re-check it under their session lock after inserting, and
    /// `stop` sweeps the session map after setting it, so no session outlives `stop`.
    stopped: AtomicBool,
    /// Sessions closed by broadcasters (slow consumers), waiting to be retired off the hot path.
    retiring: SegQueue<Arc<Session>>,
    /// Wakes the reaper task when `retiring` gains an entry or the engine stops.
    reaper: AtomicWaker,
    /// Set once, before use, by the embedding provider; read by `notice`. Plain `std`: it is
    /// configuration, not part of the concurrent core loom checks.
    notice_hook: OnceLock<NoticeHook>,
    /// Throttles the warning for handlers cancelled at their session's end; taken only by a
    /// session's task that cancels one.
    cancel_log: Mutex<CancelLog>,
}

impl Engine {
    /// Builds an engine; the config is validated first.
    pub fn new(config: Config) -> std::result::Result<Engine, ConfigError> {
        Self::build(config, None)
    }

    /// Builds an engine that tells `observer` when topics gain their first subscriber and lose
    /// their last (see [`TopicObserver`]).
    pub fn with_observer(
        config: Config,
        observer: std::sync::Arc<dyn TopicObserver>,
    ) -> std::result::Result<Engine, ConfigError> {
        Self::build(config, Some(observer))
    }

    fn build(
        config: Config,
        observer: Option<std::sync::Arc<dyn TopicObserver>>,
    ) -> std::result::Result<Engine, ConfigError> {
        config.validate()?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                config,
                topics: TopicRegistry::new(observer),
                sessions: ConcurrentMap::new(),
                counters: Arc::new(Counters::new()),
                stopped: AtomicBool::new(false),
                retiring: SegQueue::new(),
                reaper: AtomicWaker::new(),
                notice_hook: OnceLock::new(),
                cancel_log: Mutex::new(CancelLog::default()),
            }),
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// What a pull-form subscribe to `topic` waits for after its local change: the
    /// observer's confirmation, if the engine has an observer that gives one.
    pub(crate) fn topic_confirmation(
        &self,
        topic: &str,
    ) -> Option<futures_util::future::BoxFuture<'static, Result<()>>> {
        self.inner.topics.confirmation(topic)
    }

    /// Sets the callback that receives [`Notice`]s. Only the first call takes effect; it
    /// returns `false` if a hook was already set.
    pub fn set_notice_hook(&self, hook: impl Fn(&Notice) + Send + Sync + 'static) -> bool {
        self.inner.notice_hook.set(std::sync::Arc::new(hook)).is_ok()
    }

    /// Opens a pull-form session: subscribe through the returned receiver (or, from other
    /// tasks, its [`SessionHandle`]) and read its messages with [`SessionReceiver::recv`] or as
    /// a `Stream`. Dropping the receiver unsubscribes it from everything.
    pub fn open_session(&self, session_id: &str) -> Result<SessionReceiver> {
        self.check_running()?;
        check_session_id(session_id, &self.inner.config.limits)?;
        self.reap();
        let (session, created) = self.session_for(session_id, SessionForm::Receiver)?;
        if !created {
            return Err(PubSubError::SessionIdInUse {
                session_id: session_id.to_string(),
                existing: SessionForm::Receiver,
            });
        }
        let writer = lock(&session.writer);
        if self.is_stopped() {
            session.close(CloseReason::Stopped);
            self.retire_locked(&session, writer);
            return Err(PubSubError::Stopped);
        }
        drop(writer);
        Ok(SessionReceiver::new(self.clone(), session))
    }

    /// Delivers `payload` to every session subscribed to `topic`.
    ///
    /// Returns once every recipient's mailbox has taken the message or its overflow policy has
    /// decided; under `block`, that can take up to the policy's timeout. A `block` policy needs
    /// a tokio runtime with timers enabled.
    pub async fn broadcast(&self, topic: &str, payload: Bytes) -> Result<Fanout> {
        self.publish(topic, payload, None).await
    }

    /// As [`broadcast`](Self::broadcast), but skips the session `session_id`.
    pub async fn broadcast_from(&self, session_id: &str, topic: &str, payload: Bytes) -> Result<Fanout> {
        self.broadcast_payload(Some(session_id), topic, payload).await
    }

    /// A broadcast from `sender` (skipped) if given, of a payload taken only if the topic has
    /// a subscriber here (see [`Payload`]).
    pub(crate) async fn broadcast_payload(
        &self,
        sender: Option<&str>,
        topic: &str,
        payload: impl Payload,
    ) -> Result<Fanout> {
        match sender {
            Some(session_id) => {
                check_session_id(session_id, &self.inner.config.limits)?;
                let sender = self.inner.sessions.get(session_id);
                self.publish(topic, payload, sender.as_ref()).await
            }
            None => self.publish(topic, payload, None).await,
        }
    }

    /// Closes the session `session_id` and removes every subscription it has ([G2]): once this
    /// returns, none of its handlers starts again and its queued messages are discarded and
    /// counted. Unknown ids succeed and do nothing. A later subscribe with the same id starts a
    /// new session.
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    ///
    /// If a handler of the session is starting (being called, or its future polled for the
    /// first time) when the session closes, this waits until that start is over, as a task:
    /// it yields, then pauses between asks, and never blocks its worker thread. A handler that
    /// closes its own session does not wait for itself.
    pub async fn unsubscribe_all(&self, session_id: &str) -> Result<()> {
        self.check_running()?;
        check_session_id(session_id, &self.inner.config.limits)?;
        self.reap();
        let Some(session) = self.inner.sessions.get(session_id) else {
            return Ok(());
        };
        {
            let _writer = lock(&session.writer);
            session.close(CloseReason::Unsubscribed);
        }
        // Waits for a handler start begun before the close (G2).
        self.retire_after_start(&session).await;
        Ok(())
    }

    /// A snapshot of the engine's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.counters.snapshot()
    }

    /// Figures for one live session.
    pub fn session_stats(&self, session_id: &str) -> Option<SessionStats> {
        let session = self.inner.sessions.get(session_id)?;
        let topics = lock(&session.writer).topics.len();
        Some(SessionStats {
            queued: session.mailbox.len(),
            capacity: session.mailbox.capacity(),
            topics,
        })
    }

    /// Topics the session `session_id` is subscribed to.
    pub fn session_topics(&self, session_id: &str) -> Vec<Topic> {
        match self.inner.sessions.get(session_id) {
            Some(session) => session.topics(),
            None => Vec::new(),
        }
    }

    /// Number of topic entries held (topics with at least one subscriber).
    pub fn topic_count(&self) -> usize {
        self.inner.topics.len()
    }

    /// Number of sessions subscribed to `topic` (0 for a topic nobody subscribes to). One
    /// lock-free registry lookup: cheap enough for a request path, e.g. to skip rendering a
    /// message nobody would receive. It counts sessions disconnected as slow consumers until
    /// they are retired (soon after, off the broadcast path), and it counts the sender that a
    /// `broadcast_from` would skip.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.inner
            .topics
            .with_entry(topic, |entry| entry.subscribers.len())
            .unwrap_or(0)
    }

    /// Number of session entries held.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Whether [`stop`](Self::stop) has been called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Stops the engine: closes every session (queued messages are discarded and counted as
    /// `stopped`), removes every topic, and makes later operations fail with
    /// [`PubSubError::Stopped`]. Idempotent.
    pub fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Pairs with the fence after a session is inserted (`session_for`).
        fence(Ordering::SeqCst);
        let sessions: Vec<Arc<Session>> = self.inner.sessions.values();
        for session in sessions {
            // Without waiting for a handler call in progress: one stalled in its synchronous
            // part must not hold `stop`.
            let writer = lock(&session.writer);
            session.close(CloseReason::Stopped);
            self.retire_locked(&session, writer);
        }
        self.reap();
        self.inner.reaper.wake();
    }

    // ----- crate-internal: handler sessions, retiring -----

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub(crate) fn cancel_log(&self) -> &Mutex<CancelLog> {
        &self.inner.cancel_log
    }

    pub(crate) fn notice(&self, notice: Notice) {
        if let Some(hook) = self.inner.notice_hook.get() {
            hook(&notice);
        }
    }

    fn check_running(&self) -> Result<()> {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return Err(PubSubError::Stopped);
        }
        Ok(())
    }

    /// Subscribes the handler-form session `session_id` (creating it if needed) to `topic`, or
    /// replaces its handler for that topic ([G3]). Returns the session's task if this call created
    /// the session, for the caller to spawn.
    ///
    /// [G3]: crate::docs::contract#g3-idempotence
    pub(crate) async fn subscribe_handler(
        &self,
        session_id: &str,
        topic: &str,
        handler: Handler,
    ) -> Result<Option<SessionTask>> {
        self.check_running()?;
        check_session_id(session_id, &self.inner.config.limits)?;
        check_topic(topic, &self.inner.config.limits)?;
        self.reap();
        let mut handler = Some(handler);
        loop {
            match self.try_subscribe_handler(session_id, topic, &mut handler)? {
                Subscribed::Done(task) => return Ok(task),
                Subscribed::Retry => continue,
                // Disconnected by a broadcaster and not yet retired: finish that, then start a
                // fresh session, as after `unsubscribe_all`.
                Subscribed::RetireFirst(session) => self.retire_after_start(&session).await,
            }
        }
    }

    /// One attempt of [`subscribe_handler`](Self::subscribe_handler), under the session's
    /// writer lock; takes the handler only when it subscribes.
    fn try_subscribe_handler(
        &self,
        session_id: &str,
        topic: &str,
        handler: &mut Option<Handler>,
    ) -> Result<Subscribed> {
        let (session, created) = self.session_for(session_id, SessionForm::Handler)?;
        let mut writer = lock(&session.writer);
        if writer.retired {
            return Ok(Subscribed::Retry);
        }
        if !session.is_open() {
            drop(writer);
            return Ok(Subscribed::RetireFirst(session));
        }
        if self.is_stopped() {
            session.close(CloseReason::Stopped);
            self.retire_locked(&session, writer);
            return Err(PubSubError::Stopped);
        }
        // The handler goes in before the subscription, so a broadcast that sees the
        // subscription finds the handler.
        let mut table = (*session.handlers.load_full()).clone();
        let key = match writer.topics.get_key_value(topic) {
            Some((existing, _)) => existing.clone(),
            None => self
                .inner
                .topics
                .name_of(topic)
                .unwrap_or_else(|| Topic::from(topic)),
        };
        let handler = handler
            .take()
            .expect("the handler is taken only by the attempt that subscribes");
        table.insert(&key, handler);
        let replaced = session.handlers.swap(Arc::new(table));
        self.attach(&session, &mut writer, &key);
        drop(writer);
        // Dropped outside the lock: a replaced handler's captures may run user code.
        drop(replaced);
        Ok(Subscribed::Done(
            created.then(|| SessionTask::new(self.clone(), session)),
        ))
    }

    /// Removes one subscription of `session_id`; a handler-form session left with no topic is
    /// retired ([G7]). Unknown sessions and topics succeed and do nothing ([G3]).
    ///
    /// [G3]: crate::docs::contract#g3-idempotence
    /// [G7]: crate::docs::contract#g7-bounded-memory
    pub(crate) async fn unsubscribe_topic(&self, session_id: &str, topic: &str) -> Result<()> {
        self.check_running()?;
        check_session_id(session_id, &self.inner.config.limits)?;
        check_topic(topic, &self.inner.config.limits)?;
        self.reap();
        let Some(session) = self.inner.sessions.get(session_id) else {
            return Ok(());
        };
        if self.unsubscribe_session(&session, topic) {
            self.retire_after_start(&session).await;
        }
        Ok(())
    }

    /// Subscribes a receiver-form session to `topic`. A closed session is never subscribed
    /// again: the check and the attach are under its writer lock, which its retirement takes
    /// after the close, so a subscribe either fails with
    /// [`SessionClosed`](PubSubError::SessionClosed) or lands before the retirement, which then
    /// removes it.
    pub(crate) fn subscribe_receiver(&self, session: &Arc<Session>, topic: &str) -> Result<()> {
        self.check_running()?;
        check_topic(topic, &self.inner.config.limits)?;
        self.reap();
        let mut writer = lock(&session.writer);
        if writer.retired || !session.is_open() {
            return Err(PubSubError::SessionClosed {
                session_id: session.id.to_string(),
                reason: session.close_reason().unwrap_or(CloseReason::Unsubscribed),
            });
        }
        self.attach(session, &mut writer, &Topic::from(topic));
        Ok(())
    }

    /// Unsubscribes a receiver-form session from `topic`; unknown topics and closed sessions
    /// succeed and do nothing ([G3]).
    ///
    /// [G3]: crate::docs::contract#g3-idempotence
    pub(crate) fn unsubscribe_receiver(&self, session: &Arc<Session>, topic: &str) -> Result<()> {
        self.check_running()?;
        check_topic(topic, &self.inner.config.limits)?;
        // A pull-form session stays open with no topic: nothing to retire.
        self.unsubscribe_session(session, topic);
        Ok(())
    }

    /// Removes `session`'s subscription to `topic`. Returns `true` if that closed the session
    /// (a handler-form session left with no topic), which the caller then retires.
    pub(crate) fn unsubscribe_session(&self, session: &Arc<Session>, topic: &str) -> bool {
        let mut writer = lock(&session.writer);
        if writer.retired {
            return false;
        }
        let Some(placement) = writer.topics.remove(topic) else {
            return false;
        };
        self.detach(session, &placement);
        if session.form == SessionForm::Handler {
            if writer.topics.is_empty() {
                session.close(CloseReason::Unsubscribed);
                return true;
            } else {
                let mut table = (*session.handlers.load_full()).clone();
                table.remove(topic);
                let replaced = session.handlers.swap(Arc::new(table));
                drop(writer);
                drop(replaced);
            }
        }
        false
    }

    /// Adds `session` to `topic` unless it is already subscribed. Needs the session's writer.
    /// A topic entry created here takes `topic` as its name.
    fn attach(&self, session: &Arc<Session>, writer: &mut SessionWriter, topic: &Topic) {
        if writer.topics.contains_key(topic.as_str()) {
            return;
        }
        let config = &self.inner.config;
        let (entry, slot, created) = self
            .inner
            .topics
            .subscribe(topic, session, || config.rule_for(topic));
        if created {
            self.inner.counters.topic_created();
        }
        self.inner.counters.subscribed();
        writer
            .topics
            .insert(entry.name.clone(), Placement { entry, slot });
    }

    fn detach(&self, session: &Arc<Session>, placement: &Placement) {
        let removed = self
            .inner
            .topics
            .unsubscribe(&placement.entry, session, placement.slot);
        if removed.was_member {
            self.inner.counters.unsubscribed();
        }
        if removed.topic_retired {
            self.inner.counters.topic_removed();
        }
    }

    /// The live session `session_id`, created in `form` if absent; `true` if this call created
    /// it.
    fn session_for(&self, session_id: &str, form: SessionForm) -> Result<(Arc<Session>, bool)> {
        let sessions = &self.inner.sessions;
        let found = match sessions.get(session_id) {
            Some(existing) => existing,
            None => {
                let fresh = Arc::new(Session::new(
                    SessionId::from(session_id),
                    form,
                    self.inner.config.capacity,
                    self.inner.config.may_block(),
                    Arc::clone(&self.inner.counters),
                ));
                match sessions.try_insert(SessionId::clone(&fresh.id), Arc::clone(&fresh)) {
                    Ok(()) => {
                        // Pairs with the fence in `stop`: either our later check of `stopped`
                        // sees it set, or `stop`'s sweep of the map sees this session.
                        fence(Ordering::SeqCst);
                        self.inner.counters.session_opened();
                        return Ok((fresh, true));
                    }
                    Err(current) => current,
                }
            }
        };
        if found.form != form {
            return Err(PubSubError::SessionIdInUse {
                session_id: session_id.to_string(),
                existing: found.form,
            });
        }
        Ok((found, false))
    }

    /// Closes `session` (under its writer lock), then [`retire`](Self::retire)s it.
    pub(crate) fn close_and_retire(&self, session: &Arc<Session>, reason: CloseReason) {
        let writer = lock(&session.writer);
        session.close(reason);
        drop(writer);
        self.retire(session);
    }

    /// Removes a closed session from every topic and from the session map, and discards what
    /// it still holds. Idempotent.
    ///
    /// [G2]: first waits, holding no lock, until a handler call that began before the close has
    /// been made (`Session::wait_for_invocation_start`), so the session leaves the map only
    /// after that: an `unsubscribe_all` that no longer finds it has nothing to wait for. Not
    /// under the writer lock: the handler's synchronous part may take it (`session_topics`, a
    /// subscribe). Its callers retire a session their own caller named (an unsubscribe, a
    /// subscribe that found it disconnected) or their own (its task, its receiver); sessions
    /// that broadcasters disconnected are `reap`'s, which never waits.
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    pub(crate) fn retire(&self, session: &Arc<Session>) {
        session.wait_for_invocation_start();
        let writer = lock(&session.writer);
        self.retire_locked(session, writer);
    }

    /// [`retire`](Self::retire)'s work, for a caller that holds the writer lock and needs no
    /// wait (a session that never ran a handler, or the engine stopping), or that has waited.
    fn retire_locked(&self, session: &Arc<Session>, mut writer: MutexGuard<'_, SessionWriter>) {
        if writer.retired {
            return;
        }
        writer.retired = true;
        for (_, placement) in writer.topics.drain() {
            self.detach(session, &placement);
        }
        let handlers = session.handlers.swap(Arc::new(Default::default()));
        // Removed under the writer lock: a subscriber that then finds `retired` set and retries
        // no longer finds this session in the map.
        self.inner
            .sessions
            .remove_if(&*session.id, |_, current| Arc::ptr_eq(current, session));
        drop(writer);
        // Handlers are dropped outside the lock: their captures may run user code.
        drop(handlers);
        session.discard_queued();
        self.inner.counters.session_closed();
        if let Some(reason @ CloseReason::SlowConsumer) = session.close_reason() {
            self.notice(Notice::Disconnected {
                session_id: session.id.to_string(),
                reason,
            });
        }
    }
}

/// Loom models run a handler-form session's task on a model thread of their own.
#[cfg(fanout_loom)]
impl Engine {
    /// Subscribes the handler-form session `session_id` to `topic`, and returns its task if
    /// this created the session, for the model to run (`loom::future::block_on`).
    #[doc(hidden)]
    pub async fn loom_subscribe_handler(
        &self,
        session_id: &str,
        topic: &str,
        handler: Handler,
    ) -> Result<Option<impl std::future::Future<Output = ()> + Send + 'static>> {
        Ok(self
            .subscribe_handler(session_id, topic, handler)
            .await?
            .map(SessionTask::run))
    }
}

/// What one attempt to subscribe a handler-form session came to.
enum Subscribed {
    /// Subscribed; the session's task if the attempt created the session.
    Done(Option<SessionTask>),
    /// The session was retired meanwhile: try again with a fresh one.
    Retry,
    /// The session is closed but not retired: retire it, then try again.
    RetireFirst(Arc<Session>),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.session_count())
            .field("topics", &self.topic_count())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}
