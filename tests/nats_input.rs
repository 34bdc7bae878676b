//! Hostile and edge-case input against `NatsPubSub` on the real NATS server (`NATS_URL`,
//! default `127.0.0.1:4222`): topics that NATS would read as wildcards, separators or
//! arguments, garbage published straight onto the provider's subjects, payloads of every byte
//! value and at the server's `max_payload`, and a broadcast racing the subscribe it follows.
//!
//! Each test runs on a subject prefix of its own. Skips with a printed reason when the server
//! is unreachable, fails instead under `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(feature = "nats")]

#[macro_use]
mod conformance;

use bytes::Bytes;
use conformance::nats::{cluster, test_config};
use conformance::Inbox;
use fanout::nats::NatsPubSub;
use fanout::{Config, PubSubProvider};

/// A broadcast issued the moment `start()` returns is carried to other instances: the
/// publishing connection counts as up from then on, not from when its task first runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_right_after_start_is_not_refused() {
    let Some(nodes) = cluster("afterstart", 1, Config::default()).await else {
        return;
    };
    let prefix = nodes[0].nats_config().subject_prefix.clone();
    let inbox = Inbox::default();
    nodes[0]
        .subscribe_topic("s", "t", inbox.handler("s"))
        .await
        .unwrap();
    for round in 0..50 {
        let a = NatsPubSub::with_config(test_config(&prefix), Config::default()).unwrap();
        a.start().await.unwrap();
        let sent = a.broadcast("t", Bytes::from(format!("{round}"))).await;
        assert!(sent.is_ok(), "round {round}: {sent:?}");
        a.stop().await.unwrap();
    }
    inbox
        .until("every round's broadcast", |i| i.of("s").len() == 50)
        .await;
    nodes[0].stop().await.unwrap();
}
