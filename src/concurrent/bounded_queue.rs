//! A bounded lock-free MPMC queue whose memory follows what it holds: a session's mailbox.
//!
//! Items live in blocks of [`BLOCK_SLOTS`] slots, linked in order; a mailbox that keeps up
//! cycles through two blocks whatever its capacity, so the lines a broadcast writes for it stay
//! few and close to the session (a ring of `capacity` slots spreads them over its whole buffer,
//! so with many sessions each delivery would take a TLB and a cache miss).
//! Items are one pointer each ([`PointerItem`]), kept in atomics.
//!
//! The queue is laid out for the hand-over a delivery is: producers (broadcasters) write one
//! line of their own and the item's slot, the consumer reads the slot and writes one line of
//! its own. The owner may keep a small companion on each of the two lines. On the producers'
//! line the mailbox keeps what every push reads besides its claim: its consumer's sleep
//! (`parked` and the waker), which the consumer writes only when it runs dry, and its
//! session's state, written by the close. So a push touches that line and its slot's, and no
//! other. On the consumers' line it keeps what the consumer reads or writes on every delivery
//! besides the head (evictions not yet reported, the `block_once` mark, the handler form's
//! start gate), so a delivery touches that line and its slot's.
//!
//! Compared with crossbeam's `SegQueue` plus two counters: there a push also locks the slot's
//! line and the queue's tail (which every pop reads to tell empty from not), and blocks are
//! allocated by one thread and freed by another; here neither happens.
//!
//! Built from `crate::sync`'s primitives, so the same code runs in the normal build and under loom
//! (`loom-tests/tests/queue.rs`, with two slots per block so the models cross blocks).
//!
//! # Invariants
//!
//! - **Positions.** `tail` and `head` are positions: `index << 1`, with the low bit
//!   ([`INSTALLING`]) set while the side's next block is being put in place. Indices only grow
//!   (64 bits: at a billion items a second, five centuries to wrap), so no value repeats and
//!   a compare-and-swap that succeeds on a position is the only one that will. `tail`'s index
//!   is the number of places pushes have claimed, `head`'s the number pops have taken.
//! - **Bound ([G7]).** A push claims index `t` (CAS `tail` from `t` to `t + 1`) only while
//!   `t - head < limit`; a pop's CAS on `head` is its removal. So `head <= tail` and the items
//!   held never exceed `tail - head <= capacity` at any moment. Producers compare against
//!   `released_seen`, a copy of `head` on their own line that may lag (never lead) it, and
//!   load `head` only when the copy says full: a lagging copy only makes the check stricter,
//!   and a push fails only after it has loaded `head` and still found the limit reached.
//! - **Blocks.** Index `i` lives in slot `i % BLOCK_SLOTS` of the block that holds
//!   `i - i % BLOCK_SLOTS ..` (`block(i)`). While a side's position has [`INSTALLING`] clear,
//!   its block pointer (`tail_block`, `head_block`) is `block(index)`: the one thread that
//!   claims a block's last index sets the flag in the same CAS, puts the next block in place,
//!   then clears it (`Release`); the others wait for the few instructions in between. A
//!   thread that loads an unflagged position and then the block pointer gets that position's
//!   block, unless the position has moved on since, which its CAS then finds.
//! - **Hand-over.** A slot carries a `stamp`: `i + 1` once it holds item `i`. The producer
//!   stores the item (`Relaxed`) then the stamp (`Release`); a pop of index `i` loads the stamp
//!   (`Acquire`), then the item, and only then claims `i` by its CAS on `head`. The pop never
//!   reads `tail`: "empty" is "the head slot's stamp is not `i + 1` and `head` has not moved".
//!   A pop can therefore miss a completed push while an earlier-claimed push is still writing
//!   its slot; the mailbox's protocols do not rely on more (every push is followed by its
//!   producer's own `SeqCst` fence and check, see `engine::mailbox`).
//!   [`pop_settled`](BoundedQueue::pop_settled) is the pop that does not miss it: on "empty"
//!   it reads `tail`, and waits while a claimed place is unwritten (`try_recv`; not on the
//!   path of a consumer that parks).
//! - **Claims.** A push is a claim (the CAS on `tail`, [`BoundedQueue::claim_within`]) and a
//!   write (the item and the stamp, [`Claimed::publish`]); `push_within` does both at once, and
//!   a broadcast may claim places in many queues before it writes them all, so the writes'
//!   cache misses overlap (`engine::fan_out`). Nothing above depends on the two being
//!   adjacent: a claimed place reads as unwritten until its stamp is stored, however long that
//!   takes. What does depend on it is progress: a claim holds back its queue's later items, so
//!   the holder must not wait, while it holds one, for anything another thread does with a
//!   queue (an evicting push or `pop_settled` waiting for a claim held by a thread that is
//!   itself waiting for theirs would never end). A `Claimed` dropped unpublished publishes.
//! - **Progress.** A producer stalled between its claim and its write holds back every item
//!   behind it (pops answer "empty" until it writes; `pop_settled` and an evicting push wait
//!   for it), and a stalled installer holds back its side; waiters spin briefly, then yield
//!   their thread. So operations are lock-free
//!   except across those windows of a few instructions, as with crossbeam's segmented queue.
//! - **Reuse, never free.** A block is recycled onto the free list by the pop that claimed its
//!   last index, after it moved `head_block` on, and taken off it by the producer that claims
//!   the last index of the tail block, which is one thread at a time (the next one can only
//!   claim after this one cleared the flag), so the list has one taker and no ABA. No block is
//!   freed before the queue is dropped, because a pop reads the slot before its CAS tells it
//!   whether the block is still its index's: such a stale read only ever loads atomics of a
//!   live block, and its CAS then fails. A mailbox therefore keeps the blocks of its largest
//!   backlog until the session closes: the chain spans at most `capacity / BLOCK_SLOTS + 2`
//!   blocks, and a pop between claiming a block's last index and recycling it keeps one more
//!   off the free list (the consumer, an evicting broadcaster, a closer draining).
//! - **Recycling after the last read.** Each pop's item load comes before its CAS on `head`
//!   (`AcqRel`), and the CASes of one block form a release sequence up to the CAS that claims
//!   its last index (nothing but CASes writes `head` within a block). So every pop's read of a
//!   block happens before the recycling pop recycles it (`Release` onto the free list) and
//!   before the producer that takes it (`Acquire`) writes a slot again.
//!
//! [G7]: crate::docs::contract#g7-bounded-memory

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use crate::sync::SpinThenYield;

/// Slots per block. A keeping-up queue cycles through two blocks (one being written, one
/// recycled), and they stay its own, so the block's size is what every session keeps hot:
/// eight slots are 144 bytes with the links, a few cache lines; larger blocks cost more lines
/// per session, smaller ones change blocks (a recycle and an install) more often. Two under
/// loom, so the models cross block boundaries within a few operations.
#[cfg(not(fanout_loom))]
const BLOCK_SLOTS: u64 = 8;
#[cfg(fanout_loom)]
const BLOCK_SLOTS: u64 = 2;

/// Whether a companion of type `H` on the producers' line and one of type `C` on the
/// consumers' line each fit, with their side's own fields, in that side's first 64 bytes
/// (each side starts a line, `CachePadded`), in whatever order the compiler lays the fields
/// out. The mailbox asserts it for its two companions.
#[cfg(not(fanout_loom))]
pub(crate) const fn companions_fit<H, C>() -> bool {
    std::mem::size_of::<ProducerSide<H>>() <= 64 && std::mem::size_of::<ConsumerSide<C>>() <= 64
}

/// The low bit of a position: the side's next block is being put in place.
const INSTALLING: u64 = 1;

/// The index a position stands for.
fn index_of(position: u64) -> u64 {
    position >> 1
}

/// The position of `index`, not installing.
fn position_of(index: u64) -> u64 {
    index << 1
}

/// What the CAS that takes `index` (a push's claim, a pop's removal) writes to its side's
/// position, and whether `index` is its block's last: then the position is `INSTALLING`, and
/// the taker puts the next block in place before it stores `position_of(index + 1)`.
fn taking(index: u64) -> (u64, bool) {
    let last = index % BLOCK_SLOTS == BLOCK_SLOTS - 1;
    (position_of(index + 1) | if last { INSTALLING } else { 0 }, last)
}

/// An owning handle that is one non-null pointer, so the queue can keep it in an atomic.
///
/// # Safety
///
/// `from_raw(into_raw(x))` must give back `x`, and a value must stay valid while only its raw
/// pointer exists.
pub unsafe trait PointerItem: Send {
    /// Gives up the handle, keeping what it owns alive.
    fn into_raw(self) -> NonNull<()>;

    /// Takes back a handle given up by `into_raw`.
    ///
    /// # Safety
    ///
    /// `raw` came from `into_raw` on this type, and is taken back once.
    unsafe fn from_raw(raw: NonNull<()>) -> Self;
}

// SAFETY: `Box::into_raw` and `Box::from_raw` are inverses, and the allocation stays put.
unsafe impl<T: Send> PointerItem for Box<T> {
    fn into_raw(self) -> NonNull<()> {
        NonNull::from(Box::leak(self)).cast()
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // SAFETY: the caller passes a pointer from `into_raw`, once.
        unsafe { Box::from_raw(raw.cast().as_ptr()) }
    }
}

struct Slot {
    /// `index + 1` once the slot holds item `index`; whatever it held before otherwise (a
    /// smaller value: indices only grow).
    stamp: AtomicU64,
    /// The item's raw pointer; meaningful only after its stamp is seen.
    item: AtomicPtr<()>,
}

struct Block {
    slots: [Slot; BLOCK_SLOTS as usize],
    /// The block after this one, set by the producer that claims this block's last index
    /// before it writes that slot.
    next: AtomicPtr<Block>,
    /// The next block on the free list.
    next_free: AtomicPtr<Block>,
    /// Under loom, a loom `Arc` that lives as long as the block: loom reports it leaked if
    /// the queue loses track of a block.
    #[cfg(fanout_loom)]
    _leak_sentinel: crate::sync::Arc<()>,
}

impl Block {
    /// The slot of `index`, which lives in this block.
    fn slot(&self, index: u64) -> &Slot {
        // Lossless: below `BLOCK_SLOTS`.
        &self.slots[(index % BLOCK_SLOTS) as usize]
    }

    fn allocate() -> *mut Block {
        Box::into_raw(Box::new(Block {
            slots: std::array::from_fn(|_| Slot {
                stamp: AtomicU64::new(0),
                item: AtomicPtr::new(ptr::null_mut()),
            }),
            next: AtomicPtr::new(ptr::null_mut()),
            next_free: AtomicPtr::new(ptr::null_mut()),
            #[cfg(fanout_loom)]
            _leak_sentinel: crate::sync::Arc::new(()),
        }))
    }
}

/// A place claimed by [`BoundedQueue::claim_within`], with the item that goes there. Writing
/// it ([`publish`](Self::publish), or dropping it) puts the item in the queue.
#[must_use = "the claimed place holds back the queue until the claim is published"]
pub struct Claimed<'q> {
    slot: &'q Slot,
    index: u64,
    /// The item, given up by `into_raw`; the queue's `T`.
    item: NonNull<()>,
}

impl Claimed<'_> {
    /// Starts loading the claimed slot's line for writing, so that a caller holding many
    /// claims has their misses in flight together before it writes them (a hint, see
    /// `crate::sync::prefetch_for_write`).
    #[inline(always)]
    pub fn prefetch(&self) {
        crate::sync::prefetch_for_write(self.slot);
    }

    /// Writes the item into its place: the hand-over's item then stamp (`Release`).
    #[inline]
    pub fn publish(self) {
        drop(self);
    }
}

impl Drop for Claimed<'_> {
    #[inline]
    fn drop(&mut self) {
        self.slot.item.store(self.item.as_ptr(), Ordering::Relaxed);
        self.slot.stamp.store(self.index + 1, Ordering::Release);
    }
}

// SAFETY: a claim carries an item of a `PointerItem` queue (`Send`) and a reference to a slot
// of atomics.
unsafe impl Send for Claimed<'_> {}

/// A bounded MPMC queue of pointer-sized items; see the module docs.
pub struct BoundedQueue<T: PointerItem, H = (), C = ()> {
    /// Written by producers only, except `companion`.
    producers: CachePadded<ProducerSide<H>>,
    /// Written by pops only (the consumer, a `drop_oldest` broadcaster evicting, a closer
    /// draining), except the free list, which the producer installing a block takes from, and
    /// `companion`.
    consumers: CachePadded<ConsumerSide<C>>,
    _items: PhantomData<T>,
}

struct ProducerSide<H> {
    /// Position of the next index to claim.
    tail: AtomicU64,
    /// `block(tail)` while `tail` is not installing; null until the first push.
    tail_block: AtomicPtr<Block>,
    /// A copy of `head`'s index that may lag it (and, stored by racing producers, even move
    /// back); never ahead of it.
    released_seen: AtomicU64,
    capacity: u64,
    /// The owner's state that every push touches after its claim, kept on the producers' line
    /// so that a push touches one line fewer ([`BoundedQueue::companion`]).
    companion: H,
}

struct ConsumerSide<C> {
    /// Position of the next index to pop.
    head: AtomicU64,
    /// `block(head)` while `head` is not installing; null until the first push.
    head_block: AtomicPtr<Block>,
    /// Recycled blocks, linked through `next_free`.
    free: AtomicPtr<Block>,
    /// The owner's state that every pop reads besides the head, kept on the consumers' line
    /// ([`BoundedQueue::consumer_companion`]).
    companion: C,
}

// SAFETY: the queue moves items between threads (`T: Send` through `PointerItem`) and shares
// nothing of them; its own state is atomics.
unsafe impl<T: PointerItem, H: Sync, C: Sync> Sync for BoundedQueue<T, H, C> {}
// SAFETY: as above.
unsafe impl<T: PointerItem, H: Send, C: Send> Send for BoundedQueue<T, H, C> {}

impl<T: PointerItem> BoundedQueue<T> {
    /// An empty queue; its first block is allocated by the first push.
    ///
    /// # Panics
    ///
    /// If `capacity` is zero (configuration validation rejects it before a mailbox is built).
    #[cfg_attr(not(any(test, fanout_loom)), allow(dead_code))]
    pub fn new(capacity: usize) -> Self {
        Self::with_companions(capacity, (), ())
    }
}

impl<T: PointerItem, H, C> BoundedQueue<T, H, C> {
    /// An empty queue that keeps `companion` on its producers' cache line and
    /// `consumer_companion` on its consumers'.
    ///
    /// # Panics
    ///
    /// If `capacity` is zero (configuration validation rejects it before a mailbox is built).
    pub fn with_companions(capacity: usize, companion: H, consumer_companion: C) -> Self {
        assert!(capacity > 0, "capacity must be non-zero");
        Self {
            producers: CachePadded::new(ProducerSide {
                tail: AtomicU64::new(0),
                tail_block: AtomicPtr::new(ptr::null_mut()),
                released_seen: AtomicU64::new(0),
                // Lossless: `usize` is at most 64 bits on every target Rust supports.
                capacity: capacity as u64,
                companion,
            }),
            consumers: CachePadded::new(ConsumerSide {
                head: AtomicU64::new(0),
                head_block: AtomicPtr::new(ptr::null_mut()),
                free: AtomicPtr::new(ptr::null_mut()),
                companion: consumer_companion,
            }),
            _items: PhantomData,
        }
    }

    /// The state kept on the producers' line.
    #[inline(always)]
    pub fn companion(&self) -> &H {
        &self.producers.companion
    }

    /// The state kept on the consumers' line.
    #[inline(always)]
    pub fn consumer_companion(&self) -> &C {
        &self.consumers.companion
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        // Lossless: it came from a `usize`.
        self.producers.capacity as usize
    }

    /// Items held, counting pushes and pops in progress: what the bound is checked against.
    /// A gauge for statistics: two `Relaxed` loads, not one snapshot, so with pushes or pops
    /// racing it can be off by those in flight either way; it is kept within `0..=capacity`.
    #[inline]
    #[cfg_attr(
        fanout_loom,
        allow(
            clippy::len_without_is_empty,
            reason = "public only to the loom models, which need no `is_empty`"
        )
    )]
    pub fn len(&self) -> usize {
        let head = index_of(self.consumers.head.load(Ordering::Relaxed));
        let tail = index_of(self.producers.tail.load(Ordering::Relaxed));
        // Lossless: at most `capacity`, which came from a `usize`.
        tail.saturating_sub(head).min(self.producers.capacity) as usize
    }

    /// Inserts `item` if the queue holds fewer than `limit` items (and fewer than its
    /// capacity); otherwise hands it back.
    #[inline]
    pub fn push_within(&self, item: T, limit: usize) -> Result<(), T> {
        self.claim_within(item, limit).map(Claimed::publish)
    }

    /// The first half of [`push_within`](Self::push_within): claims the next place for `item`
    /// if the queue holds fewer than `limit` items (and fewer than its capacity), without
    /// writing it yet; otherwise hands `item` back. The item is in the queue once the returned
    /// [`Claimed`] is published (or dropped).
    ///
    /// Until then every pop answers "empty" at this place, and every item claimed after it
    /// waits behind it: [`pop_settled`](Self::pop_settled) and an evicting push spin on it. So
    /// a caller holding a claim must publish it before it waits for anything another thread
    /// may be doing with this queue (see "Claims" in the module docs).
    #[inline]
    pub fn claim_within(&self, item: T, limit: usize) -> Result<Claimed<'_>, T> {
        let producers = &*self.producers;
        // Lossless: `usize` is at most 64 bits on every target Rust supports.
        let limit = (limit as u64).min(producers.capacity);
        let mut released = producers.released_seen.load(Ordering::Relaxed);
        let mut wait = SpinThenYield::new();
        loop {
            let tail = producers.tail.load(Ordering::Acquire);
            if tail & INSTALLING != 0 {
                wait.wait();
                continue;
            }
            let index = index_of(tail);
            // `released` may be a copy stored after a newer `head` than this `tail` was read
            // against (racing producers): then it can be above `index`, and the CAS fails.
            if index.saturating_sub(released) >= limit {
                let fresh = index_of(self.consumers.head.load(Ordering::Relaxed));
                if fresh == released {
                    return Err(item);
                }
                released = fresh;
                producers.released_seen.store(fresh, Ordering::Relaxed);
                continue;
            }
            let block = producers.tail_block.load(Ordering::Acquire);
            if block.is_null() {
                self.install_first_block();
                continue;
            }
            let (claimed, last) = taking(index);
            if producers
                .tail
                .compare_exchange_weak(tail, claimed, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: blocks are freed only when the queue drops; the CAS succeeded on a
            // position whose block this is (invariants), and it cannot be recycled before the
            // slot claimed here is written and popped.
            let block = unsafe { &*block };
            if last {
                let next = self.take_free_block();
                block.next.store(next, Ordering::Release);
                producers.tail_block.store(next, Ordering::Release);
                producers.tail.store(position_of(index + 1), Ordering::Release);
            }
            return Ok(Claimed {
                slot: block.slot(index),
                index,
                item: item.into_raw(),
            });
        }
    }

    /// Starts loading the producers' line, which [`claim_within`](Self::claim_within) will
    /// compare-and-swap (see `crate::sync::prefetch_for_write`).
    #[inline(always)]
    pub fn prefetch_claim(&self) {
        crate::sync::prefetch_for_write(&self.producers.tail);
    }

    /// Starts loading the consumers' line, which a pop compare-and-swaps (see
    /// `crate::sync::prefetch_for_write`).
    #[inline(always)]
    pub fn prefetch_pop(&self) {
        crate::sync::prefetch_for_write(&self.consumers.head);
    }

    /// Removes the oldest item, or returns `None` if the head slot holds nothing yet (see
    /// "Hand-over" in the module docs).
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let consumers = &*self.consumers;
        let mut wait = SpinThenYield::new();
        loop {
            let head = consumers.head.load(Ordering::Acquire);
            if head & INSTALLING != 0 {
                wait.wait();
                continue;
            }
            let block = consumers.head_block.load(Ordering::Acquire);
            if block.is_null() {
                return None;
            }
            let index = index_of(head);
            // SAFETY: blocks are freed only when the queue drops. `block` may have been moved
            // on from since `head` was read; then only atomics are read here, and the CAS
            // below fails.
            let block = unsafe { &*block };
            let slot = block.slot(index);
            if slot.stamp.load(Ordering::Acquire) != index + 1 {
                if consumers.head.load(Ordering::Relaxed) == head {
                    return None;
                }
                continue;
            }
            let item = slot.item.load(Ordering::Relaxed);
            let (taken, last) = taking(index);
            if consumers
                .head
                .compare_exchange_weak(head, taken, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if last {
                // Linked before the stamp this pop saw was stored.
                let next = block.next.load(Ordering::Acquire);
                consumers.head_block.store(next, Ordering::Release);
                consumers.head.store(position_of(index + 1), Ordering::Release);
                self.recycle(block);
            }
            // SAFETY: the stamp showed item `index` in the slot, and the CAS made this pop the
            // one that takes it; the pointer came from `into_raw` in `push_within`.
            return Some(unsafe { T::from_raw(NonNull::new_unchecked(item)) });
        }
    }

    /// [`pop`](Self::pop), except that it answers `None` only if every claimed place has been
    /// written and taken: while a push has claimed the head's place and not yet written it, it
    /// waits (spins, then yields) instead. Reads the producers' line when the head slot is
    /// empty, which [`pop`](Self::pop) never does.
    pub fn pop_settled(&self) -> Option<T> {
        let mut wait = SpinThenYield::new();
        loop {
            if let Some(item) = self.pop() {
                return Some(item);
            }
            // `tail` is read after the pop's load of `head`, and both only grow: a claim that
            // happened before this call is counted, and a claim it counts that `head` has
            // passed since is caught by the comparison.
            let tail = index_of(self.producers.tail.load(Ordering::Acquire));
            let head = index_of(self.consumers.head.load(Ordering::Acquire));
            if tail <= head {
                return None;
            }
            wait.wait();
        }
    }

    /// Puts the first block in place for both sides: `head_block` first, so a pop never finds
    /// a block on the producers' side that its own side lacks.
    #[cold]
    fn install_first_block(&self) {
        let consumers = &*self.consumers;
        let mut first = consumers.head_block.load(Ordering::Acquire);
        if first.is_null() {
            let fresh = Block::allocate();
            first = match consumers.head_block.compare_exchange(
                ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => fresh,
                Err(installed) => {
                    // SAFETY: `fresh` was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    installed
                }
            };
        }
        // A racing producer may have done it already: either way it is `first`.
        let _ = self.producers.tail_block.compare_exchange(
            ptr::null_mut(),
            first,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// A block for the producers' next index: a recycled one, or a new one. Called only by the
    /// producer that claimed the tail block's last index (one at a time: the free list's only
    /// taker).
    fn take_free_block(&self) -> *mut Block {
        let free = &self.consumers.free;
        let mut top = free.load(Ordering::Acquire);
        while !top.is_null() {
            // SAFETY: blocks are freed only when the queue drops.
            let below = unsafe { (*top).next_free.load(Ordering::Relaxed) };
            // Only recyclers push meanwhile, and a block on the list cannot be pushed again
            // before this taker takes it: a changed top is a new block, never `top` again.
            match free.compare_exchange_weak(top, below, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return top,
                Err(current) => top = current,
            }
        }
        Block::allocate()
    }

    /// Puts a block every index of which has been popped on the free list.
    fn recycle(&self, block: &Block) {
        let free = &self.consumers.free;
        let block_ptr = ptr::from_ref(block).cast_mut();
        let mut top = free.load(Ordering::Relaxed);
        loop {
            block.next_free.store(top, Ordering::Relaxed);
            match free.compare_exchange_weak(top, block_ptr, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(current) => top = current,
            }
        }
    }
}

impl<T: PointerItem, H, C> Drop for BoundedQueue<T, H, C> {
    fn drop(&mut self) {
        // Exclusive access: every operation has returned, so no position is installing, the
        // chain runs from `block(head)` to `block(tail)`, and every other block is on the free
        // list.
        let head = index_of(self.consumers.head.load(Ordering::Relaxed));
        let tail = index_of(self.producers.tail.load(Ordering::Relaxed));
        let tail_block = self.producers.tail_block.load(Ordering::Relaxed);
        let head_block = self.consumers.head_block.load(Ordering::Relaxed);
        if !head_block.is_null() {
            let mut block = head_block;
            for index in head..tail {
                if index % BLOCK_SLOTS == 0 && index != head {
                    // SAFETY: chain blocks are live until freed below.
                    block = unsafe { (*block).next.load(Ordering::Relaxed) };
                }
                // SAFETY: as above.
                let slot = unsafe { (*block).slot(index) };
                if slot.stamp.load(Ordering::Relaxed) == index + 1 {
                    if let Some(item) = NonNull::new(slot.item.load(Ordering::Relaxed)) {
                        // SAFETY: item `index` was pushed and never popped.
                        drop(unsafe { T::from_raw(item) });
                    }
                }
            }
            let mut block = head_block;
            loop {
                let next = if block == tail_block || tail_block.is_null() {
                    ptr::null_mut()
                } else {
                    // SAFETY: chain blocks are live until freed here, once.
                    unsafe { (*block).next.load(Ordering::Relaxed) }
                };
                // SAFETY: allocated by `Block::allocate`, reachable once.
                drop(unsafe { Box::from_raw(block) });
                if next.is_null() {
                    break;
                }
                block = next;
            }
        }
        let mut free = self.consumers.free.load(Ordering::Relaxed);
        while !free.is_null() {
            // SAFETY: free-list blocks are live and listed once.
            let below = unsafe { (*free).next_free.load(Ordering::Relaxed) };
            // SAFETY: allocated by `Block::allocate`, reachable once.
            drop(unsafe { Box::from_raw(free) });
            free = below;
        }
    }
}

#[cfg(all(test, not(fanout_loom)))]
mod tests {
    use super::{companions_fit, BoundedQueue, BLOCK_SLOTS};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn boxed(queue: &BoundedQueue<Box<u64>>, item: u64, limit: usize) -> Result<(), u64> {
        queue.push_within(Box::new(item), limit).map_err(|back| *back)
    }

    fn pop(queue: &BoundedQueue<Box<u64>>) -> Option<u64> {
        queue.pop().map(|item| *item)
    }

    #[test]
    fn companions_that_fit_share_their_sides_lines() {
        // The producers' own fields take 32 bytes on 64-bit targets, the consumers' 24.
        assert!(companions_fit::<[u64; 4], [u64; 5]>());
        assert!(!companions_fit::<[u64; 5], ()>());
        assert!(!companions_fit::<(), [u64; 6]>());
        let queue = BoundedQueue::<Box<u64>, _, _>::with_companions(4, [7u64; 4], [8u64; 5]);
        for (side, line, companion, size) in [
            (
                "producers'",
                std::ptr::from_ref(&*queue.producers) as usize,
                std::ptr::from_ref(queue.companion()) as usize,
                32,
            ),
            (
                "consumers'",
                std::ptr::from_ref(&*queue.consumers) as usize,
                std::ptr::from_ref(queue.consumer_companion()) as usize,
                40,
            ),
        ] {
            assert_eq!(line % 64, 0, "the {side} fields start a line");
            assert!(
                companion + size <= line + 64,
                "and the {side} companion ends in it"
            );
        }
    }

    #[test]
    fn holds_at_most_its_limit_and_capacity_in_order() {
        let queue = BoundedQueue::new(3);
        assert_eq!(pop(&queue), None, "a new queue is empty");
        assert_eq!(boxed(&queue, 1, 2), Ok(()));
        assert_eq!(boxed(&queue, 2, 2), Ok(()));
        assert_eq!(boxed(&queue, 3, 2), Err(3), "limit 2 reached");
        assert_eq!(boxed(&queue, 3, 10), Ok(()), "a limit above capacity is capped");
        assert_eq!(boxed(&queue, 4, 10), Err(4), "capacity 3 reached");
        assert_eq!(queue.len(), 3);
        assert_eq!(pop(&queue), Some(1));
        assert_eq!(boxed(&queue, 4, 3), Ok(()));
        assert_eq!(
            (pop(&queue), pop(&queue), pop(&queue), pop(&queue)),
            (Some(2), Some(3), Some(4), None)
        );
        assert_eq!(queue.len(), 0);
    }

    /// Many blocks' worth, in bursts of every size up to the capacity: FIFO throughout, and
    /// the blocks are reused rather than piled up (checked by `Drop` freeing them, under Miri
    /// or a leak checker; here by the order and counts).
    #[test]
    fn keeps_order_across_blocks_and_reuses_them() {
        let capacity = 3 * BLOCK_SLOTS as usize + 5;
        let queue = BoundedQueue::new(capacity);
        let (mut next_in, mut next_out) = (0u64, 0u64);
        for burst in 1..=capacity {
            for _ in 0..burst {
                assert_eq!(boxed(&queue, next_in, capacity), Ok(()));
                next_in += 1;
            }
            assert_eq!(boxed(&queue, next_in, burst), Err(next_in), "limit {burst}");
            while let Some(item) = pop(&queue) {
                assert_eq!(item, next_out);
                next_out += 1;
            }
            assert_eq!(next_out, next_in);
        }
    }

    /// Items still queued when the queue drops are dropped with it, once.
    #[test]
    fn drops_what_it_holds() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        for (pushed, popped) in [(0, 0), (1, 0), (40, 7), (64, 64), (70, 33)] {
            drops.store(0, Ordering::Relaxed);
            let queue = BoundedQueue::new(100);
            for _ in 0..pushed {
                assert!(queue
                    .push_within(Box::new(Counted(Arc::clone(&drops))), 100)
                    .is_ok());
            }
            for _ in 0..popped {
                drop(queue.pop().expect("pushed"));
            }
            assert_eq!(drops.load(Ordering::Relaxed), popped);
            drop(queue);
            assert_eq!(
                drops.load(Ordering::Relaxed),
                pushed,
                "{pushed} pushed, {popped} popped"
            );
        }
    }

    /// Rounds of four threads pushing 50 items each at limit 32 while this thread pops a
    /// few; then, with nobody pushing, what is held is counted: within the limit every round,
    /// and every accepted item popped exactly once. (`len` is a gauge that races, so the bound
    /// is checked at rest.)
    #[test]
    fn concurrent_pushes_never_exceed_the_limit() {
        let queue = Arc::new(BoundedQueue::new(64));
        let (mut accepted, mut popped) = (0, 0);
        for round in 0..200 {
            let pushers: Vec<_> = (0..4)
                .map(|_| {
                    let queue = Arc::clone(&queue);
                    std::thread::spawn(move || (0..50).filter(|&i| boxed(&queue, i, 32).is_ok()).count())
                })
                .collect();
            let pops_this_round = round % 40;
            for _ in 0..pops_this_round {
                if pop(&queue).is_some() {
                    popped += 1;
                }
            }
            accepted += pushers
                .into_iter()
                .map(|p| p.join().expect("pusher"))
                .sum::<usize>();
            let mut held = 0;
            while pop(&queue).is_some() {
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

    /// Two producers and two poppers at once across many blocks: every item arrives exactly
    /// once, and each producer's items in its order (per popper).
    #[test]
    fn producers_and_poppers_race_across_blocks() {
        const PER_PRODUCER: u64 = 20_000;
        let queue = Arc::new(BoundedQueue::new(2 * BLOCK_SLOTS as usize + 3));
        let producers: Vec<_> = (0..2u64)
            .map(|producer| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || {
                    for i in 0..PER_PRODUCER {
                        let mut item = Box::new(producer << 32 | i);
                        while let Err(back) = queue.push_within(item, usize::MAX) {
                            item = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let taken = Arc::new(AtomicUsize::new(0));
        let poppers: Vec<_> = (0..2)
            .map(|_| {
                let (queue, taken) = (Arc::clone(&queue), Arc::clone(&taken));
                std::thread::spawn(move || {
                    let mut last = [None::<u64>; 2];
                    let mut seen = Vec::new();
                    while taken.load(Ordering::Relaxed) < 2 * PER_PRODUCER as usize {
                        match queue.pop() {
                            Some(item) => {
                                taken.fetch_add(1, Ordering::Relaxed);
                                let (producer, i) = ((*item >> 32) as usize, *item & 0xffff_ffff);
                                assert!(last[producer].is_none_or(|before| before < i), "order");
                                last[producer] = Some(i);
                                seen.push(*item);
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                    seen
                })
            })
            .collect();
        for producer in producers {
            producer.join().expect("producer");
        }
        let mut all: Vec<u64> = poppers
            .into_iter()
            .flat_map(|popper| popper.join().expect("popper"))
            .collect();
        all.sort_unstable();
        let expected: Vec<u64> = (0..2u64)
            .flat_map(|producer| (0..PER_PRODUCER).map(move |i| producer << 32 | i))
            .collect();
        assert_eq!(all, expected);
        assert_eq!(pop(&queue), None);
    }
}
