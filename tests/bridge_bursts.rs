//! A burst from another instance into a session that keeps up. A busy topic's messages cross
//! in envelopes of a hundred and more, and a read brings several; while the listener keeps up
//! with the broker it gives way to the sessions it wakes every 32 records, so a burst eight
//! times a session's mailbox reaches a session that drains it as it comes, with nothing
//! dropped. Without giving way, about half of each burst was dropped.

#![cfg(any(feature = "nats", feature = "redis"))]

#[macro_use]
mod conformance;

use bytes::Bytes;
use conformance::Inbox;
use fanout::{Config, PubSubProvider};

/// A session's mailbox.
const CAPACITY: usize = 64;

/// Messages per burst: eight mailboxes.
const BURST: usize = 8 * CAPACITY;

const ROUNDS: usize = 5;

/// Bursts from `a` to a session on `b`; `envelopes` tells how many envelopes `b` received.
async fn bursts_reach_a_session_that_keeps_up(
    a: &dyn PubSubProvider,
    b: &dyn PubSubProvider,
    envelopes: impl Fn() -> u64,
) {
    let inbox = Inbox::default();
    b.subscribe_topic("s", "busy", inbox.handler("s")).await.unwrap();
    for round in 1..=ROUNDS {
        for i in 0..BURST {
            a.broadcast("busy", Bytes::from(format!("{round}:{i}")))
                .await
                .unwrap();
        }
        let arrived = || inbox.of("s").len() as u64 + b.stats().dropped.total();
        conformance::eventually("the burst handled or dropped", || {
            arrived() == (round * BURST) as u64
        })
        .await;
    }
    let total = (ROUNDS * BURST) as u64;
    assert!(
        envelopes() * 64 <= total,
        "bursts should cross in large envelopes: {} for {total} messages",
        envelopes()
    );
    let stats = b.stats();
    assert_eq!(stats.dropped.total(), 0, "{stats:?}");
    let expected: Vec<String> = (1..=ROUNDS)
        .flat_map(|round| (0..BURST).map(move |i| format!("{round}:{i}")))
        .collect();
    assert_eq!(inbox.of("s"), expected);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

// A current-thread runtime: the publisher task runs only when the test task yields, so each
// burst leaves in a few large envelopes, and the listener, the reader and the session share
// one thread, as they do when an instance's cores are busy.
#[cfg(feature = "nats")]
#[tokio::test]
async fn nats_bursts_reach_a_session_that_keeps_up() {
    let config = Config::default().with_capacity(CAPACITY);
    let Some(nodes) = conformance::nats::cluster("bursts", 2, config).await else {
        return;
    };
    let envelopes = || nodes[1].nats_stats().envelopes_received;
    bursts_reach_a_session_that_keeps_up(&*nodes[0], &*nodes[1], envelopes).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_bursts_reach_a_session_that_keeps_up() {
    let config = Config::default().with_capacity(CAPACITY);
    let Some(nodes) = conformance::redis::cluster("bursts", 2, config).await else {
        return;
    };
    let envelopes = || nodes[1].redis_stats().envelopes_received;
    bursts_reach_a_session_that_keeps_up(&*nodes[0], &*nodes[1], envelopes).await;
}
