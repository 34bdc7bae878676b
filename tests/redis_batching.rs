//! Coalescing on the real Redis: a burst from one publisher goes out as a few envelopes, and
//! still arrives whole, in publish order across topics (G4), with `broadcast_from` honoured
//! per message.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;

use bytes::Bytes;
use conformance::redis::cluster;
use conformance::Inbox;
use fanout::{Config, PubSubProvider};

/// The burst: mostly topic `a`, every 100th message on `b` (which splits the runs), every
/// 7th sent from `tab` (which must not receive it).
fn burst(n: u64) -> impl Iterator<Item = (u64, &'static str, Option<&'static str>)> {
    (0..n).map(|i| {
        let topic = if i % 100 == 99 { "b" } else { "a" };
        let sender = (i % 7 == 0).then_some("tab");
        (i, topic, sender)
    })
}

// A current-thread runtime: the publisher task runs only when the test task yields (at the
// latest when tokio's cooperative budget runs out), so the queue holds runs to coalesce.
#[tokio::test]
async fn a_burst_is_coalesced_and_arrives_in_order_across_topics() {
    let config = Config::default().with_capacity(fanout::MAX_CAPACITY);
    let Some(nodes) = cluster("batching", 2, config).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let inbox = Inbox::default();
    for session in ["s", "tab"] {
        for topic in ["a", "b"] {
            b.subscribe_topic(session, topic, inbox.handler(session))
                .await
                .unwrap();
        }
    }
    const N: u64 = 3_000;
    for (i, topic, sender) in burst(N) {
        let message = Bytes::from(i.to_string());
        match sender {
            Some(sender) => a.broadcast_from(sender, topic, message).await.unwrap(),
            None => a.broadcast(topic, message).await.unwrap(),
        }
    }
    let expected_tab = burst(N).filter(|(_, _, sender)| sender.is_none()).count();
    inbox
        .until("the whole burst on the other instance", |i| {
            i.of("s").len() == N as usize && i.of("tab").len() == expected_tab
        })
        .await;
    let expected: Vec<(String, String)> = burst(N)
        .map(|(i, topic, _)| (topic.to_string(), i.to_string()))
        .collect();
    assert_eq!(inbox.with_topics("s"), expected, "order across topics (G4)");
    let expected_tab: Vec<(String, String)> = burst(N)
        .filter(|(_, _, sender)| sender.is_none())
        .map(|(i, topic, _)| (topic.to_string(), i.to_string()))
        .collect();
    assert_eq!(
        inbox.with_topics("tab"),
        expected_tab,
        "broadcast_from per message"
    );

    let (sent, got) = (a.redis_stats(), b.redis_stats());
    assert_eq!((sent.published, got.received), (N, N), "{sent:?} {got:?}");
    // The 30 messages on `b` split `a` into 31 runs: at least 61 envelopes.
    assert!(sent.envelopes_published >= 61, "{sent:?}");
    assert!(
        sent.envelopes_published * 4 < N,
        "a burst should share envelopes: {sent:?}"
    );
    assert_eq!(got.envelopes_received, sent.envelopes_published, "{got:?}");
    assert_eq!(got.malformed, 0);
    for node in &nodes {
        node.stop().await.unwrap();
    }
}
