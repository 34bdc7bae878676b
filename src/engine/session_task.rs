//! A handler-form session's task: drains the session's mailbox and runs the handler registered
//! for each message's topic, one invocation at a time ([G4]), catching panics ([G5]).
//!
//! One task per session, not one per delivery: a LiveView's renders never interleave, and memory
//! per session stays bounded by its mailbox. The provider spawns the task ([`SessionTask::run`])
//! on its runtime and owns its handle.
//!
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G5]: crate::docs::contract#g5-isolation

use std::any::Any;
use std::future::poll_fn;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

use crate::close_reason::CloseReason;
use crate::handler::HandlerResult;
use crate::stats::{Counters, DropReason};
use crate::sync::{Arc, SnapshotCache};

use super::handler_table::HandlerTable;
use super::mailbox::Pop;
use super::session::{InvokingGuard, Session};
use super::{Engine, Notice};

/// Messages a session task handles before yielding to the scheduler.
const BATCH: u32 = 64;

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
                    )
                    .await
                }
                Err(panic) => {
                    session.end_invocation_start();
                    Err(panic)
                }
            }
        };
        let topic = &*broadcast.topic;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                counters.handler_error();
                tracing::warn!(session_id = &*session.id, topic, %error, "handler returned an error");
            }
            Err(panic) => {
                counters.handler_panic();
                tracing::warn!(
                    session_id = &*session.id,
                    topic,
                    panic = panic_message(&*panic),
                    "handler panicked; the session goes on"
                );
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

/// Polls a handler's future to its end where it lies, catching a panic. (Moving the boxed future
/// to another of the task's fields reloads what was just stored, in a wider load than the
/// stores, which waits for them: on every delivery.) Polls once first, with `first_poll` around
/// that poll: it is entered before the poll and dropped after it, whatever the poll returns
/// (the session's task ends the invocation's start there). If that poll returns `Pending`,
/// `before_waiting` runs, once, before the next poll (which follows at once, and from then on
/// as the future's waker asks).
async fn finish_caught<G>(
    future: &mut BoxFuture<'static, HandlerResult>,
    first_poll: impl FnOnce() -> G,
    before_waiting: impl FnOnce(),
) -> std::thread::Result<HandlerResult> {
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
        return outcome;
    }
    before_waiting();
    poll_fn(poll_caught).await
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
