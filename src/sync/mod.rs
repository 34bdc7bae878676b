//! The one switch between real and `loom` synchronisation primitives.
//!
//! Library code takes atomics, `Arc`, `Mutex`, the copy-on-write snapshot cell, the lock-free
//! queues, the concurrent map, wakers and thread-locals from here and never from `std::sync`,
//! `crossbeam`, `papaya`, `arc_swap` or `atomic_waker` directly, so the concurrent core can be
//! model-checked: under `--cfg fanout_loom` these names resolve to loom-visible stand-ins with the
//! same internal API (see `loom_stand_ins.rs`). In the normal build they are the real types,
//! re-exported or wrapped in `#[inline]` forwarding methods, so the switch costs nothing.
//!
//! The stand-ins are coarser than the real structures (a loom `Mutex` around a `VecDeque` or a
//! `HashMap`): each operation is one atomic step, which is the linearisable behaviour the real
//! lock-free types promise. What loom checks is the engine's use of them: the orderings, fences
//! and wake-ups of the code built on top. The real `ArcSwap`, `SegQueue` and `papaya` map stay
//! covered by the stress tests.
//!
//! [`WaitList`] (the `block` policy's room signal), [`BoundedQueue`] (a mailbox's queue),
//! [`StartGate`] (a handler invocation's start against a close) and [`Shared`] / [`Prepaid`] (a
//! broadcast's message, its references paid for in bulk) are built
//! from these primitives in both builds, so the code loom checks is the code that runs.

mod bounded_queue;
mod shared;
mod start_gate;
mod wait_list;

#[cfg(not(fanout_loom))]
pub(crate) use bounded_queue::{companions_fit, BoundedQueue, Claimed};
/// Under loom the queue is public (through `fanout::loom_internals`) so that
/// `loom-tests/tests/queue.rs` can model it on its own.
#[cfg(fanout_loom)]
pub use bounded_queue::{BoundedQueue, Claimed, PointerItem};
pub(crate) use shared::{Prepaid, Shared};
/// Public under loom, as the queue, for `loom-tests/tests/start_gate.rs`.
#[cfg(fanout_loom)]
pub use start_gate::StartGate;
#[cfg(not(fanout_loom))]
pub(crate) use start_gate::StartGate;
pub(crate) use wait_list::WaitList;

#[cfg(fanout_loom)]
mod loom_stand_ins;

#[cfg(not(fanout_loom))]
mod imp {
    use std::borrow::Borrow;
    use std::hash::Hash;

    pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{
            fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
        };
    }

    /// One task's waker, registered and woken without locks (`register(&Waker)`, `wake`).
    pub(crate) use atomic_waker::AtomicWaker;
    /// An unbounded lock-free MPMC queue (`push`, `pop`, `is_empty`).
    pub(crate) use crossbeam_queue::SegQueue;

    pub(crate) use std::hint::spin_loop;
    pub(crate) use std::thread::yield_now;
    pub(crate) use std::thread_local;

    /// A copy-on-write cell: readers `load` an immutable `Arc<T>` without locking, writers
    /// `store` a replacement. Backed by `arc_swap::ArcSwap`.
    pub(crate) struct AtomicSnapshot<T> {
        cell: arc_swap::ArcSwap<T>,
    }

    /// A short-lived read lease on a snapshot. Not `Send`: drop it before any `.await`.
    pub(crate) type SnapshotGuard<T> = arc_swap::Guard<Arc<T>>;

    impl<T> AtomicSnapshot<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            Self {
                cell: arc_swap::ArcSwap::new(value),
            }
        }

        #[inline]
        pub(crate) fn load(&self) -> SnapshotGuard<T> {
            self.cell.load()
        }

        pub(crate) fn load_full(&self) -> Arc<T> {
            self.cell.load_full()
        }

        pub(crate) fn store(&self, value: Arc<T>) {
            self.cell.store(value)
        }

        pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
            self.cell.swap(value)
        }
    }

    /// A reader's cached copy of an [`AtomicSnapshot`]'s value: `load` costs one atomic load
    /// while the value is unchanged (no write, unlike [`AtomicSnapshot::load`]'s debt slot),
    /// and takes the new value once it is replaced. It keeps the value it last returned alive
    /// until the next `load`. Backed by `arc_swap::cache::Cache`.
    pub(crate) struct SnapshotCache<'a, T> {
        cache: arc_swap::cache::Cache<&'a arc_swap::ArcSwap<T>, Arc<T>>,
    }

    impl<'a, T> SnapshotCache<'a, T> {
        pub(crate) fn new(snapshot: &'a AtomicSnapshot<T>) -> Self {
            Self {
                cache: arc_swap::cache::Cache::new(&snapshot.cell),
            }
        }

        /// The current value.
        #[inline]
        pub(crate) fn load(&mut self) -> &Arc<T> {
            self.cache.load()
        }
    }

    /// A concurrent hash map whose reads never block: `papaya::HashMap`, behind the few
    /// operations the engine uses. Values are cheap handles (`Arc`s) and are cloned out, except
    /// in [`with`](Self::with), which lends the value for the duration of a call without
    /// touching its reference count (the broadcast path).
    pub(crate) struct ConcurrentMap<K, V> {
        map: papaya::HashMap<K, V>,
    }

    impl<K: Hash + Eq, V: Clone> ConcurrentMap<K, V> {
        pub(crate) fn new() -> Self {
            Self {
                // Blocking resizes: an incremental resize is finished only by later writes, and
                // until then every read probes both tables (measured: a lookup among 1,000 live
                // topics took 310 ns instead of 62 ns, `cargo bench --bench fanout --
                // registry_lookup/fanout`). Reads are the broadcast path; writes can pay.
                map: papaya::HashMap::builder()
                    .resize_mode(papaya::ResizeMode::Blocking)
                    .build(),
            }
        }

        /// Calls `f` on the value of `key`, if any, without locking.
        #[inline]
        pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.map.pin().get(key).map(f)
        }

        #[inline]
        pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.map.pin().get(key).cloned()
        }

        /// The value of `key`, inserting `make()` first if there is none.
        pub(crate) fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
            self.map.pin().get_or_insert_with(key, make).clone()
        }

        /// Inserts `value` unless `key` is present; on conflict returns the present value.
        pub(crate) fn try_insert(&self, key: K, value: V) -> Result<(), V> {
            match self.map.pin().try_insert(key, value) {
                Ok(_) => Ok(()),
                Err(occupied) => Err(occupied.current.clone()),
            }
        }

        /// Removes `key` if `should_remove` says so for its current value.
        pub(crate) fn remove_if<Q>(&self, key: &Q, should_remove: impl FnMut(&K, &V) -> bool)
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            let _ = self.map.pin().remove_if(key, should_remove);
        }

        pub(crate) fn values(&self) -> Vec<V> {
            self.map.pin().values().cloned().collect()
        }

        pub(crate) fn len(&self) -> usize {
            self.map.len()
        }
    }
}

#[cfg(fanout_loom)]
mod imp {
    pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{
            fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
        };
    }

    pub(crate) use super::loom_stand_ins::{
        AtomicSnapshot, AtomicWaker, ConcurrentMap, SegQueue, SnapshotCache, SnapshotGuard,
    };

    pub(crate) use loom::hint::spin_loop;
    pub(crate) use loom::thread::yield_now;
    pub(crate) use loom::thread_local;
}

pub(crate) use imp::*;

/// Asks the CPU to start loading the cache line at `at` for writing. A broadcast does this for
/// a whole chunk of mailboxes before it claims a place in each: each claim is a locked
/// instruction, which lets no later load start before it completes, so without the prefetch
/// the chunk's misses are taken one after another. `prefetchw` fetches the line exclusive.
/// A/B (`docs/design-topic-log.md`, session 8): `publish_cost/fanout/10000` 0.58x the time,
/// `end_to_end/fanout/10000` 0.73x; prefetching the session's state line for reading instead
/// gave no gain at all. A hint only: it reads nothing and changes no state, so it is a no-op
/// under loom and off x86-64, and a read prefetch on a CPU without `prefetchw`.
#[inline(always)]
pub(crate) fn prefetch_for_write<T>(at: &T) {
    #[cfg(all(target_arch = "x86_64", not(fanout_loom)))]
    {
        let at = std::ptr::from_ref(at);
        if cpu_has_prefetchw() {
            // SAFETY: the CPU has the instruction; a prefetch never faults and changes no
            // state the program can observe.
            unsafe {
                std::arch::asm!("prefetchw [{0}]", in(reg) at, options(nostack, preserves_flags, readonly));
            }
        } else {
            // SAFETY: as above; SSE is part of x86-64.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast::<i8>()) }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(fanout_loom))))]
    let _ = at;
}

/// Whether the CPU has `prefetchw` (CPUID leaf `0x8000_0001`, ECX bit 8: AMD's
/// `3DNowPrefetch`, Intel's `PRFCHW`); `std`'s feature detection does not name it. Asked once.
#[cfg(all(target_arch = "x86_64", not(fanout_loom)))]
fn cpu_has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        #[allow(unused_unsafe)]
        // SAFETY: every x86-64 CPU has `cpuid`; leaf 0x8000_0000 gives the highest extended
        // leaf, and 0x8000_0001 is read only if it exists.
        unsafe {
            __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
        }
    })
}

/// Waits for another thread to finish a step of a few instructions: spins briefly, then
/// yields the thread, so a waiter on a thread that was preempted mid-step gives its core back
/// instead of spinning out its time slice. Under loom both are scheduling points.
pub(crate) struct SpinThenYield {
    spins: u32,
}

impl SpinThenYield {
    const SPINS: u32 = 64;

    pub(crate) fn new() -> Self {
        Self { spins: 0 }
    }

    pub(crate) fn wait(&mut self) {
        if self.spins < Self::SPINS {
            spin_loop();
            self.spins += 1;
        } else {
            yield_now();
        }
    }
}

/// Locks a writer-side mutex. Writer sections never run user code, so a poisoned lock can only
/// come from a bug already reported by its panic; the data is still consistent at every
/// statement boundary we unlock from, so we keep going rather than cascade the panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
