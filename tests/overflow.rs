//! Overflow policies: a stalled session beside a healthy one (G5, G7), per-prefix overrides,
//! and handlers that panic or fail.
//!
//! A "stalled" handler-form session records each message, then waits on a semaphore the test
//! holds; a "stalled" pull-form session is a `SessionReceiver` nobody reads. The healthy
//! session must get every message before the next one is broadcast (no fixed sleeps: each wait
//! polls its condition for up to five seconds). Handler-form isolation tests run on two worker
//! threads, so the stalled and the healthy session really run in parallel; tests whose expected
//! outcome depends on the order tasks run in use the current-thread runtime.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout::{
    Bytes, CloseReason, Closed, Config, Fallback, Handler, InMemoryPubSub, Notice, OverflowPolicy,
    PubSubError, PubSubProvider, SessionReceiver, TopicOverride, TryRecvError,
};
use tokio::sync::Semaphore;

mod support;

use support::{started, text, wait_until, Inbox, WAIT};

/// A block timeout no test reaches: a broadcaster that returns was released by something else.
const LONG_BLOCK: Duration = Duration::from_secs(30);

/// `["m{first}", …, "m{last}"]`.
fn numbered(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// Collects every notice the provider emits.
fn collect_notices(pubsub: &InMemoryPubSub) -> Arc<Mutex<Vec<Notice>>> {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&notices);
    assert!(pubsub.on_notice(move |notice| sink.lock().unwrap().push(notice.clone())));
    notices
}

/// Subscribes a stalled handler session "slow" (held by the returned gate) and a healthy one
/// to "room"; returns their inboxes and the gate.
async fn stalled_and_healthy_handlers(pubsub: &InMemoryPubSub) -> (Inbox, Inbox, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let (slow, healthy) = (Inbox::default(), Inbox::default());
    pubsub
        .subscribe_topic("slow", "room", slow.stalled_handler(&gate))
        .await
        .unwrap();
    pubsub
        .subscribe_topic("healthy", "room", healthy.handler())
        .await
        .unwrap();
    (slow, healthy, gate)
}

/// Opens receivers "slow" and "healthy", both subscribed to "room".
async fn slow_and_healthy_receivers(pubsub: &InMemoryPubSub) -> (SessionReceiver, SessionReceiver) {
    let slow = pubsub.open_session("slow").unwrap();
    let healthy = pubsub.open_session("healthy").unwrap();
    slow.subscribe("room").await.unwrap();
    healthy.subscribe("room").await.unwrap();
    (slow, healthy)
}

/// Broadcasts `m{i}` for each `i`, waiting after each for the healthy handler session to have
/// it: the stalled session never delays it (G5).
async fn broadcast_with_healthy_handler(
    pubsub: &InMemoryPubSub,
    topic: &str,
    range: std::ops::RangeInclusive<usize>,
    healthy: &Inbox,
) {
    for i in range {
        let payload = format!("m{i}");
        pubsub
            .broadcast(topic, Bytes::from(payload.clone()))
            .await
            .expect("broadcast");
        wait_until(&format!("the healthy session to get {payload}"), || {
            healthy.payloads().last() == Some(&payload)
        })
        .await;
    }
}

/// Broadcasts `m{i}` for each `i`, reading each from the healthy receiver before the next.
async fn broadcast_with_healthy_receiver(
    pubsub: &InMemoryPubSub,
    topic: &str,
    range: std::ops::RangeInclusive<usize>,
    healthy: &mut SessionReceiver,
) {
    for i in range {
        let payload = format!("m{i}");
        pubsub
            .broadcast(topic, Bytes::from(payload.clone()))
            .await
            .expect("broadcast");
        let message = tokio::time::timeout(WAIT, healthy.recv())
            .await
            .expect("the healthy receiver gets each message at once")
            .expect("the healthy receiver stays open");
        assert_eq!(text(message.payload()), payload);
    }
}

/// Every message still queued in `receiver`, oldest first, with its `missed_before`.
fn drain(receiver: &mut SessionReceiver) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    loop {
        match receiver.try_recv() {
            Ok(message) => out.push((text(message.payload()), message.missed_before())),
            Err(TryRecvError::Empty) => return out,
            Err(other) => panic!("receiver closed while draining: {other}"),
        }
    }
}

fn config(capacity: usize, policy: OverflowPolicy) -> Config {
    Config::default().with_capacity(capacity).with_policy(policy)
}

fn block(timeout: Duration, then: Fallback) -> OverflowPolicy {
    OverflowPolicy::Block { timeout, then }
}

// ----- drop_newest -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_capacity_plus_the_message_in_the_handler() {
    let pubsub = started(config(4, OverflowPolicy::DropNewest)).await;
    let (slow, healthy, gate) = stalled_and_healthy_handlers(&pubsub).await;

    broadcast_with_healthy_handler(&pubsub, "room", 0..=0, &healthy).await;
    wait_until("the slow handler to hold m0", || slow.len() == 1).await;
    broadcast_with_healthy_handler(&pubsub, "room", 1..=10, &healthy).await;

    // G7: the mailbox holds exactly its capacity; m5..m10 were not queued.
    assert_eq!(pubsub.session_stats("slow").unwrap().queued, 4);
    let stats = pubsub.stats();
    assert_eq!(stats.dropped.drop_newest, 6);
    assert_eq!(stats.dropped.total(), 6);

    gate.add_permits(100);
    wait_until("the slow session to drain its mailbox", || {
        pubsub.session_stats("slow").unwrap().queued == 0 && slow.len() == 5
    })
    .await;
    assert_eq!(slow.payloads(), numbered(0..=4));
    assert_eq!(healthy.payloads(), numbered(0..=10));
    let stats = pubsub.stats();
    assert_eq!(stats.recipients, 22);
    assert_eq!(stats.delivered, 16);
    assert_eq!(stats.recipients, stats.delivered + stats.dropped.total());
}

#[tokio::test]
async fn drop_newest_receiver_holds_exactly_its_capacity() {
    let pubsub = started(config(4, OverflowPolicy::DropNewest)).await;
    let (mut slow, mut healthy) = slow_and_healthy_receivers(&pubsub).await;

    broadcast_with_healthy_receiver(&pubsub, "room", 0..=9, &mut healthy).await;

    assert_eq!(slow.queued(), 4);
    assert_eq!(pubsub.stats().dropped.drop_newest, 6);
    let expected: Vec<(String, u64)> = numbered(0..=3).into_iter().map(|m| (m, 0)).collect();
    assert_eq!(drain(&mut slow), expected);
    assert_eq!(slow.close_reason(), None);
}

// ----- drop_oldest -----

#[tokio::test]
async fn drop_oldest_reports_missed_to_the_receiver() {
    let pubsub = started(config(4, OverflowPolicy::DropOldest)).await;
    let (mut slow, mut healthy) = slow_and_healthy_receivers(&pubsub).await;

    broadcast_with_healthy_receiver(&pubsub, "room", 0..=9, &mut healthy).await;

    assert_eq!(slow.queued(), 4);
    assert_eq!(pubsub.stats().dropped.drop_oldest, 6);
    // The session ends up with the newest messages; the first says how many it missed.
    assert_eq!(
        drain(&mut slow),
        vec![
            ("m6".to_string(), 6),
            ("m7".to_string(), 0),
            ("m8".to_string(), 0),
            ("m9".to_string(), 0),
        ]
    );

    // The count was taken: the next message reports nothing missed.
    broadcast_with_healthy_receiver(&pubsub, "room", 10..=10, &mut healthy).await;
    assert_eq!(drain(&mut slow), vec![("m10".to_string(), 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_sends_a_missed_notice_to_the_handler_session() {
    let pubsub = started(config(4, OverflowPolicy::DropOldest)).await;
    let notices = collect_notices(&pubsub);
    assert!(!pubsub.on_notice(|_| {}), "only the first hook is kept");
    let (slow, healthy, gate) = stalled_and_healthy_handlers(&pubsub).await;

    broadcast_with_healthy_handler(&pubsub, "room", 0..=0, &healthy).await;
    wait_until("the slow handler to hold m0", || slow.len() == 1).await;
    broadcast_with_healthy_handler(&pubsub, "room", 1..=9, &healthy).await;

    assert_eq!(pubsub.session_stats("slow").unwrap().queued, 4);
    assert_eq!(pubsub.stats().dropped.drop_oldest, 5);
    assert!(notices.lock().unwrap().is_empty(), "no notice before a pop");

    gate.add_permits(100);
    wait_until("the slow session to handle the newest messages", || {
        slow.len() == 5
    })
    .await;
    assert_eq!(slow.payloads(), ["m0", "m6", "m7", "m8", "m9"]);
    assert_eq!(healthy.payloads(), numbered(0..=9));
    assert_eq!(
        *notices.lock().unwrap(),
        vec![Notice::Missed {
            session_id: "slow".into(),
            count: 5
        }]
    );
}

// ----- disconnect -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_unsubscribes_the_slow_handler_session_from_every_topic() {
    let pubsub = started(config(2, OverflowPolicy::Disconnect)).await;
    let notices = collect_notices(&pubsub);
    let (slow, healthy, gate) = stalled_and_healthy_handlers(&pubsub).await;
    pubsub
        .subscribe_topic("slow", "side", slow.stalled_handler(&gate))
        .await
        .unwrap();
    assert_eq!(pubsub.engine().topic_count(), 2);

    broadcast_with_healthy_handler(&pubsub, "room", 0..=0, &healthy).await;
    wait_until("the slow handler to hold m0", || slow.len() == 1).await;
    // m1 and m2 fill the mailbox; m3 finds it full.
    broadcast_with_healthy_handler(&pubsub, "room", 1..=3, &healthy).await;

    let disconnected = Notice::Disconnected {
        session_id: "slow".into(),
        reason: CloseReason::SlowConsumer,
    };
    wait_until("the disconnect notice", || {
        notices.lock().unwrap().contains(&disconnected)
    })
    .await;
    let engine = pubsub.engine();
    assert!(engine.session_topics("slow").is_empty());
    assert!(pubsub.session_stats("slow").is_none());
    assert_eq!(engine.session_count(), 1);
    assert_eq!(engine.topic_count(), 1, "`side` had no other subscriber");
    let stats = pubsub.stats();
    assert_eq!(stats.disconnects, 1);
    // m3, plus m1 and m2 discarded from the mailbox.
    assert_eq!(stats.dropped.slow_consumer, 3);
    assert_eq!((stats.sessions, stats.topics, stats.subscriptions), (1, 1, 1));

    // The others keep receiving; the slow session gets nothing more.
    broadcast_with_healthy_handler(&pubsub, "room", 4..=5, &healthy).await;
    let fanout = engine.broadcast("side", "nobody".into()).await.unwrap();
    assert_eq!(fanout.recipients, 0);
    gate.add_permits(100);
    wait_until("the slow session's task to end", || pubsub.running_tasks() == 2).await;
    assert_eq!(slow.payloads(), ["m0"]);
    assert_eq!(healthy.payloads(), numbered(0..=5));
    assert_eq!(
        notices
            .lock()
            .unwrap()
            .iter()
            .filter(|n| **n == disconnected)
            .count(),
        1,
        "told once"
    );
}

#[tokio::test]
async fn disconnect_closes_the_slow_receiver_and_says_why() {
    let pubsub = started(config(2, OverflowPolicy::Disconnect)).await;
    let mut slow = pubsub.open_session("slow").unwrap();
    let mut healthy = pubsub.open_session("healthy").unwrap();
    slow.subscribe("room").await.unwrap();
    slow.subscribe("side").await.unwrap();
    healthy.subscribe("room").await.unwrap();

    broadcast_with_healthy_receiver(&pubsub, "room", 0..=2, &mut healthy).await;

    assert_eq!(slow.close_reason(), Some(CloseReason::SlowConsumer));
    // Closed at once, although two messages were still queued.
    let closed = tokio::time::timeout(WAIT, slow.recv()).await.unwrap();
    assert_eq!(
        closed.unwrap_err(),
        Closed {
            reason: CloseReason::SlowConsumer
        }
    );
    let engine = pubsub.engine();
    assert!(engine.session_topics("slow").is_empty());
    assert_eq!(engine.session_count(), 1);
    assert_eq!(engine.topic_count(), 1);
    let stats = pubsub.stats();
    assert_eq!(stats.disconnects, 1);
    assert_eq!(stats.dropped.slow_consumer, 3);
    match slow.subscribe("room").await {
        Err(PubSubError::SessionClosed { session_id, reason }) => {
            assert_eq!(session_id, "slow");
            assert_eq!(reason, CloseReason::SlowConsumer);
        }
        other => panic!("subscribing a disconnected receiver: {other:?}"),
    }

    broadcast_with_healthy_receiver(&pubsub, "room", 3..=6, &mut healthy).await;
    assert_eq!(pubsub.stats().disconnects, 1);
}

// ----- block { timeout, then } -----

/// A broadcast from another task, so the test can act while it waits.
fn spawn_broadcast(
    pubsub: &InMemoryPubSub,
    topic: &'static str,
    payload: &'static str,
) -> tokio::task::JoinHandle<fanout::Result<fanout::Fanout>> {
    let engine = pubsub.engine().clone();
    tokio::spawn(async move { engine.broadcast(topic, Bytes::from(payload)).await })
}

#[tokio::test]
async fn block_waits_until_the_consumer_makes_room() {
    let pubsub = started(config(1, block(LONG_BLOCK, Fallback::DropNewest))).await;
    let (mut slow, mut healthy) = slow_and_healthy_receivers(&pubsub).await;
    broadcast_with_healthy_receiver(&pubsub, "room", 0..=0, &mut healthy).await;

    let publisher = spawn_broadcast(&pubsub, "room", "m1");
    // G5: the healthy session has the message while the broadcaster still waits.
    let message = tokio::time::timeout(WAIT, healthy.recv()).await.unwrap().unwrap();
    assert_eq!(text(message.payload()), "m1");
    assert!(!publisher.is_finished(), "the broadcaster waits for room");

    let first = slow.recv().await.unwrap();
    assert_eq!(text(first.payload()), "m0");
    let fanout = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("the pop releases the broadcaster")
        .unwrap()
        .unwrap();
    assert_eq!((fanout.recipients, fanout.queued, fanout.dropped), (2, 2, 0));
    let second = slow.try_recv().expect("the waiting message was queued");
    assert_eq!(text(second.payload()), "m1");
    assert_eq!(second.missed_before(), 0);

    let stats = pubsub.stats();
    assert_eq!(stats.block_waits, 1);
    assert_eq!(stats.block_timeouts, 0);
    assert_eq!(stats.dropped.total(), 0);
    assert_eq!(stats.delivered, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_until_the_handler_session_pops() {
    let pubsub = started(config(1, block(LONG_BLOCK, Fallback::DropNewest))).await;
    let (slow, healthy, gate) = stalled_and_healthy_handlers(&pubsub).await;
    broadcast_with_healthy_handler(&pubsub, "room", 0..=0, &healthy).await;
    wait_until("the slow handler to hold m0", || slow.len() == 1).await;
    broadcast_with_healthy_handler(&pubsub, "room", 1..=1, &healthy).await;
    assert_eq!(pubsub.session_stats("slow").unwrap().queued, 1);

    let publisher = spawn_broadcast(&pubsub, "room", "m2");
    wait_until("the healthy session to get m2", || healthy.len() == 3).await;
    assert!(!publisher.is_finished(), "the broadcaster waits for room");

    // The handler returns from m0; its task pops m1, which makes room for m2.
    gate.add_permits(1);
    let fanout = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("the pop releases the broadcaster")
        .unwrap()
        .unwrap();
    assert_eq!((fanout.recipients, fanout.queued, fanout.dropped), (2, 2, 0));
    gate.add_permits(10);
    wait_until("the slow session to handle m2", || slow.len() == 3).await;
    assert_eq!(slow.payloads(), numbered(0..=2));
    assert_eq!(healthy.payloads(), numbered(0..=2));
    let stats = pubsub.stats();
    assert_eq!((stats.block_waits, stats.block_timeouts), (1, 0));
    assert_eq!(stats.dropped.total(), 0);
}

#[tokio::test]
async fn block_wait_ends_when_the_session_unsubscribes() {
    let pubsub = started(config(1, block(LONG_BLOCK, Fallback::DropNewest))).await;
    let (mut slow, mut healthy) = slow_and_healthy_receivers(&pubsub).await;
    broadcast_with_healthy_receiver(&pubsub, "room", 0..=0, &mut healthy).await;

    let publisher = spawn_broadcast(&pubsub, "room", "m1");
    let message = tokio::time::timeout(WAIT, healthy.recv()).await.unwrap().unwrap();
    assert_eq!(text(message.payload()), "m1");
    assert!(!publisher.is_finished(), "the broadcaster waits for room");

    pubsub.unsubscribe_all("slow").await.unwrap();
    let fanout = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("unsubscribe_all releases the broadcaster")
        .unwrap()
        .unwrap();
    assert_eq!(
        slow.recv().await.unwrap_err(),
        Closed {
            reason: CloseReason::Unsubscribed
        }
    );
    drop(slow);

    let stats = pubsub.stats();
    assert_eq!(stats.block_waits, 1);
    assert_eq!(stats.block_timeouts, 0);
    assert_eq!(stats.delivered, 2, "only the healthy session received");
    assert_eq!(stats.dropped.unsubscribed, 2, "m0 and m1 for the slow one");
    assert_eq!(stats.recipients, stats.delivered + stats.dropped.total());
    // G2: the waiting message is not queued for a session that unsubscribed; the broadcast
    // reports it dropped.
    assert_eq!(
        (fanout.recipients, fanout.queued, fanout.dropped),
        (2, 1, 1),
        "{fanout:?}"
    );
}

#[tokio::test]
async fn block_wait_ends_when_the_session_is_disconnected() {
    let config =
        config(1, block(LONG_BLOCK, Fallback::DropNewest)).with_override("kick:", OverflowPolicy::Disconnect);
    let pubsub = started(config).await;
    let mut slow = pubsub.open_session("slow").unwrap();
    let mut healthy = pubsub.open_session("healthy").unwrap();
    slow.subscribe("room").await.unwrap();
    slow.subscribe("kick:slow").await.unwrap();
    healthy.subscribe("room").await.unwrap();
    broadcast_with_healthy_receiver(&pubsub, "room", 0..=0, &mut healthy).await;

    let publisher = spawn_broadcast(&pubsub, "room", "m1");
    let message = tokio::time::timeout(WAIT, healthy.recv()).await.unwrap().unwrap();
    assert_eq!(text(message.payload()), "m1");
    assert!(!publisher.is_finished(), "the broadcaster waits for room");

    // Another broadcaster finds the mailbox full under `disconnect`.
    let kick = pubsub
        .engine()
        .broadcast("kick:slow", "kick".into())
        .await
        .unwrap();
    assert_eq!(kick.dropped, 1);
    let fanout = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("the disconnect releases the broadcaster")
        .unwrap()
        .unwrap();
    assert_eq!(fanout.recipients, 2);
    assert_eq!(
        slow.recv().await.unwrap_err(),
        Closed {
            reason: CloseReason::SlowConsumer
        }
    );
    drop(slow);

    let stats = pubsub.stats();
    assert_eq!(stats.disconnects, 1);
    assert_eq!(stats.block_waits, 1);
    assert_eq!(stats.block_timeouts, 0);
    assert_eq!(stats.delivered, 2);
    assert_eq!(stats.recipients, stats.delivered + stats.dropped.total());
    assert_eq!(pubsub.engine().session_count(), 1);
    broadcast_with_healthy_receiver(&pubsub, "room", 2..=3, &mut healthy).await;
}

#[tokio::test]
async fn cancelled_block_broadcast_keeps_the_accounting_identity() {
    let pubsub = started(config(1, block(LONG_BLOCK, Fallback::DropNewest))).await;
    let (slow, mut healthy) = slow_and_healthy_receivers(&pubsub).await;
    broadcast_with_healthy_receiver(&pubsub, "room", 0..=0, &mut healthy).await;

    // The caller gives up on a broadcast that waits for the full mailbox.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        pubsub.engine().broadcast("room", "m1".into()),
    )
    .await;
    assert!(gave_up.is_err(), "the broadcast was still waiting");
    let message = healthy.try_recv().expect("the healthy session got m1");
    assert_eq!(text(message.payload()), "m1");

    // m1 reached a session, so it was published; every (broadcast, recipient) pair is
    // accounted for: delivered, dropped, or still queued.
    let stats = pubsub.stats();
    let queued = (slow.queued() + healthy.queued()) as u64;
    assert_eq!(stats.delivered, 2);
    assert_eq!(
        stats.recipients,
        stats.delivered + stats.dropped.total() + queued,
        "{stats:?}, {queued} queued"
    );
    assert_eq!(stats.published, 2, "{stats:?}");
}

/// Under `block` with a 100 ms timeout and `then` as the fallback: fills `slow` (capacity 1)
/// with m0, then broadcasts m1, which the healthy session gets at once, and checks the broadcast
/// waited out the timeout once. Returns the provider, both receivers (the healthy one is kept
/// open to the end of the test) and the broadcast's fan-out.
async fn time_out_one_broadcast(
    then: Fallback,
) -> (InMemoryPubSub, SessionReceiver, SessionReceiver, fanout::Fanout) {
    time_out_one_broadcast_under(block(TIMED_OUT_AFTER, then)).await
}

/// The timeout `time_out_one_broadcast` uses.
const TIMED_OUT_AFTER: Duration = Duration::from_millis(100);

/// As `time_out_one_broadcast`, under `policy` (a `block` or `block_once` with a
/// [`TIMED_OUT_AFTER`] timeout).
async fn time_out_one_broadcast_under(
    policy: OverflowPolicy,
) -> (InMemoryPubSub, SessionReceiver, SessionReceiver, fanout::Fanout) {
    let timeout = TIMED_OUT_AFTER;
    let pubsub = started(config(1, policy)).await;
    let (slow, mut healthy) = slow_and_healthy_receivers(&pubsub).await;
    broadcast_with_healthy_receiver(&pubsub, "room", 0..=0, &mut healthy).await;
    let began = Instant::now();
    let fanout = pubsub.engine().broadcast("room", "m1".into()).await.unwrap();
    let took = began.elapsed();
    let message = healthy.try_recv().expect("the healthy session has m1");
    assert_eq!(text(message.payload()), "m1");

    assert!(took >= timeout, "returned after {took:?}");
    let stats = pubsub.stats();
    assert_eq!((stats.block_waits, stats.block_timeouts), (1, 1));
    (pubsub, slow, healthy, fanout)
}

#[tokio::test]
async fn block_timeout_falls_back_to_drop_newest() {
    let (pubsub, mut slow, _healthy, fanout) = time_out_one_broadcast(Fallback::DropNewest).await;

    assert_eq!((fanout.recipients, fanout.queued, fanout.dropped), (2, 1, 1));
    assert_eq!(pubsub.stats().dropped.drop_newest, 1);
    assert_eq!(drain(&mut slow), vec![("m0".to_string(), 0)]);
}

#[tokio::test]
async fn block_timeout_falls_back_to_drop_oldest() {
    let (pubsub, mut slow, _healthy, fanout) = time_out_one_broadcast(Fallback::DropOldest).await;

    assert_eq!((fanout.recipients, fanout.queued, fanout.dropped), (2, 2, 1));
    assert_eq!(pubsub.stats().dropped.drop_oldest, 1);
    assert_eq!(drain(&mut slow), vec![("m1".to_string(), 1)]);
}

#[tokio::test]
async fn block_timeout_falls_back_to_disconnect() {
    let (pubsub, mut slow, _healthy, fanout) = time_out_one_broadcast(Fallback::Disconnect).await;

    assert_eq!((fanout.recipients, fanout.queued, fanout.dropped), (2, 1, 1));
    assert_eq!(
        slow.recv().await.unwrap_err(),
        Closed {
            reason: CloseReason::SlowConsumer
        }
    );
    let stats = pubsub.stats();
    assert_eq!(stats.disconnects, 1);
    assert_eq!(stats.dropped.slow_consumer, 2, "m1, and m0 discarded");
    assert!(pubsub.engine().session_topics("slow").is_empty());
}

#[tokio::test]
async fn block_timeout_is_shared_by_the_whole_broadcast() {
    let timeout = Duration::from_millis(500);
    let pubsub = started(config(1, block(timeout, Fallback::DropNewest))).await;
    let mut slow: Vec<SessionReceiver> = (0..3)
        .map(|i| pubsub.open_session(&format!("slow-{i}")).unwrap())
        .collect();
    for receiver in &slow {
        receiver.subscribe("room").await.unwrap();
    }
    pubsub.broadcast("room", "m0".into()).await.unwrap();

    let began = Instant::now();
    let fanout = pubsub.engine().broadcast("room", "m1".into()).await.unwrap();
    let took = began.elapsed();

    // Three full mailboxes, one deadline: well under three timeouts.
    assert!(took >= timeout, "returned after {took:?}");
    assert!(took < timeout * 2 + timeout / 2, "took {took:?}");
    assert_eq!((fanout.recipients, fanout.dropped), (3, 3));
    let stats = pubsub.stats();
    assert_eq!((stats.block_waits, stats.block_timeouts), (3, 3));
    for receiver in &mut slow {
        assert_eq!(drain(receiver), vec![("m0".to_string(), 0)]);
    }
}

// ----- per-prefix overrides -----

#[tokio::test]
async fn override_policy_applies_only_under_its_prefix() {
    let config = config(2, OverflowPolicy::DropNewest).with_override("slow:", OverflowPolicy::Disconnect);
    let pubsub = started(config).await;
    let session = pubsub.open_session("s").unwrap();
    session.subscribe("fast:1").await.unwrap();
    session.subscribe("slow:1").await.unwrap();

    for i in 0..3 {
        pubsub.broadcast("fast:1", format!("f{i}").into()).await.unwrap();
    }
    // `fast:1` uses the default: the third message is dropped, the session stays open.
    assert_eq!(pubsub.stats().dropped.drop_newest, 1);
    assert_eq!(session.close_reason(), None);

    pubsub.broadcast("slow:1", "s0".into()).await.unwrap();
    assert_eq!(session.close_reason(), Some(CloseReason::SlowConsumer));
    assert_eq!(pubsub.stats().disconnects, 1);
}

/// A `drop_oldest` topic with a lower `max_queued` evicts down to its limit, which is room for
/// a broadcaster waiting under `block` at the full capacity: the eviction releases it at once,
/// not at its timeout, as a pop would.
#[tokio::test]
async fn eviction_below_a_lower_limit_releases_a_blocked_broadcast() {
    let mut config = config(4, block(LONG_BLOCK, Fallback::DropNewest));
    config.overrides.push(TopicOverride {
        prefix: "capped:".into(),
        policy: Some(OverflowPolicy::DropOldest),
        max_queued: Some(2),
    });
    let pubsub = started(config).await;
    let mut session = pubsub.open_session("s").unwrap();
    session.subscribe("room").await.unwrap();
    session.subscribe("capped:1").await.unwrap();
    for i in 0..4 {
        pubsub.broadcast("room", format!("r{i}").into()).await.unwrap();
    }
    let publisher = spawn_broadcast(&pubsub, "room", "r4");
    // This test's runtime has one thread: the broadcaster runs until it waits for room.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!publisher.is_finished(), "the mailbox is full: it waits");

    let evicting = pubsub.engine().broadcast("capped:1", "c".into()).await.unwrap();
    assert_eq!(evicting.dropped, 3, "r0..r2 evicted down to the limit of 2");
    let released = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("released by the eviction, long before its timeout")
        .unwrap()
        .unwrap();
    assert_eq!((released.queued, released.dropped), (1, 0));
    let queued = drain(&mut session);
    let texts: Vec<&str> = queued.iter().map(|(text, _)| text.as_str()).collect();
    assert_eq!(texts, ["r3", "c", "r4"]);
    assert_eq!(queued.iter().map(|(_, missed)| missed).sum::<u64>(), 3);
    assert_eq!(pubsub.stats().block_timeouts, 0);
}

#[tokio::test]
async fn longest_matching_prefix_wins() {
    let config = config(1, OverflowPolicy::DropOldest)
        .with_override("room:", OverflowPolicy::DropNewest)
        .with_override("room:vip:", OverflowPolicy::Disconnect);
    let pubsub = started(config).await;
    let vip = pubsub.open_session("vip").unwrap();
    let mut room = pubsub.open_session("room").unwrap();
    let mut other = pubsub.open_session("other").unwrap();
    vip.subscribe("room:vip:1").await.unwrap();
    room.subscribe("room:1").await.unwrap();
    other.subscribe("lobby").await.unwrap();

    for topic in ["room:vip:1", "room:1", "lobby"] {
        for i in 0..2 {
            pubsub
                .broadcast(topic, format!("{topic}#{i}").into())
                .await
                .unwrap();
        }
    }

    assert_eq!(vip.close_reason(), Some(CloseReason::SlowConsumer));
    assert_eq!(drain(&mut room), vec![("room:1#0".to_string(), 0)]);
    assert_eq!(drain(&mut other), vec![("lobby#1".to_string(), 1)]);
    let stats = pubsub.stats();
    assert_eq!(stats.disconnects, 1);
    assert_eq!(stats.dropped.drop_newest, 1);
    assert_eq!(stats.dropped.drop_oldest, 1);
}

#[tokio::test]
async fn max_queued_admits_prefix_messages_only_below_the_limit() {
    let mut config = config(6, OverflowPolicy::DropNewest);
    config.overrides.push(TopicOverride {
        prefix: "presence:".into(),
        policy: None,
        max_queued: Some(2),
    });
    let pubsub = started(config).await;
    let mut session = pubsub.open_session("s").unwrap();
    session.subscribe("presence:1").await.unwrap();
    session.subscribe("chat:1").await.unwrap();
    let send = |topic: &'static str, payload: &'static str| {
        let engine = pubsub.engine().clone();
        async move { engine.broadcast(topic, payload.into()).await.unwrap() }
    };

    // Presence messages stop at two queued.
    assert_eq!(send("presence:1", "p0").await.queued, 1);
    assert_eq!(send("presence:1", "p1").await.queued, 1);
    assert_eq!(send("presence:1", "p2").await.dropped, 1);
    // Other topics still fill the mailbox up to its capacity.
    for payload in ["c0", "c1", "c2", "c3"] {
        assert_eq!(send("chat:1", payload).await.queued, 1, "{payload}");
    }
    assert_eq!(session.queued(), 6);
    assert_eq!(send("chat:1", "c4").await.dropped, 1);

    // Five queued is still not fewer than two.
    assert_eq!(text(session.try_recv().unwrap().payload()), "p0");
    assert_eq!(send("presence:1", "p3").await.dropped, 1);
    // One queued is.
    for expected in ["p1", "c0", "c1", "c2"] {
        assert_eq!(text(session.try_recv().unwrap().payload()), expected);
    }
    assert_eq!(session.queued(), 1);
    assert_eq!(send("presence:1", "p4").await.queued, 1);

    assert_eq!(
        drain(&mut session),
        vec![("c3".to_string(), 0), ("p4".to_string(), 0)]
    );
    assert_eq!(pubsub.stats().dropped.drop_newest, 3);
}

#[tokio::test]
async fn max_queued_with_drop_oldest_evicts_down_to_the_limit() {
    let mut config = config(4, OverflowPolicy::DropNewest);
    config.overrides.push(TopicOverride {
        prefix: "ticker:".into(),
        policy: Some(OverflowPolicy::DropOldest),
        max_queued: Some(2),
    });
    let pubsub = started(config).await;
    let mut session = pubsub.open_session("s").unwrap();
    session.subscribe("ticker:btc").await.unwrap();

    for i in 0..5 {
        pubsub
            .broadcast("ticker:btc", format!("t{i}").into())
            .await
            .unwrap();
    }

    assert_eq!(session.queued(), 2);
    assert_eq!(pubsub.stats().dropped.drop_oldest, 3);
    assert_eq!(
        drain(&mut session),
        vec![("t3".to_string(), 3), ("t4".to_string(), 0)]
    );
}

// ----- handlers that panic or fail (G5) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_is_isolated_and_its_session_goes_on() {
    let pubsub = started(Config::default()).await;
    let (flaky, healthy) = (Inbox::default(), Inbox::default());
    let record = flaky.clone();
    let handler = Handler::new(move |_topic, message: Bytes| {
        let payload = text(&message);
        if payload == "panic-before-the-future" {
            panic!("deliberate handler panic (before its future)");
        }
        let record = record.clone();
        async move {
            if payload == "panic-in-the-future" {
                panic!("deliberate handler panic (in its future)");
            }
            if payload.starts_with("after-waiting") {
                // Pending once, so the session's task polls the future again later.
                tokio::task::yield_now().await;
                if payload == "after-waiting-panic" {
                    panic!("deliberate handler panic (in its future, after it waited)");
                }
            }
            record.push(&message);
        }
    });
    pubsub.subscribe_topic("flaky", "room", handler).await.unwrap();
    pubsub
        .subscribe_topic("healthy", "room", healthy.handler())
        .await
        .unwrap();

    let sent = [
        "m0",
        "panic-before-the-future",
        "m1",
        "panic-in-the-future",
        "m2",
        "after-waiting-panic",
        "after-waiting-m3",
        "m4",
    ];
    for payload in sent {
        pubsub.broadcast("room", payload.into()).await.unwrap();
    }

    wait_until("both sessions to handle everything", || {
        flaky.len() == 5 && healthy.len() == sent.len()
    })
    .await;
    assert_eq!(flaky.payloads(), ["m0", "m1", "m2", "after-waiting-m3", "m4"]);
    assert_eq!(healthy.payloads(), sent);
    let stats = pubsub.stats();
    assert_eq!(stats.handler_panics, 3);
    assert_eq!(stats.handler_errors, 0);
    assert_eq!(stats.delivered, 16);
    assert_eq!(pubsub.engine().session_count(), 2);
    assert_eq!(pubsub.running_tasks(), 3, "reaper and both session tasks");
}

#[tokio::test]
async fn erroring_handler_is_counted_and_its_session_goes_on() {
    let pubsub = started(Config::default()).await;
    let (flaky, healthy) = (Inbox::default(), Inbox::default());
    let record = flaky.clone();
    let handler = Handler::new(move |_topic, message: Bytes| {
        let record = record.clone();
        async move {
            if message == "fail" {
                return Err("deliberate handler error");
            }
            record.push(&message);
            Ok(())
        }
    });
    pubsub.subscribe_topic("flaky", "room", handler).await.unwrap();
    pubsub
        .subscribe_topic("healthy", "room", healthy.handler())
        .await
        .unwrap();

    for payload in ["m0", "fail", "m1", "fail", "m2"] {
        pubsub.broadcast("room", payload.into()).await.unwrap();
    }

    wait_until("both sessions to handle everything", || {
        flaky.len() == 3 && healthy.len() == 5
    })
    .await;
    assert_eq!(flaky.payloads(), ["m0", "m1", "m2"]);
    let stats = pubsub.stats();
    assert_eq!(stats.handler_errors, 2);
    assert_eq!(stats.handler_panics, 0);
    assert_eq!(stats.delivered, 10);
}

#[tokio::test]
async fn json_handler_counts_undecodable_messages_as_errors() {
    let pubsub = started(Config::default()).await;
    let numbers = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&numbers);
    let handler = Handler::json(move |_topic, value: u32| {
        sink.lock().unwrap().push(value);
        async {}
    });
    pubsub.subscribe_topic("s", "numbers", handler).await.unwrap();

    for payload in ["1", "\"two\"", "3"] {
        pubsub.broadcast("numbers", payload.into()).await.unwrap();
    }

    wait_until("both numbers", || numbers.lock().unwrap().len() == 2).await;
    assert_eq!(*numbers.lock().unwrap(), [1, 3]);
    assert_eq!(pubsub.stats().handler_errors, 1);
}

#[tokio::test]
async fn block_waits_again_for_a_session_that_timed_out() {
    let (pubsub, _slow, mut healthy, _) = time_out_one_broadcast(Fallback::DropNewest).await;
    let _ = healthy.try_recv();

    // The contract's `block`: every broadcast that finds the mailbox full waits its timeout.
    let began = Instant::now();
    let fanout = pubsub.engine().broadcast("room", "m2".into()).await.unwrap();
    assert!(began.elapsed() >= TIMED_OUT_AFTER, "waited {:?}", began.elapsed());
    assert_eq!((fanout.queued, fanout.dropped), (1, 1));
    let stats = pubsub.stats();
    assert_eq!(
        (stats.block_waits, stats.block_timeouts, stats.block_skips),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn block_once_does_not_wait_again_for_a_session_that_has_not_read_since_it_timed_out() {
    let timeout = TIMED_OUT_AFTER;
    let policy = OverflowPolicy::BlockOnce {
        timeout,
        then: Fallback::DropNewest,
    };
    let (pubsub, mut slow, mut healthy, _) = time_out_one_broadcast_under(policy).await;
    let _ = healthy.try_recv();

    // The slow session still holds m0 and has read nothing: no more waiting for it.
    let began = Instant::now();
    for i in 2..12 {
        let fanout = pubsub
            .engine()
            .broadcast("room", format!("m{i}").into())
            .await
            .unwrap();
        assert_eq!((fanout.recipients, fanout.queued, fanout.dropped), (2, 1, 1));
        assert_eq!(text(healthy.try_recv().unwrap().payload()), format!("m{i}"));
    }
    assert!(
        began.elapsed() < timeout,
        "ten broadcasts took {:?}",
        began.elapsed()
    );
    let stats = pubsub.stats();
    assert_eq!(
        (stats.block_waits, stats.block_timeouts, stats.block_skips),
        (1, 1, 10)
    );
    assert_eq!(stats.dropped.drop_newest, 11);

    // Once it reads, a full mailbox is waited for again.
    assert_eq!(drain(&mut slow), vec![("m0".to_string(), 0)]);
    pubsub.broadcast("room", "m12".into()).await.unwrap();
    assert_eq!(text(healthy.try_recv().unwrap().payload()), "m12");
    let began = Instant::now();
    pubsub.broadcast("room", "m13".into()).await.unwrap();
    assert!(began.elapsed() >= timeout, "waited {:?}", began.elapsed());
    let stats = pubsub.stats();
    assert_eq!(
        (stats.block_waits, stats.block_timeouts, stats.block_skips),
        (2, 2, 10)
    );
}
