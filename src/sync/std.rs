//! The real primitives: `std`'s atomics and locks, and the lock-free crates behind the names
//! the library uses, re-exported or wrapped in forwarding methods.

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
            // until then every read probes both tables (`cargo bench --bench fanout --
            // registry_lookup` shows the cost). Reads are the broadcast path; writes can pay.
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
