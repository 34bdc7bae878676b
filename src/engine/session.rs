//! One session: its mailbox, its open/closed state, and its writer-side record of subscriptions.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::close_reason::CloseReason;
use crate::session_form::SessionForm;
use crate::stats::Counters;
use crate::sync::atomic::{fence, AtomicU8, Ordering};
use crate::sync::thread_local;
use crate::sync::{lock, Arc, AtomicSnapshot, AtomicWaker, Mutex};
use crate::topic::Topic;

use super::handler_table::HandlerTable;
use super::mailbox::Mailbox;
use super::topic_registry::TopicEntry;

/// A close reason's encoding in `Session::state`.
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
}

#[cfg(not(fanout_loom))]
thread_local! {
    /// The session whose handler this thread is calling (its address), or 0.
    static INVOKING_SESSION: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// loom's `thread_local!` takes no `const` initialiser.
#[cfg(fanout_loom)]
thread_local! {
    static INVOKING_SESSION: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// Marks this thread as calling `session`'s handler until dropped.
pub(crate) struct InvokingGuard(usize);

impl InvokingGuard {
    pub(crate) fn enter(session: &Session) -> Self {
        let previous = INVOKING_SESSION.with(|current| current.replace(session as *const Session as usize));
        InvokingGuard(previous)
    }
}

impl Drop for InvokingGuard {
    fn drop(&mut self) {
        INVOKING_SESSION.with(|current| current.set(self.0));
    }
}

/// `Session::state` before the close: afterwards it holds the close reason's code.
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

/// A session's id: immutable, shared by the session and its map key (a plain `std::sync::Arc`:
/// it is data, not a synchronisation point).
pub(crate) type SessionId = std::sync::Arc<str>;

pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) form: SessionForm,
    pub(crate) mailbox: Mailbox,
    /// Taken by subscribe / unsubscribe / retire; never by broadcast or the consumer.
    /// Lock order: a session's writer before any topic's writer.
    pub(crate) writer: Mutex<SessionWriter>,
    /// Handler form only. Replaced copy-on-write by subscribe / unsubscribe under `writer`.
    pub(crate) handlers: AtomicSnapshot<HandlerTable>,
    /// Handler form: the session's task's waker while it waits for a handler's future, so that
    /// the close starts the handler's close grace ([G7]). Registered by the task before it
    /// checks the state; woken by `close` after it writes the state: either the check sees the
    /// close, or the wake finds the waker. (The mailbox's consumer waker is registered only
    /// while the task waits for its mailbox.)
    ///
    /// [G7]: crate::docs::contract#g7-bounded-memory
    closing: AtomicWaker,
    /// When the close happened: set by the close that wins, before it wakes anyone, so a
    /// handler's close grace counts from the close, not from when its task saw it. A time for
    /// a timer, not a synchronisation point (a reader that finds it unset counts from its own
    /// now), so it stays outside the loom switch.
    closed_at: OnceLock<Instant>,
    counters: Arc<Counters>,
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        form: SessionForm,
        capacity: usize,
        signals_room: bool,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            id,
            form,
            mailbox: Mailbox::new(capacity, signals_room, OPEN),
            writer: Mutex::new(SessionWriter {
                retired: false,
                topics: HashMap::new(),
            }),
            handlers: AtomicSnapshot::new(Arc::new(HandlerTable::default())),
            closing: AtomicWaker::new(),
            closed_at: OnceLock::new(),
            counters,
        }
    }

    /// Starts loading the line a broadcast's push to this session touches first: its mailbox's
    /// producers' line, which also holds the session's state (compare-and-swapped for the
    /// claim, so fetched for writing). A hint, see `crate::sync::prefetch_for_write`.
    #[inline(always)]
    pub(crate) fn prefetch_for_broadcast(&self) {
        self.mailbox.prefetch_claim();
    }

    /// `OPEN` or a `CloseReason` code, changed once (open → closed) by `close` (and rewritten
    /// unchanged by a retire's wait at the start gate), read by broadcasters before each push and by
    /// the consumer before each delivery. It lives on the mailbox queue's producers' line,
    /// which every push claims on anyway, so a push touches two lines (that one and its
    /// slot's), not three. A handler invocation's start is ordered against the close by the
    /// mailbox's `invocations` gate ([G2]; `begin_invocation`), so the consumer never writes the
    /// state.
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    #[inline(always)]
    fn state(&self) -> &AtomicU8 {
        self.mailbox.session_state()
    }

    /// The topics the session is subscribed to (none once it is retired).
    pub(crate) fn topics(&self) -> Vec<Topic> {
        lock(&self.writer).topics.keys().cloned().collect()
    }

    #[inline]
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.state().load(Ordering::SeqCst))
    }

    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.state().load(Ordering::SeqCst) == OPEN
    }

    /// Closes the session; only the first close wins and returns `true`. Wakes the consumer
    /// (parked on its mailbox or waiting for a handler's future) and every broadcaster waiting
    /// for room.
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        if self
            .state()
            .compare_exchange(OPEN, reason.code(), Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        let _ = self.closed_at.set(Instant::now());
        self.mailbox.wake_all();
        self.closing.wake();
        true
    }

    /// How long ago the session was closed (zero if the close is still being made).
    pub(crate) fn closed_for(&self) -> Duration {
        self.closed_at.get().map_or(Duration::ZERO, Instant::elapsed)
    }

    /// The session's task, waiting for a handler's future: registers `waker` to be woken by
    /// the close. Check [`close_reason`](Self::close_reason) after registering, not before, or
    /// a close between the check and the registration is missed.
    pub(crate) fn wake_on_close(&self, waker: &std::task::Waker) {
        self.closing.register(waker);
    }

    /// Handler form: announces that an invocation is about to start. Returns `false` (and
    /// announces nothing) if the session is closed. On `true`, call the handler, then
    /// [`end_invocation_start`](Self::end_invocation_start). The session's task is the only
    /// caller (the gate's one starter).
    #[inline]
    pub(crate) fn begin_invocation(&self) -> bool {
        self.mailbox.invocations().begin(|| self.is_open())
    }

    /// The handler has been called: its invocation has started.
    #[inline]
    pub(crate) fn end_invocation_start(&self) {
        self.mailbox.invocations().end();
    }

    /// After a close: waits until an invocation that began before the close has been started,
    /// so that when the closer returns, no invocation is about to start ([G2]). The window is the
    /// task's check of the state, the handler's call and its future's first poll, so this
    /// spins for as long as those take: only for callers that know no handler-form invocation
    /// can be starting (a pull-form session, the session's own task); others wait as a task
    /// (`Engine::retire_after_start`). A handler whose call or first poll closes its own
    /// session is that invocation: it does not wait for itself.
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    pub(crate) fn wait_for_invocation_start(&self) {
        if self.is_invoking_on_this_thread() {
            return;
        }
        self.rewrite_closed_state();
        self.mailbox.invocations().wait_for_starts();
    }

    /// After a close, without blocking: whether an invocation that began before the close may
    /// still be about to start. `false` means what
    /// [`wait_for_invocation_start`](Self::wait_for_invocation_start) returning means.
    pub(crate) fn invocation_start_pending(&self) -> bool {
        if self.is_invoking_on_this_thread() {
            return false;
        }
        self.rewrite_closed_state();
        self.mailbox.invocations().start_in_progress()
    }

    fn is_invoking_on_this_thread(&self) -> bool {
        INVOKING_SESSION.with(|current| current.get() == self as *const Session as usize)
    }

    /// The gate's argument, as the fence rule is written, uses a write of the closed state by
    /// the closer before the gate's fence. If another thread closed the session, this thread's
    /// `close` only read it: this read-modify-write, which changes nothing, is that write. (The
    /// loom model passes without it, by happens-before; it costs one locked instruction per
    /// retire.)
    fn rewrite_closed_state(&self) {
        self.state().fetch_or(0, Ordering::SeqCst);
    }

    /// Discards what is queued, counting it under the close reason.
    ///
    /// Called by the closer after `close` (through retire), and by a broadcaster that queued a
    /// message and then found the session closed ([`discard_if_closed`](Self::discard_if_closed)).
    pub(crate) fn discard_queued(&self) {
        // Pairs with the fence a broadcaster issues after its push (see `discard_if_closed`).
        fence(Ordering::SeqCst);
        let reason = self.close_reason().unwrap_or(CloseReason::Unsubscribed);
        let n = self.mailbox.drain();
        self.counters.dropped(reason.drop_reason(), n);
    }

    /// A broadcaster that has just queued a message calls this: if the session closed
    /// meanwhile, the closer's drain may have run before the push, so the broadcaster discards
    /// (and counts) what is queued itself. Without it the message would sit uncounted until
    /// the session's memory is freed, which the session map may defer indefinitely.
    ///
    /// Dekker pairing: the broadcaster pushes, issues a `SeqCst` fence (every push path ends in
    /// `Mailbox::wake_consumer`, which issues it), then loads the state here; the closer
    /// writes the state (`SeqCst`), issues a `SeqCst` fence in `discard_queued`, then drains.
    /// At least one of them sees the other's write: the closer drains the message, or the
    /// broadcaster sees the close and drains it. Both draining is harmless: each message is
    /// popped, and counted, once. The loom model
    /// `broadcast_racing_unsubscribe_all_is_counted_when_both_return` checks this.
    #[inline]
    pub(crate) fn discard_if_closed(&self) {
        if !self.is_open() {
            self.discard_queued();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A broadcast that passed the open check just before the close may have pushed after the
        // consumer's final drain; those messages end here, still counted.
        self.discard_queued();
    }
}
