//! The pull form across instances, on each distributed provider: a session opened with
//! `open_session` on one instance receives what any instance broadcasts, its `subscribe` (on
//! the receiver or a handle) returns once the broker confirmed the channel (G1 across
//! instances), also while the session's reader is parked in `recv`, and the local engine's
//! counts are visible.

#![cfg(any(feature = "redis", feature = "postgres", feature = "nats"))]

#[macro_use]
mod conformance;
mod support;

use std::time::Duration;

use bytes::Bytes;
use fanout::{Config, PubSubProvider};
use support::announcing_park;

/// The same checks for each provider: `$module::cluster` gives two started instances.
macro_rules! pull_form_tests {
    ($feature:literal, $module:ident) => {
        #[cfg(feature = $feature)]
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_pull_session_receives_from_every_instance_once_subscribed() {
                let Some(nodes) = conformance::$module::cluster("pull", 2, Config::default()).await else {
                    return;
                };
                let (a, b) = (&nodes[0], &nodes[1]);
                let mut reader = b.open_session("reader").unwrap();
                let handle = reader.handle();
                // A broadcast the moment the subscribe returns reaches the session (G1),
                // whether it subscribed through the receiver or a handle.
                for round in 0..20 {
                    let topic = format!("t{round}");
                    if round % 2 == 0 {
                        reader.subscribe(&topic).await.unwrap();
                    } else {
                        handle.subscribe(&topic).await.unwrap();
                    }
                    a.broadcast(&topic, Bytes::from(format!("m{round}")))
                        .await
                        .unwrap();
                    let message = tokio::time::timeout(Duration::from_secs(5), reader.recv())
                        .await
                        .expect("delivered within 5 s")
                        .unwrap();
                    assert_eq!(message.payload(), format!("m{round}").as_bytes());
                    assert_eq!(message.topic(), topic.as_str());
                }
                assert_eq!(b.engine().session_count(), 1);
                assert_eq!(b.engine().subscriber_count("t0"), 1);
                assert_eq!(b.engine().session_topics("reader").len(), 20);

                // Subscribing from another task once the reader is parked in `recv` (it
                // announces its first `Pending`).
                let (parked_tx, is_parked) = tokio::sync::oneshot::channel();
                let parked = tokio::spawn(async move {
                    let message = announcing_park(reader.recv(), parked_tx).await.unwrap();
                    (
                        message.topic().to_string(),
                        message.payload().clone(),
                        reader,
                    )
                });
                tokio::time::timeout(Duration::from_secs(5), is_parked)
                    .await
                    .expect("the reader parks in recv")
                    .unwrap();
                handle.subscribe("late").await.unwrap();
                a.broadcast("late", Bytes::from_static(b"while parked"))
                    .await
                    .unwrap();
                let (topic, payload, reader) = tokio::time::timeout(Duration::from_secs(5), parked)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    (topic.as_str(), &payload[..]),
                    ("late", &b"while parked"[..])
                );

                drop(reader);
                conformance::eventually("the session to be gone", || {
                    b.engine().session_count() == 0 && b.engine().topic_count() == 0
                })
                .await;
                conformance::eventually("every channel released", || b.broker_stats().channels == 0).await;
                for node in &nodes {
                    node.stop().await.unwrap();
                    assert_eq!(node.running_tasks(), 0);
                }
            }
        }
    };
}

pull_form_tests!("redis", redis);
pull_form_tests!("postgres", postgres);
pull_form_tests!("nats", nats);
