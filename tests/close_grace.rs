//! The close grace (G7): a handler still running when its session ends (`unsubscribe_all`, the
//! last `unsubscribe_topic`, a slow-consumer disconnect) gets `close_grace` from the close to
//! finish; then its future is dropped, counted in `handlers_cancelled`, and the session's task
//! ends. A handler's synchronous part cannot be cancelled: it is waited for.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout::{Bytes, Config, Handler, InMemoryPubSub, OverflowPolicy, PubSubProvider};
use tokio::time::Instant;

mod support;

use support::{settled, started, wait_until};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// What one handler did, seen from the test.
#[derive(Clone, Default)]
struct Probe {
    /// Its future's body has begun.
    entered: Arc<AtomicBool>,
    /// Its future finished.
    finished: Arc<AtomicBool>,
    /// When its future was dropped (finished or not), on tokio's clock.
    dropped_at: Arc<Mutex<Option<Instant>>>,
}

impl Probe {
    fn entered(&self) -> bool {
        self.entered.load(Ordering::SeqCst)
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    fn dropped_at(&self) -> Option<Instant> {
        *self.dropped_at.lock().unwrap()
    }

    /// A handler whose future enters, runs `body`, then finishes.
    fn handler<F>(&self, body: impl Fn() -> F + Send + Sync + 'static) -> Handler
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let probe = self.clone();
        Handler::new(move |_topic, _message: Bytes| {
            let probe = probe.clone();
            let body = body();
            async move {
                let _dropped = StampOnDrop(Arc::clone(&probe.dropped_at));
                probe.entered.store(true, Ordering::SeqCst);
                body.await;
                probe.finished.store(true, Ordering::SeqCst);
            }
        })
    }

    /// A handler whose future never finishes.
    fn hanging(&self) -> Handler {
        self.handler(std::future::pending::<()>)
    }
}

/// Records when it is dropped: when a handler's future was torn down.
struct StampOnDrop(Arc<Mutex<Option<Instant>>>);

impl Drop for StampOnDrop {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

/// A provider whose handlers get `grace` at their session's end.
async fn with_close_grace(grace: Duration) -> InMemoryPubSub {
    started(Config::default().with_close_grace(grace)).await
}

/// Subscribes session `s` to `room` with `handler`, broadcasts once and waits until the
/// handler's body has begun.
async fn running_in_room(pubsub: &InMemoryPubSub, probe: &Probe, handler: Handler) {
    pubsub.subscribe_topic("s", "room", handler).await.unwrap();
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("the handler to begin", || probe.entered()).await;
}

/// A provider with `grace` whose session `s` runs a handler that hangs in its future.
async fn hanging_in_room(grace: Duration) -> (InMemoryPubSub, Probe) {
    let pubsub = with_close_grace(grace).await;
    let probe = Probe::default();
    running_in_room(&pubsub, &probe, probe.hanging()).await;
    (pubsub, probe)
}

/// Waits until only the reaper runs, and checks that the handler's future was dropped
/// unfinished `grace` after `closed_at` (to the timer's millisecond), and counted.
async fn assert_cancelled_after(pubsub: &InMemoryPubSub, probe: &Probe, closed_at: Instant, grace: Duration) {
    wait_until("the session's task to end", || pubsub.running_tasks() == 1).await;
    let dropped_at = probe.dropped_at().expect("the handler's future is gone");
    let after = dropped_at - closed_at;
    assert!(
        after >= grace && after <= grace + ms(1),
        "cancelled {after:?} after the close; the grace is {grace:?}"
    );
    assert!(!probe.finished(), "the handler did not finish");
    let stats = pubsub.stats();
    assert_eq!(stats.handlers_cancelled, 1);
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_handler_hanging_in_its_future_is_cancelled_after_the_grace() {
    let grace = ms(100);
    let (pubsub, probe) = hanging_in_room(grace).await;
    assert_eq!(pubsub.running_tasks(), 2, "the reaper and the session's task");

    let closed_at = Instant::now();
    pubsub.unsubscribe_all("s").await.unwrap();

    tokio::time::sleep(grace - ms(1)).await;
    assert_eq!(probe.dropped_at(), None, "still inside the grace");
    assert_eq!(pubsub.running_tasks(), 2, "its task runs until the grace is out");
    assert_cancelled_after(&pubsub, &probe, closed_at, grace).await;
}

/// The grace counts from the close, not from when the session's task next runs: here the
/// clock jumps 60 ms between the close and the task's first chance to see it, and the handler
/// is still cancelled 100 ms after the close.
#[tokio::test(start_paused = true)]
async fn the_grace_counts_from_the_close_however_late_the_task_sees_it() {
    let grace = ms(100);
    let (pubsub, probe) = hanging_in_room(grace).await;

    let closed_at = Instant::now();
    pubsub.unsubscribe_all("s").await.unwrap();
    // One thread: the session's task has not run since the close. `advance` moves the clock,
    // then yields to it.
    tokio::time::advance(ms(60)).await;
    assert_cancelled_after(&pubsub, &probe, closed_at, grace).await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_finishing_just_inside_the_grace_is_not_cancelled() {
    let grace = ms(100);
    let pubsub = with_close_grace(grace).await;
    let probe = Probe::default();
    // The body waits for the close, then naps a millisecond less than the grace.
    let closed = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let closed = Arc::clone(&closed);
        probe.handler(move || {
            let closed = Arc::clone(&closed);
            async move {
                closed.notified().await;
                tokio::time::sleep(grace - ms(1)).await;
            }
        })
    };
    running_in_room(&pubsub, &probe, handler).await;

    let closed_at = Instant::now();
    pubsub.unsubscribe_all("s").await.unwrap();
    closed.notify_one();
    wait_until("the session's task to end", || pubsub.running_tasks() == 1).await;

    assert!(probe.finished(), "the handler finished inside the grace");
    assert_eq!(probe.dropped_at(), Some(closed_at + grace - ms(1)));
    assert_eq!(pubsub.stats().handlers_cancelled, 0);
}

#[tokio::test(start_paused = true)]
async fn close_grace_zero_cancels_at_once() {
    let pubsub = with_close_grace(Duration::ZERO).await;
    let probe = Probe::default();
    // A nap, not a hang: with any grace at all it would finish.
    let handler = probe.handler(|| tokio::time::sleep(ms(1)));
    running_in_room(&pubsub, &probe, handler).await;

    let closed_at = Instant::now();
    pubsub.unsubscribe_all("s").await.unwrap();
    assert_cancelled_after(&pubsub, &probe, closed_at, Duration::ZERO).await;
    assert_eq!(probe.dropped_at(), Some(closed_at), "dropped without a tick");
}

#[tokio::test(start_paused = true)]
async fn the_last_unsubscribe_topic_starts_the_grace() {
    let grace = ms(50);
    let (pubsub, probe) = hanging_in_room(grace).await;
    pubsub
        .subscribe_topic("s", "other", Handler::new(|_, _| async {}))
        .await
        .unwrap();

    pubsub.unsubscribe_topic("s", "room").await.unwrap();
    tokio::time::sleep(grace * 2).await;
    assert_eq!(probe.dropped_at(), None, "the session is still open: no grace");
    assert_eq!(pubsub.running_tasks(), 2);

    let closed_at = Instant::now();
    pubsub.unsubscribe_topic("s", "other").await.unwrap();
    assert_cancelled_after(&pubsub, &probe, closed_at, grace).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_disconnect_starts_the_grace() {
    let grace = ms(50);
    let config = Config::default()
        .with_capacity(1)
        .with_policy(OverflowPolicy::Disconnect)
        .with_close_grace(grace);
    let pubsub = started(config).await;
    let probe = Probe::default();
    running_in_room(&pubsub, &probe, probe.hanging()).await;

    pubsub.broadcast("room", "m1".into()).await.unwrap();
    let closed_at = Instant::now();
    pubsub.broadcast("room", "m2".into()).await.unwrap();
    assert_eq!(pubsub.stats().disconnects, 1, "m2 found the mailbox full");

    assert_cancelled_after(&pubsub, &probe, closed_at, grace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finite_hang_in_the_synchronous_part_is_waited_for() {
    let pubsub = with_close_grace(Duration::ZERO).await;
    let calling = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicBool::new(false));
    let probe = Probe::default();
    let hanging = probe.hanging();
    let handler = {
        let (calling, returned) = (Arc::clone(&calling), Arc::clone(&returned));
        Handler::new(move |topic, message| {
            calling.store(true, Ordering::SeqCst);
            std::thread::sleep(ms(50));
            returned.store(true, Ordering::SeqCst);
            hanging.call(topic, message)
        })
    };
    pubsub.subscribe_topic("s", "room", handler).await.unwrap();
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("the handler's call", || calling.load(Ordering::SeqCst)).await;

    let began = std::time::Instant::now();
    pubsub.unsubscribe_all("s").await.unwrap();
    let waited = began.elapsed();
    assert!(
        returned.load(Ordering::SeqCst) && probe.entered(),
        "unsubscribe_all returned before the call and the first poll ({waited:?})"
    );
    println!("unsubscribe_all waited {waited:?} for a 50 ms synchronous part");

    wait_until("the session's task to end", || pubsub.running_tasks() == 1).await;
    assert!(!probe.finished());
    assert_eq!(pubsub.stats().handlers_cancelled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sessions_ending_at_once_leave_no_task_past_the_grace() {
    const SESSIONS: usize = 10_000;
    let grace = ms(500);
    let pubsub = Arc::new(with_close_grace(grace).await);
    let entered = Arc::new(AtomicUsize::new(0));
    for i in 0..SESSIONS {
        let entered = Arc::clone(&entered);
        let handler = Handler::new(move |_topic, _message| {
            let entered = Arc::clone(&entered);
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
        });
        pubsub
            .subscribe_topic(&format!("s{i}"), "room", handler)
            .await
            .unwrap();
    }
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("every handler to begin", || {
        entered.load(Ordering::SeqCst) == SESSIONS
    })
    .await;
    assert_eq!(pubsub.running_tasks(), SESSIONS + 1);

    let began = std::time::Instant::now();
    let mut closes = tokio::task::JoinSet::new();
    for i in 0..SESSIONS {
        let pubsub = Arc::clone(&pubsub);
        closes.spawn(async move { pubsub.unsubscribe_all(&format!("s{i}")).await });
    }
    while let Some(closed) = closes.join_next().await {
        closed.unwrap().unwrap();
    }
    let closed = began.elapsed();
    while pubsub.running_tasks() > 1 {
        tokio::time::sleep(ms(1)).await;
    }
    let idle = began.elapsed();
    println!(
        "{SESSIONS} sessions: closed in {closed:?}; idle {idle:?} after the first close, \
         {:?} after the last (grace {grace:?})",
        idle - closed
    );
    assert!(
        idle >= grace,
        "a handler was cancelled before its grace ({idle:?})"
    );
    // Every close returned by `closed`, so every task ends by `closed + grace`, give or take
    // the scheduling of 10,000 cancellations on two cores shared with other work, and this
    // loop's polling.
    assert!(
        idle - closed <= grace + ms(1000),
        "the last task ended {:?} after the last close; the grace is {grace:?}",
        idle - closed
    );

    let stats = pubsub.stats();
    assert_eq!(stats.handlers_cancelled, SESSIONS as u64);
    assert_eq!(stats.delivered, SESSIONS as u64);
    assert!(settled(&stats), "{stats:?}");
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (0, 0, 0));
}
