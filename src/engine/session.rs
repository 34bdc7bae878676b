//! One session: its mailbox, its open/closed state, and its writer-side record of subscriptions.

use std::collections::HashMap;
use std::fmt;

use crate::error::SessionForm;
use crate::handler::Handler;
use crate::stats::{Counters, DropReason};
use crate::sync::atomic::{AtomicU8, Ordering};
use crate::sync::{Arc, AtomicSnapshot, Mutex};
use crate::topic::Topic;

use super::mailbox::Mailbox;
use super::topic_registry::TopicEntry;

/// Why a session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// `unsubscribe_all`, its last `unsubscribe_topic` (handler form), or its receiver was
    /// closed or dropped.
    Unsubscribed,
    /// Its mailbox was full under the `disconnect` policy.
    SlowConsumer,
    /// The provider was stopped.
    Stopped,
}

impl CloseReason {
    const fn code(self) -> u8 {
        match self {
            CloseReason::Unsubscribed => 1,
            CloseReason::SlowConsumer => 2,
            CloseReason::Stopped => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(CloseReason::Unsubscribed),
            2 => Some(CloseReason::SlowConsumer),
            3 => Some(CloseReason::Stopped),
            _ => None,
        }
    }

    /// The drop reason of messages still queued when a session closes for this reason.
    pub(crate) fn drop_reason(self) -> DropReason {
        match self {
            CloseReason::Unsubscribed => DropReason::Unsubscribed,
            CloseReason::SlowConsumer => DropReason::SlowConsumer,
            CloseReason::Stopped => DropReason::Stopped,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Unsubscribed => "unsubscribed",
            CloseReason::SlowConsumer => "disconnected as a slow consumer (its mailbox was full)",
            CloseReason::Stopped => "the provider was stopped",
        })
    }
}

const OPEN: u8 = 0;

/// Where one subscription of a session lives: which topic entry, which chunk of its set.
pub(crate) struct Placement {
    pub(crate) entry: Arc<TopicEntry>,
    pub(crate) slot: usize,
}

/// Writer-side state, under `Session::writer`.
pub(crate) struct SessionWriter {
    /// Set once, under this lock, when the session is removed from the registry; a subscriber
    /// that finds it set retries with a fresh session (handler form) or fails (receiver form).
    pub(crate) retired: bool,
    pub(crate) topics: HashMap<Topic, Placement>,
}

/// Handlers of a handler-form session, read by its task without locking.
pub(crate) type HandlerTable = HashMap<Topic, Handler>;

pub(crate) struct Session {
    pub(crate) id: Arc<str>,
    pub(crate) form: SessionForm,
    pub(crate) mailbox: Mailbox,
    /// `OPEN` or a `CloseReason` code. Written once (open → closed) by `close`, read by
    /// broadcasters before each push and by the consumer before each delivery. `SeqCst`: the
    /// close must be ordered before the consumer's check for G2 (no invocation starts after
    /// `unsubscribe_all` returns).
    state: AtomicU8,
    /// Taken by subscribe / unsubscribe / retire; never by broadcast or the consumer.
    /// Lock order: a session's writer before any topic's writer.
    pub(crate) writer: Mutex<SessionWriter>,
    /// Handler form only. Replaced copy-on-write by subscribe / unsubscribe under `writer`.
    pub(crate) handlers: AtomicSnapshot<HandlerTable>,
    counters: Arc<Counters>,
}

impl Session {
    pub(crate) fn new(id: Arc<str>, form: SessionForm, capacity: usize, counters: Arc<Counters>) -> Self {
        Self {
            id,
            form,
            mailbox: Mailbox::new(capacity),
            state: AtomicU8::new(OPEN),
            writer: Mutex::new(SessionWriter {
                retired: false,
                topics: HashMap::new(),
            }),
            handlers: AtomicSnapshot::new(Arc::new(HashMap::new())),
            counters,
        }
    }

    #[inline]
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.state.load(Ordering::SeqCst))
    }

    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.state.load(Ordering::SeqCst) == OPEN
    }

    /// Closes the session; only the first close wins and returns `true`. Wakes the consumer and
    /// every broadcaster waiting for room.
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        let won = self
            .state
            .compare_exchange(OPEN, reason.code(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if won {
            self.mailbox.wake_all();
        }
        won
    }

    /// Discards what is queued, counting it under the close reason.
    pub(crate) fn discard_queued(&self) {
        let reason = self.close_reason().unwrap_or(CloseReason::Unsubscribed);
        let n = self.mailbox.drain();
        self.counters.dropped(reason.drop_reason(), n);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A broadcast that passed the open check just before the close may have pushed after the
        // consumer's final drain; those messages end here, still counted.
        self.discard_queued();
    }
}
