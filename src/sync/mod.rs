//! The one switch between `std` and `loom` synchronisation primitives.
//!
//! Library code takes atomics, `Arc`, `Mutex` and the copy-on-write snapshot cell from here and
//! never from `std::sync` directly, so the concurrent core can be model-checked: under
//! `--cfg fanout_loom` these names resolve to loom-visible stand-ins with the same API.

#[cfg(not(fanout_loom))]
mod imp {
    pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
    }

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

    pub(crate) use std::thread::yield_now;
}

#[cfg(fanout_loom)]
mod imp {
    pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
    }

    /// Loom stand-in for `ArcSwap`: a loom mutex around the current `Arc`, so every load and
    /// store is a visible synchronisation point in the model.
    pub(crate) struct AtomicSnapshot<T> {
        cell: Mutex<Arc<T>>,
    }

    pub(crate) type SnapshotGuard<T> = Arc<T>;

    impl<T> AtomicSnapshot<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            Self {
                cell: Mutex::new(value),
            }
        }

        pub(crate) fn load(&self) -> SnapshotGuard<T> {
            self.cell.lock().unwrap().clone()
        }

        pub(crate) fn load_full(&self) -> Arc<T> {
            self.cell.lock().unwrap().clone()
        }

        pub(crate) fn store(&self, value: Arc<T>) {
            *self.cell.lock().unwrap() = value;
        }

        pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
            std::mem::replace(&mut *self.cell.lock().unwrap(), value)
        }
    }

    pub(crate) use loom::thread::yield_now;
}

pub(crate) use imp::*;

/// Locks a writer-side mutex. Writer sections never run user code, so a poisoned lock can only
/// come from a bug already reported by its panic; the data is still consistent at every
/// statement boundary we unlock from, so we keep going rather than cascade the panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
