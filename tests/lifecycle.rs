//! Lifecycle (G8) and bounded state (G7): `start`/`stop`, what `stop` ends and discards, the
//! `Stopped` error afterwards, and the registry emptying as sessions leave.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout::{
    Bytes, CloseReason, Closed, Config, Fallback, Handler, InMemoryPubSub, OverflowPolicy, PubSubError,
    PubSubProvider, SessionPubSub, TryRecvError,
};
use tokio::sync::Semaphore;

mod support;

use support::{eventually, started, text, wait_until, Inbox, WAIT};

/// Sets its flag when dropped: shows that a handler's future was torn down.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn short_grace() -> Config {
    Config::default().with_stop_grace(Duration::from_millis(100))
}

fn assert_stopped<T: std::fmt::Debug>(what: &str, result: Result<T, PubSubError>) {
    match result {
        Err(PubSubError::Stopped) => {}
        other => panic!("{what} after stop: expected `Stopped`, got {other:?}"),
    }
}

/// Checks that the provider holds no topic, session or subscription (G7).
fn assert_registry_empty(pubsub: &InMemoryPubSub) {
    let engine = pubsub.engine();
    assert_eq!(engine.topic_count(), 0, "topics left");
    assert_eq!(engine.session_count(), 0, "sessions left");
    let stats = pubsub.stats();
    assert_eq!(
        (stats.sessions, stats.topics, stats.subscriptions),
        (0, 0, 0),
        "gauges"
    );
}

// ----- start and stop (G8) -----

#[tokio::test]
async fn start_is_idempotent_and_runs_one_reaper() {
    let pubsub = InMemoryPubSub::new();
    assert_eq!(pubsub.running_tasks(), 0);
    pubsub.start().await.unwrap();
    pubsub.start().await.unwrap();
    assert_eq!(pubsub.running_tasks(), 1);
    pubsub
        .subscribe_topic("s", "room", Inbox::default().handler())
        .await
        .unwrap();
    assert_eq!(pubsub.running_tasks(), 2, "the reaper and one session task");
    pubsub.stop().await.unwrap();
    assert_eq!(pubsub.running_tasks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_every_task_even_with_a_handler_stalled_forever() {
    let pubsub = started(short_grace()).await;
    let (entered, torn_down) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (entered_in, torn_down_in) = (Arc::clone(&entered), Arc::clone(&torn_down));
    let stuck = Handler::new(move |_topic, _message| {
        let guard = SetOnDrop(Arc::clone(&torn_down_in));
        let entered = Arc::clone(&entered_in);
        async move {
            let _guard = guard;
            entered.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    });
    pubsub.subscribe_topic("stuck", "room", stuck).await.unwrap();
    pubsub
        .subscribe_topic("idle", "lobby", Inbox::default().handler())
        .await
        .unwrap();
    assert_eq!(pubsub.running_tasks(), 3);
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("the stuck handler to start", || entered.load(Ordering::SeqCst)).await;

    let began = Instant::now();
    tokio::time::timeout(WAIT, pubsub.stop())
        .await
        .expect("stop returns although a handler never does")
        .unwrap();

    assert!(
        began.elapsed() >= pubsub.engine().config().stop_grace,
        "stop waited for the grace period first"
    );
    assert_eq!(pubsub.running_tasks(), 0);
    assert!(
        torn_down.load(Ordering::SeqCst),
        "the stalled handler's future was dropped with its task"
    );
    assert_registry_empty(&pubsub);
}

#[tokio::test]
async fn stop_lets_a_running_handler_finish_within_the_grace() {
    let pubsub = started(Config::default()).await;
    let (entered, finished) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (entered_in, finished_in) = (Arc::clone(&entered), Arc::clone(&finished));
    let slow = Handler::new(move |_topic, _message| {
        let (entered, finished) = (Arc::clone(&entered_in), Arc::clone(&finished_in));
        async move {
            entered.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            finished.store(true, Ordering::SeqCst);
        }
    });
    pubsub.subscribe_topic("s", "room", slow).await.unwrap();
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("the handler to start", || entered.load(Ordering::SeqCst)).await;

    pubsub.stop().await.unwrap();

    assert!(finished.load(Ordering::SeqCst), "the handler ran to its end");
    assert_eq!(pubsub.running_tasks(), 0);
}

#[tokio::test]
async fn stop_is_idempotent() {
    let pubsub = started(short_grace()).await;
    pubsub
        .subscribe_topic("s", "room", Inbox::default().handler())
        .await
        .unwrap();
    pubsub.stop().await.unwrap();
    let after_first = pubsub.stats();

    pubsub.stop().await.unwrap();
    pubsub.stop().await.unwrap();

    assert_eq!(pubsub.stats(), after_first);
    assert_eq!(pubsub.running_tasks(), 0);
    assert!(pubsub.engine().is_stopped());
}

#[tokio::test]
async fn stop_without_start_succeeds() {
    let pubsub = InMemoryPubSub::new();
    pubsub.stop().await.unwrap();
    assert!(pubsub.engine().is_stopped());
    assert_stopped("start", pubsub.start().await);
}

#[tokio::test]
async fn every_operation_after_stop_returns_stopped() {
    let pubsub = started(short_grace()).await;
    let receiver = pubsub.open_session("reader").unwrap();
    receiver.subscribe("room").await.unwrap();
    pubsub
        .subscribe_topic("writer", "room", Inbox::default().handler())
        .await
        .unwrap();
    pubsub.stop().await.unwrap();

    let handler = Inbox::default().handler();
    assert_stopped(
        "subscribe_topic",
        pubsub.subscribe_topic("writer", "room", handler.clone()).await,
    );
    assert_stopped(
        "subscribe_topic (new session)",
        pubsub.subscribe_topic("new", "room", handler).await,
    );
    assert_stopped(
        "unsubscribe_topic",
        pubsub.unsubscribe_topic("writer", "room").await,
    );
    assert_stopped("unsubscribe_all", pubsub.unsubscribe_all("writer").await);
    assert_stopped("broadcast", pubsub.broadcast("room", "m".into()).await);
    assert_stopped(
        "broadcast_from",
        pubsub.broadcast_from("writer", "room", "m".into()).await,
    );
    assert_stopped("open_session", pubsub.open_session("another"));
    assert_stopped("start", pubsub.start().await);
    assert_stopped(
        "engine broadcast",
        pubsub.engine().broadcast("room", "m".into()).await,
    );
    assert_stopped("receiver subscribe", receiver.subscribe("elsewhere").await);
    // `stop` itself stays fine (idempotent), and nothing was recreated by the failed calls.
    pubsub.stop().await.unwrap();
    assert_eq!(pubsub.running_tasks(), 0);
    assert_registry_empty(&pubsub);
    assert_eq!(pubsub.stats().published, 0);
}

#[tokio::test]
async fn stop_counts_queued_messages_as_stopped() {
    let pubsub = started(short_grace()).await;
    let gate = Arc::new(Semaphore::new(0));
    let stalled = Inbox::default();
    pubsub
        .subscribe_topic("stalled", "room", stalled.stalled_handler(&gate))
        .await
        .unwrap();
    let mut reader = pubsub.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();

    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("the stalled handler to hold m0", || stalled.len() == 1).await;
    for payload in ["m1", "m2", "m3"] {
        pubsub.broadcast("room", payload.into()).await.unwrap();
    }
    assert_eq!(pubsub.session_stats("stalled").unwrap().queued, 3);
    assert_eq!(reader.queued(), 4);

    pubsub.stop().await.unwrap();

    let stats = pubsub.stats();
    assert_eq!(stats.dropped.stopped, 3 + 4);
    assert_eq!(stats.delivered, 1, "only m0, held by the stalled handler");
    assert_eq!(stats.recipients, stats.delivered + stats.dropped.total());
    assert_eq!(
        reader.recv().await.unwrap_err(),
        Closed {
            reason: CloseReason::Stopped
        }
    );
    assert_eq!(
        reader.try_recv().unwrap_err(),
        TryRecvError::Closed(Closed {
            reason: CloseReason::Stopped
        })
    );
    assert_eq!(reader.close_reason(), Some(CloseReason::Stopped));
    gate.add_permits(10);
    assert_eq!(stalled.payloads(), ["m0"]);
    assert_registry_empty(&pubsub);
}

#[tokio::test]
async fn stop_releases_a_broadcaster_blocked_on_a_full_mailbox() {
    let config = Config::default()
        .with_capacity(1)
        .with_policy(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
            then: Fallback::DropNewest,
        });
    let pubsub = started(config).await;
    let reader = pubsub.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    let engine = pubsub.engine().clone();
    let publisher = tokio::spawn(async move { engine.broadcast("room", "m1".into()).await });
    tokio::task::yield_now().await;
    assert!(!publisher.is_finished(), "the broadcaster waits for room");

    pubsub.stop().await.unwrap();

    // G8: no operation hangs past stop.
    let fanout = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("stop releases the broadcaster")
        .unwrap()
        .unwrap();
    assert_eq!((fanout.recipients, fanout.queued, fanout.dropped), (1, 0, 1));
    let stats = pubsub.stats();
    assert_eq!(stats.block_timeouts, 0);
    assert_eq!(stats.dropped.stopped, 2, "m0 discarded, m1 never queued");
    drop(reader);
    assert_registry_empty(&pubsub);
}

#[tokio::test]
async fn stop_wakes_a_receiver_waiting_in_recv() {
    let pubsub = started(Config::default()).await;
    let mut reader = pubsub.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();
    let waiting = tokio::spawn(async move { reader.recv().await.map(|m| text(m.payload())) });
    tokio::task::yield_now().await;

    pubsub.stop().await.unwrap();

    let outcome = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("stop wakes the receiver")
        .unwrap();
    assert_eq!(
        outcome,
        Err(Closed {
            reason: CloseReason::Stopped
        })
    );
}

#[tokio::test]
async fn receiver_stream_ends_when_the_provider_stops() {
    use futures_util::StreamExt;

    let pubsub = started(Config::default()).await;
    let mut reader = pubsub.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    let first = reader.next().await.expect("a message");
    assert_eq!(text(first.payload()), "m0");

    let rest = tokio::spawn(async move { reader.collect::<Vec<_>>().await.len() });
    tokio::task::yield_now().await;
    pubsub.stop().await.unwrap();

    let collected = tokio::time::timeout(WAIT, rest)
        .await
        .expect("the stream ends at stop")
        .unwrap();
    assert_eq!(collected, 0);
}

// ----- the registry empties as sessions leave (G7) -----

/// A handler removed by `unsubscribe_topic` is released (its captures dropped) even though the
/// session stays subscribed elsewhere and receives nothing more: an idle session task holds no
/// copy of its handler table.
#[tokio::test]
async fn unsubscribed_handler_is_released_while_its_session_stays_idle() {
    let pubsub = started(Config::default()).await;
    let released = Arc::new(AtomicBool::new(false));
    let guard = Arc::new(SetOnDrop(Arc::clone(&released)));
    let inbox = Inbox::default();
    let ran = Arc::new(AtomicBool::new(false));
    let handler = {
        let ran = Arc::clone(&ran);
        Handler::new(move |_topic, _message| {
            let _captured = &guard;
            ran.store(true, Ordering::SeqCst);
            std::future::ready(())
        })
    };
    pubsub.subscribe_topic("h", "a", handler).await.unwrap();
    pubsub.subscribe_topic("h", "b", inbox.handler()).await.unwrap();
    pubsub.broadcast("a", "m".into()).await.unwrap();
    wait_until("the handler on a ran", || ran.load(Ordering::SeqCst)).await;
    pubsub.unsubscribe_topic("h", "a").await.unwrap();
    wait_until("the removed handler released", || released.load(Ordering::SeqCst)).await;
    pubsub.broadcast("b", "n".into()).await.unwrap();
    wait_until("the session still delivers on b", || inbox.len() == 1).await;
}

/// The same while the session is busy in another handler: a handler removed by
/// `unsubscribe_topic` is released while the session's handler on another topic is still
/// waiting, not when that handler finishes.
#[tokio::test]
async fn unsubscribed_handler_is_released_while_another_handler_waits() {
    let pubsub = started(Config::default()).await;
    let released = Arc::new(AtomicBool::new(false));
    let guard = Arc::new(SetOnDrop(Arc::clone(&released)));
    let on_a = Handler::new(move |_topic, _message| {
        let _captured = &guard;
        std::future::ready(())
    });
    let gate = Arc::new(Semaphore::new(0));
    let waiting = Arc::new(AtomicBool::new(false));
    let on_b = {
        let (gate, waiting) = (Arc::clone(&gate), Arc::clone(&waiting));
        Handler::new(move |_topic, _message| {
            let (gate, waiting) = (Arc::clone(&gate), Arc::clone(&waiting));
            async move {
                waiting.store(true, Ordering::SeqCst);
                let _permit = gate.acquire().await;
            }
        })
    };
    pubsub.subscribe_topic("h", "a", on_a).await.unwrap();
    pubsub.subscribe_topic("h", "b", on_b).await.unwrap();
    pubsub.broadcast("b", "m".into()).await.unwrap();
    wait_until("the handler on b waits", || waiting.load(Ordering::SeqCst)).await;
    pubsub.unsubscribe_topic("h", "a").await.unwrap();
    let early = eventually(|| released.load(Ordering::SeqCst)).await;
    gate.add_permits(1);
    assert!(
        early,
        "the removed handler was kept while the handler on b waited"
    );
}

#[tokio::test]
async fn registry_is_empty_after_every_session_unsubscribes() {
    let pubsub = started(Config::default()).await;
    for session in ["h1", "h2", "h3"] {
        for topic in ["a", "b", "c"] {
            pubsub
                .subscribe_topic(session, topic, Inbox::default().handler())
                .await
                .unwrap();
        }
    }
    let r1 = pubsub.open_session("r1").unwrap();
    let r2 = pubsub.open_session("r2").unwrap();
    for topic in ["b", "c", "d"] {
        r1.subscribe(topic).await.unwrap();
        r2.subscribe(topic).await.unwrap();
    }
    pubsub.broadcast("a", "m".into()).await.unwrap();
    let stats = pubsub.stats();
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (5, 4, 15));
    assert_eq!(pubsub.running_tasks(), 4);

    // Every way out: topic by topic, all at once, the receiver's own unsubscribe, drop, close.
    for topic in ["a", "b", "c"] {
        pubsub.unsubscribe_topic("h1", topic).await.unwrap();
    }
    pubsub.unsubscribe_all("h2").await.unwrap();
    pubsub.unsubscribe_topic("h3", "a").await.unwrap();
    pubsub.unsubscribe_all("h3").await.unwrap();
    for topic in ["b", "c", "d"] {
        r1.unsubscribe(topic).unwrap();
    }
    drop(r1);
    r2.close();

    assert_registry_empty(&pubsub);
    wait_until("the session tasks to end", || pubsub.running_tasks() == 1).await;
    let fanout = pubsub.engine().broadcast("b", "m".into()).await.unwrap();
    assert_eq!(fanout.recipients, 0);
    assert_registry_empty(&pubsub);
}

#[tokio::test]
async fn handler_session_whose_last_topic_is_unsubscribed_is_removed() {
    let pubsub = started(Config::default()).await;
    let inbox = Inbox::default();
    pubsub.subscribe_topic("s", "a", inbox.handler()).await.unwrap();
    pubsub.subscribe_topic("s", "b", inbox.handler()).await.unwrap();
    assert_eq!(pubsub.running_tasks(), 2);

    pubsub.unsubscribe_topic("s", "a").await.unwrap();
    let topics = pubsub.engine().session_topics("s");
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0], "b");
    assert_eq!(pubsub.engine().session_count(), 1);

    pubsub.unsubscribe_topic("s", "b").await.unwrap();
    assert!(pubsub.session_stats("s").is_none());
    assert_registry_empty(&pubsub);
    wait_until("the session task to end", || pubsub.running_tasks() == 1).await;
    pubsub.broadcast("b", "late".into()).await.unwrap();
    assert_eq!(pubsub.stats().recipients, 0);
    assert!(inbox.payloads().is_empty());
}

#[tokio::test]
async fn receiver_session_without_topics_stays_open() {
    let pubsub = started(Config::default()).await;
    let mut reader = pubsub.open_session("r").unwrap();
    reader.subscribe("a").await.unwrap();
    reader.unsubscribe("a").unwrap();

    assert_eq!(reader.close_reason(), None);
    assert_eq!(pubsub.engine().session_count(), 1);
    assert_eq!(pubsub.engine().topic_count(), 0);
    reader.subscribe("b").await.unwrap();
    pubsub.broadcast("b", "m".into()).await.unwrap();
    assert_eq!(text(reader.try_recv().unwrap().payload()), "m");
}

#[tokio::test]
async fn unsubscribe_all_discards_queued() {
    let pubsub = started(Config::default()).await;
    let gate = Arc::new(Semaphore::new(0));
    let stalled = Inbox::default();
    pubsub
        .subscribe_topic("s", "room", stalled.stalled_handler(&gate))
        .await
        .unwrap();
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("the handler to hold m0", || stalled.len() == 1).await;
    for payload in ["m1", "m2"] {
        pubsub.broadcast("room", payload.into()).await.unwrap();
    }

    pubsub.unsubscribe_all("s").await.unwrap();

    // G2: the queued messages are discarded and counted; no handler starts for them.
    assert_eq!(pubsub.stats().dropped.unsubscribed, 2);
    gate.add_permits(10);
    wait_until("the session task to end", || pubsub.running_tasks() == 1).await;
    assert_eq!(stalled.payloads(), ["m0"]);
    assert_registry_empty(&pubsub);
}

#[tokio::test]
async fn session_id_reused_after_unsubscribe_all_starts_a_fresh_session() {
    let pubsub = started(Config::default()).await;
    let (old, new) = (Inbox::default(), Inbox::default());
    pubsub.subscribe_topic("s", "a", old.handler()).await.unwrap();
    pubsub.subscribe_topic("s", "b", old.handler()).await.unwrap();
    pubsub.broadcast("a", "before".into()).await.unwrap();
    wait_until("the first session to get `before`", || old.len() == 1).await;

    pubsub.unsubscribe_all("s").await.unwrap();
    pubsub.subscribe_topic("s", "a", new.handler()).await.unwrap();

    // The new session has only what it subscribed to; the old handlers are gone.
    let topics = pubsub.engine().session_topics("s");
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0], "a");
    assert_eq!(pubsub.session_stats("s").unwrap().topics, 1);
    pubsub.broadcast("b", "to-b".into()).await.unwrap();
    pubsub.broadcast("a", "to-a".into()).await.unwrap();
    wait_until("the new session to get `to-a`", || new.len() == 1).await;
    assert_eq!(new.payloads(), ["to-a"]);
    assert_eq!(old.payloads(), ["before"]);
    assert_eq!(pubsub.engine().session_count(), 1);
    assert_eq!(pubsub.running_tasks(), 2, "the reaper and the new session's task");
}

#[tokio::test]
async fn handler_can_unsubscribe_its_own_session() {
    let pubsub = Arc::new(started(Config::default()).await);
    let inbox = Inbox::default();
    let (record, provider) = (inbox.clone(), Arc::clone(&pubsub));
    let handler = Handler::new(move |_topic, message: Bytes| {
        record.push(&message);
        let provider = Arc::clone(&provider);
        async move {
            if message == "leave" {
                provider.unsubscribe_all("self").await.unwrap();
            }
        }
    });
    pubsub.subscribe_topic("self", "room", handler).await.unwrap();

    pubsub.broadcast("room", "leave".into()).await.unwrap();
    pubsub.broadcast("room", "after".into()).await.unwrap();

    wait_until("the session to leave", || pubsub.engine().session_count() == 0).await;
    wait_until("its task to end", || pubsub.running_tasks() == 1).await;
    // G2: `after` was queued before the handler left; it is discarded, not handled.
    assert_eq!(inbox.payloads(), ["leave"]);
    assert_eq!(pubsub.stats().dropped.unsubscribed, 1);
    assert_registry_empty(&pubsub);
}

/// Runs `test` on its own thread and current-thread runtime, and fails if it has not finished
/// within [`WAIT`]: a hang fails this test instead of stopping the whole test binary.
fn within_wait<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(test());
        let _ = done.send(());
    });
    match finished.recv_timeout(WAIT) {
        Ok(()) => {}
        Err(RecvTimeoutError::Timeout) => panic!("hung: not finished after {WAIT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("failed on its thread (its panic is above)"),
    }
}

#[test]
fn handler_can_unsubscribe_its_own_session_through_the_engine() {
    within_wait(|| async {
        let pubsub = started(Config::default()).await;
        let engine = pubsub.engine().clone();
        let outcome = Arc::new(Mutex::new(None));
        let record = Arc::clone(&outcome);
        // In the future's first poll, inside the invocation's start: the session does not
        // wait for itself.
        let handler = Handler::new(move |_topic, _message| {
            let (engine, record) = (engine.clone(), Arc::clone(&record));
            async move {
                *record.lock().unwrap() = Some(engine.unsubscribe_all("self").await.is_ok());
            }
        });
        pubsub.subscribe_topic("self", "room", handler).await.unwrap();

        pubsub.broadcast("room", "leave".into()).await.unwrap();

        wait_until("the session to leave", || pubsub.engine().session_count() == 0).await;
        wait_until("the handler to return", || outcome.lock().unwrap().is_some()).await;
        assert_eq!(*outcome.lock().unwrap(), Some(true));
        pubsub.stop().await.unwrap();
    });
}

/// Session `a`'s handler ends session `b` while `b`'s handler, in its own first poll, ends `b`
/// itself: `a`'s wait for `b`'s start is an `.await`, and `b` does not wait for itself, so
/// neither hangs, on one thread or on two.
#[test]
fn a_handler_ending_a_session_whose_handler_ends_itself_does_not_hang() {
    for flavor in ["current_thread", "multi_thread"] {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = match flavor {
                "current_thread" => tokio::runtime::Builder::new_current_thread(),
                _ => {
                    let mut builder = tokio::runtime::Builder::new_multi_thread();
                    builder.worker_threads(2);
                    builder
                }
            }
            .enable_all()
            .build()
            .unwrap();
            runtime.block_on(async {
                for round in 0..200 {
                    let pubsub = Arc::new(started(Config::default()).await);
                    let ender = Arc::clone(&pubsub);
                    let a = Handler::new(move |_topic, _message| {
                        let ender = Arc::clone(&ender);
                        async move { ender.unsubscribe_all("b").await.unwrap() }
                    });
                    let own = Arc::clone(&pubsub);
                    let b = Handler::new(move |_topic, _message| {
                        let own = Arc::clone(&own);
                        async move { own.unsubscribe_all("b").await.unwrap() }
                    });
                    pubsub.subscribe_topic("a", "go", a).await.unwrap();
                    pubsub.subscribe_topic("b", "go", b).await.unwrap();
                    pubsub.broadcast("go", format!("{round}").into()).await.unwrap();
                    wait_until("b to end", || pubsub.engine().session_count() == 1).await;
                    pubsub.stop().await.unwrap();
                }
            });
            let _ = done.send(());
        });
        match finished.recv_timeout(WAIT) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => panic!("{flavor}: hung, not finished after {WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("{flavor}: failed on its thread (see above)"),
        }
    }
}

#[tokio::test]
async fn dropping_a_receiver_unsubscribes_it() {
    let pubsub = started(Config::default()).await;
    let reader = pubsub.open_session("r").unwrap();
    reader.subscribe("a").await.unwrap();
    reader.subscribe("b").await.unwrap();
    pubsub.broadcast("a", "m0".into()).await.unwrap();
    pubsub.broadcast("b", "m1".into()).await.unwrap();

    drop(reader);

    assert_registry_empty(&pubsub);
    assert_eq!(pubsub.stats().dropped.unsubscribed, 2);
    let fanout = pubsub.engine().broadcast("a", "m2".into()).await.unwrap();
    assert_eq!(fanout.recipients, 0);
    // The id is free again.
    let mut again = pubsub.open_session("r").unwrap();
    again.subscribe("a").await.unwrap();
    pubsub.broadcast("a", "m3".into()).await.unwrap();
    let message = again.try_recv().unwrap();
    assert_eq!(text(message.payload()), "m3");
    assert_eq!(message.missed_before(), 0);
}

// ----- SessionPubSub -----

#[tokio::test]
async fn session_pubsub_wrapper_operations_work() {
    let pubsub = Arc::new(started(short_grace()).await);
    let provider: Arc<dyn PubSubProvider> = pubsub.clone();
    let alice = SessionPubSub::new(Arc::clone(&provider), "alice");
    let bob = SessionPubSub::new(provider, "bob");
    assert_eq!(alice.session_id(), "alice");
    let (alice_inbox, bob_inbox) = (Inbox::default(), Inbox::default());
    alice.subscribe("room", alice_inbox.handler()).await.unwrap();
    alice.subscribe("side", alice_inbox.handler()).await.unwrap();
    bob.subscribe("room", bob_inbox.handler()).await.unwrap();

    alice.broadcast_from("room", "from-alice".into()).await.unwrap();
    bob.broadcast("room", "to-all".into()).await.unwrap();
    wait_until("both messages to arrive", || {
        alice_inbox.len() == 1 && bob_inbox.len() == 2
    })
    .await;
    assert_eq!(alice_inbox.payloads(), ["to-all"]);
    assert_eq!(bob_inbox.payloads(), ["from-alice", "to-all"]);

    alice.unsubscribe("room").await.unwrap();
    let topics = pubsub.engine().session_topics("alice");
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0], "side");
    alice.unsubscribe_all().await.unwrap();
    assert!(pubsub.engine().session_topics("alice").is_empty());
    bob.broadcast("room", "after".into()).await.unwrap();
    bob.broadcast("side", "after".into()).await.unwrap();
    wait_until("bob to get `after`", || bob_inbox.len() == 3).await;
    assert_eq!(alice_inbox.payloads(), ["to-all"]);

    alice.provider().stop().await.unwrap();
    assert_stopped("wrapper broadcast", bob.broadcast("room", "x".into()).await);
    assert_stopped(
        "wrapper subscribe",
        bob.subscribe("room", bob_inbox.handler()).await,
    );
    assert_eq!(pubsub.running_tasks(), 0);
}
