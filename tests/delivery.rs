//! Delivery: exactly once to every subscriber (G1), nothing after unsubscribe (G2), idempotent
//! subscribe / unsubscribe (G3), literal topics (G6), and the stats accounting identity; for
//! handler-form sessions (through `PubSubProvider`, also as `Arc<dyn PubSubProvider>`) and for
//! pull-form sessions (`SessionReceiver`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::Bytes;
use fanout::{
    Config, Engine, Handler, InMemoryPubSub, OverflowPolicy, PubSubProvider, SessionReceiver, TryRecvError,
};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;

mod support;

use support::{settled, wait_until, StalledSession, WAIT};

// ----- helpers -----

fn seq_payload(seq: u64) -> Bytes {
    Bytes::copy_from_slice(&seq.to_be_bytes())
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload.try_into().expect("an 8-byte sequence number"))
}

type Log = Arc<Mutex<Vec<(String, String, u64)>>>;

/// A handler that logs `(session, topic, seq)` for every invocation.
fn logging_handler(session: &str, log: &Log) -> Handler {
    let session = session.to_string();
    let log = Arc::clone(log);
    Handler::new(move |topic, message| {
        log.lock()
            .unwrap()
            .push((session.clone(), topic.to_string(), seq_of(&message)));
        async {}
    })
}

fn counting_handler(count: &Arc<AtomicUsize>) -> Handler {
    let count = Arc::clone(count);
    Handler::new(move |_topic, _message| {
        count.fetch_add(1, SeqCst);
        async {}
    })
}

/// A task broadcasting `seq_payload(1)`, `seq_payload(2)`, … on "feed" until stopped, yielding
/// every `yield_every` messages. It stores a message's number in `started` before it starts
/// broadcasting it.
struct FeedPublisher {
    started: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl FeedPublisher {
    fn spawn<F, Fut>(yield_every: u64, broadcast: F) -> FeedPublisher
    where
        F: Fn(Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let started = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let task = {
            let (started, done) = (Arc::clone(&started), Arc::clone(&done));
            tokio::spawn(async move {
                let mut seq = 0;
                while !done.load(SeqCst) {
                    seq += 1;
                    started.store(seq, SeqCst);
                    broadcast(seq_payload(seq)).await;
                    if seq % yield_every == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                seq
            })
        };
        FeedPublisher { started, done, task }
    }

    /// A publisher broadcasting through `pubsub`.
    fn through_provider(pubsub: &Arc<InMemoryPubSub>, yield_every: u64) -> FeedPublisher {
        let pubsub = Arc::clone(pubsub);
        FeedPublisher::spawn(yield_every, move |payload| {
            let pubsub = Arc::clone(&pubsub);
            async move { pubsub.broadcast("feed", payload).await.unwrap() }
        })
    }

    /// A publisher broadcasting through `engine`.
    fn through_engine(engine: &Engine, yield_every: u64) -> FeedPublisher {
        let engine = engine.clone();
        FeedPublisher::spawn(yield_every, move |payload| {
            let engine = engine.clone();
            async move {
                engine.broadcast("feed", payload).await.unwrap();
            }
        })
    }

    /// The number of the newest broadcast begun, once the publisher has begun 200 more: any
    /// broadcast numbered above it began after this was called.
    async fn cutoff(&self) -> u64 {
        let cutoff = self.started.load(SeqCst);
        wait_until("the publisher to go on", || {
            self.started.load(SeqCst) >= cutoff + 200
        })
        .await;
        cutoff
    }

    /// Stops the publisher; returns the number of the last message it broadcast.
    async fn stop(self) -> u64 {
        self.done.store(true, SeqCst);
        self.task.await.unwrap()
    }
}

fn big_mailboxes() -> Config {
    Config::default().with_capacity(4096)
}

// ----- G1: exactly once to every subscriber -----

/// Subscribes 24 sessions to 2–3 of 4 topics each, broadcasts 40 numbered messages per topic, and
/// checks that every session got every message of its topics exactly once and nothing else.
async fn every_subscriber_gets_each_broadcast_exactly_once(pubsub: &dyn PubSubProvider) {
    const SESSIONS: usize = 24;
    const TOPICS: usize = 4;
    const PER_TOPIC: u64 = 40;
    let log: Log = Arc::default();
    let mut expected = Vec::new();
    for s in 0..SESSIONS {
        let session = format!("session-{s}");
        for t in (0..TOPICS).filter(|t| (s + t) % 3 != 0) {
            let topic = format!("room:{t}");
            pubsub
                .subscribe_topic(&session, &topic, logging_handler(&session, &log))
                .await
                .unwrap();
            expected.extend((0..PER_TOPIC).map(|n| (session.clone(), topic.clone(), n)));
        }
    }
    for n in 0..PER_TOPIC {
        for t in 0..TOPICS {
            pubsub
                .broadcast(&format!("room:{t}"), seq_payload(n))
                .await
                .unwrap();
        }
    }
    wait_until("every delivery to be handled", || {
        settled(&pubsub.stats()) && log.lock().unwrap().len() >= expected.len()
    })
    .await;

    let stats = pubsub.stats();
    assert_eq!(stats.published, PER_TOPIC * TOPICS as u64);
    assert_eq!(stats.recipients, expected.len() as u64);
    assert_eq!(stats.delivered, expected.len() as u64);
    assert_eq!(stats.dropped.total(), 0, "nothing may be dropped: {stats:?}");
    let mut got = log.lock().unwrap().clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "each (session, topic, message) exactly once");
    pubsub.stop().await.unwrap();
}

#[tokio::test]
async fn every_subscriber_gets_each_broadcast_exactly_once_in_memory() {
    let pubsub = InMemoryPubSub::with_config(big_mailboxes()).unwrap();
    pubsub.start().await.unwrap();
    every_subscriber_gets_each_broadcast_exactly_once(&pubsub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_each_broadcast_exactly_once_through_dyn_provider() {
    let pubsub: Arc<dyn PubSubProvider> = Arc::new(InMemoryPubSub::with_config(big_mailboxes()).unwrap());
    pubsub.start().await.unwrap();
    every_subscriber_gets_each_broadcast_exactly_once(&*pubsub).await;
}

#[tokio::test]
async fn pull_sessions_get_each_broadcast_exactly_once() {
    const PER_TOPIC: u64 = 50;
    let pubsub = InMemoryPubSub::with_config(big_mailboxes()).unwrap();
    pubsub.start().await.unwrap();
    // One receiver per way of reading; two opened through the provider, one through its engine.
    let mut by_recv = pubsub.open_session("by-recv").unwrap();
    let mut by_try_recv = pubsub.open_session("by-try-recv").unwrap();
    let mut by_stream = pubsub.engine().open_session("by-stream").unwrap();
    let mut by_recv_many = pubsub.open_session("by-recv-many").unwrap();
    for receiver in [&by_recv, &by_try_recv, &by_stream, &by_recv_many] {
        receiver.subscribe("news").await.unwrap();
        receiver.subscribe("sports").await.unwrap();
        receiver.subscribe("news").await.unwrap(); // G3: still one subscription
    }
    assert_eq!(pubsub.stats().subscriptions, 8);
    for n in 0..PER_TOPIC {
        let fanout = pubsub.engine().broadcast("news", seq_payload(n)).await.unwrap();
        assert_eq!(fanout.recipients, 4);
        assert_eq!(fanout.queued, 4);
        pubsub.broadcast("sports", seq_payload(1000 + n)).await.unwrap();
    }
    let expected: Vec<(String, u64)> = (0..PER_TOPIC)
        .flat_map(|n| [("news".to_string(), n), ("sports".to_string(), 1000 + n)])
        .collect();

    let mut got = Vec::new();
    for _ in 0..expected.len() {
        let message = by_recv.recv().await.unwrap();
        got.push((message.topic().to_string(), seq_of(message.payload())));
    }
    assert_eq!(got, expected, "recv()");
    assert_eq!(by_recv.try_recv().unwrap_err(), TryRecvError::Empty);

    let mut got = Vec::new();
    loop {
        match by_try_recv.try_recv() {
            Ok(message) => got.push((message.topic().to_string(), seq_of(message.payload()))),
            Err(TryRecvError::Empty) => break,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, expected, "try_recv()");

    let got: Vec<(String, u64)> = (&mut by_stream)
        .take(expected.len())
        .map(|message| (message.topic().to_string(), seq_of(message.payload())))
        .collect()
        .await;
    assert_eq!(got, expected, "Stream");
    assert_eq!(by_stream.queued(), 0);

    // In batches of at most 7: every call but the last takes a full batch.
    let mut got = Vec::new();
    let mut batch = Vec::new();
    while got.len() < expected.len() {
        let taken = by_recv_many.recv_many(&mut batch, 7).await.unwrap();
        assert_eq!(taken, batch.len());
        assert_eq!(
            taken,
            7.min(expected.len() - got.len()),
            "takes all queued up to the limit"
        );
        got.extend(
            batch
                .drain(..)
                .map(|m| (m.topic().to_string(), seq_of(m.payload()))),
        );
    }
    assert_eq!(got, expected, "recv_many()");
    assert_eq!(by_recv_many.queued(), 0);

    let stats = pubsub.stats();
    assert_eq!(stats.delivered, 4 * expected.len() as u64);
    assert_eq!(stats.recipients, stats.delivered);
    assert_eq!(stats.dropped.total(), 0);
}

/// `recv_many`: a zero limit returns at once; otherwise it waits for a first message, appends to
/// what the buffer holds, and once the session is closed returns `Closed` with the reason,
/// discarding (and counting) what was still queued.
#[tokio::test]
async fn recv_many_waits_for_one_then_takes_what_is_queued() {
    let pubsub = InMemoryPubSub::with_config(big_mailboxes()).unwrap();
    pubsub.start().await.unwrap();
    let mut reader = pubsub.open_session("reader").unwrap();
    reader.subscribe("t").await.unwrap();
    let mut batch = Vec::new();
    assert_eq!(
        reader.recv_many(&mut batch, 0).await,
        Ok(0),
        "limit 0, nothing queued"
    );

    let waiting = tokio::spawn(async move {
        let mut batch = vec![];
        let taken = reader.recv_many(&mut batch, 10).await;
        (reader, batch, taken)
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "waits while nothing is queued");
    pubsub.broadcast("t", seq_payload(0)).await.unwrap();
    let (mut reader, got, taken) = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(taken, Ok(1));
    assert_eq!(seq_of(got[0].payload()), 0);

    for n in 1..=5 {
        pubsub.broadcast("t", seq_payload(n)).await.unwrap();
    }
    batch.push(got.into_iter().next().unwrap());
    assert_eq!(
        reader.recv_many(&mut batch, 0).await,
        Ok(0),
        "limit 0 takes nothing"
    );
    assert_eq!(reader.recv_many(&mut batch, 3).await, Ok(3));
    let seqs: Vec<u64> = batch.iter().map(|m| seq_of(m.payload())).collect();
    assert_eq!(seqs, [0, 1, 2, 3], "appended after what the buffer held");

    pubsub.unsubscribe_all("reader").await.unwrap();
    assert_eq!(
        reader.recv_many(&mut batch, 10).await,
        Err(fanout::Closed {
            reason: fanout::CloseReason::Unsubscribed
        })
    );
    assert_eq!(batch.len(), 4, "nothing appended once closed");
    let stats = pubsub.stats();
    assert_eq!(
        (stats.delivered, stats.dropped.total()),
        (4, 2),
        "two discarded on close"
    );
}

/// G1 under concurrency: a session that subscribes while a publisher is running receives every
/// broadcast that began after its subscribe returned, exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_during_publishing_receives_every_later_broadcast() {
    const JOINERS: usize = 8;
    const SPACING: u64 = 500;
    let engine = Engine::new(Config::default().with_capacity(1 << 16)).unwrap();
    let mut joiners: Vec<SessionReceiver> = (0..JOINERS)
        .map(|j| engine.open_session(&format!("joiner-{j}")).unwrap())
        .collect();
    let publisher = FeedPublisher::through_engine(&engine, 64);
    let started = &publisher.started;
    let mut joined_at = Vec::new();
    let mut target = SPACING;
    for joiner in &joiners {
        wait_for_seq(started, target).await;
        joiner.subscribe("feed").await.unwrap();
        // Every broadcast numbered above this one began after the subscribe returned.
        let after = started.load(SeqCst);
        joined_at.push(after);
        target = after + SPACING;
    }
    wait_for_seq(started, target).await;
    let last = publisher.stop().await;

    for (joiner, &after) in joiners.iter_mut().zip(&joined_at) {
        let mut got = Vec::new();
        while let Ok(message) = joiner.try_recv() {
            got.push(seq_of(message.payload()));
        }
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{}: out of order or duplicated",
            joiner.id()
        );
        let later: Vec<u64> = got.iter().copied().filter(|&seq| seq > after).collect();
        let want: Vec<u64> = (after + 1..=last).collect();
        assert!(!want.is_empty());
        assert_eq!(
            later,
            want,
            "{} must get every broadcast after {after}",
            joiner.id()
        );
    }
    assert_eq!(engine.stats().dropped.total(), 0);
}

/// Waits (spinning, so the publisher cannot run far ahead) until the publisher has started
/// message `target`.
async fn wait_for_seq(started: &AtomicU64, target: u64) {
    let deadline = Instant::now() + WAIT;
    while started.load(SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for message {target}"
        );
        tokio::task::yield_now().await;
    }
}

/// G1 exactly once, when a session leaves a topic and comes back while a broadcast on it is
/// going through the subscriber set. The broadcast began before the unsubscribe, so it may
/// reach the session or not, but it must not reach it twice.
///
/// The interleaving is made deterministic with a waker: the broadcast wakes a parked receiver
/// as it queues the message for it, and the waker runs on the broadcasting thread, in the middle
/// of the broadcast's pass over the subscribers. There it moves every other receiver out of the
/// topic and back in, as other threads could at that moment.
#[tokio::test]
async fn resubscribe_during_broadcast_never_delivers_twice() {
    const RECEIVERS: usize = 200;
    let engine = Engine::new(Config::default()).unwrap();
    let first = engine.open_session("first").unwrap();
    first.subscribe("room").await.unwrap();
    let mut trigger = engine.open_session("trigger").unwrap();
    trigger.subscribe("room").await.unwrap();
    let mut others = vec![first];
    for r in 0..RECEIVERS {
        let receiver = engine.open_session(&format!("other-{r}")).unwrap();
        receiver.subscribe("room").await.unwrap();
        others.push(receiver);
    }
    let others = Arc::new(others);

    struct OnWake(Mutex<Option<Box<dyn FnOnce() + Send>>>);
    impl Wake for OnWake {
        fn wake(self: Arc<Self>) {
            let action = self.0.lock().unwrap().take();
            if let Some(action) = action {
                action();
            }
        }
    }
    let moved = Arc::new(AtomicBool::new(false));
    let on_wake = {
        let others = Arc::clone(&others);
        let moved = Arc::clone(&moved);
        Arc::new(OnWake(Mutex::new(Some(Box::new(move || {
            for receiver in others.iter() {
                receiver.unsubscribe("room").unwrap();
            }
            for receiver in others.iter() {
                // In one process a subscribe is done when first polled.
                let subscribed = receiver.subscribe("room").now_or_never();
                subscribed.expect("done at once").unwrap();
            }
            moved.store(true, SeqCst);
        })))))
    };
    let waker = Waker::from(Arc::clone(&on_wake));
    {
        let mut parked = pin!(trigger.recv());
        let poll = parked.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(poll.is_pending(), "nothing is queued yet");
        engine.broadcast("room", seq_payload(7)).await.unwrap();
        assert!(
            moved.load(SeqCst),
            "the broadcast must have woken the parked receiver"
        );
        let Poll::Ready(message) = parked.as_mut().poll(&mut Context::from_waker(&waker)) else {
            panic!("the trigger's message must be queued");
        };
        assert_eq!(seq_of(message.unwrap().payload()), 7);
    }
    drop((waker, on_wake));

    let mut others = Arc::try_unwrap(others).expect("the waker released its receivers");
    let mut twice = Vec::new();
    for receiver in &mut others {
        let mut copies = 0;
        while let Ok(message) = receiver.try_recv() {
            assert_eq!(seq_of(message.payload()), 7);
            copies += 1;
        }
        if copies > 1 {
            twice.push((receiver.id().to_string(), copies));
        }
    }
    assert!(
        twice.is_empty(),
        "one broadcast delivered more than once to {} sessions: {twice:?}",
        twice.len()
    );
}

// ----- broadcast_from -----

#[tokio::test]
async fn broadcast_from_skips_only_the_sender() {
    let pubsub = InMemoryPubSub::new();
    pubsub.start().await.unwrap();
    let log: Log = Arc::default();
    for session in ["alice", "bob", "carol"] {
        pubsub
            .subscribe_topic(session, "room", logging_handler(session, &log))
            .await
            .unwrap();
    }
    pubsub
        .subscribe_topic("dave", "elsewhere", logging_handler("dave", &log))
        .await
        .unwrap();
    let mut eve = pubsub.open_session("eve").unwrap();
    eve.subscribe("room").await.unwrap();

    // A sender that is not subscribed (dave) or does not exist (nobody) excludes nobody.
    let sends = [(1, "alice"), (2, "eve"), (3, "dave"), (4, "nobody")];
    for (seq, sender) in sends {
        pubsub
            .broadcast_from(sender, "room", seq_payload(seq))
            .await
            .unwrap();
    }
    let mut want = Vec::new();
    for (seq, sender) in sends {
        for session in ["alice", "bob", "carol"] {
            if session != sender {
                want.push((session.to_string(), "room".to_string(), seq));
            }
        }
    }
    want.sort();
    wait_until("handlers to run", || {
        log.lock().unwrap().len() >= want.len()
            && ["alice", "bob", "carol"]
                .iter()
                .all(|s| pubsub.session_stats(s).is_some_and(|st| st.queued == 0))
    })
    .await;

    let mut got = log.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, want);
    let mut eve_got = Vec::new();
    while let Ok(message) = eve.try_recv() {
        eve_got.push(seq_of(message.payload()));
    }
    assert_eq!(
        eve_got,
        vec![1, 3, 4],
        "a pull session is skipped only when it is the sender"
    );

    let fanout = pubsub
        .engine()
        .broadcast_from("bob", "room", seq_payload(5))
        .await
        .unwrap();
    assert_eq!(fanout.recipients, 3, "alice, carol and eve");
    let stats = pubsub.stats();
    assert_eq!(stats.recipients, 3 + 3 + 4 + 4 + 3);
}

// ----- G2: no delivery after unsubscribe -----

/// G2 while broadcasts are in flight on other threads. Each session also keeps a second topic,
/// so the unsubscribe removes one subscription of a live session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delivery_after_unsubscribe_topic_while_publishing() {
    const SESSIONS: usize = 16;
    let pubsub = Arc::new(InMemoryPubSub::new());
    pubsub.start().await.unwrap();
    let seen: Arc<Vec<Mutex<Vec<u64>>>> = Arc::new((0..SESSIONS).map(|_| Mutex::default()).collect());
    for s in 0..SESSIONS {
        let seen = Arc::clone(&seen);
        let handler = Handler::new(move |_topic, message| {
            seen[s].lock().unwrap().push(seq_of(&message));
            async {}
        });
        let session = format!("session-{s}");
        pubsub.subscribe_topic(&session, "feed", handler).await.unwrap();
        pubsub
            .subscribe_topic(&session, "keep", Handler::new(|_, _| async {}))
            .await
            .unwrap();
    }

    let publisher = FeedPublisher::through_provider(&pubsub, 32);

    let mut cutoffs = Vec::new();
    for s in 0..SESSIONS {
        wait_until("the session to receive", || !seen[s].lock().unwrap().is_empty()).await;
        pubsub
            .unsubscribe_topic(&format!("session-{s}"), "feed")
            .await
            .unwrap();
        // Any broadcast numbered above this began after the unsubscribe returned.
        cutoffs.push(publisher.cutoff().await);
    }
    publisher.stop().await;
    wait_until("every mailbox to drain", || {
        (0..SESSIONS).all(|s| {
            pubsub
                .session_stats(&format!("session-{s}"))
                .is_some_and(|st| st.queued == 0)
        })
    })
    .await;
    pubsub.stop().await.unwrap(); // waits for running handlers

    for (s, &cutoff) in cutoffs.iter().enumerate() {
        let seen = seen[s].lock().unwrap();
        let late: Vec<u64> = seen.iter().copied().filter(|&seq| seq > cutoff).collect();
        assert!(
            late.is_empty(),
            "session-{s} got {late:?} after unsubscribing at {cutoff}"
        );
    }
}

/// G2 for a pull session: after `unsubscribe` returns, no later broadcast reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_no_delivery_after_unsubscribe_while_publishing() {
    const RECEIVERS: usize = 8;
    let engine = Engine::new(Config::default()).unwrap();
    let mut receivers: Vec<SessionReceiver> = Vec::new();
    for r in 0..RECEIVERS {
        let receiver = engine.open_session(&format!("reader-{r}")).unwrap();
        receiver.subscribe("feed").await.unwrap();
        receivers.push(receiver);
    }
    let publisher = FeedPublisher::through_engine(&engine, 32);

    let mut cutoffs = Vec::new();
    for receiver in &mut receivers {
        for _ in 0..20 {
            receiver.recv().await.unwrap();
        }
        receiver.unsubscribe("feed").unwrap();
        cutoffs.push(publisher.cutoff().await);
    }
    publisher.stop().await;

    for (receiver, cutoff) in receivers.iter_mut().zip(cutoffs) {
        let mut late = Vec::new();
        while let Ok(message) = receiver.try_recv() {
            let seq = seq_of(message.payload());
            if seq > cutoff {
                late.push(seq);
            }
        }
        assert!(
            late.is_empty(),
            "{} got {late:?} after unsubscribing at {cutoff}",
            receiver.id()
        );
    }
    assert_eq!(engine.topic_count(), 0);
}

#[tokio::test]
async fn unsubscribe_all_discards_queued() {
    let pubsub = InMemoryPubSub::new();
    pubsub.start().await.unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (gate, entered, finished) = (Arc::clone(&gate), Arc::clone(&entered), Arc::clone(&finished));
        Handler::new(move |_topic, _message| {
            entered.fetch_add(1, SeqCst);
            let (gate, finished) = (Arc::clone(&gate), Arc::clone(&finished));
            async move {
                gate.acquire().await.unwrap().forget();
                finished.fetch_add(1, SeqCst);
            }
        })
    };
    pubsub.subscribe_topic("s", "t", handler.clone()).await.unwrap();
    pubsub.subscribe_topic("s", "u", handler).await.unwrap();
    for n in 0..10 {
        pubsub
            .broadcast(if n % 2 == 0 { "t" } else { "u" }, seq_payload(n))
            .await
            .unwrap();
    }
    wait_until("the first handler to block with nine queued", || {
        entered.load(SeqCst) == 1 && pubsub.session_stats("s").is_some_and(|st| st.queued == 9)
    })
    .await;

    pubsub.unsubscribe_all("s").await.unwrap();
    let stats = pubsub.stats();
    assert_eq!(
        stats.dropped.unsubscribed, 9,
        "queued messages are discarded and counted: {stats:?}"
    );
    assert_eq!(stats.delivered, 1);
    assert_eq!(stats.recipients, 10);
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (0, 0, 0));
    assert!(pubsub.session_stats("s").is_none());

    // A broadcast after unsubscribe_all finds nobody.
    pubsub.broadcast("t", seq_payload(99)).await.unwrap();
    gate.add_permits(100);
    wait_until("the running handler to finish", || finished.load(SeqCst) == 1).await;
    pubsub.stop().await.unwrap(); // joins the session task
    assert_eq!(
        entered.load(SeqCst),
        1,
        "no handler invocation starts after unsubscribe_all returns"
    );
    let stats = pubsub.stats();
    assert_eq!(stats.recipients, stats.delivered + stats.dropped.total());
}

/// G2 for `unsubscribe_all` racing a publisher on another thread: once it has returned, no
/// handler of the session starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handler_starts_after_unsubscribe_all_while_publishing() {
    const ROUNDS: usize = 200;
    let pubsub = Arc::new(InMemoryPubSub::new());
    pubsub.start().await.unwrap();
    let publisher = FeedPublisher::through_provider(&pubsub, 16);
    let violations = Arc::new(AtomicUsize::new(0));
    for round in 0..ROUNDS {
        let session = format!("session-{round}");
        let gone = Arc::new(AtomicBool::new(false));
        let handled = Arc::new(AtomicUsize::new(0));
        let handler = {
            let (gone, handled, violations) =
                (Arc::clone(&gone), Arc::clone(&handled), Arc::clone(&violations));
            Handler::new(move |_topic, _message| {
                if gone.load(SeqCst) {
                    violations.fetch_add(1, SeqCst);
                }
                handled.fetch_add(1, SeqCst);
                async {}
            })
        };
        pubsub.subscribe_topic(&session, "feed", handler).await.unwrap();
        wait_until("the session to receive", || handled.load(SeqCst) > 0).await;
        pubsub.unsubscribe_all(&session).await.unwrap();
        gone.store(true, SeqCst);
    }
    publisher.stop().await;
    pubsub.stop().await.unwrap();
    assert_eq!(
        violations.load(SeqCst),
        0,
        "handler invocations started after unsubscribe_all returned"
    );
    let stats = pubsub.stats();
    assert_eq!(
        stats.recipients,
        stats.delivered + stats.dropped.total(),
        "{stats:?}"
    );
}

/// How the session is closed before `unsubscribe_all` runs, while its handler call is being made.
#[derive(Clone, Copy, Debug)]
enum FirstClose {
    /// A broadcast finds its mailbox full and disconnects it (the reaper, or the next
    /// operation's reaping, retires it).
    Disconnected,
    /// Its last topic is unsubscribed, which retires a handler-form session (G7).
    LastTopicUnsubscribed,
}

/// G2 when the session was closed first: a handler call that began before that close holds
/// `unsubscribe_all` until it has been made, also once the session has been retired and its id
/// finds nothing. The handler's synchronous part is inside that window (the task's open check
/// to the call's return): here it blocks until released.
async fn unsubscribe_all_waits_for_a_call_begun_before(first_close: FirstClose) {
    let stalled = StalledSession::start().await;
    let pubsub = Arc::clone(&stalled.pubsub);

    let engine = pubsub.engine().clone();
    let mut first_closer = None;
    match first_close {
        FirstClose::Disconnected => {
            stalled.disconnect().await;
            // An operation on another id retires disconnected sessions it finds queued, but it
            // never waits for their handlers: it returns while this one is still blocked.
            let (done, done_rx) = std::sync::mpsc::channel();
            let (engine, runtime) = (engine.clone(), tokio::runtime::Handle::current());
            std::thread::spawn(move || {
                done.send(runtime.block_on(engine.unsubscribe_all("bystander")))
                    .unwrap()
            });
            let outcome = done_rx.recv_timeout(WAIT / 5);
            assert!(
                matches!(outcome, Ok(Ok(()))),
                "an operation on another session waited for this one's handler call: {outcome:?}"
            );
        }
        FirstClose::LastTopicUnsubscribed => {
            // On a thread of its own, not a worker: it waits for the handler call, and the
            // runtime's other worker has to stay free for this test's timers.
            let (unsubscriber, runtime) = (Arc::clone(&pubsub), tokio::runtime::Handle::current());
            first_closer = Some(std::thread::spawn(move || {
                runtime
                    .block_on(unsubscriber.unsubscribe_topic("slow", "room"))
                    .unwrap()
            }));
            // Its detach comes before its close, under the session's lock; the sleep lets it
            // reach the close.
            wait_until("the unsubscribe", || {
                pubsub.engine().subscriber_count("room") == 0
            })
            .await;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let returned = Arc::new(AtomicBool::new(false));
    let unsubscriber = {
        let returned = Arc::clone(&returned);
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            runtime.block_on(engine.unsubscribe_all("slow")).unwrap();
            returned.store(true, SeqCst);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let returned_early = returned.load(SeqCst);
    stalled.release.send(()).unwrap();
    unsubscriber.join().unwrap();
    if let Some(first_closer) = first_closer {
        first_closer.join().unwrap();
    }
    assert!(
        !returned_early,
        "{first_close:?}: unsubscribe_all returned while a handler call begun before was still being made"
    );
    wait_until("the session to leave", || pubsub.engine().session_count() == 0).await;
    assert_eq!(*stalled.handled.lock().unwrap(), ["first"]);
    pubsub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_all_waits_for_a_handler_call_begun_before_a_disconnect() {
    unsubscribe_all_waits_for_a_call_begun_before(FirstClose::Disconnected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_all_waits_for_a_handler_call_begun_before_its_last_unsubscribe() {
    unsubscribe_all_waits_for_a_call_begun_before(FirstClose::LastTopicUnsubscribed).await;
}

// ----- G3: idempotence -----

#[tokio::test]
async fn subscribing_twice_delivers_once_to_the_newer_handler() {
    let pubsub = InMemoryPubSub::new();
    pubsub.start().await.unwrap();
    let older = Arc::new(AtomicUsize::new(0));
    let newer = Arc::new(AtomicUsize::new(0));
    pubsub
        .subscribe_topic("s", "t", counting_handler(&older))
        .await
        .unwrap();
    pubsub
        .subscribe_topic("s", "t", counting_handler(&newer))
        .await
        .unwrap();
    let stats = pubsub.stats();
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (1, 1, 1));
    assert_eq!(pubsub.session_stats("s").unwrap().topics, 1);
    assert_eq!(pubsub.engine().session_topics("s"), vec!["t"]);

    for n in 0..5 {
        pubsub.broadcast("t", seq_payload(n)).await.unwrap();
    }
    wait_until("five deliveries", || older.load(SeqCst) + newer.load(SeqCst) >= 5).await;
    wait_until("the session to settle", || settled(&pubsub.stats())).await;
    assert_eq!(
        newer.load(SeqCst),
        5,
        "one delivery per broadcast, to the newer handler"
    );
    assert_eq!(older.load(SeqCst), 0, "the older handler is replaced");
    assert_eq!(pubsub.stats().recipients, 5);
    pubsub.stop().await.unwrap();
}

#[tokio::test]
async fn pull_subscribing_twice_delivers_once() {
    let engine = Engine::new(Config::default()).unwrap();
    let mut receiver = engine.open_session("s").unwrap();
    receiver.subscribe("t").await.unwrap();
    receiver.subscribe("t").await.unwrap();
    assert_eq!(receiver.topics(), vec!["t"]);
    assert_eq!(engine.stats().subscriptions, 1);
    let fanout = engine.broadcast("t", seq_payload(1)).await.unwrap();
    assert_eq!(fanout.recipients, 1);
    assert_eq!(seq_of(receiver.recv().await.unwrap().payload()), 1);
    assert_eq!(receiver.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[tokio::test]
async fn unsubscribing_what_is_not_subscribed_succeeds_and_changes_nothing() {
    let pubsub = InMemoryPubSub::new();
    pubsub.start().await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    pubsub
        .subscribe_topic("s", "t", counting_handler(&count))
        .await
        .unwrap();
    let before = pubsub.stats();

    pubsub.unsubscribe_topic("s", "never-subscribed").await.unwrap();
    pubsub.unsubscribe_topic("unknown-session", "t").await.unwrap();
    pubsub.unsubscribe_all("unknown-session").await.unwrap();
    assert_eq!(pubsub.stats(), before);
    assert_eq!(pubsub.engine().session_topics("s"), vec!["t"]);

    pubsub.broadcast("t", seq_payload(1)).await.unwrap();
    wait_until("the delivery", || count.load(SeqCst) == 1).await;

    // Twice in a row: the second finds nothing and succeeds.
    pubsub.unsubscribe_topic("s", "t").await.unwrap();
    pubsub.unsubscribe_topic("s", "t").await.unwrap();
    pubsub.unsubscribe_all("s").await.unwrap();
    pubsub.unsubscribe_all("s").await.unwrap();
    let stats = pubsub.stats();
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (0, 0, 0));

    let receiver = pubsub.open_session("pull").unwrap();
    receiver.unsubscribe("never-subscribed").unwrap();
    assert!(receiver.topics().is_empty());
    assert!(
        receiver.close_reason().is_none(),
        "a pull session stays open with no topics"
    );
    pubsub.stop().await.unwrap();
    assert_eq!(count.load(SeqCst), 1);
}

// ----- G6: topics are literal -----

/// Topics that would be wildcards, separators, escapes or equal after normalisation somewhere.
const LITERAL_TOPICS: &[&str] = &[
    "a",
    "A",
    "a ",
    " a",
    "a.b",
    "a.*",
    "a.>",
    "a.b.c",
    "a.*.c",
    "a.**",
    "a.",
    ".a",
    "*",
    ">",
    "#",
    "+",
    "a/+",
    "a/#",
    "a?",
    "a*",
    ".*",
    "a[b]",
    "[ab]",
    "a[",
    "^a$",
    "a|b",
    "{a,b}",
    "\"quoted\"",
    "'single'",
    "a b",
    "a\nb",
    "a\tb",
    "a\\b",
    "a\\*",
    "%",
    "a%b",
    "a_b",
    "$SYS",
    "a\0b",
    "\u{e9}",   // é, one code point
    "e\u{301}", // é, e + combining accent
    "ünïcödé",
    "日本語",
    "emoji 🎉",
];

#[tokio::test]
async fn topics_are_literal_and_isolated() {
    let engine = Engine::new(Config::default()).unwrap();
    let mut receivers: Vec<(&str, SessionReceiver)> = Vec::new();
    for (i, &topic) in LITERAL_TOPICS.iter().enumerate() {
        let receiver = engine.open_session(&format!("r{i}")).unwrap();
        receiver.subscribe(topic).await.unwrap();
        receivers.push((topic, receiver));
    }
    assert_eq!(
        engine.topic_count(),
        LITERAL_TOPICS.len(),
        "every topic is distinct"
    );
    for &topic in LITERAL_TOPICS {
        let fanout = engine.broadcast(topic, Bytes::from(topic)).await.unwrap();
        assert_eq!(fanout.recipients, 1, "{topic:?} reaches only its own subscriber");
    }
    // Topics nobody subscribed to, that a pattern would match.
    for topic in ["a.b.d", "ab", "b", "a.c", "aa", "a/x", "x"] {
        let fanout = engine.broadcast(topic, Bytes::from(topic)).await.unwrap();
        assert_eq!(fanout.recipients, 0, "{topic:?} has no subscriber");
    }
    for (topic, receiver) in &mut receivers {
        let message = receiver.try_recv().unwrap();
        assert_eq!(message.topic(), topic);
        assert_eq!(message.payload(), topic.as_bytes());
        assert_eq!(
            receiver.try_recv().unwrap_err(),
            TryRecvError::Empty,
            "{topic:?} got more than its own"
        );
    }
}

/// What one handler received: (topic, payload) per invocation.
type Received = Vec<(String, Bytes)>;

#[tokio::test]
async fn handler_topics_are_literal_and_isolated() {
    let pubsub: Arc<dyn PubSubProvider> = Arc::new(InMemoryPubSub::new());
    pubsub.start().await.unwrap();
    let got: Arc<Mutex<HashMap<usize, Received>>> = Arc::default();
    for (i, &topic) in LITERAL_TOPICS.iter().enumerate() {
        let got = Arc::clone(&got);
        let handler = Handler::new(move |topic, message| {
            got.lock()
                .unwrap()
                .entry(i)
                .or_default()
                .push((topic.to_string(), message));
            async {}
        });
        pubsub
            .subscribe_topic(&format!("s{i}"), topic, handler)
            .await
            .unwrap();
    }
    assert_eq!(pubsub.stats().topics, LITERAL_TOPICS.len() as u64);
    for &topic in LITERAL_TOPICS {
        pubsub.broadcast(topic, Bytes::from(topic)).await.unwrap();
    }
    wait_until("every handler to run", || {
        got.lock().unwrap().len() == LITERAL_TOPICS.len()
    })
    .await;
    wait_until("the sessions to settle", || settled(&pubsub.stats())).await;
    let got = got.lock().unwrap().clone();
    for (i, &topic) in LITERAL_TOPICS.iter().enumerate() {
        assert_eq!(
            got[&i],
            vec![(topic.to_string(), Bytes::from(topic))],
            "subscriber of {topic:?}"
        );
    }
    assert_eq!(pubsub.stats().recipients, LITERAL_TOPICS.len() as u64);
    pubsub.stop().await.unwrap();
}

// ----- cooperative scheduling -----

const QUEUED: u64 = 1_000;

/// Takes `QUEUED` messages (with `recv`, or as a stream); returns how many it had taken when a
/// task spawned just before first ran (`None`: only after the last).
async fn taken_before_a_spawned_task_ran(receiver: &mut SessionReceiver, as_stream: bool) -> Option<u64> {
    let ran = Arc::new(AtomicBool::new(false));
    let other = tokio::spawn({
        let ran = Arc::clone(&ran);
        async move { ran.store(true, SeqCst) }
    });
    let mut taken_when_it_ran = None;
    for n in 0..QUEUED {
        if as_stream {
            receiver.next().await.expect("queued");
        } else {
            receiver.recv().await.expect("queued");
        }
        if taken_when_it_ran.is_none() && ran.load(SeqCst) {
            taken_when_it_ran = Some(n);
        }
    }
    other.await.unwrap();
    taken_when_it_ran
}

/// A receiver whose mailbox never empties still lets the other tasks on its worker run: `recv`
/// and the stream spend tokio's cooperative budget, as tokio's own channels do.
#[tokio::test(flavor = "current_thread")]
async fn busy_receiver_lets_other_tasks_on_its_worker_run() {
    let engine = Engine::new(big_mailboxes()).unwrap();
    for as_stream in [false, true] {
        let mut receiver = engine.open_session(&format!("stream-{as_stream}")).unwrap();
        receiver.subscribe("t").await.unwrap();
        for n in 0..QUEUED {
            engine.broadcast("t", seq_payload(n)).await.unwrap();
        }
        let form = if as_stream { "stream" } else { "recv" };
        let taken = taken_before_a_spawned_task_ran(&mut receiver, as_stream)
            .await
            .unwrap_or_else(|| panic!("{form}: the other task waited for all {QUEUED} messages"));
        assert!(taken <= 256, "{form}: the other task ran after {taken} messages");
    }
}

// ----- stats accounting -----

/// `recipients == delivered + dropped.total() + queued`, with messages in every state: delivered,
/// dropped by policy, discarded on close, still queued, and in a running handler.
#[tokio::test]
async fn accounting_identity_holds_in_every_state() {
    let config = Config::default()
        .with_capacity(4)
        .with_policy(OverflowPolicy::DropNewest);
    let pubsub = InMemoryPubSub::with_config(config).unwrap();
    pubsub.start().await.unwrap();
    let mut reader = pubsub.open_session("reader").unwrap();
    reader.subscribe("t").await.unwrap();
    let closer = pubsub.open_session("closer").unwrap();
    closer.subscribe("t").await.unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
        Handler::new(move |_topic, _message| {
            entered.fetch_add(1, SeqCst);
            let gate = Arc::clone(&gate);
            async move { gate.acquire().await.unwrap().forget() }
        })
    };
    pubsub.subscribe_topic("stalled", "t", handler).await.unwrap();

    let identity = |pubsub: &InMemoryPubSub| {
        let stats = pubsub.stats();
        let queued: usize = ["reader", "closer", "stalled"]
            .iter()
            .filter_map(|s| pubsub.session_stats(s))
            .map(|st| st.queued)
            .sum();
        assert_eq!(
            stats.recipients,
            stats.delivered + stats.dropped.total() + queued as u64,
            "queued {queued}, {stats:?}"
        );
        (stats, queued)
    };

    for n in 0..10 {
        pubsub.broadcast("t", seq_payload(n)).await.unwrap();
    }
    identity(&pubsub);
    wait_until("the stalled handler to start", || entered.load(SeqCst) == 1).await;
    reader.recv().await.unwrap();
    reader.recv().await.unwrap();
    identity(&pubsub);
    drop(closer);
    let (stats, queued) = identity(&pubsub);
    assert_eq!(stats.recipients, 30);
    assert_eq!(stats.delivered, 3, "two read, one in the stalled handler");
    assert_eq!(
        stats.dropped.drop_newest, 18,
        "six per session found the mailbox full"
    );
    assert_eq!(stats.dropped.unsubscribed, 4, "the closed receiver's queue");
    assert_eq!(queued, 2 + 3);

    gate.add_permits(100);
    wait_until("the stalled session to drain", || {
        pubsub.session_stats("stalled").is_some_and(|st| st.queued == 0) && entered.load(SeqCst) == 4
    })
    .await;
    while reader.try_recv().is_ok() {}
    let (stats, queued) = identity(&pubsub);
    assert_eq!(queued, 0);
    assert_eq!(stats.delivered, 8);
    pubsub.stop().await.unwrap();
    let stats = pubsub.stats();
    assert_eq!(
        stats.recipients,
        stats.delivered + stats.dropped.total(),
        "after stop: {stats:?}"
    );
}

#[tokio::test]
async fn subscriber_count_follows_subscribe_and_unsubscribe() {
    let engine = Engine::new(Config::default()).unwrap();
    assert_eq!(engine.subscriber_count("room"), 0);
    let a = engine.open_session("a").unwrap();
    let b = engine.open_session("b").unwrap();
    a.subscribe("room").await.unwrap();
    b.subscribe("room").await.unwrap();
    b.subscribe("other").await.unwrap();
    // G3: subscribing again counts once.
    a.subscribe("room").await.unwrap();
    assert_eq!(engine.subscriber_count("room"), 2);
    assert_eq!(engine.subscriber_count("other"), 1);
    assert_eq!(engine.subscriber_count("ro"), 0);

    a.unsubscribe("room").unwrap();
    assert_eq!(engine.subscriber_count("room"), 1);
    engine.unsubscribe_all("b").await.unwrap();
    assert_eq!(engine.subscriber_count("room"), 0);
    assert_eq!(engine.subscriber_count("other"), 0);
    assert_eq!(engine.topic_count(), 0);
}
