//! A cloneable handle through which other tasks change a pull-form session's subscriptions
//! while its reader waits in [`SessionReceiver::recv`](super::SessionReceiver::recv).
//!
//! # Sharing
//!
//! A [`SessionHandle`] and its session's [`SessionReceiver`](super::SessionReceiver) hold the
//! same session. They meet at two places only:
//!
//! - the session's writer lock, which every subscribe, unsubscribe and retirement takes (the
//!   receiver's own `subscribe` and `unsubscribe` are these same calls); the receiver's reads
//!   never take it, so a subscription change never waits for a reader, nor a reader for it;
//! - the session's state, which [`close`](SessionHandle::close) changes once (a `SeqCst` CAS,
//!   as the receiver's drop does), waking a reader parked in `recv`. The close then drains the
//!   mailbox while the reader may be popping from it, as a slow-consumer disconnect or `stop`
//!   on another thread does: the queue takes concurrent pops, so each message is taken, and
//!   counted (delivered or dropped), once.
//!
//! # Invariants
//!
//! - A handle never opens, reopens or keeps open a session: only `open_session` opens one, and
//!   the receiver's drop, a handle's `close`, `Engine::unsubscribe_all`, a slow-consumer
//!   disconnect or `stop` closes it.
//!   Dropping a handle does nothing.
//! - After the close, no handle puts an entry back into the engine's maps: a subscribe checks
//!   the state under the writer lock and fails with
//!   [`PubSubError::SessionClosed`](crate::PubSubError::SessionClosed); one that passed the
//!   check before the close holds the lock, so the retirement, which takes it after the close,
//!   removes what it added. An unsubscribe of a retired session does nothing.
//! - A handle is tied to one session, not to its id: once that session is closed, a later
//!   `open_session` with the same id is a new session, which the old handles do not reach.
//! - A handle keeps the session's memory allocated (its mailbox, emptied by the close), though
//!   not the session open, until the last handle and the receiver are gone.

use std::fmt;

use crate::close_reason::CloseReason;
use crate::error::Result;
use crate::sync::Arc;
use crate::topic::Topic;

use super::session::Session;
use super::Engine;

/// A cloneable handle on a pull-form session's subscriptions, from
/// [`SessionReceiver::handle`](crate::SessionReceiver::handle).
///
/// The receiver takes `&mut self` to read; the handle takes `&self` to subscribe, unsubscribe
/// or close, so one task can change the session's topics while another waits for its messages,
/// as a websocket server's reader and writer do. Its methods are the receiver's, with the same
/// errors and guarantees ([G2], [G3], [G8], [G9]), and return once the change is made: a
/// broadcast that begins after `subscribe` returned is delivered ([G1]), across instances on a
/// distributed provider.
///
/// Dropping a handle does nothing; dropping the receiver still closes the session. Once the
/// session is closed, `subscribe` fails with
/// [`PubSubError::SessionClosed`](crate::PubSubError::SessionClosed) and `unsubscribe`
/// does nothing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = fanout::InMemoryPubSub::new();
/// let mut session = pubsub.open_session("tab-1")?;
/// let handle = session.handle();
/// let reader = tokio::spawn(async move {
///     // The socket's reader: the client asked to join a room.
///     handle.subscribe("room:lobby").await
/// });
/// reader.await??;
/// pubsub.engine().broadcast("room:lobby", "hello".into()).await?;
/// assert_eq!(session.recv().await?.payload(), "hello");
/// # Ok(()) }
/// ```
///
/// [G1]: crate::docs::contract#g1-delivery
/// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
/// [G3]: crate::docs::contract#g3-idempotence
/// [G8]: crate::docs::contract#g8-lifecycle
/// [G9]: crate::docs::contract#g9-errors-are-values
#[derive(Clone)]
pub struct SessionHandle {
    pub(super) engine: Engine,
    pub(super) session: Arc<Session>,
}

impl SessionHandle {
    pub(super) fn new(engine: Engine, session: Arc<Session>) -> Self {
        Self { engine, session }
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.session.id
    }

    /// Subscribes the session to `topic`, and returns once a broadcast that begins afterwards
    /// reaches it ([G1]): in one process at once (the future is ready when first polled); on a
    /// distributed provider once the broker has confirmed the topic's channel, so that a
    /// broadcast from any instance reaches it.
    ///
    /// Subscribing twice is one subscription ([G3]). Fails with
    /// [`PubSubError::SessionClosed`](crate::PubSubError::SessionClosed) once the session is
    /// closed, with [`PubSubError::Stopped`](crate::PubSubError::Stopped) after the provider
    /// stopped ([G8]), and with a typed error for a bad topic ([G9]). On a distributed
    /// provider it can also fail with `BrokerError::SubscribeUnconfirmed` (inside
    /// [`PubSubError::Backend`](crate::PubSubError::Backend)): the session is subscribed on
    /// this instance, and on the broker as soon as the connection is back. The local change is
    /// made at the first poll: a subscribe dropped while it waits for the broker leaves the
    /// session subscribed (unsubscribe to undo it).
    ///
    /// [G1]: crate::docs::contract#g1-delivery
    /// [G3]: crate::docs::contract#g3-idempotence
    /// [G8]: crate::docs::contract#g8-lifecycle
    /// [G9]: crate::docs::contract#g9-errors-are-values
    pub async fn subscribe(&self, topic: &str) -> Result<()> {
        self.engine.subscribe_receiver(&self.session, topic)?;
        match self.engine.topic_confirmation(topic) {
            Some(confirmed) => confirmed.await,
            None => Ok(()),
        }
    }

    /// Unsubscribes the session from `topic` ([G2]): no broadcast that begins after this
    /// returns is delivered for it. Unknown topics, and every topic once the session is
    /// closed, succeed and do nothing ([G3]). After the provider stopped it fails with
    /// [`PubSubError::Stopped`](crate::PubSubError::Stopped), like every other operation
    /// ([G8]).
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    /// [G3]: crate::docs::contract#g3-idempotence
    /// [G8]: crate::docs::contract#g8-lifecycle
    pub fn unsubscribe(&self, topic: &str) -> Result<()> {
        self.engine.unsubscribe_receiver(&self.session, topic)
    }

    /// The topics the session is subscribed to (none once it is closed and retired).
    pub fn topics(&self) -> Vec<Topic> {
        self.session.topics()
    }

    /// Closes the session and unsubscribes it from everything, as dropping its receiver does:
    /// the receiver's `recv` returns [`Closed`](crate::Closed) with
    /// [`CloseReason::Unsubscribed`] (at once, if it is waiting), and messages still queued are
    /// discarded and counted. A session already closed keeps its first reason.
    pub fn close(&self) {
        self.engine
            .close_and_retire(&self.session, CloseReason::Unsubscribed);
    }

    /// A hint, with no effect on what happens: asks the CPU for the memory the session's next
    /// receive reads first, so that a caller that takes the messages of many sessions in turn
    /// (one task serving many sessions' receivers) can overlap the next session's cache
    /// misses with the current session's work.
    pub fn prefetch_receive(&self) {
        self.session.mailbox.prefetch_pop();
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        !self.session.is_open()
    }

    /// Why the session was closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.session.close_reason()
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.session.id)
            .field("close_reason", &self.session.close_reason())
            .finish()
    }
}
