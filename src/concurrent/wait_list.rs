//! A list of tasks waiting for a signal; [`WaitList::notify_all`] wakes every one of them.
//!
//! It replaces `tokio::sync::Notify` for the `block` policy's room signal: built from this
//! module's switch, the same code runs in the normal build and under loom.
//!
//! # Invariants
//!
//! - `generation` is bumped by every `notify_all`, under the lock. A [`RoomWait`] records the
//!   generation when it is created ([`WaitList::listen`]), also under the lock, and is ready once
//!   the generation differs. So a notification that follows `listen` in the lock's order is never
//!   missed, whether or not the listener was polled before it; one that precedes it is not seen,
//!   and everything the notifier did before notifying happens-before what the listener does
//!   after `listen` (the lock's release/acquire), which is what lets a waiter re-check its
//!   condition after `listen` instead of sleeping on a signal it already missed.
//! - `wakers` holds the wakers of pending listeners, each under its listener's key. A listener
//!   removes its entry when it is ready or dropped, so a cancelled wait leaves nothing behind.
//!   Wakers are woken after the lock is released.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{lock, Mutex};

pub(crate) struct WaitList {
    state: Mutex<State>,
}

struct State {
    /// Notifications so far; see the invariants.
    generation: u64,
    /// Key of the next listener that registers a waker.
    next_key: u64,
    /// Pending listeners' wakers, by key.
    wakers: Vec<(u64, Waker)>,
}

/// Ready once [`WaitList::notify_all`] has been called after the listener was created.
pub(crate) struct RoomWait<'a> {
    list: &'a WaitList,
    generation: u64,
    /// Set once this listener has a waker in the list.
    key: Option<u64>,
}

impl WaitList {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                generation: 0,
                next_key: 0,
                wakers: Vec::new(),
            }),
        }
    }

    /// Starts listening: the returned future completes at the next `notify_all`.
    pub(crate) fn listen(&self) -> RoomWait<'_> {
        let generation = lock(&self.state).generation;
        RoomWait {
            list: self,
            generation,
            key: None,
        }
    }

    /// Wakes every listener created before this call.
    pub(crate) fn notify_all(&self) {
        let wakers = {
            let mut state = lock(&self.state);
            state.generation = state.generation.wrapping_add(1);
            std::mem::take(&mut state.wakers)
        };
        for (_, waker) in wakers {
            waker.wake();
        }
    }
}

impl Future for RoomWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = lock(&this.list.state);
        if state.generation != this.generation {
            if let Some(key) = this.key.take() {
                state.wakers.retain(|(k, _)| *k != key);
            }
            return Poll::Ready(());
        }
        match this.key {
            Some(key) => {
                if let Some((_, waker)) = state.wakers.iter_mut().find(|(k, _)| *k == key) {
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                }
            }
            None => {
                let key = state.next_key;
                state.next_key = key.wrapping_add(1);
                state.wakers.push((key, cx.waker().clone()));
                this.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            lock(&self.list.state).wakers.retain(|(k, _)| *k != key);
        }
    }
}
