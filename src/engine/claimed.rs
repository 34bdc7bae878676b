//! A broadcast's deliveries to one chunk of subscribers, claimed and not yet written.
//!
//! A push is a claim and a write (`BoundedQueue`'s "Claims"). Pushed one recipient at a time,
//! every delivery waits at the `SeqCst` fence that follows it for its slot's cache line, which
//! the recipient's consumer read last, so with many sessions the broadcast pays one cache miss
//! after another. A broadcast instead claims a place in each mailbox of a chunk, prefetching
//! each claimed slot's line for writing, writes them all (stores whose misses overlap), issues
//! one fence, and then does each push's checks.
//!
//! # Invariants
//!
//! - Every claimed push is written, then followed by a `SeqCst` fence, then by the checks every
//!   push path ends in: the consumer's `parked` flag and the session's state (the mailbox's
//!   "No lost wake-up" and "Nothing is left behind in a closed mailbox"). One fence after all
//!   of a chunk's writes orders each of them before each check, which is all either argument
//!   uses.
//! - While it holds claims, the broadcaster waits for nothing: before any overflow policy
//!   runs (an eviction waits for a claimed place at its mailbox's head), it publishes what it
//!   holds ([`ClaimedDeliveries::publish`]). Two broadcasters each holding a claim the other's
//!   eviction waits for would otherwise wait forever.
//! - A session appears at most once in a broadcast (the subscriber set's invariant), so a
//!   broadcaster never holds two claims in one mailbox.

use smallvec::SmallVec;

use crate::concurrent::Claimed;
use crate::stats::Tally;
use crate::sync::atomic::{fence, Ordering};

use super::session::Session;
use super::subscribers::CHUNK;

/// Claims made, not yet written; at most one chunk's worth, so they stay on the stack.
pub(crate) struct ClaimedDeliveries<'a> {
    sessions: SmallVec<[&'a Session; CHUNK]>,
    claims: SmallVec<[Claimed<'a>; CHUNK]>,
}

impl<'a> ClaimedDeliveries<'a> {
    pub(crate) fn new() -> Self {
        Self {
            sessions: SmallVec::new(),
            claims: SmallVec::new(),
        }
    }

    /// Holds `claim`, a place in `session`'s mailbox, until the next [`publish`](Self::publish),
    /// and starts fetching its slot's line for the write.
    ///
    /// The slot's line was last read by the session's consumer, on another core. Without the
    /// prefetch the chunk's writes wait at the fence for those lines one after another; started
    /// here, while the rest of the chunk is claimed, the misses overlap.
    #[inline]
    pub(crate) fn hold(&mut self, session: &'a Session, claim: Claimed<'a>) {
        claim.prefetch();
        self.sessions.push(session);
        self.claims.push(claim);
    }

    /// Writes every held claim, fences once, then wakes each parked consumer and counts each
    /// delivery (discarding it again if its session closed meanwhile).
    #[inline]
    pub(crate) fn publish(&mut self, tally: &mut Tally) {
        if self.claims.is_empty() {
            return;
        }
        // Dropping a claim writes it.
        self.claims.clear();
        // Pairs with the fence in `Mailbox::poll_pop` and with the one in
        // `Session::discard_queued`, for every push written above.
        fence(Ordering::SeqCst);
        for session in self.sessions.drain(..) {
            session.mailbox.wake_if_parked();
            super::broadcast::count_queued(session, tally);
        }
    }
}
