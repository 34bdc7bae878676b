//! `SessionHandle`: a pull-form session's subscriptions changed from other tasks while its
//! receiver waits in `recv` (subscribe, unsubscribe G2, close), its errors once the session is
//! closed or the engine stopped (G8, G9), and concurrent use of many clones.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use fanout::{
    CloseReason, Closed, Config, Engine, Message, OverflowPolicy, PubSubError, SessionHandle,
    SessionReceiver, StatsSnapshot, Topic,
};
use tokio::sync::{oneshot, Barrier};

mod support;

use support::{announcing_park, WAIT};

/// Awaits `task`; fails the test if it has not ended after [`WAIT`] (a reader never woken).
async fn joined<T>(what: &str, task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
        .unwrap()
}

/// Spawns a task that waits in `recv` and returns what it got; returns once that task is
/// parked there.
async fn parked_reader(
    mut receiver: SessionReceiver,
) -> tokio::task::JoinHandle<(Result<Message, Closed>, SessionReceiver)> {
    let (parked, is_parked) = oneshot::channel();
    let reader = tokio::spawn(async move {
        let got = announcing_park(receiver.recv(), parked).await;
        (got, receiver)
    });
    tokio::time::timeout(WAIT, is_parked)
        .await
        .expect("the reader parks in recv")
        .unwrap();
    reader
}

fn topics(handle: &SessionHandle) -> Vec<String> {
    let mut topics: Vec<String> = handle.topics().iter().map(Topic::to_string).collect();
    topics.sort();
    topics
}

fn assert_session_closed(result: fanout::Result<()>, id: &str, expected: CloseReason) {
    match result {
        Err(PubSubError::SessionClosed { session_id, reason }) => {
            assert_eq!(session_id, id);
            assert_eq!(reason, expected);
        }
        other => panic!("expected SessionClosed({expected:?}), got {other:?}"),
    }
}

/// `recipients == delivered + dropped.total() + queued`.
fn assert_accounted(stats: &StatsSnapshot, queued: usize) {
    assert_eq!(
        stats.recipients,
        stats.delivered + stats.dropped.total() + queued as u64,
        "queued {queued}, {stats:?}"
    );
}

#[test]
fn handle_is_clone_send_sync_and_debug() {
    fn shareable<T: Clone + Send + Sync + Debug + 'static>() {}
    shareable::<SessionHandle>();
    let engine = Engine::new(Config::default()).unwrap();
    let receiver = engine.open_session("tab-1").unwrap();
    let handle = receiver.handle();
    assert_eq!(handle.id(), "tab-1");
    assert!(format!("{handle:?}").contains("tab-1"));
}

#[tokio::test]
async fn handle_and_receiver_share_one_subscription_record() {
    let engine = Engine::new(Config::default()).unwrap();
    let receiver = engine.open_session("tab-1").unwrap();
    let (handle, clone) = (receiver.handle(), receiver.handle().clone());
    receiver.subscribe("a").await.unwrap();
    handle.subscribe("b").await.unwrap();
    clone.subscribe("b").await.unwrap();
    assert_eq!(topics(&clone), ["a", "b"]);
    assert_eq!(engine.subscriber_count("b"), 1, "G3: one subscription");
    clone.unsubscribe("a").unwrap();
    assert_eq!(receiver.topics(), [Topic::from("b")]);
    assert_eq!(engine.topic_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_parked_in_recv_delivers_the_next_broadcast() {
    let engine = Engine::new(Config::default()).unwrap();
    let receiver = engine.open_session("tab-1").unwrap();
    let handle = receiver.handle();
    let reader = parked_reader(receiver).await;

    let subscriber = {
        let engine = engine.clone();
        tokio::spawn(async move {
            handle.subscribe("room").await.unwrap();
            engine.broadcast("room", "hello".into()).await.unwrap()
        })
    };
    let fanout = subscriber.await.unwrap();
    assert_eq!(fanout.recipients, 1);

    let (got, receiver) = joined("the woken reader", reader).await;
    let message = got.expect("the broadcast wakes the parked reader");
    assert_eq!(message.topic().as_str(), "room");
    assert_eq!(message.payload(), "hello");
    assert_eq!(receiver.topics(), [Topic::from("room")]);
}

/// G2: after an unsubscribe made while the reader is parked, nothing on that topic arrives;
/// a later sentinel from the same publisher shows the old topic's broadcast would have come
/// before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_while_parked_in_recv_stops_delivery() {
    let engine = Engine::new(Config::default()).unwrap();
    let receiver = engine.open_session("tab-1").unwrap();
    receiver.subscribe("old").await.unwrap();
    receiver.subscribe("sentinel").await.unwrap();
    let handle = receiver.handle();
    let reader = parked_reader(receiver).await;

    let unsubscriber = tokio::spawn(async move { handle.unsubscribe("old").unwrap() });
    unsubscriber.await.unwrap();
    assert_eq!(engine.subscriber_count("old"), 0);
    let fanout = engine.broadcast("old", "after".into()).await.unwrap();
    assert_eq!(fanout.recipients, 0);
    engine.broadcast("sentinel", "end".into()).await.unwrap();

    let (got, mut receiver) = joined("the sentinel", reader).await;
    let first = got.unwrap();
    assert_eq!(
        (first.topic().as_str(), first.payload().as_ref()),
        ("sentinel", &b"end"[..]),
        "nothing on `old` after its unsubscribe"
    );
    assert!(receiver.try_recv().is_err());
    assert_eq!(engine.stats().delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_through_a_handle_wakes_the_parked_receiver() {
    let engine = Engine::new(Config::default()).unwrap();
    let receiver = engine.open_session("tab-1").unwrap();
    receiver.subscribe("room").await.unwrap();
    let handle = receiver.handle();
    let reader = parked_reader(receiver).await;

    let closer = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.close() })
    };
    closer.await.unwrap();

    let (got, mut receiver) = joined("the closed reader", reader).await;
    assert_eq!(
        got.unwrap_err(),
        Closed {
            reason: CloseReason::Unsubscribed
        }
    );
    assert!(handle.is_closed());
    assert_eq!(handle.close_reason(), Some(CloseReason::Unsubscribed));
    assert_eq!(receiver.close_reason(), Some(CloseReason::Unsubscribed));
    assert!(receiver.recv().await.is_err(), "closed stays closed");
    assert_eq!((engine.session_count(), engine.topic_count()), (0, 0));
    assert_session_closed(handle.subscribe("room").await, "tab-1", CloseReason::Unsubscribed);
    assert_eq!((engine.session_count(), engine.topic_count()), (0, 0));
}

#[tokio::test]
async fn close_through_a_handle_discards_what_is_queued() {
    let engine = Engine::new(Config::default()).unwrap();
    let mut receiver = engine.open_session("tab-1").unwrap();
    receiver.subscribe("room").await.unwrap();
    for _ in 0..3 {
        engine.broadcast("room", "queued".into()).await.unwrap();
    }
    receiver.handle().close();
    assert!(receiver.try_recv().is_err());
    let stats = engine.stats();
    assert_eq!(stats.dropped.unsubscribed, 3);
    assert_accounted(&stats, 0);
}

/// A handle that outlives its receiver neither resurrects the session nor leaves an entry in
/// the engine's maps, and does not reach a new session opened with the same id.
#[tokio::test]
async fn a_handle_after_its_receiver_is_dropped_gets_session_closed() {
    let engine = Engine::new(Config::default()).unwrap();
    let receiver = engine.open_session("tab-1").unwrap();
    let handle = receiver.handle();
    handle.subscribe("a").await.unwrap();
    assert_eq!((engine.session_count(), engine.topic_count()), (1, 1));
    drop(receiver);
    assert_eq!((engine.session_count(), engine.topic_count()), (0, 0));

    assert_eq!(handle.close_reason(), Some(CloseReason::Unsubscribed));
    assert_session_closed(handle.subscribe("b").await, "tab-1", CloseReason::Unsubscribed);
    handle.unsubscribe("a").unwrap();
    assert!(handle.topics().is_empty());
    handle.close();
    assert_eq!((engine.session_count(), engine.topic_count()), (0, 0));
    let stats = engine.stats();
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (0, 0, 0));

    let mut again = engine.open_session("tab-1").unwrap();
    again.subscribe("c").await.unwrap();
    assert_session_closed(handle.subscribe("d").await, "tab-1", CloseReason::Unsubscribed);
    handle.unsubscribe("c").unwrap();
    handle.close();
    assert_eq!(
        again.close_reason(),
        None,
        "the old handle's close is not the new session's"
    );
    assert_eq!(again.topics(), [Topic::from("c")]);
    engine.broadcast("c", "to the new session".into()).await.unwrap();
    assert_eq!(again.try_recv().unwrap().payload(), "to the new session");
}

/// G9: a bad topic is a typed error and changes nothing.
#[tokio::test]
async fn a_bad_topic_through_a_handle_is_a_typed_error() {
    let engine = Engine::new(Config::default()).unwrap();
    let receiver = engine.open_session("tab-1").unwrap();
    let handle = receiver.handle();
    handle.subscribe("a").await.unwrap();
    assert!(matches!(handle.subscribe("").await, Err(PubSubError::EmptyTopic)));
    assert!(matches!(handle.unsubscribe(""), Err(PubSubError::EmptyTopic)));
    let long = "x".repeat(engine.config().limits.max_topic_bytes + 1);
    assert!(matches!(
        handle.subscribe(&long).await,
        Err(PubSubError::TopicTooLong { .. })
    ));
    assert_eq!(topics(&handle), ["a"]);
    assert_eq!(engine.topic_count(), 1);
}

/// A handle says why its session closed: a slow-consumer disconnect, or the engine stopping
/// (G8: then every operation fails with `Stopped`).
#[tokio::test]
async fn a_handle_reports_disconnects_and_stop() {
    let config = Config::default()
        .with_capacity(1)
        .with_policy(OverflowPolicy::Disconnect);
    let engine = Engine::new(config).unwrap();
    let slow = engine.open_session("slow").unwrap();
    slow.subscribe("room").await.unwrap();
    let handle = slow.handle();
    engine
        .broadcast("room", "fills the mailbox".into())
        .await
        .unwrap();
    engine.broadcast("room", "overflows it".into()).await.unwrap();
    assert_eq!(handle.close_reason(), Some(CloseReason::SlowConsumer));
    assert_session_closed(handle.subscribe("other").await, "slow", CloseReason::SlowConsumer);
    assert_eq!((engine.session_count(), engine.topic_count()), (0, 0));
    handle.close();
    assert_eq!(
        handle.close_reason(),
        Some(CloseReason::SlowConsumer),
        "the first reason stays"
    );

    let open = engine.open_session("open").unwrap();
    let handle = open.handle();
    handle.subscribe("room").await.unwrap();
    engine.stop();
    assert!(matches!(
        handle.subscribe("room").await,
        Err(PubSubError::Stopped)
    ));
    assert!(matches!(handle.unsubscribe("room"), Err(PubSubError::Stopped)));
    assert_eq!(handle.close_reason(), Some(CloseReason::Stopped));
    handle.close();
    assert_eq!((engine.session_count(), engine.topic_count()), (0, 0));
}

const CHURNERS: usize = 8;
const ROUNDS: usize = 300;

fn churn_topic(churner: usize, round: usize) -> String {
    format!("churn-{churner}-{}", round % 4)
}

/// Drains `receiver` with `recv_many` until it returns `Closed` or takes a message on
/// "sentinel"; returns how many it took, the close (if any) and the receiver.
fn spawn_drain(
    mut receiver: SessionReceiver,
) -> tokio::task::JoinHandle<(u64, Option<Closed>, SessionReceiver)> {
    tokio::spawn(async move {
        let mut buffer = Vec::new();
        let mut taken = 0;
        loop {
            match receiver.recv_many(&mut buffer, 16).await {
                Ok(n) => {
                    taken += n as u64;
                    let sentinel = buffer.iter().any(|m| m.topic().as_str() == "sentinel");
                    buffer.clear();
                    if sentinel {
                        return (taken, None, receiver);
                    }
                }
                Err(closed) => return (taken, Some(closed), receiver),
            }
        }
    })
}

/// Broadcasts on every churn topic and "shared" until `done` is set; returns how many.
fn spawn_publisher(engine: &Engine, done: &Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let (engine, done) = (engine.clone(), Arc::clone(done));
    tokio::spawn(async move {
        let mut published = 0;
        while !done.load(SeqCst) {
            for churner in 0..CHURNERS {
                let topic = churn_topic(churner, published as usize);
                engine.broadcast(&topic, "churn".into()).await.unwrap();
            }
            engine.broadcast("shared", "shared".into()).await.unwrap();
            published += 1;
            tokio::task::yield_now().await;
        }
        published
    })
}

/// Clones of one handle subscribe and unsubscribe from many tasks while the receiver drains and
/// a publisher broadcasts: the session ends with exactly the subscriptions the last calls
/// left, every (broadcast, recipient) pair is accounted for, and a close racing the churn
/// leaves no entry behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloned_handles_churn_subscriptions_while_the_receiver_drains() {
    let config = Config::default().with_capacity(64);
    let engine = Engine::new(config).unwrap();
    let receiver = engine.open_session("tab-1").unwrap();
    receiver.subscribe("shared").await.unwrap();
    receiver.subscribe("sentinel").await.unwrap();
    let handle = receiver.handle();
    let reader = spawn_drain(receiver);
    let done = Arc::new(AtomicBool::new(false));
    let publisher = spawn_publisher(&engine, &done);

    let churners: Vec<_> = (0..CHURNERS)
        .map(|churner| {
            let handle = handle.clone();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    handle.subscribe(&churn_topic(churner, round)).await.unwrap();
                    if round % 4 != 3 {
                        handle.unsubscribe(&churn_topic(churner, round)).unwrap();
                    }
                    if round % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for churner in churners {
        churner.await.unwrap();
    }
    done.store(true, SeqCst);
    assert!(publisher.await.unwrap() > 0);

    // Each churner is left on its topic of rounds ≡ 3 (mod 4).
    let mut expected: Vec<String> = (0..CHURNERS).map(|c| churn_topic(c, 3)).collect();
    expected.extend(["sentinel".to_string(), "shared".to_string()]);
    expected.sort();
    assert_eq!(topics(&handle), expected);
    assert_eq!(engine.topic_count(), expected.len());
    for topic in &expected {
        assert_eq!(engine.subscriber_count(topic), 1, "{topic}");
    }
    let stats = engine.stats();
    assert_eq!(stats.subscriptions, expected.len() as u64);

    engine.broadcast("sentinel", "end".into()).await.unwrap();
    let (taken, closed, receiver) = joined("the sentinel", reader).await;
    assert_eq!(closed, None);
    let stats = engine.stats();
    assert_eq!(stats.delivered, taken);
    assert_accounted(&stats, receiver.queued());

    // A close from one clone while the others churn: each churner stops at `SessionClosed`.
    let reader = spawn_drain(receiver);
    done.store(false, SeqCst);
    let publisher = spawn_publisher(&engine, &done);
    let started = Arc::new(Barrier::new(CHURNERS + 1));
    let churners: Vec<_> = (0..CHURNERS)
        .map(|churner| {
            let (handle, started) = (handle.clone(), Arc::clone(&started));
            tokio::spawn(async move {
                let mut round = 0;
                loop {
                    if round == ROUNDS / 4 {
                        started.wait().await;
                    }
                    let topic = churn_topic(churner, round);
                    if let Err(error) = handle.subscribe(&topic).await {
                        return error;
                    }
                    handle.unsubscribe(&topic).unwrap();
                    round += 1;
                    if round % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    started.wait().await;
    handle.close();
    for churner in churners {
        assert_session_closed(
            Err(joined("a churner", churner).await),
            "tab-1",
            CloseReason::Unsubscribed,
        );
    }
    done.store(true, SeqCst);
    publisher.await.unwrap();

    let (_, closed, _) = joined("the closed reader", reader).await;
    assert_eq!(
        closed,
        Some(Closed {
            reason: CloseReason::Unsubscribed
        })
    );
    assert_eq!((engine.session_count(), engine.topic_count()), (0, 0));
    let stats = engine.stats();
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (0, 0, 0));
    assert_accounted(&stats, 0);
}
