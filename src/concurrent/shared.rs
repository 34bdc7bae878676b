//! A reference-counted pointer whose references can be paid for in bulk: a broadcast's message.
//!
//! A broadcast hands one reference to its message to every recipient's mailbox. With an `Arc`
//! that is one locked increment per recipient on a count that the recipients, on other cores,
//! decrement as they finish, so the publisher waits for that cache line once per recipient.
//! Here the publisher pays for every reference it expects to hand
//! out in one increment ([`Prepaid::new`]), hands them out without touching the count
//! ([`Prepaid::issue`]), and gives the unused ones back in one decrement when it is done.
//!
//! Built from `crate::sync`'s primitives, so loom checks it in every engine model: under loom each
//! allocation also holds a loom `Arc`, so a message never freed fails the model as a leak, and
//! a loom cell that every holder reads just before giving its reference back and the freer
//! writes just before freeing, so a free not ordered after every holder's last use (a missing
//! `Release` or `Acquire`) fails the model as a data race.
//!
//! # Invariants
//!
//! - Whenever no holder is between its increment or decrement and the end of that call,
//!   `refs` equals the number of live [`Shared`] handles plus the references a live
//!   [`Prepaid`] holds (`1 + unissued`). An increment comes before the new handle exists and a
//!   decrement after the handle stopped being used, so the count never reaches zero while a
//!   holder can still use the value; it reaches zero exactly once, and the holder that takes it
//!   there frees the allocation.
//! - Increments are `Relaxed` (a holder already has a reference, as with `Arc::clone`: the
//!   allocation cannot be freed under it). Decrements are `Release`, and the one that reaches
//!   zero issues an `Acquire` fence before freeing, so every holder's reads of the value happen
//!   before the free.
//! - Issuing a prepaid reference creates a handle without any atomic operation; it moves to its
//!   recipient through the mailbox's queue, whose hand-over orders it.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

use super::bounded_queue::PointerItem;
use crate::sync::atomic::{fence, AtomicUsize, Ordering};

/// Above this many references the count could be driven to overflow by leaked handles (as
/// `Arc` guards against); a process holding that many has a bug, so it aborts.
const MAX_REFS: usize = isize::MAX as usize;

struct Inner<T> {
    refs: AtomicUsize,
    value: T,
    /// Under loom, a loom `Arc` that lives exactly as long as the allocation: loom reports it
    /// leaked if the allocation is never freed.
    #[cfg(fanout_loom)]
    _leak_sentinel: crate::sync::Arc<()>,
    /// Under loom, read by every holder before it gives its reference back and written by the
    /// freer: loom reports a data race if the free is not ordered after every holder's use.
    #[cfg(fanout_loom)]
    last_use: loom::cell::UnsafeCell<()>,
}

/// A counted reference to a shared, immutable value (like `Arc<T>`, without weak references).
pub(crate) struct Shared<T> {
    inner: NonNull<Inner<T>>,
    _owns: PhantomData<Inner<T>>,
}

// SAFETY: a `Shared<T>` gives shared access to `T` from any thread and may drop it on any
// thread, exactly as `Arc<T>` does, so it needs the same bounds.
unsafe impl<T: Send + Sync> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// A handle holding one of `inner`'s references, which the caller has already counted and
    /// hands over.
    fn holding(inner: NonNull<Inner<T>>) -> Self {
        Self {
            inner,
            _owns: PhantomData,
        }
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: this handle holds a reference, so the allocation is live (invariants above).
        unsafe { self.inner.as_ref() }
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T> Clone for Shared<T> {
    #[inline]
    fn clone(&self) -> Self {
        add_refs(&self.inner().refs, 1);
        Self::holding(self.inner)
    }
}

impl<T> Drop for Shared<T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this handle holds one reference and gives it back here, once.
        unsafe { release(self.inner, 1) }
    }
}

// SAFETY: the raw pointer is the handle's allocation, and the reference it held stays counted
// while only the pointer exists; `from_raw` rebuilds the handle that holds it.
unsafe impl<T: Send + Sync> PointerItem for Shared<T> {
    fn into_raw(self) -> NonNull<()> {
        let inner = self.inner;
        std::mem::forget(self);
        inner.cast()
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        Self::holding(raw.cast())
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The publisher's side: a new shared value with references paid for in advance.
pub(crate) struct Prepaid<T> {
    inner: NonNull<Inner<T>>,
    /// References paid for and not yet issued. The `Prepaid` itself holds one more.
    unissued: usize,
    _owns: PhantomData<Inner<T>>,
}

impl<T> Prepaid<T> {
    /// Allocates `value` with `expected` references paid for in one step (plus the one this
    /// `Prepaid` holds). Paying for more than are issued costs nothing but the final decrement.
    pub(crate) fn new(value: T, expected: usize) -> Self {
        let expected = expected.min(MAX_REFS - 1);
        let inner = Box::new(Inner {
            refs: AtomicUsize::new(1 + expected),
            value,
            #[cfg(fanout_loom)]
            _leak_sentinel: crate::sync::Arc::new(()),
            #[cfg(fanout_loom)]
            last_use: loom::cell::UnsafeCell::new(()),
        });
        Self {
            inner: NonNull::from(Box::leak(inner)),
            unissued: expected,
            _owns: PhantomData,
        }
    }

    /// A handle: one of the paid-for references while any are left (no atomic operation),
    /// then a counted one.
    #[inline]
    pub(crate) fn issue(&mut self) -> Shared<T> {
        if self.unissued > 0 {
            self.unissued -= 1;
        } else {
            // SAFETY: this `Prepaid` holds a reference, so the allocation is live.
            add_refs(unsafe { &self.inner.as_ref().refs }, 1);
        }
        Shared::holding(self.inner)
    }
}

impl<T> Drop for Prepaid<T> {
    fn drop(&mut self) {
        // SAFETY: this `Prepaid` holds its own reference and the unissued ones, and gives them
        // all back here, once.
        unsafe { release(self.inner, 1 + self.unissued) }
    }
}

// SAFETY: as for `Shared`: it hands out `Shared<T>` handles and may drop the value.
unsafe impl<T: Send + Sync> Send for Prepaid<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Prepaid<T> {}

#[inline]
fn add_refs(refs: &AtomicUsize, n: usize) {
    if refs.fetch_add(n, Ordering::Relaxed) > MAX_REFS - n {
        std::process::abort();
    }
}

/// Gives back `n` references; frees the allocation if they were the last.
///
/// # Safety
///
/// The caller holds `n` references to `inner` and gives them up: it must not use `inner` after.
#[inline]
unsafe fn release<T>(inner: NonNull<Inner<T>>, n: usize) {
    // SAFETY: the caller's references keep the allocation live until this decrement.
    let live = unsafe { inner.as_ref() };
    #[cfg(fanout_loom)]
    live.last_use.with(|_| ());
    if live.refs.fetch_sub(n, Ordering::Release) != n {
        return;
    }
    fence(Ordering::Acquire);
    #[cfg(fanout_loom)]
    live.last_use.with_mut(|_| ());
    // SAFETY: the count reached zero, so no handle or `Prepaid` is left (invariants); the
    // allocation came from `Box::leak` in `Prepaid::new`.
    drop(unsafe { Box::from_raw(inner.as_ptr()) });
}

#[cfg(all(test, not(fanout_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::sync::Arc;

    /// Counts its drops.
    struct Counted(Arc<StdAtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counted() -> (Counted, Arc<StdAtomicUsize>) {
        let drops = Arc::new(StdAtomicUsize::new(0));
        (Counted(Arc::clone(&drops)), drops)
    }

    #[test]
    fn freed_once_whether_references_are_issued_unused_or_counted() {
        for (expected, issued) in [(0, 1), (0, 3), (3, 1), (3, 3), (3, 5), (5, 3)] {
            let (value, drops) = counted();
            let mut prepaid = Prepaid::new(value, expected);
            let handles: Vec<_> = (0..issued).map(|_| prepaid.issue()).collect();
            let clones: Vec<_> = handles.iter().map(Shared::clone).collect();
            let freed = || drops.load(Ordering::Relaxed);
            drop(prepaid);
            assert_eq!(freed(), 0, "{expected} paid, {issued} issued");
            drop(handles);
            assert_eq!(freed(), 0, "{expected} paid, {issued} issued");
            drop(clones);
            assert_eq!(freed(), 1, "{expected} paid, {issued} issued");
        }
        for expected in [0, 3] {
            let (value, drops) = counted();
            drop(Prepaid::new(value, expected));
            assert_eq!(drops.load(Ordering::Relaxed), 1, "{expected} paid, none issued");
        }
    }

    #[test]
    fn handles_dropped_on_other_threads_free_the_value_once() {
        for _ in 0..200 {
            let (value, drops) = counted();
            let mut prepaid = Prepaid::new(value, 64);
            let handles: Vec<_> = (0..80).map(|_| prepaid.issue()).collect();
            let mut batches = handles.into_iter();
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let batch: Vec<_> = batches.by_ref().take(20).collect();
                    std::thread::spawn(move || {
                        let extra: Vec<_> = batch.iter().map(Shared::clone).collect();
                        drop(batch);
                        drop(extra);
                    })
                })
                .collect();
            drop(prepaid);
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(drops.load(Ordering::Relaxed), 1);
        }
    }
}
