//! Per-session order and one-at-a-time handling (G4): each session sees each publisher's
//! messages in publish order across all its topics, and its handlers never run concurrently.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fanout::{
    Config, Engine, Handler, InMemoryPubSub, Notice, OverflowPolicy, PubSubProvider, SessionReceiver,
    TryRecvError,
};
use futures_util::StreamExt;

mod support;

use support::{settled, started, wait_until, WAIT};

// ----- helpers -----

/// A payload naming its publisher and its place in that publisher's sequence.
fn tagged(publisher: u8, seq: u64) -> Bytes {
    let mut bytes = vec![publisher];
    bytes.extend_from_slice(&seq.to_be_bytes());
    Bytes::from(bytes)
}

fn untag(payload: &[u8]) -> (u8, u64) {
    (
        payload[0],
        u64::from_be_bytes(payload[1..9].try_into().expect("a tagged payload")),
    )
}

fn topic(seq: u64, topics: u64) -> String {
    format!("topic-{}", seq % topics)
}

/// One session's log of (publisher, seq) tags, in handling order.
type Log = Arc<Mutex<Vec<(u8, u64)>>>;

/// Subscribes `session` to every topic, with a different handler per topic, all appending the
/// payload's tag to the session's log.
async fn subscribe_logging(pubsub: &InMemoryPubSub, session: &str, topics: u64, log: &Log) {
    for t in 0..topics {
        let log = Arc::clone(log);
        let handler = Handler::new(move |_topic, message| {
            log.lock().unwrap().push(untag(&message));
            async {}
        });
        pubsub
            .subscribe_topic(session, &format!("topic-{t}"), handler)
            .await
            .unwrap();
    }
}

/// A started provider whose mailboxes hold every message these tests send.
async fn started_roomy() -> Arc<InMemoryPubSub> {
    Arc::new(started(Config::default().with_capacity(8192)).await)
}

/// Subscribes `session-0` … `session-{sessions - 1}` with [`subscribe_logging`]; returns their logs.
async fn logging_sessions(pubsub: &InMemoryPubSub, sessions: usize, topics: u64) -> Vec<Log> {
    let logs: Vec<Log> = (0..sessions).map(|_| Arc::default()).collect();
    for (s, log) in logs.iter().enumerate() {
        subscribe_logging(pubsub, &format!("session-{s}"), topics, log).await;
    }
    logs
}

/// Waits until every broadcast has ended and every log holds at least `n` entries.
async fn wait_for_logs(pubsub: &InMemoryPubSub, logs: &[Log], n: u64) {
    wait_until("every delivery", || settled(&pubsub.stats())).await;
    wait_until("every handler to log", || {
        logs.iter().all(|log| log.lock().unwrap().len() as u64 >= n)
    })
    .await;
}

/// Spawns one task per publisher in `publishers`, each broadcasting `tagged(p, 1..=messages)`
/// on `topic_of(p, seq)` and yielding every `yield_every` messages.
fn spawn_publishers(
    pubsub: &Arc<InMemoryPubSub>,
    publishers: std::ops::RangeInclusive<u8>,
    messages: u64,
    yield_every: u64,
    topic_of: fn(u8, u64) -> String,
) -> Vec<tokio::task::JoinHandle<()>> {
    publishers
        .map(|p| {
            let pubsub = Arc::clone(pubsub);
            tokio::spawn(async move {
                for seq in 1..=messages {
                    pubsub.broadcast(&topic_of(p, seq), tagged(p, seq)).await.unwrap();
                    if seq % yield_every == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect()
}

/// Asserts `seqs` is exactly 1..=n (complete and in order).
fn assert_complete_in_order(seqs: &[u64], n: u64, what: &str) {
    if let Some(at) = seqs.windows(2).position(|w| w[0] >= w[1]) {
        panic!(
            "{what}: out of order at index {at}: {} then {}",
            seqs[at],
            seqs[at + 1]
        );
    }
    assert_eq!(seqs.len() as u64, n, "{what}: every message, once");
    assert_eq!(seqs.first(), Some(&1), "{what}");
}

// ----- handler form -----

/// G4: one publisher, broadcasting round robin over four topics (some with `broadcast_from`):
/// every session, subscribed to all four with a different handler each, sees publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_order_holds_across_topics() {
    const SESSIONS: usize = 8;
    const TOPICS: u64 = 4;
    const MESSAGES: u64 = 4000;
    let pubsub = started_roomy().await;
    let logs = logging_sessions(&pubsub, SESSIONS, TOPICS).await;
    for seq in 1..=MESSAGES {
        if seq % 3 == 0 {
            pubsub
                .broadcast_from("outsider", &topic(seq, TOPICS), tagged(0, seq))
                .await
                .unwrap();
        } else {
            pubsub
                .broadcast(&topic(seq, TOPICS), tagged(0, seq))
                .await
                .unwrap();
        }
        if seq % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_for_logs(&pubsub, &logs, MESSAGES).await;
    assert_eq!(pubsub.stats().dropped.total(), 0);
    for (s, log) in logs.iter().enumerate() {
        let seqs: Vec<u64> = log.lock().unwrap().iter().map(|&(_, seq)| seq).collect();
        assert_complete_in_order(&seqs, MESSAGES, &format!("session-{s}"));
    }
    pubsub.stop().await.unwrap();
}

/// G4 with a small `drop_oldest` mailbox and a slow session: the order still holds, and the
/// gaps are exactly the counted drops, reported to the session as missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_holds_under_drop_oldest_and_gaps_are_counted() {
    const TOPICS: u64 = 3;
    const MESSAGES: u64 = 3000;
    let config = Config::default()
        .with_capacity(8)
        .with_policy(OverflowPolicy::DropOldest);
    let pubsub = started(config).await;
    let missed = Arc::new(AtomicU64::new(0));
    {
        let missed = Arc::clone(&missed);
        pubsub.on_notice(move |notice| {
            if let Notice::Missed { count, .. } = notice {
                missed.fetch_add(*count, SeqCst);
            }
        });
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    for t in 0..TOPICS {
        let seen = Arc::clone(&seen);
        let handler = Handler::new(move |_topic, message| {
            seen.lock().unwrap().push(untag(&message).1);
            tokio::task::yield_now()
        });
        pubsub
            .subscribe_topic("slow", &format!("topic-{t}"), handler)
            .await
            .unwrap();
    }
    for seq in 1..=MESSAGES {
        pubsub
            .broadcast(&topic(seq, TOPICS), tagged(0, seq))
            .await
            .unwrap();
        if seq % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_until("the session to settle", || settled(&pubsub.stats())).await;
    wait_until("the handler to log", || {
        pubsub.stats().delivered == seen.lock().unwrap().len() as u64
    })
    .await;

    let seen = seen.lock().unwrap().clone();
    let stats = pubsub.stats();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "publish order, gaps allowed"
    );
    assert_eq!(
        seen.last(),
        Some(&MESSAGES),
        "the newest message survives drop_oldest"
    );
    let gaps = MESSAGES - seen.len() as u64;
    assert!(
        gaps > 0,
        "the mailbox of 8 must overflow, or this test checks nothing"
    );
    assert_eq!(
        stats.dropped.drop_oldest, gaps,
        "every gap is a counted drop: {stats:?}"
    );
    assert_eq!(stats.dropped.total(), gaps);
    assert_eq!(missed.load(SeqCst), gaps, "the session is told what it missed");
    pubsub.stop().await.unwrap();
}

/// G4 with two publishers on different threads: every session sees each publisher's messages
/// in that publisher's order (the two streams may interleave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_each_keep_their_order_per_session() {
    const SESSIONS: usize = 6;
    const TOPICS: u64 = 3;
    const MESSAGES: u64 = 3000;
    let pubsub = started_roomy().await;
    let logs = logging_sessions(&pubsub, SESSIONS, TOPICS).await;
    // The two publishers walk the topics in different orders.
    let publishers = spawn_publishers(&pubsub, 1..=2, MESSAGES, 128, |p, seq| {
        topic(if p == 1 { seq } else { MESSAGES - seq }, TOPICS)
    });
    for publisher in publishers {
        publisher.await.unwrap();
    }
    wait_for_logs(&pubsub, &logs, 2 * MESSAGES).await;
    assert_eq!(pubsub.stats().dropped.total(), 0);
    for (s, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        for p in 1..=2u8 {
            let seqs: Vec<u64> = log
                .iter()
                .filter(|&&(from, _)| from == p)
                .map(|&(_, seq)| seq)
                .collect();
            assert_complete_in_order(&seqs, MESSAGES, &format!("session-{s}, publisher {p}"));
        }
    }
    pubsub.stop().await.unwrap();
}

/// G4: a session runs one handler invocation at a time, across all its topics and handlers,
/// even while several publishers broadcast from several threads and handlers are replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handlers_of_one_session_never_overlap() {
    const SESSIONS: usize = 4;
    const TOPICS: u64 = 3;
    const MESSAGES: u64 = 1500;
    let pubsub = started_roomy().await;
    let in_flight: Arc<Vec<AtomicUsize>> = Arc::new((0..SESSIONS).map(|_| AtomicUsize::new(0)).collect());
    let most: Arc<Vec<AtomicUsize>> = Arc::new((0..SESSIONS).map(|_| AtomicUsize::new(0)).collect());
    let invocations = Arc::new(AtomicU64::new(0));
    let overlapping_handler = |s: usize| {
        let (in_flight, most, invocations) = (
            Arc::clone(&in_flight),
            Arc::clone(&most),
            Arc::clone(&invocations),
        );
        Handler::new(move |_topic, message| {
            let (in_flight, most, invocations) = (
                Arc::clone(&in_flight),
                Arc::clone(&most),
                Arc::clone(&invocations),
            );
            async move {
                invocations.fetch_add(1, SeqCst);
                let now = in_flight[s].fetch_add(1, SeqCst) + 1;
                most[s].fetch_max(now, SeqCst);
                tokio::task::yield_now().await;
                if untag(&message).1 % 50 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                in_flight[s].fetch_sub(1, SeqCst);
            }
        })
    };
    for s in 0..SESSIONS {
        for t in 0..TOPICS {
            pubsub
                .subscribe_topic(
                    &format!("session-{s}"),
                    &format!("topic-{t}"),
                    overlapping_handler(s),
                )
                .await
                .unwrap();
        }
    }
    let publishers = spawn_publishers(&pubsub, 1..=3, MESSAGES, 64, |p, seq| {
        topic(seq + u64::from(p), TOPICS)
    });
    // Replace handlers while messages flow: the replacement must not run beside the old one.
    for round in 0..20 {
        for s in 0..SESSIONS {
            let t = round % TOPICS;
            pubsub
                .subscribe_topic(
                    &format!("session-{s}"),
                    &format!("topic-{t}"),
                    overlapping_handler(s),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    wait_until("every delivery", || settled(&pubsub.stats())).await;
    pubsub.stop().await.unwrap();
    for (s, most) in most.iter().enumerate() {
        assert_eq!(most.load(SeqCst), 1, "session-{s} ran handlers concurrently");
    }
    let stats = pubsub.stats();
    assert_eq!(stats.dropped.total(), 0);
    assert_eq!(invocations.load(SeqCst), stats.delivered);
    assert_eq!(stats.delivered, 3 * MESSAGES * SESSIONS as u64);
}

// ----- pull form -----

#[derive(Clone, Copy, Debug)]
enum Read {
    Recv,
    TryRecv,
    Stream,
}

/// Reads `n` messages from `receiver` the given way, returning their tags.
async fn read_n(mut receiver: SessionReceiver, how: Read, n: usize) -> Vec<(u8, u64)> {
    let mut got = Vec::with_capacity(n);
    match how {
        Read::Recv => {
            while got.len() < n {
                got.push(untag(receiver.recv().await.unwrap().payload()));
            }
        }
        Read::TryRecv => {
            while got.len() < n {
                match receiver.try_recv() {
                    Ok(message) => got.push(untag(message.payload())),
                    Err(TryRecvError::Empty) => tokio::task::yield_now().await,
                    Err(closed) => panic!("{closed}"),
                }
            }
        }
        Read::Stream => {
            while got.len() < n {
                got.push(untag(receiver.next().await.unwrap().payload()));
            }
        }
    }
    got
}

/// G4 for pull sessions, read with `recv()`, `try_recv()` and as a `Stream` while one publisher
/// broadcasts round robin over their topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_receivers_see_publish_order_across_topics() {
    const TOPICS: u64 = 5;
    const MESSAGES: u64 = 5000;
    let engine = Engine::new(Config::default().with_capacity(8192)).unwrap();
    let mut readers = Vec::new();
    for how in [Read::Recv, Read::TryRecv, Read::Stream] {
        let receiver = engine.open_session(&format!("{how:?}")).unwrap();
        for t in 0..TOPICS {
            receiver.subscribe(&format!("topic-{t}")).await.unwrap();
        }
        readers.push((how, tokio::spawn(read_n(receiver, how, MESSAGES as usize))));
    }
    for seq in 1..=MESSAGES {
        engine
            .broadcast(&topic(seq, TOPICS), tagged(0, seq))
            .await
            .unwrap();
        if seq % 128 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (how, reader) in readers {
        let got = tokio::time::timeout(WAIT, reader)
            .await
            .expect("the reader finishes")
            .unwrap();
        let seqs: Vec<u64> = got.iter().map(|&(_, seq)| seq).collect();
        assert_complete_in_order(&seqs, MESSAGES, &format!("{how:?}"));
    }
    assert_eq!(engine.stats().dropped.unsubscribed, 0);
}

/// G4 for pull sessions with two publishers on different threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_receivers_keep_each_publishers_order() {
    const TOPICS: u64 = 3;
    const MESSAGES: u64 = 3000;
    let engine = Engine::new(Config::default().with_capacity(8192)).unwrap();
    let mut readers = Vec::new();
    for how in [Read::Recv, Read::Stream, Read::TryRecv] {
        let receiver = engine.open_session(&format!("{how:?}")).unwrap();
        for t in 0..TOPICS {
            receiver.subscribe(&format!("topic-{t}")).await.unwrap();
        }
        readers.push((how, tokio::spawn(read_n(receiver, how, 2 * MESSAGES as usize))));
    }
    let publishers: Vec<_> = (1..=2u8)
        .map(|p| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for seq in 1..=MESSAGES {
                    engine
                        .broadcast(&topic(seq * u64::from(p), TOPICS), tagged(p, seq))
                        .await
                        .unwrap();
                    if seq % 128 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for (how, reader) in readers {
        let got = tokio::time::timeout(WAIT, reader)
            .await
            .expect("the reader finishes")
            .unwrap();
        for p in 1..=2u8 {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|&&(from, _)| from == p)
                .map(|&(_, seq)| seq)
                .collect();
            assert_complete_in_order(&seqs, MESSAGES, &format!("{how:?}, publisher {p}"));
        }
    }
    assert_eq!(engine.stats().dropped.total(), 0);
}
