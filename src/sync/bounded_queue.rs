//! A bounded lock-free MPMC queue whose memory follows what it holds: a session's mailbox.
//!
//! It is an unbounded segmented queue ([`SegQueue`]: blocks of a few dozen slots, allocated as
//! they fill and freed as they empty) with a counter that bounds it. A mailbox that keeps up
//! holds one small block whatever its capacity, so the lines a broadcast writes for it stay few
//! and close to the session; a ring of `capacity` slots spreads them over its whole buffer (a
//! 4 KiB page per session at the default 256). With 10,000 sessions that was a TLB and cache
//! miss per delivery: the ring measured 2.3x the time of this queue end to end
//! (`docs/design-topic-log.md`).
//!
//! Built from this module's switch, so the same code runs in the normal build and under loom.
//!
//! # Invariants
//!
//! - The bound is kept by two monotonic counters: `claimed`, the places pushes have claimed
//!   ever, and `released`, the places pops have given back ever. A push claims one
//!   (compare-and-swap on `claimed`, only while `claimed - released` is below its limit)
//!   *before* it inserts; a pop gives one back (increments `released`) *after* it removes. So
//!   `released <= items removed <= items inserted <= claimed`, the items held never exceed
//!   `claimed - released`, and that never exceeds `capacity`: the bound (G7) holds at every
//!   moment.
//! - Producers check the bound against `released_seen`, a copy of `released` kept on their own
//!   cache line, and load `released` itself only when the copy says the queue is at its limit.
//!   The copy only ever lags (`released` only grows), so a lagging copy can make a push look
//!   at the limit, never below it: the check is conservative, and a push fails only after it
//!   has loaded `released` and still found the limit reached. This keeps the two sides off
//!   each other's lines: a keeping-up producer writes `claimed` and reads its copy, the
//!   consumer writes `released`, and neither line moves between cores on each message (one
//!   shared counter that both sides updated moved on every push and every pop; measured in
//!   `docs/design-topic-log.md`).
//! - A push fails only if the limit is reached at the moment it loads `released`.
//!   `claimed - released` can be above the number of items a pop can see by the pushes between
//!   their claim and their insert, and the pops between their removal and their give-back.
//!   Each window is short (on every 31st operation it includes allocating or freeing a block),
//!   and a push that fails inside a pop's window fails although the pop is about to make room:
//!   the pop has not returned, so this is the same as the push coming first (linearisable; the
//!   bound is never exceeded). A ring's push, in that window, would wait for the pop and
//!   succeed: under `drop_newest` or `disconnect` the policy can fire a few instructions early.
//! - The counters order nothing (`Relaxed`): the items' hand-over is ordered by [`SegQueue`],
//!   and the mailbox's wake-up and room protocols pair `SeqCst` fences around these operations
//!   (see `engine::mailbox`). A push that fails at the limit only loads, and its load of
//!   `released` is the one a `block` waiter's retry relies on (after its fence). The mailbox
//!   relies on no ordering from a pop that finds nothing (the real queue happens to fence
//!   there; its loom stand-in only loads, so a missing fence in the mailbox would show).

use crossbeam_utils::CachePadded;

use super::atomic::{AtomicUsize, Ordering};
use super::SegQueue;

pub(crate) struct BoundedQueue<T> {
    items: SegQueue<T>,
    /// Written by producers only.
    producers: CachePadded<ProducerSide>,
    /// Places given back by pops, ever. Written by pops only (the consumer, and a `drop_oldest`
    /// broadcaster evicting).
    released: CachePadded<AtomicUsize>,
    capacity: usize,
}

struct ProducerSide {
    /// Places claimed by pushes, ever. `claimed - released <= capacity`.
    claimed: AtomicUsize,
    /// A copy of `released` that may lag it; see the invariants.
    released_seen: AtomicUsize,
}

impl<T> BoundedQueue<T> {
    /// # Panics
    ///
    /// If `capacity` is zero (configuration validation rejects it before a mailbox is built).
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be non-zero");
        Self {
            items: SegQueue::new(),
            producers: CachePadded::new(ProducerSide {
                claimed: AtomicUsize::new(0),
                released_seen: AtomicUsize::new(0),
            }),
            released: CachePadded::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items held, counting pushes and pops in progress (see the invariants): what the bound
    /// is checked against. Two loads, not one snapshot: `released` is loaded first, so a
    /// racing pop can make this one high, never above capacity.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let released = self.released.load(Ordering::Relaxed);
        let claimed = self.producers.claimed.load(Ordering::Relaxed);
        claimed.saturating_sub(released).min(self.capacity)
    }

    /// Inserts `value` if the queue holds fewer than `limit` items (and fewer than its
    /// capacity); otherwise hands it back.
    #[inline]
    pub(crate) fn push_within(&self, value: T, limit: usize) -> Result<(), T> {
        let limit = limit.min(self.capacity);
        let producers = &*self.producers;
        let mut released = producers.released_seen.load(Ordering::Relaxed);
        let mut claimed = producers.claimed.load(Ordering::Relaxed);
        loop {
            // `claimed` may be stale (another producer claimed since): then it can even be
            // below `released`, and the compare-and-swap below fails and reloads it.
            if claimed.saturating_sub(released) >= limit {
                let fresh = self.released.load(Ordering::Relaxed);
                if fresh == released {
                    return Err(value);
                }
                released = fresh;
                producers.released_seen.store(fresh, Ordering::Relaxed);
                continue;
            }
            match producers.claimed.compare_exchange_weak(
                claimed,
                claimed + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => claimed = actual,
            }
        }
        self.items.push(value);
        Ok(())
    }

    /// Removes the oldest item.
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        let value = self.items.pop()?;
        self.released.fetch_add(1, Ordering::Relaxed);
        Some(value)
    }
}

#[cfg(all(test, not(fanout_loom)))]
mod tests {
    use super::BoundedQueue;

    #[test]
    fn holds_at_most_its_limit_and_capacity_in_order() {
        let queue = BoundedQueue::new(3);
        assert_eq!(queue.push_within(1, 2), Ok(()));
        assert_eq!(queue.push_within(2, 2), Ok(()));
        assert_eq!(queue.push_within(3, 2), Err(3), "limit 2 reached");
        assert_eq!(
            queue.push_within(3, 10),
            Ok(()),
            "a limit above capacity is capped"
        );
        assert_eq!(queue.push_within(4, 10), Err(4), "capacity 3 reached");
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.pop(), Some(1));
        assert_eq!(queue.push_within(4, 3), Ok(()));
        assert_eq!(
            (queue.pop(), queue.pop(), queue.pop(), queue.pop()),
            (Some(2), Some(3), Some(4), None)
        );
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn concurrent_pushes_never_exceed_capacity() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let queue = Arc::new(BoundedQueue::new(64));
        let accepted = Arc::new(AtomicUsize::new(0));
        let pushers: Vec<_> = (0..4)
            .map(|_| {
                let (queue, accepted) = (Arc::clone(&queue), Arc::clone(&accepted));
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        if queue.push_within(i, 64).is_ok() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        assert!(queue.len() <= 64);
                    }
                })
            })
            .collect();
        let mut popped = 0;
        while pushers.iter().any(|p| !p.is_finished()) {
            if queue.pop().is_some() {
                popped += 1;
            }
            assert!(queue.len() <= 64);
        }
        for pusher in pushers {
            pusher.join().expect("pusher");
        }
        while queue.pop().is_some() {
            popped += 1;
        }
        assert_eq!(
            popped,
            accepted.load(Ordering::Relaxed),
            "every accepted item popped once"
        );
        assert_eq!(queue.len(), 0);
    }
}
