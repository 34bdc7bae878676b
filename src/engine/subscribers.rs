//! A topic's subscriber set: a table of fixed-size chunks, each an immutable snapshot.
//!
//! # Why chunks
//!
//! One snapshot of the whole set would make every subscribe copy every subscriber: building a
//! topic of 100,000 sessions one subscribe at a time would copy five billion entries. Instead the
//! set is a table of slots, each holding an immutable chunk of at most [`CHUNK`] sessions behind
//! its own [`AtomicSnapshot`]. A subscribe or unsubscribe copies one chunk (at most `CHUNK`
//! entries); the table itself is copied only when it doubles, so its cost amortises to a
//! constant.
//!
//! # Invariants
//!
//! - Only writers holding the topic's writer lock (`TopicEntry::writer`, which owns the
//!   [`Layout`]) store into `table` or any slot. Readers (broadcasts) never lock.
//! - A session appears at most once in the whole set, in the slot recorded in its
//!   `Placement`; a subscription never moves between slots.
//! - A session that unsubscribes and subscribes again while a broadcast reads the slots can land
//!   in a slot the broadcast has not read yet, after being seen in one it has read. So every
//!   member carries the set's `epoch` at its insertion, and a broadcast skips members newer than
//!   the epoch it read first: each broadcast reaches a session at most once ([G1], [G3]). Everyone
//!   subscribed before the broadcast began has an epoch at most the one it read (the writer
//!   stores the epoch, `Release`, before the chunk; the broadcast loads it, `Acquire`, before
//!   the table), so nobody [G1] requires is skipped.
//! - Writers write only into the current table. When the table grows, the new table's slots start
//!   with the old slots' chunks; a broadcast still holding the old table sees the set as it was
//!   when it started, which is all [G1]/[G2] ask of a broadcast that began before the change.
//! - A subscribe returns after its `store`; a broadcast that begins afterwards `load`s the table
//!   and then the slot, so it sees the session ([G1]). Symmetrically for unsubscribe ([G2]).
//!
//! [G1]: crate::docs::contract#g1-delivery
//! [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
//! [G3]: crate::docs::contract#g3-idempotence

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Arc, AtomicSnapshot, SnapshotGuard};

use super::session::Session;

/// Sessions per chunk: the most a subscribe or unsubscribe copies.
#[cfg(not(fanout_loom))]
pub(crate) const CHUNK: usize = 32;
/// Tiny under loom, so chunk boundaries and table growth are explored.
#[cfg(fanout_loom)]
pub(crate) const CHUNK: usize = 2;

/// One subscription in a chunk: the session and the set's epoch when it was inserted.
pub(crate) struct Member {
    pub(crate) session: Arc<Session>,
    epoch: u64,
}

impl Clone for Member {
    fn clone(&self) -> Self {
        Member {
            session: Arc::clone(&self.session),
            epoch: self.epoch,
        }
    }
}

pub(crate) type Chunk = Vec<Member>;

pub(crate) struct Table {
    slots: Box<[AtomicSnapshot<Chunk>]>,
}

pub(crate) struct SubscriberSet {
    table: AtomicSnapshot<Table>,
    /// `Layout::len`, mirrored for readers outside the writer lock (a gauge: written under the
    /// lock, read `Relaxed`, ordered with nothing).
    len: AtomicUsize,
    /// Bumped by every insert, under the topic's writer lock; see the invariants above.
    epoch: AtomicU64,
}

/// The subscribers of one chunk a broadcast reaches: those inserted no later than the epoch
/// it read first (see the invariants above).
#[derive(Clone)]
pub(crate) struct ChunkMembers<'a> {
    members: std::slice::Iter<'a, Member>,
    epoch: u64,
}

impl<'a> Iterator for ChunkMembers<'a> {
    type Item = &'a Arc<Session>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let epoch = self.epoch;
        self.members
            .find(|member| member.epoch <= epoch)
            .map(|member| &member.session)
    }
}

/// Writer-side bookkeeping of the chunk table; lives under the topic's writer lock.
#[derive(Default)]
pub(crate) struct Layout {
    /// Sessions in each slot of the current table.
    fill: Vec<usize>,
    /// Slots with room, used as a stack so new subscribers fill recent slots first.
    open_slots: Vec<usize>,
    /// Subscribers in the whole set.
    pub(crate) len: usize,
}

impl SubscriberSet {
    pub(crate) fn new() -> Self {
        Self {
            table: AtomicSnapshot::new(Arc::new(Table { slots: Box::new([]) })),
            len: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// Subscribers in the set as of the latest completed subscribe or unsubscribe.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Calls `f` on the subscribers of each chunk in turn (at most [`CHUNK`] at a time, each
    /// once): a broadcast handles a chunk's deliveries together. Lock-free; `f` must not block.
    #[inline]
    pub(crate) fn for_each_chunk(&self, mut f: impl FnMut(ChunkMembers<'_>)) {
        // Pairs with the `Release` store in `insert`.
        let epoch = self.epoch.load(Ordering::Acquire);
        let table: SnapshotGuard<Table> = self.table.load();
        for slot in table.slots.iter() {
            let chunk = slot.load();
            f(ChunkMembers {
                members: chunk.iter(),
                epoch,
            });
        }
    }

    /// Adds `session` (not already a member); returns its slot.
    pub(crate) fn insert(&self, layout: &mut Layout, session: &Arc<Session>) -> usize {
        let slot = match layout.open_slots.last() {
            Some(&slot) => slot,
            None => self.grow(layout),
        };
        let epoch = self.epoch.load(Ordering::Relaxed) + 1;
        self.epoch.store(epoch, Ordering::Release);
        let table = self.table.load_full();
        let old = table.slots[slot].load_full();
        let mut chunk = Vec::with_capacity(old.len() + 1);
        chunk.extend(old.iter().cloned());
        chunk.push(Member {
            session: Arc::clone(session),
            epoch,
        });
        table.slots[slot].store(Arc::new(chunk));
        layout.fill[slot] += 1;
        if layout.fill[slot] == CHUNK {
            layout.open_slots.pop();
        }
        layout.len += 1;
        self.len.store(layout.len, Ordering::Relaxed);
        slot
    }

    /// Removes `session` from `slot`; returns whether it was there.
    pub(crate) fn remove(&self, layout: &mut Layout, session: &Arc<Session>, slot: usize) -> bool {
        let table = self.table.load_full();
        let Some(cell) = table.slots.get(slot) else {
            return false;
        };
        let old = cell.load_full();
        if !old.iter().any(|m| Arc::ptr_eq(&m.session, session)) {
            return false;
        }
        let chunk: Chunk = old
            .iter()
            .filter(|m| !Arc::ptr_eq(&m.session, session))
            .cloned()
            .collect();
        cell.store(Arc::new(chunk));
        if layout.fill[slot] == CHUNK {
            layout.open_slots.push(slot);
        }
        layout.fill[slot] -= 1;
        layout.len -= 1;
        self.len.store(layout.len, Ordering::Relaxed);
        true
    }

    /// Doubles the table (at least one slot); returns the first new slot.
    fn grow(&self, layout: &mut Layout) -> usize {
        let old = self.table.load_full();
        let old_len = old.slots.len();
        let new_len = (old_len * 2).max(1);
        let slots: Box<[AtomicSnapshot<Chunk>]> = (0..new_len)
            .map(|i| match old.slots.get(i) {
                Some(cell) => AtomicSnapshot::new(cell.load_full()),
                None => AtomicSnapshot::new(Arc::new(Vec::new())),
            })
            .collect();
        self.table.store(Arc::new(Table { slots }));
        layout.fill.resize(new_len, 0);
        // Push in reverse so the lowest new slot is on top of the stack.
        layout.open_slots.extend((old_len..new_len).rev());
        old_len
    }
}
