//! The conformance suite: every guarantee of the contract (G1–G9, stated in full in
//! `fanout::docs::contract`, `src/docs/contract.md`) that a provider can be checked on through
//! the `PubSubProvider` trait, written once, run against every provider.
//!
//! A provider joins by implementing [`Backend`] (how to build `n` started instances on one
//! namespace) and invoking [`conformance_suite!`] in its own test file:
//!
//! ```ignore
//! #[macro_use]
//! mod conformance;
//! conformance_suite!(MyBackend);
//! ```
//!
//! For a distributed backend every test runs on **two instances** on the same broker: sessions
//! are spread over both and broadcasts come from both, so each guarantee is checked across
//! instances too; `multi_instance_exactly_once_in_order` adds many publishers on both sides.
//! A single-process backend runs each test on one instance.
//!
//! Negative checks ("nothing arrives") use sentinels rather than sleeps where they can: a
//! message the same publisher sends afterwards, which by G4 cannot arrive before anything it
//! sent first.

#![allow(dead_code, unused_macros)]

#[cfg(any(feature = "redis", feature = "postgres", feature = "nats"))]
pub mod faults;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout::{Config, Handler, Limits, OverflowPolicy, PubSubError, PubSubProvider, StatsSnapshot};

/// How long an expected delivery may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// One started provider instance (one "server").
pub struct Instance {
    pub provider: Arc<dyn PubSubProvider>,
    /// Background tasks the provider still runs (G8: zero after `stop`).
    pub running_tasks: Box<dyn Fn() -> usize + Send + Sync>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A provider under test.
pub trait Backend: Send + Sync {
    /// Whether instances share a broker (then every test runs on two).
    fn distributed(&self) -> bool;

    /// `n` started instances on one shared namespace, each with `config` for its local side.
    /// `None` skips the test (the backend has printed why).
    fn cluster(&self, n: usize, config: Config) -> BoxFuture<'_, Option<Vec<Instance>>>;

    /// Whether one publisher's order holds across topics on other instances (G4 whole). On a
    /// Redis Cluster topics on different shards travel over different connections: order holds
    /// per topic, and the order checks compare each topic's messages alone.
    fn keeps_order_across_topics(&self) -> bool {
        true
    }
}

/// `got` as the order checks compare it: whole, or, for a backend that keeps one publisher's
/// order only per topic, the messages of each topic (by `topic_of`) one after another.
fn as_ordered<T: Clone + Ord>(backend: &dyn Backend, got: &[T], topic_of: impl Fn(&T) -> usize) -> Vec<T> {
    if backend.keeps_order_across_topics() {
        return got.to_vec();
    }
    let mut by_topic: std::collections::BTreeMap<usize, Vec<T>> = std::collections::BTreeMap::new();
    for item in got {
        by_topic.entry(topic_of(item)).or_default().push(item.clone());
    }
    by_topic.into_values().flatten().collect()
}

/// Expands to one `#[tokio::test]` per conformance check, for the backend `$backend`.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@tests $backend;
            g1_broadcast_after_subscribe_is_delivered_exactly_once,
            g1_broadcast_from_excludes_only_the_sender,
            g1_acknowledged_broadcasts_deliver_as_broadcasts_do,
            g2_no_delivery_after_unsubscribe_topic,
            g2_unsubscribe_all_stops_every_handler,
            g3_subscribing_twice_is_one_subscription_and_the_newer_handler_wins,
            g3_unsubscribing_what_is_not_subscribed_succeeds,
            g4_one_publisher_in_order_across_topics_one_at_a_time,
            g5_a_panicking_handler_does_not_stop_its_session_or_others,
            g5_a_stalled_handler_does_not_delay_other_sessions,
            g6_topics_are_literal_whatever_their_characters,
            g7_nothing_is_held_after_every_session_leaves,
            g7_a_full_mailbox_drops_by_policy_and_counts,
            g8_stop_is_idempotent_ends_every_task_and_refuses_later_calls,
            g9_bad_input_is_a_typed_error_that_affects_nothing,
            multi_instance_exactly_once_in_order,
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                conformance::$name(&$backend).await
            }
        )*
    };
}

/// Defines `$backend`, a distributed [`Backend`] whose instances come from
/// `conformance::$module::cluster`, so that every distributed provider runs through the same
/// code: on two instances sharing a broker, or with `single`, on one.
#[macro_export]
macro_rules! distributed_backend {
    ($backend:ident, $module:ident) => {
        $crate::distributed_backend!(@define $backend, $module, true);
    };
    // One instance on the broker: every check through the broker's path on one process.
    ($backend:ident, $module:ident, single) => {
        $crate::distributed_backend!(@define $backend, $module, false);
    };
    (@define $backend:ident, $module:ident, $distributed:expr) => {
        struct $backend;

        impl conformance::Backend for $backend {
            fn distributed(&self) -> bool {
                $distributed
            }

            fn cluster(
                &self,
                n: usize,
                config: fanout::Config,
            ) -> conformance::BoxFuture<'_, Option<Vec<conformance::Instance>>> {
                Box::pin(async move {
                    let nodes = conformance::$module::cluster("conformance", n, config).await?;
                    Some(
                        nodes
                            .into_iter()
                            .map(|provider| {
                                let tasks = std::sync::Arc::clone(&provider);
                                conformance::Instance {
                                    provider: provider as std::sync::Arc<dyn fanout::PubSubProvider>,
                                    running_tasks: Box::new(move || tasks.running_tasks()),
                                }
                            })
                            .collect(),
                    )
                })
            }
        }
    };
}

// ----- services -----

// Shared with the sizing tool's tests, which are another package's.
#[path = "../support/services.rs"]
mod services;
#[allow(unused_imports)]
pub use services::{reach, services_required, skip};

/// A channel prefix no other test (or test run) shares, within PostgreSQL's 30-byte bound
/// for prefixes: `t`, up to six letters and digits of `test`, then hex digits.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let test: String = test.chars().filter(char::is_ascii_alphanumeric).take(6).collect();
    format!(
        "t{test}:{:x}:{:x}:",
        (nanos as u64 ^ u64::from(std::process::id())) & 0xff_ffff_ffff,
        n
    )
}

// ----- helpers -----

/// Two instances for a distributed backend, one otherwise.
async fn instances(backend: &dyn Backend, config: Config) -> Option<Vec<Instance>> {
    let n = if backend.distributed() { 2 } else { 1 };
    backend.cluster(n, config).await
}

async fn stop_all(instances: &[Instance]) {
    for instance in instances {
        instance.provider.stop().await.expect("stop");
    }
}

/// What sessions received: (session, topic, payload), in arrival order.
#[derive(Clone, Default)]
pub struct Inbox {
    log: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Inbox {
    pub fn handler(&self, session: &str) -> Handler {
        let log = Arc::clone(&self.log);
        let session = session.to_string();
        Handler::new(move |topic, message| {
            let log = Arc::clone(&log);
            let session = session.clone();
            async move {
                let text = String::from_utf8_lossy(&message).into_owned();
                log.lock().unwrap().push((session, topic.to_string(), text));
            }
        })
    }

    /// Payloads `session` received, in order.
    pub fn of(&self, session: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| s == session)
            .map(|(_, _, m)| m.clone())
            .collect()
    }

    /// (topic, payload) pairs `session` received, in order.
    pub fn with_topics(&self, session: &str) -> Vec<(String, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| s == session)
            .map(|(_, t, m)| (t.clone(), m.clone()))
            .collect()
    }

    pub fn has(&self, session: &str, payload: &str) -> bool {
        self.of(session).iter().any(|m| m == payload)
    }

    pub async fn until(&self, what: &str, done: impl Fn(&Inbox) -> bool) {
        eventually(what, || done(self)).await
    }
}

/// Polls `done` every few milliseconds; fails the test after [`WAIT`].
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn settled(stats: &StatsSnapshot) -> bool {
    stats.recipients == stats.delivered + stats.dropped.total()
}

// ----- G1 -----

pub async fn g1_broadcast_after_subscribe_is_delivered_exactly_once(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let inbox = Inbox::default();
    let sessions: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    for (i, session) in sessions.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        node.provider
            .subscribe_topic(session, "room:1", inbox.handler(session))
            .await
            .unwrap();
    }
    for (j, node) in nodes.iter().enumerate() {
        node.provider
            .broadcast("room:1", b(&format!("m{j}")))
            .await
            .unwrap();
        node.provider
            .broadcast("room:1", b(&format!("end{j}")))
            .await
            .unwrap();
    }
    inbox
        .until("every session to get every publisher's end marker", |inbox| {
            sessions
                .iter()
                .all(|s| (0..nodes.len()).all(|j| inbox.has(s, &format!("end{j}"))))
        })
        .await;
    for session in &sessions {
        let got = inbox.of(session);
        for j in 0..nodes.len() {
            let m = format!("m{j}");
            assert_eq!(
                got.iter().filter(|x| **x == m).count(),
                1,
                "{session} got {got:?}"
            );
        }
        assert_eq!(got.len(), 2 * nodes.len(), "{session} got {got:?}");
    }
    stop_all(&nodes).await;
}

/// `broadcast_acknowledged` and `broadcast_from_acknowledged` deliver exactly as `broadcast`
/// and `broadcast_from` do, from either instance; when they return `Ok`, the message has left
/// for every instance (in one process: every mailbox has it).
pub async fn g1_acknowledged_broadcasts_deliver_as_broadcasts_do(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let last = nodes.len() - 1;
    let inbox = Inbox::default();
    for (session, node) in [("a", 0), ("b", last)] {
        nodes[node]
            .provider
            .subscribe_topic(session, "acked", inbox.handler(session))
            .await
            .unwrap();
    }
    for node in [0, last] {
        let p = &nodes[node].provider;
        p.broadcast_acknowledged("acked", b(&format!("all-via-{node}")))
            .await
            .unwrap();
        p.broadcast_from_acknowledged("a", "acked", b(&format!("not-a-via-{node}")))
            .await
            .unwrap();
    }
    inbox
        .until("b to get all four", |inbox| inbox.of("b").len() == 4)
        .await;
    inbox
        .until("a to get the two not from it", |inbox| inbox.of("a").len() == 2)
        .await;
    for node in [0, last] {
        assert!(inbox.has("a", &format!("all-via-{node}")));
        assert!(!inbox.has("a", &format!("not-a-via-{node}")));
        assert!(inbox.has("b", &format!("not-a-via-{node}")));
    }
    stop_all(&nodes).await;
}

pub async fn g1_broadcast_from_excludes_only_the_sender(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let last = nodes.len() - 1;
    let inbox = Inbox::default();
    // a and c on the first instance, b on the last.
    for (session, node) in [("a", 0), ("b", last), ("c", 0)] {
        nodes[node]
            .provider
            .subscribe_topic(session, "chat", inbox.handler(session))
            .await
            .unwrap();
    }
    // From the sender's own instance, and (distributed) from another one.
    for node in [0, last] {
        let p = &nodes[node].provider;
        p.broadcast_from("a", "chat", b(&format!("from-a-via-{node}")))
            .await
            .unwrap();
        p.broadcast("chat", b(&format!("end-{node}"))).await.unwrap();
    }
    inbox
        .until("every session to get both end markers", |inbox| {
            ["a", "b", "c"]
                .iter()
                .all(|s| inbox.has(s, &format!("end-{last}")) && inbox.has(s, "end-0"))
        })
        .await;
    for node in [0, last] {
        let m = format!("from-a-via-{node}");
        assert!(
            !inbox.has("a", &m),
            "the sender got its own broadcast_from: {:?}",
            inbox.of("a")
        );
        assert!(inbox.has("b", &m) && inbox.has("c", &m));
    }
    stop_all(&nodes).await;
}

// ----- G2 -----

pub async fn g2_no_delivery_after_unsubscribe_topic(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let last = nodes.len() - 1;
    let inbox = Inbox::default();
    let s = &nodes[last].provider;
    s.subscribe_topic("s", "t", inbox.handler("s")).await.unwrap();
    s.subscribe_topic("s", "u", inbox.handler("s")).await.unwrap();
    nodes[0].provider.broadcast("t", b("before")).await.unwrap();
    inbox.until("the first message", |i| i.has("s", "before")).await;
    s.unsubscribe_topic("s", "t").await.unwrap();
    nodes[0].provider.broadcast("t", b("after")).await.unwrap();
    nodes[0].provider.broadcast("u", b("sentinel")).await.unwrap();
    inbox.until("the sentinel", |i| i.has("s", "sentinel")).await;
    if !backend.keeps_order_across_topics() {
        // The sentinel's topic may travel apart from `t`: it fences nothing, a pause does.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(inbox.of("s"), vec!["before", "sentinel"]);
    stop_all(&nodes).await;
}

pub async fn g2_unsubscribe_all_stops_every_handler(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let last = nodes.len() - 1;
    let inbox = Inbox::default();
    let p = &nodes[last].provider;
    for topic in ["t1", "t2"] {
        p.subscribe_topic("leaver", topic, inbox.handler("leaver"))
            .await
            .unwrap();
        p.subscribe_topic("stayer", topic, inbox.handler("stayer"))
            .await
            .unwrap();
    }
    p.unsubscribe_all("leaver").await.unwrap();
    for topic in ["t1", "t2"] {
        nodes[0].provider.broadcast(topic, b(topic)).await.unwrap();
    }
    inbox
        .until("the stayer's messages", |i| {
            i.has("stayer", "t1") && i.has("stayer", "t2")
        })
        .await;
    let got = inbox.of("stayer");
    let expected = vec!["t1".to_string(), "t2".to_string()];
    let topic = |message: &String| usize::from(message == "t2");
    assert_eq!(
        as_ordered(backend, &got, topic),
        as_ordered(backend, &expected, topic)
    );
    assert!(inbox.of("leaver").is_empty(), "{:?}", inbox.of("leaver"));
    stop_all(&nodes).await;
}

// ----- G3 -----

pub async fn g3_subscribing_twice_is_one_subscription_and_the_newer_handler_wins(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let last = nodes.len() - 1;
    let old = Inbox::default();
    let new = Inbox::default();
    let p = &nodes[last].provider;
    p.subscribe_topic("s", "t", old.handler("s")).await.unwrap();
    p.subscribe_topic("s", "t", new.handler("s")).await.unwrap();
    nodes[0].provider.broadcast("t", b("one")).await.unwrap();
    nodes[0].provider.broadcast("t", b("two")).await.unwrap();
    new.until("both messages", |i| i.has("s", "two")).await;
    assert_eq!(new.of("s"), vec!["one", "two"]);
    assert!(old.of("s").is_empty());
    assert_eq!(p.stats().subscriptions, 1);
    stop_all(&nodes).await;
}

pub async fn g3_unsubscribing_what_is_not_subscribed_succeeds(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let inbox = Inbox::default();
    let p = &nodes[0].provider;
    p.unsubscribe_topic("nobody", "t").await.unwrap();
    p.unsubscribe_all("nobody").await.unwrap();
    p.subscribe_topic("s", "t", inbox.handler("s")).await.unwrap();
    p.unsubscribe_topic("s", "other").await.unwrap();
    p.broadcast("t", b("still")).await.unwrap();
    inbox.until("the message", |i| i.has("s", "still")).await;
    stop_all(&nodes).await;
}

// ----- G4 -----

pub async fn g4_one_publisher_in_order_across_topics_one_at_a_time(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default().with_capacity(1024)).await else {
        return;
    };
    const N: usize = 300;
    let inbox = Inbox::default();
    let sessions = ["x", "y", "z"];
    for (i, session) in sessions.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        for topic in ["t1", "t2"] {
            node.provider
                .subscribe_topic(session, topic, inbox.handler(session))
                .await
                .unwrap();
        }
    }
    let publisher = Arc::clone(&nodes[0].provider);
    for seq in 0..N {
        let topic = if seq % 2 == 0 { "t1" } else { "t2" };
        publisher.broadcast(topic, b(&seq.to_string())).await.unwrap();
    }
    inbox
        .until("every message at every session", |i| {
            sessions.iter().all(|s| i.of(s).len() >= N)
        })
        .await;
    for session in sessions {
        let got: Vec<usize> = inbox.of(session).iter().map(|m| m.parse().unwrap()).collect();
        // Even numbers went to t1, odd ones to t2.
        let expected: Vec<usize> = (0..N).collect();
        assert_eq!(
            as_ordered(backend, &got, |seq| seq % 2),
            as_ordered(backend, &expected, |seq| seq % 2),
            "{session}: out of order or duplicated"
        );
    }
    stop_all(&nodes).await;

    // One session, one at a time.
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let last = nodes.len() - 1;
    let running = Arc::new(AtomicUsize::new(0));
    let overlapped = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    for topic in ["a", "b"] {
        let (running, overlapped, done) = (Arc::clone(&running), Arc::clone(&overlapped), Arc::clone(&done));
        let handler = Handler::new(move |_topic, _message| {
            let (running, overlapped, done) =
                (Arc::clone(&running), Arc::clone(&overlapped), Arc::clone(&done));
            async move {
                if running.fetch_add(1, SeqCst) > 0 {
                    overlapped.fetch_add(1, SeqCst);
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
                running.fetch_sub(1, SeqCst);
                done.fetch_add(1, SeqCst);
            }
        });
        nodes[last]
            .provider
            .subscribe_topic("one", topic, handler)
            .await
            .unwrap();
    }
    for seq in 0..40 {
        let topic = if seq % 2 == 0 { "a" } else { "b" };
        nodes[0].provider.broadcast(topic, b("m")).await.unwrap();
    }
    eventually("40 handler runs", || done.load(SeqCst) == 40).await;
    assert_eq!(overlapped.load(SeqCst), 0, "a session ran two handlers at once");
    stop_all(&nodes).await;
}

// ----- G5 -----

pub async fn g5_a_panicking_handler_does_not_stop_its_session_or_others(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let last = nodes.len() - 1;
    let inbox = Inbox::default();
    let record = inbox.handler("fragile");
    let fragile = Handler::new(move |topic, message| {
        let record = record.clone();
        async move {
            if &message[..] == b"boom" {
                panic!("handler panics on purpose");
            }
            record.call(topic, message).await.unwrap();
        }
    });
    nodes[last]
        .provider
        .subscribe_topic("fragile", "t", fragile)
        .await
        .unwrap();
    nodes[last]
        .provider
        .subscribe_topic("sturdy", "t", inbox.handler("sturdy"))
        .await
        .unwrap();
    for m in ["boom", "after", "boom", "again"] {
        nodes[0].provider.broadcast("t", b(m)).await.unwrap();
    }
    inbox
        .until("messages after the panics", |i| {
            i.has("fragile", "again") && i.has("sturdy", "again")
        })
        .await;
    assert_eq!(inbox.of("fragile"), vec!["after", "again"]);
    assert_eq!(inbox.of("sturdy"), vec!["boom", "after", "boom", "again"]);
    eventually("two panics counted", || {
        nodes[last].provider.stats().handler_panics == 2
    })
    .await;
    stop_all(&nodes).await;
}

pub async fn g5_a_stalled_handler_does_not_delay_other_sessions(backend: &dyn Backend) {
    let config = Config::default().with_stop_grace(Duration::from_millis(100));
    let Some(nodes) = instances(backend, config).await else {
        return;
    };
    let last = nodes.len() - 1;
    let inbox = Inbox::default();
    let stalled = Handler::new(|_topic, _message| std::future::pending::<()>());
    nodes[last]
        .provider
        .subscribe_topic("stalled", "t", stalled)
        .await
        .unwrap();
    nodes[last]
        .provider
        .subscribe_topic("lively", "t", inbox.handler("lively"))
        .await
        .unwrap();
    let started = Instant::now();
    for seq in 0..50 {
        nodes[0]
            .provider
            .broadcast("t", b(&seq.to_string()))
            .await
            .unwrap();
    }
    inbox
        .until("all 50 at the lively session", |i| i.of("lively").len() == 50)
        .await;
    assert!(started.elapsed() < WAIT);
    stop_all(&nodes).await;
}

// ----- G6 -----

pub const AWKWARD_TOPICS: &[&str] = &[
    "room",
    "room*",
    "room.*",
    "room?",
    "room[1]",
    "room[!1]",
    "[a-z]*",
    "*",
    "?",
    ">",
    "room.>",
    "back\\slash",
    "\\*",
    "with space",
    " ",
    "new\nline",
    "tab\there",
    "quote\"s'",
    "ünïcödé:房间:🎉",
    "{braces}",
    "%s%d",
];

pub async fn g6_topics_are_literal_whatever_their_characters(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let inbox = Inbox::default();
    for (i, topic) in AWKWARD_TOPICS.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        node.provider
            .subscribe_topic(&format!("s{i}"), topic, inbox.handler(&format!("s{i}")))
            .await
            .unwrap();
    }
    let publisher = &nodes[0].provider;
    for topic in AWKWARD_TOPICS {
        publisher
            .broadcast(topic, b(&format!("to {topic}")))
            .await
            .unwrap();
    }
    for topic in AWKWARD_TOPICS {
        publisher.broadcast(topic, b("end")).await.unwrap();
    }
    inbox
        .until("every session's end marker", |i| {
            (0..AWKWARD_TOPICS.len()).all(|n| i.has(&format!("s{n}"), "end"))
        })
        .await;
    for (i, topic) in AWKWARD_TOPICS.iter().enumerate() {
        let got = inbox.with_topics(&format!("s{i}"));
        let want = vec![
            (topic.to_string(), format!("to {topic}")),
            (topic.to_string(), "end".to_string()),
        ];
        assert_eq!(
            got, want,
            "the subscriber of {topic:?} got another topic's message"
        );
    }
    stop_all(&nodes).await;
}

// ----- G7 -----

pub async fn g7_nothing_is_held_after_every_session_leaves(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let inbox = Inbox::default();
    for (n, node) in nodes.iter().enumerate() {
        for s in 0..10 {
            let session = format!("n{n}s{s}");
            for t in 0..5 {
                node.provider
                    .subscribe_topic(
                        &session,
                        &format!("topic-{}", (s + t) % 7),
                        inbox.handler(&session),
                    )
                    .await
                    .unwrap();
            }
        }
        let stats = node.provider.stats();
        assert_eq!((stats.sessions, stats.subscriptions, stats.topics), (10, 50, 7));
    }
    nodes[0].provider.broadcast("topic-3", b("x")).await.unwrap();
    for (n, node) in nodes.iter().enumerate() {
        for s in 0..10 {
            let session = format!("n{n}s{s}");
            if s % 2 == 0 {
                node.provider.unsubscribe_all(&session).await.unwrap();
            } else {
                for t in 0..5 {
                    node.provider
                        .unsubscribe_topic(&session, &format!("topic-{}", (s + t) % 7))
                        .await
                        .unwrap();
                }
            }
        }
        let stats = node.provider.stats();
        assert_eq!(
            (stats.sessions, stats.subscriptions, stats.topics),
            (0, 0, 0),
            "{stats:?}"
        );
    }
    stop_all(&nodes).await;
    for node in &nodes {
        eventually("every task to end", || (node.running_tasks)() == 0).await;
    }
}

pub async fn g7_a_full_mailbox_drops_by_policy_and_counts(backend: &dyn Backend) {
    let config = Config::default()
        .with_capacity(4)
        .with_policy(OverflowPolicy::DropNewest)
        .with_stop_grace(Duration::from_millis(200));
    let Some(nodes) = instances(backend, config).await else {
        return;
    };
    let last = nodes.len() - 1;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let inbox = Inbox::default();
    let record = inbox.handler("slow");
    let slow_gate = Arc::clone(&gate);
    let entered = Arc::new(AtomicUsize::new(0));
    let slow_entered = Arc::clone(&entered);
    let slow = Handler::new(move |topic, message| {
        let (record, gate, entered) = (record.clone(), Arc::clone(&slow_gate), Arc::clone(&slow_entered));
        async move {
            entered.fetch_add(1, SeqCst);
            gate.acquire().await.unwrap().forget();
            record.call(topic, message).await.unwrap();
        }
    });
    nodes[last]
        .provider
        .subscribe_topic("slow", "t", slow)
        .await
        .unwrap();
    nodes[0].provider.broadcast("t", b("0")).await.unwrap();
    eventually("the first message to be in the handler", || {
        entered.load(SeqCst) == 1
    })
    .await;
    for seq in 1..20 {
        nodes[0]
            .provider
            .broadcast("t", b(&seq.to_string()))
            .await
            .unwrap();
    }
    let receiver = &nodes[last].provider;
    eventually("all 20 broadcasts to reach the slow session's instance", || {
        receiver.stats().recipients == 20
    })
    .await;
    gate.add_permits(100);
    eventually("the mailbox to drain", || settled(&receiver.stats())).await;
    let stats = receiver.stats();
    // One message in the handler, four in the mailbox: the other fifteen are dropped.
    assert_eq!(stats.dropped.drop_newest, 15, "{stats:?}");
    assert_eq!(stats.delivered, 5, "{stats:?}");
    assert_eq!(inbox.of("slow"), vec!["0", "1", "2", "3", "4"]);
    stop_all(&nodes).await;
}

// ----- G8 -----

pub async fn g8_stop_is_idempotent_ends_every_task_and_refuses_later_calls(backend: &dyn Backend) {
    let Some(nodes) = instances(backend, Config::default()).await else {
        return;
    };
    let inbox = Inbox::default();
    for (n, node) in nodes.iter().enumerate() {
        node.provider
            .subscribe_topic(&format!("s{n}"), "t", inbox.handler("s"))
            .await
            .unwrap();
    }
    assert!(nodes.iter().all(|n| (n.running_tasks)() > 0));
    for node in &nodes {
        node.provider.stop().await.unwrap();
        node.provider.stop().await.unwrap();
        assert_eq!((node.running_tasks)(), 0, "a task outlived stop");
        let p = &node.provider;
        assert!(matches!(
            p.subscribe_topic("s", "t", inbox.handler("s")).await,
            Err(PubSubError::Stopped)
        ));
        assert!(matches!(
            p.unsubscribe_topic("s", "t").await,
            Err(PubSubError::Stopped)
        ));
        assert!(matches!(p.unsubscribe_all("s").await, Err(PubSubError::Stopped)));
        assert!(matches!(
            p.broadcast("t", b("x")).await,
            Err(PubSubError::Stopped)
        ));
        assert!(matches!(
            p.broadcast_from("s", "t", b("x")).await,
            Err(PubSubError::Stopped)
        ));
        assert!(p.start().await.is_err(), "start after stop must fail");
    }
}

// ----- G9 -----

pub async fn g9_bad_input_is_a_typed_error_that_affects_nothing(backend: &dyn Backend) {
    let limits = Limits {
        max_topic_bytes: 16,
        max_payload_bytes: 32,
        max_session_id_bytes: 8,
    };
    let Some(nodes) = instances(backend, Config::default().with_limits(limits)).await else {
        return;
    };
    let last = nodes.len() - 1;
    let inbox = Inbox::default();
    nodes[last]
        .provider
        .subscribe_topic("good", "t", inbox.handler("good"))
        .await
        .unwrap();
    let p = &nodes[0].provider;
    let long_topic = "t".repeat(17);
    let err = |r: Result<(), PubSubError>| r.expect_err("bad input must be refused");
    assert!(matches!(
        err(p.broadcast("", b("x")).await),
        PubSubError::EmptyTopic
    ));
    let e = err(p.broadcast(&long_topic, b("x")).await);
    assert!(
        matches!(e, PubSubError::TopicTooLong { len: 17, limit: 16 }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "topic is 17 bytes; the limit is 16");
    let e = err(p.broadcast("t", Bytes::from(vec![b'x'; 33])).await);
    assert!(
        matches!(e, PubSubError::PayloadTooLarge { len: 33, limit: 32 }),
        "{e:?}"
    );
    assert!(matches!(
        err(p.broadcast_from("", "t", b("x")).await),
        PubSubError::EmptySessionId
    ));
    let e = err(p.broadcast_from("123456789", "t", b("x")).await);
    assert!(
        matches!(e, PubSubError::SessionIdTooLong { len: 9, limit: 8 }),
        "{e:?}"
    );
    let e = err(p.subscribe_topic("s", &long_topic, inbox.handler("s")).await);
    assert!(matches!(e, PubSubError::TopicTooLong { .. }), "{e:?}");
    assert!(matches!(
        err(p.subscribe_topic("", "t", inbox.handler("s")).await),
        PubSubError::EmptySessionId
    ));
    assert!(matches!(
        err(p.unsubscribe_topic("s", "").await),
        PubSubError::EmptyTopic
    ));
    // Nothing else was affected: the good subscription still delivers, and only it.
    p.broadcast("t", b("fine")).await.unwrap();
    inbox.until("the valid message", |i| i.has("good", "fine")).await;
    assert_eq!(inbox.of("good"), vec!["fine"]);
    assert!(inbox.of("s").is_empty());
    stop_all(&nodes).await;
}

// ----- multi-instance -----

/// Two instances, three sessions on each on two topics, two publishers on each: every
/// broadcast reaches every subscriber on either side exactly once, in per-publisher order.
pub async fn multi_instance_exactly_once_in_order(backend: &dyn Backend) {
    if !backend.distributed() {
        return;
    }
    let Some(nodes) = backend.cluster(2, Config::default().with_capacity(4096)).await else {
        return;
    };
    const PER_PUBLISHER: usize = 250;
    let inbox = Inbox::default();
    let sessions: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for (i, session) in sessions.iter().enumerate() {
        for topic in ["even", "odd"] {
            nodes[i % 2]
                .provider
                .subscribe_topic(session, topic, inbox.handler(session))
                .await
                .unwrap();
        }
    }
    let mut publishers = Vec::new();
    for p in 0..4 {
        let provider = Arc::clone(&nodes[p % 2].provider);
        publishers.push(tokio::spawn(async move {
            for seq in 0..PER_PUBLISHER {
                let topic = if seq % 2 == 0 { "even" } else { "odd" };
                provider.broadcast(topic, b(&format!("{p}:{seq}"))).await.unwrap();
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let total = 4 * PER_PUBLISHER;
    inbox
        .until("every message at every session", |i| {
            sessions.iter().all(|s| i.of(s).len() >= total)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for session in &sessions {
        let got = inbox.of(session);
        assert_eq!(got.len(), total, "{session}: duplicates");
        // Per publisher, the next sequence number expected; per topic too (even numbers went to
        // `even`) where the backend keeps order only per topic.
        let step = if backend.keeps_order_across_topics() { 1 } else { 2 };
        let mut next: HashMap<(usize, usize), usize> = HashMap::new();
        for message in &got {
            let (p, seq) = message.split_once(':').unwrap();
            let (p, seq): (usize, usize) = (p.parse().unwrap(), seq.parse().unwrap());
            let lane = if step == 1 { 0 } else { seq % 2 };
            let expected = next.entry((p, lane)).or_insert(lane);
            assert_eq!(seq, *expected, "{session}: publisher {p} out of order");
            *expected += step;
        }
    }
    stop_all(&nodes).await;
}
