//! A handler-form session's task: drains the session's mailbox and runs the handler registered
//! for each message's topic, one invocation at a time ([G4]), catching panics ([G5]).
//!
//! One task per session, not one per delivery: a LiveView's renders never interleave, and memory
//! per session stays bounded by its mailbox. The provider spawns the task ([`SessionTask::run`])
//! on its runtime and owns its handle.
//!
//! # Close grace
//!
//! A handler-form session ends when it is closed (`unsubscribe_all`, the unsubscribe of its last
//! topic, a slow-consumer disconnect). The task then starts no further invocation ([G2]); one
//! whose future is still waiting gets [`Config::close_grace`](crate::Config::close_grace) from
//! the close to finish, then its future is dropped at the `.await` it is parked on, counted
//! (`handlers_cancelled`) and logged, and the task ends ([G7]):
//!
//! - While the task waits for a handler's future it registers its waker on the session
//!   (`Session::wake_on_close`), then reads the session's state. `close` writes the state, then
//!   wakes that waker: either the read sees the close, or the wake finds the waker (the
//!   `AtomicWaker`'s release on register, acquire on wake). So the task learns of the close
//!   without waiting for the handler's next wake-up; and the grace counts from the instant the
//!   close recorded (`Session::closed_for`), not from when the task ran again.
//! - A grace of 0 drops the future when the task sees the close, without polling it again.
//!   Otherwise the future is polled before the grace's timer at each wake-up, so a future
//!   ready when the grace runs out finishes.
//! - Sessions that `stop()` closes keep their handlers: `stop()`'s own grace bounds them, and
//!   it aborts the tasks still running (their futures are counted as cancelled as they drop).
//! - What cannot be interrupted is waited for: the handler's call, which returns its future,
//!   and each poll of that future.
//!
//! [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G5]: crate::docs::contract#g5-isolation
//! [G7]: crate::docs::contract#g7-bounded-memory

use std::any::Any;
use std::future::poll_fn;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::close_reason::CloseReason;
use crate::handler::HandlerResult;
use crate::stats::{Counters, DropReason};
use crate::sync::{lock, Arc, SnapshotCache};

use super::broadcast::block_deadline;
use super::handler_table::HandlerTable;
use super::mailbox::Pop;
use super::session::{InvokingGuard, Session};
use super::{Engine, Notice};

/// Messages a session task handles before yielding to the scheduler.
pub(crate) const BATCH: u32 = 64;

/// The task of a handler-form session that a subscribe has just created, to be spawned by the
/// provider.
pub(crate) struct SessionTask {
    engine: Engine,
    session: Arc<Session>,
}

impl SessionTask {
    pub(super) fn new(engine: Engine, session: Arc<Session>) -> Self {
        Self { engine, session }
    }

    /// The task: runs until the session closes, then retires it.
    pub(crate) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        run_session(self.engine, self.session)
    }
}

/// Deliveries a session's task has counted and not yet added to the engine's counters: added
/// whenever the task is about to wait or yield, and when it ends (on drop, also if aborted),
/// so the counters are exact whenever the session is idle, for one locked add per burst
/// instead of one per delivery.
struct UnreportedDeliveries<'a> {
    counters: &'a Counters,
    count: u64,
}

impl UnreportedDeliveries<'_> {
    fn report(&mut self) {
        self.counters.delivered(std::mem::take(&mut self.count));
    }
}

impl Drop for UnreportedDeliveries<'_> {
    fn drop(&mut self) {
        self.report();
    }
}

/// A handler-form session's task: drains its mailbox, one handler invocation at a time.
async fn run_session(engine: Engine, session: Arc<Session>) {
    let counters = engine.counters();
    let close_grace = engine.config().close_grace;
    // The handler table, read once per delivery: a cached load writes nothing while the table
    // is unchanged. Held only while this task runs handlers back to back: let go before it
    // waits for its mailbox, for a handler's future, or for its turn after a yield, so a
    // handler removed by an unsubscribe is dropped by the unsubscribe or by this task's next
    // step, never kept while the session waits.
    let mut handlers: Option<SnapshotCache<'_, HandlerTable>> = None;
    let mut delivered = UnreportedDeliveries { counters, count: 0 };
    let mut since_yield = 0;
    loop {
        let popped = match session.mailbox.pop() {
            Some(popped) => Some(popped),
            None => {
                handlers = None;
                delivered.report();
                Pop {
                    mailbox: &session.mailbox,
                    is_closed: || !session.is_open(),
                }
                .await
            }
        };
        let Some((broadcast, missed)) = popped else {
            break;
        };
        if missed > 0 {
            engine.notice(Notice::Missed {
                session_id: session.id.to_string(),
                count: missed,
            });
        }
        // G2: this decides whether the invocation starts. A close ordered before it wins; a
        // close ordered after it waits (in whoever retires the session, before it leaves the
        // session map) until the invocation has started: the handler has been called and its
        // future polled once, which is where a handler written `|t, m| async move { .. }`
        // begins its body.
        if !session.begin_invocation() {
            let reason = session.close_reason().unwrap_or(CloseReason::Unsubscribed);
            counters.dropped(reason.drop_reason(), 1);
            break;
        }
        // The invocation (the handler's future) ends with this block: a finished future is not
        // kept across the next wait or yield.
        let outcome = {
            // The handler is called from the cached table, not cloned out of it.
            let mut invocation = {
                let table = handlers.get_or_insert_with(|| SnapshotCache::new(&session.handlers));
                let Some((topic, handler)) = table.load().get(&broadcast.topic) else {
                    session.end_invocation_start();
                    // Unsubscribed from this topic after the broadcast queued it.
                    counters.dropped(DropReason::Unsubscribed, 1);
                    continue;
                };
                delivered.count += 1;
                // The table's key: the session's own copy of the topic (see `handler_table`).
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let _invoking = InvokingGuard::enter(&session);
                    handler.call_with_clones(topic, &broadcast.payload)
                }))
            };
            match invocation {
                // Most handlers finish in their first poll, with the table still cached; one
                // that has to wait lets go of the table first.
                Ok(ref mut future) => {
                    finish_caught(
                        future,
                        || FirstPoll::enter(&session),
                        || {
                            handlers = None;
                            delivered.report();
                        },
                        CloseGrace::new(&session, close_grace),
                        counters,
                    )
                    .await
                }
                Err(panic) => {
                    session.end_invocation_start();
                    Ended::Returned(Err(panic))
                }
            }
        };
        let topic = &*broadcast.topic;
        match outcome {
            Ended::Returned(Ok(Ok(()))) => {}
            Ended::Returned(Ok(Err(error))) => {
                counters.handler_error();
                tracing::warn!(session_id = &*session.id, topic, %error, "handler returned an error");
            }
            Ended::Returned(Err(panic)) => {
                counters.handler_panic();
                tracing::warn!(
                    session_id = &*session.id,
                    topic,
                    panic = panic_message(&*panic),
                    "handler panicked; the session goes on"
                );
            }
            Ended::Cancelled => {
                log_cancelled(&engine, &session.id, topic, close_grace);
            }
        }
        since_yield += 1;
        if since_yield == BATCH {
            since_yield = 0;
            handlers = None;
            delivered.report();
            tokio::task::yield_now().await;
        }
    }
    delivered.report();
    engine.retire(&session);
    if session.close_reason() == Some(CloseReason::Stopped) {
        tracing::trace!(session_id = &*session.id, "session task ended: provider stopped");
    }
}

/// Held around a handler future's first poll, the end of its invocation's start ([G2]): while
/// held, the session is the one invoking on this thread (so the handler may close its own
/// session without waiting for itself); dropped, the start has ended.
///
/// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
struct FirstPoll<'a> {
    session: &'a Session,
    _invoking: InvokingGuard,
}

impl<'a> FirstPoll<'a> {
    fn enter(session: &'a Session) -> Self {
        FirstPoll {
            session,
            _invoking: InvokingGuard::enter(session),
        }
    }
}

impl Drop for FirstPoll<'_> {
    fn drop(&mut self) {
        self.session.end_invocation_start();
    }
}

/// How a handler's invocation ended.
enum Ended {
    /// Its future returned, or the call or a poll panicked (caught).
    Returned(std::thread::Result<HandlerResult>),
    /// Its session ended and the close grace ran out: its future was dropped unfinished.
    Cancelled,
}

/// Polls a handler's future to its end where it lies, catching a panic, or until `grace` runs
/// out. (Moving the boxed future to another of the task's fields reloads what was just stored,
/// in a wider load than the stores, which waits for them: on every delivery.) Polls once
/// first, with `first_poll` around that poll: it is entered before the poll and dropped after
/// it, whatever the poll returns (the session's task ends the invocation's start there). If
/// that poll returns `Pending`, `before_waiting` runs, once, before the next poll (which
/// follows at once, and from then on as the future's waker or the session's close asks); from
/// then on the future is dropped unfinished once `grace` runs out, and a future not finished
/// is counted as cancelled in `counters` when the invocation ends (also when the task is
/// aborted).
async fn finish_caught<G>(
    future: &mut BoxFuture<'static, HandlerResult>,
    first_poll: impl FnOnce() -> G,
    before_waiting: impl FnOnce(),
    mut grace: CloseGrace<'_>,
    counters: &Counters,
) -> Ended {
    // A panic ends the future as its result would.
    let mut poll_caught = |cx: &mut Context<'_>| {
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
        caught.map_or_else(|panic| Poll::Ready(Err(panic)), |polled| polled.map(Ok))
    };
    let mut first_poll = Some(first_poll);
    let first = poll_fn(|cx| {
        let around = first_poll.take().map(|enter| enter());
        let polled = poll_caught(cx);
        drop(around);
        Poll::Ready(polled)
    })
    .await;
    if let Poll::Ready(outcome) = first {
        return Ended::Returned(outcome);
    }
    before_waiting();
    let mut unfinished = CountIfUnfinished {
        counters,
        finished: false,
    };
    let ended = poll_fn(|cx| {
        if grace.expired_before_poll(cx) {
            return Poll::Ready(Ended::Cancelled);
        }
        if let Poll::Ready(outcome) = poll_caught(cx) {
            return Poll::Ready(Ended::Returned(outcome));
        }
        if grace.expired_after_poll(cx) {
            return Poll::Ready(Ended::Cancelled);
        }
        Poll::Pending
    })
    .await;
    unfinished.finished = matches!(ended, Ended::Returned(_));
    ended
}

/// Counts a handler's future as cancelled when dropped, unless it finished: dropped with the
/// task's future, it also counts one that `stop()` aborts.
struct CountIfUnfinished<'a> {
    counters: &'a Counters,
    finished: bool,
}

impl Drop for CountIfUnfinished<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.counters.handler_cancelled();
        }
    }
}

/// A waiting handler's close grace: not started while its session is open (or closed by
/// `stop()`, whose own grace applies), started by the close.
pub(super) struct CloseGrace<'a> {
    session: &'a Session,
    grace: Duration,
    /// The grace's timer, once the close has been seen (boxed: created at most once per
    /// session, at its end). Under `Some`, the close has been seen and the grace is not 0.
    timer: Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>,
}

impl<'a> CloseGrace<'a> {
    fn new(session: &'a Session, grace: Duration) -> Self {
        CloseGrace {
            session,
            grace,
            timer: None,
        }
    }

    /// Before each poll of the future: registers for the close, then checks for it, and
    /// starts the timer once it is seen. `true` if the future is to be dropped unpolled: the
    /// grace is 0, or the runtime has no timers.
    fn expired_before_poll(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer.is_some() {
            return false;
        }
        self.session.wake_on_close(cx.waker());
        match self.session.close_reason() {
            None | Some(CloseReason::Stopped) => false,
            Some(CloseReason::Unsubscribed | CloseReason::SlowConsumer) => {
                if self.grace.is_zero() {
                    return true;
                }
                // The grace counts from the close itself, however late the task saw it.
                let left = self.grace.saturating_sub(self.session.closed_for());
                match block_deadline(left) {
                    Some(timer) => {
                        self.timer = Some(Box::pin(timer));
                        false
                    }
                    None => true,
                }
            }
        }
    }

    /// After a poll that left the future pending: whether the grace has run out.
    fn expired_after_poll(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }
}

/// How often, at most, a cancellation is logged as a warning.
const CANCEL_WARN_EVERY: Duration = Duration::from_secs(1);

/// The engine's throttle of cancellation warnings.
#[derive(Default)]
pub(crate) struct CancelLog {
    /// When the last warning was logged.
    last_warning: Option<Instant>,
    /// Cancellations since then, logged at debug level only.
    since_warning: u64,
}

/// Logs a handler cancelled at its session's end: a warning at most once per
/// [`CANCEL_WARN_EVERY`], carrying how many were cancelled since the last one; each at debug
/// level otherwise. (The count in stats is exact; `CountIfUnfinished` keeps it.)
fn log_cancelled(engine: &Engine, session_id: &str, topic: &str, grace: Duration) {
    let now = Instant::now();
    let since_warning = {
        let mut log = lock(engine.cancel_log());
        let due = log
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= CANCEL_WARN_EVERY);
        if due {
            log.last_warning = Some(now);
            Some(std::mem::take(&mut log.since_warning))
        } else {
            log.since_warning += 1;
            None
        }
    };
    let grace_ms = grace.as_millis() as u64;
    match since_warning {
        Some(also_cancelled) => tracing::warn!(
            session_id,
            topic,
            grace_ms,
            also_cancelled,
            "handler still running past its session's close grace; cancelled"
        ),
        None => tracing::debug!(
            session_id,
            topic,
            grace_ms,
            "handler still running past its session's close grace; cancelled"
        ),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
