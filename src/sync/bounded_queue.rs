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
//! - `reserved` counts pushes that have claimed a place and not yet been given back by a pop. A
//!   push claims one (compare-and-swap, only while `reserved` is below its limit) *before* it
//!   inserts; a pop gives one back *after* it removes. So the items in `items` never exceed
//!   `reserved`, and `reserved` never exceeds `capacity`: the bound (G7) holds at every moment.
//! - A push fails only if `reserved` is at its limit at that moment. `reserved` can be above the
//!   number of items a pop can see by the pushes between their claim and their insert, and the
//!   pops between their removal and their give-back. Each window is short (on every 31st
//!   operation it includes allocating or freeing a block), and a push that fails inside a pop's
//!   window fails although the pop is about to make room: the pop has not returned, so this is
//!   the same as the push coming first (linearisable; the bound is never exceeded). A ring's
//!   push, in that window, would wait for the pop and succeed: under `drop_newest` or
//!   `disconnect` the policy can now fire a few instructions early.
//! - `reserved` orders nothing (`Relaxed`): the items' hand-over is ordered by [`SegQueue`], and
//!   the mailbox's wake-up and room protocols pair `SeqCst` fences around these operations (see
//!   `engine::mailbox`). The mailbox relies on no ordering from a push that fails at the limit
//!   (it only loads) or from a pop that finds nothing (the real queue happens to fence there;
//!   its loom stand-in only loads, so a missing fence in the mailbox would show).

use super::atomic::{AtomicUsize, Ordering};
use super::SegQueue;

pub(crate) struct BoundedQueue<T> {
    items: SegQueue<T>,
    /// Places claimed by pushes and not yet given back by pops; `<= capacity`.
    reserved: AtomicUsize,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    /// # Panics
    ///
    /// If `capacity` is zero (configuration validation rejects it before a mailbox is built).
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be non-zero");
        Self {
            items: SegQueue::new(),
            reserved: AtomicUsize::new(0),
            capacity,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items held, counting pushes and pops in progress (see the invariants): what the bound
    /// is checked against.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Inserts `value` if the queue holds fewer than `limit` items (and fewer than its
    /// capacity); otherwise hands it back.
    #[inline]
    pub(crate) fn push_within(&self, value: T, limit: usize) -> Result<(), T> {
        let limit = limit.min(self.capacity);
        let claimed = self
            .reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held < limit).then_some(held + 1)
            });
        if claimed.is_err() {
            return Err(value);
        }
        self.items.push(value);
        Ok(())
    }

    /// Removes the oldest item.
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        let value = self.items.pop()?;
        self.reserved.fetch_sub(1, Ordering::Relaxed);
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
