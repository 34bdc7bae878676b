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
//! - The counters are 64-bit on every target: at a billion messages a second they would take
//!   five centuries to wrap (a 32-bit count would wrap within a day, and a wrapped `claimed`
//!   would pass every bound check).
//! - The counters order nothing (`Relaxed`): the items' hand-over is ordered by [`SegQueue`],
//!   and the mailbox's wake-up and room protocols pair `SeqCst` fences around these operations
//!   (see `engine::mailbox`). A push that fails at the limit changes nothing another thread
//!   relies on (at most it refreshes the producers' copy, `Relaxed`), and it always loads
//!   `released` before it fails: that load is the one a `block` waiter's retry relies on
//!   (after its fence). The mailbox
//!   relies on no ordering from a pop that finds nothing (the real queue happens to fence
//!   there; its loom stand-in only loads, so a missing fence in the mailbox would show).

use crossbeam_utils::CachePadded;

use super::atomic::{AtomicU64, Ordering};
use super::SegQueue;

pub(crate) struct BoundedQueue<T> {
    items: SegQueue<T>,
    /// Written by producers only.
    producers: CachePadded<ProducerSide>,
    /// Places given back by pops, ever. Written by pops only (the consumer, and a `drop_oldest`
    /// broadcaster evicting). 64 bits on every target, so it never wraps.
    released: CachePadded<AtomicU64>,
    capacity: usize,
}

struct ProducerSide {
    /// Places claimed by pushes, ever. `claimed - released <= capacity`.
    claimed: AtomicU64,
    /// A copy of `released` that may lag it (and, stored by racing producers, even move back);
    /// never ahead of it. See the invariants.
    released_seen: AtomicU64,
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
                claimed: AtomicU64::new(0),
                released_seen: AtomicU64::new(0),
            }),
            released: CachePadded::new(AtomicU64::new(0)),
            capacity,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items held, counting pushes and pops in progress (see the invariants): what the bound
    /// is checked against. A gauge for statistics: two `Relaxed` loads, not one snapshot, so
    /// with pushes or pops racing it can be off by those in flight either way; it is kept
    /// within `0..=capacity`.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let released = self.released.load(Ordering::Relaxed);
        let claimed = self.producers.claimed.load(Ordering::Relaxed);
        usize::try_from(claimed.saturating_sub(released))
            .map_or(self.capacity, |held| held.min(self.capacity))
    }

    /// Inserts `value` if the queue holds fewer than `limit` items (and fewer than its
    /// capacity); otherwise hands it back.
    #[inline]
    pub(crate) fn push_within(&self, value: T, limit: usize) -> Result<(), T> {
        // Lossless: `usize` is at most 64 bits on every target Rust supports.
        let limit = limit.min(self.capacity) as u64;
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

    /// Rounds of four threads pushing 50 items each at limit 32 while this thread pops a
    /// few; then, with nobody pushing, what is held is counted: within the limit every round,
    /// and every accepted item popped exactly once. (`len` is a gauge that races, so the bound
    /// is checked at rest.)
    #[test]
    fn concurrent_pushes_never_exceed_the_limit() {
        use std::sync::Arc;
        let queue = Arc::new(BoundedQueue::new(64));
        let (mut accepted, mut popped) = (0, 0);
        for round in 0..200 {
            let pushers: Vec<_> = (0..4)
                .map(|_| {
                    let queue = Arc::clone(&queue);
                    std::thread::spawn(move || (0..50).filter(|&i| queue.push_within(i, 32).is_ok()).count())
                })
                .collect();
            let pops_this_round = round % 40;
            for _ in 0..pops_this_round {
                if queue.pop().is_some() {
                    popped += 1;
                }
            }
            accepted += pushers
                .into_iter()
                .map(|p| p.join().expect("pusher"))
                .sum::<usize>();
            let mut held = 0;
            while queue.pop().is_some() {
                held += 1;
            }
            assert!(held <= 32, "round {round}: {held} held at limit 32");
            if pops_this_round == 0 {
                assert_eq!(held, 32, "round {round}: 200 pushes and no pop fill the limit");
            }
            popped += held;
            assert_eq!(queue.len(), 0);
        }
        assert_eq!(popped, accepted, "every accepted item popped once");
    }
}
