//! A global allocator that counts live heap bytes, so the tool can report memory per session
//! and per subscription without guessing, and the peak reached while messages are queued.
//!
//! Under the count, jemalloc: a server whose worker threads free what other threads allocated
//! (a message is allocated where it is read and freed where its last session took it) should
//! not run on glibc's malloc, whose arenas then contend on their locks. Built with the feature
//! `system-allocator`, the tool runs on the system's allocator instead, for comparison.

use std::alloc::{GlobalAlloc, Layout};

#[cfg(not(feature = "system-allocator"))]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(feature = "system-allocator")]
static ALLOCATOR: std::alloc::System = std::alloc::System;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts bytes currently allocated through it, then defers to [`ALLOCATOR`].
pub struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
/// The most `LIVE_BYTES` has been since the last [`reset_peak`].
static PEAK_BYTES: AtomicIsize = AtomicIsize::new(0);

/// Adds `delta` to the live count and raises the peak if it was passed.
#[inline]
fn grow(delta: isize) {
    let live = LIVE_BYTES.fetch_add(delta, Ordering::Relaxed) + delta;
    // A load first: once the peak is reached, most allocations stay below it.
    if live > PEAK_BYTES.load(Ordering::Relaxed) {
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `ALLOCATOR` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `ALLOCATOR`'s; the counter is bookkeeping only.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { ALLOCATOR.alloc(layout) };
        if !ptr.is_null() {
            grow(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from `alloc` with this `layout`.
        unsafe { ALLOCATOR.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { ALLOCATOR.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grow(layout.size() as isize);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; `ptr` came from this allocator with `layout`.
        let new = unsafe { ALLOCATOR.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            grow(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Heap bytes live right now.
pub fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed) as i64
}

/// The most heap bytes live at once since the last [`reset_peak`].
pub fn peak_bytes() -> i64 {
    PEAK_BYTES.load(Ordering::Relaxed) as i64
}

/// Starts a new peak from what is live now.
pub fn reset_peak() {
    PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::{live_bytes, peak_bytes, reset_peak};

    #[test]
    fn peak_keeps_the_most_held_at_once() {
        reset_peak();
        let before = live_bytes();
        let block = vec![1u8; 1 << 20];
        let held = live_bytes();
        drop(block);
        assert!(held - before >= 1 << 20, "the allocator counts live bytes");
        assert!(peak_bytes() >= held, "the peak covers the megabyte held");
        assert!(live_bytes() < peak_bytes(), "and outlives its release");
        reset_peak();
        assert!(
            peak_bytes() - live_bytes() < 1 << 20,
            "a reset starts from what is live"
        );
    }
}
