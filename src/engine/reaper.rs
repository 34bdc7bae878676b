//! Retiring sessions that broadcasters disconnected as slow consumers, off the broadcast path.

use std::future::poll_fn;
#[cfg(not(fanout_loom))]
use std::future::Future;
use std::task::Poll;

use smallvec::SmallVec;

use crate::sync::{lock, Arc};

#[cfg(not(fanout_loom))]
use super::broadcast::block_deadline;
use super::session::Session;
use super::Engine;

impl Engine {
    /// Retires sessions that broadcasters disconnected. Cheap when there are none.
    ///
    /// Never waits: a session whose task is making a handler call it began before the
    /// disconnect ([G2]) is left to the reaper task, which waits for it as a task. Waiting here
    /// would make an operation on one session wait on another's handler (which may want a
    /// lock the caller holds).
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    pub(crate) fn reap(&self) {
        let mut busy: SmallVec<[Arc<Session>; 4]> = SmallVec::new();
        while let Some(session) = self.inner.retiring.pop() {
            if self.is_stopped() || !session.invocation_start_pending() {
                self.retire_locked(&session, lock(&session.writer));
            } else {
                busy.push(session);
            }
        }
        if !busy.is_empty() {
            for session in busy {
                self.inner.retiring.push(session);
            }
            self.inner.reaper.wake();
        }
    }

    /// Runs until the engine stops, retiring disconnected sessions as broadcasters report them.
    pub(crate) async fn run_reaper(&self) {
        // Whether the runtime has timers to pause on: found out the first time a wait needs one.
        let mut has_timers: Option<bool> = None;
        loop {
            poll_fn(|cx| {
                self.inner.reaper.register(cx.waker());
                if !self.inner.retiring.is_empty() || self.is_stopped() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            while let Some(session) = self.inner.retiring.pop() {
                // G2, as in `reap`, but this task can wait.
                self.wait_for_invocation_start_as_task(&session, &mut has_timers)
                    .await;
                self.retire_locked(&session, lock(&session.writer));
            }
            if self.is_stopped() {
                return;
            }
        }
    }

    /// Retires a closed `session` once a handler start begun before the close is over ([G2]),
    /// waiting as a task (see [`wait_for_invocation_start_as_task`]), so that the wait, which
    /// spans a handler's call and its future's first poll, never blocks a worker thread.
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    /// [`wait_for_invocation_start_as_task`]: Self::wait_for_invocation_start_as_task
    pub(crate) async fn retire_after_start(&self, session: &Arc<Session>) {
        self.wait_for_invocation_start_as_task(session, &mut None).await;
        self.retire_locked(session, lock(&session.writer));
    }

    /// The reaper's wait for a disconnected session's handler call begun before the
    /// disconnect, or for the engine to stop: it yields, and once a handler has stayed in its
    /// synchronous part for [`REAPER_YIELDS`] asks, pauses between asks (where the runtime has
    /// timers; `has_timers` is found out once), so it does not spin a worker meanwhile.
    async fn wait_for_invocation_start_as_task(&self, session: &Session, has_timers: &mut Option<bool>) {
        let mut asked = 0u32;
        while !self.is_stopped() && session.invocation_start_pending() {
            asked = asked.saturating_add(1);
            let pause = if asked > REAPER_YIELDS && *has_timers != Some(false) {
                let pause = reaper_pause();
                *has_timers = Some(pause.is_some());
                pause
            } else {
                None
            };
            match pause {
                Some(pause) => pause.await,
                None => {
                    // A loom model's thread yields to the others here, or it would spin.
                    #[cfg(fanout_loom)]
                    crate::sync::yield_now();
                    tokio::task::yield_now().await
                }
            }
        }
    }
}

/// The reaper waits for a disconnected session's handler call by yielding this many times,
/// then by pausing [`REAPER_PAUSE`] between asks.
const REAPER_YIELDS: u32 = 64;
#[cfg_attr(fanout_loom, allow(dead_code))]
const REAPER_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// The reaper's pause between asks, `None` where the runtime has no timers (found out by
/// `block_deadline`'s caught panic, so the reaper asks only once).
#[cfg(not(fanout_loom))]
fn reaper_pause() -> Option<impl Future<Output = ()>> {
    block_deadline(REAPER_PAUSE)
}

/// Loom models have no timers: the reaper only yields.
#[cfg(fanout_loom)]
fn reaper_pause() -> Option<std::future::Ready<()>> {
    None
}
