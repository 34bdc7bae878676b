//! Acknowledged broadcasts on each distributed provider, at the edge where they are easiest to
//! lose: a stop racing them. Every acknowledged broadcast gets exactly one answer, and the
//! answers agree with the broker counters: `Ok` is a published message, `Unacknowledged` a lost
//! and counted one, and a broadcast the stop refused was not queued at all.

#![cfg(any(feature = "redis", feature = "postgres"))]

#[macro_use]
mod conformance;

use std::sync::Arc;

use bytes::Bytes;
use fanout::bridge::BrokerError;
use fanout::{Config, PubSubError, PubSubProvider};

/// How one acknowledged broadcast that raced `stop()` returned.
#[derive(Debug, Default)]
struct Answers {
    acknowledged: u64,
    unacknowledged: u64,
    unavailable: u64,
    refused_by_stop: u64,
}

impl Answers {
    fn count(&mut self, result: Result<(), PubSubError>) {
        match result {
            Ok(()) => self.acknowledged += 1,
            Err(PubSubError::Stopped) => self.refused_by_stop += 1,
            Err(error) => match error.broker() {
                Some(BrokerError::Unacknowledged { .. }) => self.unacknowledged += 1,
                Some(BrokerError::PublishUnavailable { .. }) => self.unavailable += 1,
                _ => panic!("an acknowledged broadcast racing stop returned {error:?}"),
            },
        }
    }

    fn total(&self) -> u64 {
        self.acknowledged + self.unacknowledged + self.unavailable + self.refused_by_stop
    }
}

macro_rules! acknowledgement_tests {
    ($feature:literal, $module:ident) => {
        #[cfg(feature = $feature)]
        mod $module {
            use super::*;

            /// `start()` returns with the publishing connection open: a broadcast made at once,
            /// before the runtime has run any task the start spawned, is published.
            #[tokio::test]
            async fn a_broadcast_right_after_start_is_published() {
                let Some(nodes) = conformance::$module::cluster("start-publish", 1, Config::default()).await
                else {
                    return;
                };
                let a = &nodes[0];
                a.broadcast_acknowledged("t", Bytes::from_static(b"first"))
                    .await
                    .expect("published");
                assert_eq!(a.broker_stats().published, 1);
                a.stop().await.unwrap();
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn acknowledged_broadcasts_racing_stop_are_each_answered_and_counted() {
                let Some(nodes) = conformance::$module::cluster("acks-stop", 2, Config::default()).await
                else {
                    return;
                };
                let a = Arc::clone(&nodes[0]);
                const SENDERS: u64 = 8;
                const EACH: u64 = 200;
                let senders: Vec<_> = (0..SENDERS)
                    .map(|sender| {
                        let a = Arc::clone(&a);
                        tokio::spawn(async move {
                            let mut answers = Answers::default();
                            for i in 0..EACH {
                                let payload = Bytes::from(format!("{sender}-{i}"));
                                answers.count(a.broadcast_acknowledged("t", payload).await);
                            }
                            answers
                        })
                    })
                    .collect();
                // Stop once some have been acknowledged, while the rest are in flight.
                conformance::eventually("some broadcasts acknowledged", || {
                    a.broker_stats().published >= 50
                })
                .await;
                a.stop().await.unwrap();
                let mut answers = Answers::default();
                for sender in senders {
                    let part = sender.await.unwrap();
                    answers.acknowledged += part.acknowledged;
                    answers.unacknowledged += part.unacknowledged;
                    answers.unavailable += part.unavailable;
                    answers.refused_by_stop += part.refused_by_stop;
                }
                let stats = a.broker_stats();
                eprintln!("{answers:?}; {stats:?}");
                assert_eq!(answers.total(), SENDERS * EACH);
                assert!(
                    answers.refused_by_stop > 0,
                    "the stop raced nothing: {answers:?}"
                );
                assert_eq!(
                    stats.published, answers.acknowledged,
                    "{answers:?} {stats:?}"
                );
                assert_eq!(
                    stats.publish_errors, answers.unacknowledged,
                    "{answers:?} {stats:?}"
                );
                assert_eq!(
                    stats.unavailable, answers.unavailable,
                    "{answers:?} {stats:?}"
                );
                assert_eq!(a.running_tasks(), 0);
                for node in &nodes {
                    node.stop().await.unwrap();
                }
            }
        }
    };
}

acknowledgement_tests!("redis", redis);
acknowledgement_tests!("postgres", postgres);
