//! The loom half: loom's atomics, `Arc`, `Mutex`, thread-locals and scheduling hints, and
//! loom-visible stand-ins for the lock-free types the engine uses, with the same internal API.
//!
//! Compiled only under `--cfg fanout_loom`. Each stand-in operation takes a loom `Mutex` once, so
//! it is one atomic step in the model, with the synchronisation the real type promises (a push
//! happens-before the pop that takes its item; a store happens-before the loads that see it).

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::task::Waker;

use loom::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

pub(crate) mod atomic {
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    };
}

pub(crate) use loom::hint::spin_loop;
pub(crate) use loom::thread::yield_now;
pub(crate) use loom::thread_local;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stand-in for `arc_swap::ArcSwap`: a loom mutex around the current `Arc`, and a version
/// that every replacement bumps (what [`SnapshotCache`] compares, as the real cache compares
/// the pointer).
pub(crate) struct AtomicSnapshot<T> {
    cell: Mutex<Arc<T>>,
    version: AtomicUsize,
}

/// The stand-in's read lease: an owned `Arc`.
pub(crate) type SnapshotGuard<T> = Arc<T>;

impl<T> AtomicSnapshot<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self {
            cell: Mutex::new(value),
            version: AtomicUsize::new(0),
        }
    }

    pub(crate) fn load(&self) -> SnapshotGuard<T> {
        locked(&self.cell).clone()
    }

    pub(crate) fn load_full(&self) -> Arc<T> {
        locked(&self.cell).clone()
    }

    /// The current value and its version, read together.
    fn load_versioned(&self) -> (Arc<T>, usize) {
        let cell = locked(&self.cell);
        (cell.clone(), self.version.load(Ordering::Relaxed))
    }

    pub(crate) fn store(&self, value: Arc<T>) {
        drop(self.swap(value));
    }

    pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
        let mut cell = locked(&self.cell);
        self.version.fetch_add(1, Ordering::Relaxed);
        std::mem::replace(&mut *cell, value)
    }
}

/// Stand-in for the cached reader of a snapshot. Like the real cache, it checks for a change
/// with a `Relaxed` load (of the version, where the real one loads the pointer) and takes the
/// value under synchronisation only when it changed, so loom sees a reader that can miss a
/// replacement nothing orders it after.
pub(crate) struct SnapshotCache<'a, T> {
    snapshot: &'a AtomicSnapshot<T>,
    cached: Option<(Arc<T>, usize)>,
}

impl<'a, T> SnapshotCache<'a, T> {
    pub(crate) fn new(snapshot: &'a AtomicSnapshot<T>) -> Self {
        Self {
            snapshot,
            cached: None,
        }
    }

    pub(crate) fn load(&mut self) -> &Arc<T> {
        let version = self.snapshot.version.load(Ordering::Relaxed);
        if self.cached.as_ref().is_none_or(|(_, seen)| *seen != version) {
            self.cached = Some(self.snapshot.load_versioned());
        }
        &self.cached.as_ref().expect("filled above").0
    }
}

/// Stand-in for `crossbeam_queue::SegQueue`.
///
/// Not just a mutex around a deque: a mutex would order a failed `pop` (the consumer finding its
/// mailbox empty) before a later `push`, an edge the real lock-free queue does not create, and
/// that would hide a missing fence in the mailbox's wake-up protocol. So, as in the real queue,
/// `pop` on empty and `is_empty` only load a counter (`Acquire`, pairing with the `Release`
/// store of the operation that last changed it); the operations that change the queue take the
/// lock and store the counter.
pub(crate) struct SegQueue<T> {
    items: Mutex<VecDeque<T>>,
    /// Items in `items`; written under the lock, read without it.
    len: AtomicUsize,
}

impl<T> SegQueue<T> {
    pub(crate) fn new() -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn push(&self, value: T) {
        let mut items = locked(&self.items);
        items.push_back(value);
        self.len.store(items.len(), Ordering::Release);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut items = locked(&self.items);
        let item = items.pop_front()?;
        self.len.store(items.len(), Ordering::Release);
        Some(item)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }
}

/// `atomic_waker::AtomicWaker`'s API over `loom::future::AtomicWaker`.
pub(crate) struct AtomicWaker {
    inner: loom::future::AtomicWaker,
}

impl AtomicWaker {
    pub(crate) fn new() -> Self {
        Self {
            inner: loom::future::AtomicWaker::new(),
        }
    }

    pub(crate) fn register(&self, waker: &Waker) {
        self.inner.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.inner.wake();
    }
}

/// Stand-in for `papaya::HashMap` behind the engine's `ConcurrentMap` API.
pub(crate) struct ConcurrentMap<K, V> {
    map: Mutex<HashMap<K, V>>,
}

impl<K: Hash + Eq, V: Clone> ConcurrentMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value is cloned out and the lock released before `f` runs, so a reader holds the
    /// map no longer than a lock-free read would.
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let value = self.get(key)?;
        Some(f(&value))
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        locked(&self.map).get(key).cloned()
    }

    pub(crate) fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
        locked(&self.map).entry(key).or_insert_with(make).clone()
    }

    pub(crate) fn try_insert(&self, key: K, value: V) -> Result<(), V> {
        let mut map = locked(&self.map);
        if let Some(current) = map.get(&key) {
            return Err(current.clone());
        }
        map.insert(key, value);
        Ok(())
    }

    pub(crate) fn remove_if<Q>(&self, key: &Q, mut should_remove: impl FnMut(&K, &V) -> bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = locked(&self.map);
        let remove = map.get_key_value(key).is_some_and(|(k, v)| should_remove(k, v));
        if remove {
            let removed = map.remove(key);
            drop(map);
            drop(removed);
        }
    }

    pub(crate) fn values(&self) -> Vec<V> {
        locked(&self.map).values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        locked(&self.map).len()
    }
}
