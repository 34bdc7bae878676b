//! The pull form of a session: read messages with `recv().await` or as a `Stream`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::close_reason::CloseReason;
use crate::concurrent::Shared;
use crate::error::Result;
use crate::message::{Broadcast, Message};
use crate::sync::Arc;
use crate::topic::Topic;

use super::mailbox::Pop;
use super::session::Session;
use super::session_handle::SessionHandle;
use super::Engine;

/// A pull-form session, opened with [`Engine::open_session`] (or
/// [`InMemoryPubSub::open_session`](crate::InMemoryPubSub::open_session)).
///
/// Messages from all its topics arrive in one FIFO mailbox, in each publisher's order ([G4]).
/// Dropping the receiver (or [`close`](Self::close)) unsubscribes it from everything; messages
/// still queued are discarded and counted.
///
/// Reading takes `&mut self`; to change the session's topics from another task meanwhile, give
/// it a [`SessionHandle`] from [`handle`](Self::handle).
///
/// [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
pub struct SessionReceiver {
    /// The receiver's own subscription calls go through it, so a handle's are the same code.
    handle: SessionHandle,
}

/// The session is closed: no more messages will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session closed: {reason}")]
pub struct Closed {
    /// Why it was closed.
    pub reason: CloseReason,
}

/// Why [`SessionReceiver::try_recv`] returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is queued right now.
    #[error("no message is queued")]
    Empty,
    /// The session is closed.
    #[error(transparent)]
    Closed(#[from] Closed),
}

impl SessionReceiver {
    pub(crate) fn new(engine: Engine, session: Arc<Session>) -> Self {
        Self {
            handle: SessionHandle::new(engine, session),
        }
    }

    /// A handle on this session's subscriptions, for other tasks: it subscribes, unsubscribes
    /// and closes while this receiver waits in [`recv`](Self::recv).
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        self.handle.id()
    }

    /// Subscribes the session to `topic`, as [`SessionHandle::subscribe`]: at once in one
    /// process, once the broker confirmed on a distributed provider.
    pub async fn subscribe(&self, topic: &str) -> Result<()> {
        self.handle.subscribe(topic).await
    }

    /// Unsubscribes the session from `topic`, as [`SessionHandle::unsubscribe`].
    pub fn unsubscribe(&self, topic: &str) -> Result<()> {
        self.handle.unsubscribe(topic)
    }

    /// The topics the session is subscribed to.
    pub fn topics(&self) -> Vec<Topic> {
        self.handle.topics()
    }

    fn engine(&self) -> &Engine {
        &self.handle.engine
    }

    fn session(&self) -> &Arc<Session> {
        &self.handle.session
    }

    /// Messages waiting in the mailbox (a broadcast or a receive in progress may already be
    /// counted).
    pub fn queued(&self) -> usize {
        self.session().mailbox.len()
    }

    /// Why the session was closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.handle.close_reason()
    }

    /// Waits for the next message. Once the session is closed (unsubscribed, disconnected as a
    /// slow consumer, or the provider stopped) it returns [`Closed`] with the reason, at once,
    /// whatever is still queued.
    ///
    /// Like tokio's channels, each message taken spends one unit of the task's cooperative
    /// budget (and so does the [`Stream`] form): once a task has spent it, `recv` yields
    /// (`Pending`, woken at once) even with messages queued, so a session that never catches
    /// up does not starve the other tasks on its worker. [`try_recv`](Self::try_recv) never
    /// yields.
    pub async fn recv(&mut self) -> Result<Message, Closed> {
        let session = self.session();
        let popped = Pop {
            mailbox: &session.mailbox,
            is_closed: || !session.is_open(),
        }
        .await;
        self.accept(popped)
    }

    /// Waits for the next message, then takes it and whatever else is queued right now, up to
    /// `limit` in all, appending them to `buffer` in mailbox order; returns how many it took.
    ///
    /// What a session that re-renders once for a burst of updates wants, and cheaper per
    /// message than a `recv` and `try_recv` loop: after the first it never waits, not even for
    /// a broadcast still writing its message (which [`try_recv`](Self::try_recv) waits for);
    /// that message comes with the next call. A `limit` of 0 takes nothing and returns `Ok(0)`
    /// at once. Once the session is closed it returns [`Closed`], as `recv` does; if it closes
    /// after the first message was taken, the call returns what it took and the next one
    /// returns `Closed`. Spends one unit of the cooperative budget per call, not per message.
    ///
    /// `buffer` stays allocated with the session's task. Where sessions number in the
    /// thousands, a small `limit` keeps that footprint small: 16 messages take 256 bytes, the
    /// mailbox's default capacity 4 KiB per session, most of it idle when a wake finds one or
    /// two messages.
    pub async fn recv_many(&mut self, buffer: &mut Vec<Message>, limit: usize) -> Result<usize, Closed> {
        if limit == 0 {
            return Ok(0);
        }
        buffer.push(self.recv().await?);
        let mut taken = 1;
        while taken < limit {
            let Some(popped) = self.session().mailbox.pop() else {
                break;
            };
            // A message popped after the session closed is counted as dropped by `take`.
            let Ok(message) = self.take(Some(popped)) else {
                break;
            };
            buffer.push(message);
            taken += 1;
        }
        // The first was counted by `recv`; the rest with one increment.
        self.engine().counters().delivered(taken as u64 - 1);
        Ok(taken)
    }

    /// Takes the next message if one is queued.
    pub fn try_recv(&mut self) -> Result<Message, TryRecvError> {
        if !self.session().is_open() {
            return Err(self.closed().into());
        }
        match self.session().mailbox.pop_settled() {
            Some(popped) => self.accept(Some(popped)).map_err(Into::into),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Closes the session and unsubscribes it from everything, as
    /// [`SessionHandle::close`] does.
    pub fn close(self) {
        // Drop does it.
    }

    /// Hands over a popped message, counted as delivered; or, once the session is closed,
    /// discards it (counted as dropped) and reports why.
    fn accept(&self, popped: Option<(Shared<Broadcast>, u64)>) -> Result<Message, Closed> {
        let message = self.take(popped)?;
        self.engine().counters().delivered(1);
        Ok(message)
    }

    /// [`accept`](Self::accept) without counting the delivery: the caller counts it.
    #[inline]
    fn take(&self, popped: Option<(Shared<Broadcast>, u64)>) -> Result<Message, Closed> {
        match popped {
            Some((broadcast, missed)) if self.session().is_open() => Ok(Message::new(broadcast, missed)),
            Some((broadcast, _)) => {
                drop(broadcast);
                let closed = self.closed();
                self.engine().counters().dropped(closed.reason.drop_reason(), 1);
                Err(closed)
            }
            None => Err(self.closed()),
        }
    }

    /// The session is closed: make sure it is retired (it may have been closed by a broadcaster)
    /// and report why.
    fn closed(&self) -> Closed {
        self.engine().retire(self.session());
        Closed {
            reason: self.session().close_reason().unwrap_or(CloseReason::Unsubscribed),
        }
    }
}

impl Stream for SessionReceiver {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = self.get_mut();
        let session = this.session();
        match session.mailbox.poll_pop_cooperative(cx, || !session.is_open()) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(popped) => Poll::Ready(this.accept(popped).ok()),
        }
    }
}

impl Drop for SessionReceiver {
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl fmt::Debug for SessionReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let session = self.session();
        f.debug_struct("SessionReceiver")
            .field("id", &session.id)
            .field("queued", &session.mailbox.len())
            .field("close_reason", &session.close_reason())
            .finish()
    }
}
