//! Orders a one-way close against the start of an action on another thread, with neither side
//! writing a line the other writes.
//!
//! What it is for: the handler form's [G2]. Once `unsubscribe_all` returns, no handler invocation
//! of the session starts. The session's task announces each start here, then checks that the
//! session is open; the closer closes the session, then waits here until no start it may have
//! missed is still in progress. For a handler, the start is its call and its future's first
//! poll.
//!
//! # Invariants
//!
//! - One thread at a time starts actions: `starting` is its flag, and only it sets the flag.
//! - Dekker's pairing, with `SeqCst` fences. The starter stores `starting = true`, fences, then
//!   checks that the owner is open. The closer closes (writes whatever that check reads),
//!   fences, then loads `starting`. If the starter's fence comes first in the fences' total
//!   order, the closer's load sees the flag set, or cleared again by [`StartGate::end`] once the
//!   action has started, and waits for it to clear. Otherwise the starter's check sees the close
//!   and the action does not start. So when [`StartGate::wait_for_starts`] returns, every start
//!   has either happened (its `end` is a `Release` store, read by the closer's `Acquire` load)
//!   or will find the owner closed.
//!
//! The flag is not a bit in the session's state word: there it would be set and cleared by two
//! locked read-modify-writes per delivery on the line every broadcaster reads before each push,
//! moving that line between cores twice per delivery. The gate lives on the mailbox queue's
//! consumers' line, which the task's pops already own and a push that finds room does not touch
//! (`engine::mailbox`'s `PopLine`), and its starter writes it without a locked instruction.
//!
//! [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe

use crate::sync::atomic::{fence, AtomicBool, Ordering};
use crate::sync::SpinThenYield;

/// See the module docs.
pub struct StartGate {
    /// Set by the starter from just before its open check until its action has started.
    starting: AtomicBool,
}

impl Default for StartGate {
    fn default() -> Self {
        Self::new()
    }
}

impl StartGate {
    /// A gate with no start in progress.
    pub fn new() -> Self {
        Self {
            starting: AtomicBool::new(false),
        }
    }

    /// The starter: announces a start, then asks `is_open`. On `true`, start the action, then
    /// call [`end`](Self::end); on `false` nothing is announced any more and the action must not
    /// start.
    #[inline]
    pub fn begin(&self, is_open: impl FnOnce() -> bool) -> bool {
        self.starting.store(true, Ordering::Relaxed);
        // Pairs with the fence in `start_in_progress`.
        fence(Ordering::SeqCst);
        if is_open() {
            return true;
        }
        self.end();
        false
    }

    /// The starter: the action announced by the last [`begin`](Self::begin) has started.
    #[inline]
    pub fn end(&self) {
        // Pairs with the `Acquire` load in `start_in_progress`.
        self.starting.store(false, Ordering::Release);
    }

    /// The closer, after its close: waits until no start that may have missed the close is in
    /// progress. The wait is the starter's open check plus the start of its action.
    pub fn wait_for_starts(&self) {
        let mut backoff = SpinThenYield::new();
        while self.start_in_progress() {
            backoff.wait();
        }
    }

    /// The closer, after its close, when it must not block: whether a start that may have
    /// missed the close is still in progress. `false` is what
    /// [`wait_for_starts`](Self::wait_for_starts) returning means; on `true`, ask again later.
    pub fn start_in_progress(&self) -> bool {
        // Pairs with the fence in `begin`.
        fence(Ordering::SeqCst);
        self.starting.load(Ordering::Acquire)
    }
}
