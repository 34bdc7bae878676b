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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use conformance::faults::{assert_not_started, free_port, hostile_envelopes, mutations, stranger_envelope};
use conformance::nats::{admin, cluster, test_config, unique_prefix};
use conformance::{eventually, Inbox};
use fanout::envelope::{single_encoded_len, Record};
use fanout::nats::{NatsConfig, NatsPubSub, NatsPubSubError};
use fanout::{Config, Handler, Limits, PubSubError, PubSubProvider};

/// Topics NATS gives meaning to, and their neighbours.
fn hostile_topics() -> Vec<String> {
    let mut topics: Vec<String> = [
        "a",
        "a.b",
        "a.*",
        "a.>",
        ">",
        "*",
        " ",
        "a b",
        "a\tb",
        "a\nb",
        "a\r\nb",
        "\r\n",
        "$SYS.x",
        "_INBOX.x",
        "a%2Eb",
        "%",
        "%%",
        "a.b.c",
        "é",
        "日本語.トピック",
        "a\u{7f}",
        "\u{0}",
    ]
    .iter()
    .map(|topic| topic.to_string())
    .collect();
    // The longest topic the default limits allow, every other byte a separator.
    topics.push("x.".repeat(512));
    topics
}

/// Each session on either instance receives exactly its own topic's messages, from both
/// instances (G6 across instances).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_topics_are_delivered_only_on_exactly_their_topic_across_instances() {
    let Some(nodes) = cluster("hostile", 2, Config::default().with_capacity(1024)).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let topics = hostile_topics();
    let inbox = Inbox::default();
    for (i, topic) in topics.iter().enumerate() {
        let subject = a.channel_for(topic);
        let token = subject
            .strip_prefix(&format!("{}.", a.nats_config().subject_prefix))
            .expect("under the prefix");
        assert!(
            !token.is_empty() && !token.contains(['.', '*', '>', ' ', '\t', '\r', '\n']),
            "{topic:?} -> {subject:?}"
        );
        a.subscribe_topic(&format!("a{i}"), topic, inbox.handler(&format!("a{i}")))
            .await
            .unwrap();
        b.subscribe_topic(&format!("b{i}"), topic, inbox.handler(&format!("b{i}")))
            .await
            .unwrap();
    }
    // Sentinels (`end`) last: by G4, anything either publisher sent before them arrives
    // before them.
    for what in ["from", "end"] {
        for (i, topic) in topics.iter().enumerate() {
            for (node, name) in [(a, "a"), (b, "b")] {
                node.broadcast(topic, Bytes::from(format!("{what} {name} {i}")))
                    .await
                    .unwrap();
            }
        }
    }
    for (i, topic) in topics.iter().enumerate() {
        for session in [format!("a{i}"), format!("b{i}")] {
            inbox
                .until(&format!("both sentinels on {topic:?}"), |inbox| {
                    inbox.has(&session, &format!("end a {i}")) && inbox.has(&session, &format!("end b {i}"))
                })
                .await;
            let mut got = inbox.with_topics(&session);
            got.sort();
            let mut want: Vec<(String, String)> = ["from a", "from b", "end a", "end b"]
                .iter()
                .map(|what| (topic.clone(), format!("{what} {i}")))
                .collect();
            want.sort();
            assert_eq!(got, want, "session {session} on {topic:?}");
        }
    }
    for node in &nodes {
        assert_eq!(node.nats_stats().malformed, 0);
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_over_the_limit_is_refused_with_a_typed_error() {
    let Some(nodes) = cluster("long", 1, Config::default()).await else {
        return;
    };
    let a = &nodes[0];
    let topic = "x".repeat(1025);
    let refused = a
        .subscribe_topic("s", &topic, Inbox::default().handler("s"))
        .await
        .expect_err("over max_topic_bytes");
    assert!(
        matches!(
            refused,
            PubSubError::TopicTooLong {
                len: 1025,
                limit: 1024
            }
        ),
        "{refused:?}"
    );
    let refused = a
        .broadcast(&topic, Bytes::from("x"))
        .await
        .expect_err("over max_topic_bytes");
    assert!(matches!(refused, PubSubError::TopicTooLong { .. }), "{refused:?}");
    let stats = a.nats_stats();
    assert!(stats.connected && stats.publisher_connected, "{stats:?}");
    assert_eq!((stats.outages, stats.publisher_outages), (0, 0), "{stats:?}");
    a.stop().await.unwrap();
}

/// A longer topic limit than the server's control line can carry is refused when the provider
/// is built, naming both settings; raising `max_control_line` accepts it.
#[test]
fn a_topic_limit_the_control_line_cannot_carry_is_refused_at_construction() {
    let config = Config::default().with_limits(Limits::default().with_max_topic_bytes(2000));
    let error = NatsPubSub::with_config(NatsConfig::default(), config.clone())
        .expect_err("3 × 2000 bytes do not fit 4096")
        .to_string();
    assert!(
        error.contains("nats.max_control_line") && error.contains("limits.max_topic_bytes"),
        "{error}"
    );
    NatsPubSub::with_config(NatsConfig::default().with_max_control_line(8192), config).expect("fits 8192");
}

/// Garbage on the provider's subject, from a raw client: every message skipped and counted,
/// the listener keeps running, and a valid message after it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_our_subjects_is_skipped_and_counted() {
    let Some(mut raw) = admin().await else { return };
    let b = NatsPubSub::with_config(
        test_config(&unique_prefix("garbage")).with_max_envelope_bytes(4096),
        Config::default(),
    )
    .unwrap();
    b.start().await.unwrap();
    let inbox = Inbox::default();
    b.subscribe_topic("s", "t", inbox.handler("s")).await.unwrap();
    let subject = b.channel_for("t");
    let valid = |payload: &str| stranger_envelope("t", payload.as_bytes());
    let good = valid("hello");
    let mut hostile = hostile_envelopes("t");
    // NATS commands inside a payload are payload bytes.
    hostile.push(b"MSG x 1 3\r\nabc\r\nPING\r\n".to_vec());
    for message in &hostile {
        raw.publish(&subject, message).await.unwrap();
    }
    raw.publish_with_reply(&subject, "_INBOX.reply.here", &valid("with a reply subject"))
        .await
        .unwrap();
    raw.publish_with_headers(&subject, &valid("with headers"))
        .await
        .unwrap();
    let mutated = 200;
    for message in mutations(&good, mutated, |random| random as u8) {
        raw.publish(&subject, &message).await.unwrap();
    }
    raw.publish(&subject, &valid("after the garbage")).await.unwrap();
    inbox
        .until("the valid message after the garbage", |i| {
            i.has("s", "after the garbage")
        })
        .await;
    let got = inbox.of("s");
    assert!(!got.iter().any(|m| m.starts_with("sneaky")), "{got:?}");
    // A valid envelope with a reply subject (which the provider ignores) is delivered, and so
    // is one published with headers: the server strips them for a connection that did not
    // ask for headers.
    assert!(got.iter().any(|m| m == "with a reply subject"), "{got:?}");
    assert!(got.iter().any(|m| m == "with headers"), "{got:?}");
    let stats = b.nats_stats();
    let sent = (hostile.len() + 2 + mutated + 1) as u64;
    assert_eq!(stats.malformed + stats.received, sent, "{stats:?}");
    assert!(stats.malformed >= hostile.len() as u64, "{stats:?}");
    assert!(
        stats.connected && stats.outages == 0,
        "the listener must keep running: {stats:?}"
    );
    b.stop().await.unwrap();
}

/// Payloads made of every byte value, and the server's `max_payload` as the envelope limit:
/// an envelope of exactly that size is delivered, one byte more is refused before anything is
/// delivered, with both numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_of_every_byte_value_up_to_the_servers_limit() {
    let local = Config::default().with_limits(Limits::default().with_max_payload_bytes(4 << 20));
    let Some(nodes) = cluster("payload", 2, local).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    // The server's default max_payload, which the test server keeps.
    let limit = 1024 * 1024;
    assert_eq!(a.max_envelope_bytes(), limit);
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let log = Arc::clone(&received);
    b.subscribe_topic(
        "s",
        "bytes",
        Handler::new(move |_, message| {
            let log = Arc::clone(&log);
            async move { log.lock().unwrap().push(message) }
        }),
    )
    .await
    .unwrap();
    let every_byte = |len: usize| Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
    let fits = limit
        - single_encoded_len(
            "bytes",
            &Record {
                sender: None,
                payload: b"",
            },
        );
    let sent = vec![every_byte(256), every_byte(4096), every_byte(fits)];
    for payload in &sent {
        a.broadcast("bytes", payload.clone()).await.unwrap();
    }
    let refused = a
        .broadcast("bytes", every_byte(fits + 1))
        .await
        .expect_err("one byte over max_payload");
    match NatsPubSubError::of(&refused) {
        Some(NatsPubSubError::EnvelopeTooLarge { len, limit: at }) => {
            assert_eq!((*len, *at), (limit + 1, limit), "{refused}");
        }
        _ => panic!("expected EnvelopeTooLarge, got {refused:?}"),
    }
    a.broadcast("bytes", Bytes::from_static(b"end")).await.unwrap();
    eventually("every payload and the sentinel", || {
        received.lock().unwrap().len() >= 4
    })
    .await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got[..3], sent[..], "byte-exact, in order, the refused one absent");
    assert_eq!(got[3], Bytes::from_static(b"end"));
    for node in &nodes {
        node.stop().await.unwrap();
    }
}

/// A configured envelope limit above the server's `max_payload` is lowered to it at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_max_payload_lowers_a_larger_configured_limit() {
    if admin().await.is_none() {
        return;
    }
    let local = Config::default().with_limits(Limits::default().with_max_payload_bytes(4 << 20));
    let config = test_config(&unique_prefix("maxpay")).with_max_envelope_bytes(8 << 20);
    let a = NatsPubSub::with_config(config, local).unwrap();
    assert_eq!(a.max_envelope_bytes(), 8 << 20, "before the first connection");
    a.start().await.unwrap();
    assert_eq!(a.max_envelope_bytes(), 1024 * 1024, "the server's max_payload");
    let refused = a
        .broadcast("t", Bytes::from(vec![0u8; 2 << 20]))
        .await
        .expect_err("over the server's max_payload");
    assert!(
        matches!(
            NatsPubSubError::of(&refused),
            Some(NatsPubSubError::EnvelopeTooLarge { limit: 1_048_576, .. })
        ),
        "{refused:?}"
    );
    assert!(
        a.nats_stats().publisher_connected,
        "nothing was sent to break the connection"
    );
    a.stop().await.unwrap();
}

/// G1 across instances, at its edge: a broadcast from A issued the moment B's subscribe
/// returns reaches B's session, for thousands of fresh topics (each needs a new `SUB`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_right_after_subscribe_returns_is_delivered_every_time() {
    let Some(nodes) = cluster("race", 2, Config::default()).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    const ROUNDS: u64 = 2000;
    let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let total = Arc::new(AtomicU64::new(0));
    for round in 0..ROUNDS {
        let topic = format!("race.{round}");
        let (counts, total) = (Arc::clone(&counts), Arc::clone(&total));
        b.subscribe_topic(
            "s",
            &topic,
            Handler::new(move |topic, _| {
                let (counts, total) = (Arc::clone(&counts), Arc::clone(&total));
                async move {
                    *counts.lock().unwrap().entry(topic.to_string()).or_default() += 1;
                    total.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await
        .unwrap();
        a.broadcast(&topic, Bytes::from("x")).await.unwrap();
    }
    eventually("every round's broadcast", || {
        total.load(Ordering::SeqCst) >= ROUNDS
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.len() as u64, ROUNDS);
    assert!(counts.values().all(|&n| n == 1), "each exactly once");
    for node in &nodes {
        node.stop().await.unwrap();
    }
}

/// `start()` against no server fails with `Connect`, naming the server but neither the
/// password nor the token, leaves nothing running, and can be tried again.
#[tokio::test]
async fn start_fails_clearly_when_nats_is_unreachable() {
    let port = free_port();
    for url in [
        format!("nats://me:secret@127.0.0.1:{port}"),
        format!("nats://secret@127.0.0.1:{port}"),
    ] {
        let config =
            NatsConfig::new(url).with_timeouts(Duration::from_millis(500), Duration::from_millis(500));
        let provider = NatsPubSub::new(config).unwrap();
        assert!(!format!("{provider:?}").contains("secret"));
        for attempt in ["first", "second"] {
            let error = provider.start().await.expect_err("nothing listens there");
            match NatsPubSubError::of(&error) {
                Some(NatsPubSubError::Connect { broker, target, .. }) => {
                    assert_eq!((*broker, target.clone()), ("nats", format!("127.0.0.1:{port}")));
                }
                _ => panic!("{attempt} start: {error:?}"),
            }
            assert!(!format!("{error} {error:?}").contains("secret"), "{error:?}");
            assert_eq!(provider.running_tasks(), 0);
            assert_not_started(&provider).await;
        }
        provider.stop().await.unwrap();
    }
}
