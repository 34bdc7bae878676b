//! Hostile and edge-case input against `PostgresPubSub` on the real PostgreSQL
//! (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`): topics that look like
//! SQL, topics that share a channel, identical notifications, payloads of every byte value and
//! at the notification limit, large payloads through a table, and the `[postgres]` TOML table.
//!
//! Each test runs two instances, A and B, on a channel prefix of its own. Skips with a printed
//! reason when PostgreSQL is unreachable, fails instead under `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(feature = "postgres")]

#[macro_use]
mod conformance;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::postgres::{admin, test_config};
use conformance::{eventually, unique_prefix};
use fanout::bridge::{BrokerError, Unacknowledged};
use fanout::envelope::{single_encoded_len, Record};
use fanout::postgres::{
    encoded_len, max_inline_payload, LargePayloads, PostgresConfig, PostgresPubSub, MAX_IDENTIFIER_BYTES,
    NOTIFY_PAYLOAD_LIMIT,
};
use fanout::{Config, Handler, Limits, PubSubError, PubSubProvider};
use tokio_postgres::Client;

/// A session's messages: (topic, payload), in arrival order.
type Log = Vec<(String, Bytes)>;

/// What each session received, byte for byte.
#[derive(Clone, Default)]
struct Received {
    sessions: Arc<Mutex<HashMap<String, Log>>>,
}

impl Received {
    fn handler(&self, session: &str) -> Handler {
        let sessions = Arc::clone(&self.sessions);
        let session = session.to_string();
        Handler::new(move |topic, message| {
            let sessions = Arc::clone(&sessions);
            let session = session.clone();
            async move {
                let mut sessions = sessions.lock().unwrap();
                sessions
                    .entry(session)
                    .or_default()
                    .push((topic.to_string(), message));
            }
        })
    }

    /// Subscribes `session` on `node` to `topic`, its messages recorded here.
    async fn subscribe(&self, node: &PostgresPubSub, session: &str, topic: &str) {
        node.subscribe_topic(session, topic, self.handler(session))
            .await
            .unwrap_or_else(|e| panic!("subscribe {session} to {topic:?}: {e}"));
    }

    /// (topic, payload) pairs `session` received, in order.
    fn of(&self, session: &str) -> Log {
        let sessions = self.sessions.lock().unwrap();
        sessions.get(session).cloned().unwrap_or_default()
    }

    /// (topic, payload) pairs `session` received from `publisher`, in order: those whose
    /// payload begins `{publisher}:`.
    fn from(&self, session: &str, publisher: &str) -> Log {
        let mark = format!("{publisher}:");
        self.of(session)
            .into_iter()
            .filter(|(_, m)| m.starts_with(mark.as_bytes()))
            .collect()
    }

    /// Payloads `session` received, in order.
    fn payloads(&self, session: &str) -> Vec<Bytes> {
        self.of(session).into_iter().map(|(_, m)| m).collect()
    }

    fn count(&self, session: &str) -> usize {
        self.sessions.lock().unwrap().get(session).map_or(0, Vec::len)
    }

    fn has(&self, session: &str, payload: &[u8]) -> bool {
        let sessions = self.sessions.lock().unwrap();
        sessions
            .get(session)
            .is_some_and(|got| got.iter().any(|(_, m)| m == payload))
    }

    async fn until(&self, what: &str, done: impl Fn(&Received) -> bool) {
        eventually(what, || done(self)).await
    }
}

/// A lowercase SQL-safe name no other test (or test run) shares: `kind_` and hex digits.
fn unique_name(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{kind}_{:08x}{n:x}",
        (nanos ^ u64::from(std::process::id()).rotate_left(32)) & 0xffff_ffff
    )
}

/// `name` as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Two started instances on the settings `postgres`, each with `config` for its local side.
async fn pair(postgres: &PostgresConfig, config: &Config) -> [Arc<PostgresPubSub>; 2] {
    let start = || async {
        let provider = PostgresPubSub::with_config(postgres.clone(), config.clone()).expect("valid config");
        provider
            .start()
            .await
            .expect("start against a reachable postgres");
        Arc::new(provider)
    };
    [start().await, start().await]
}

/// The admin connection, and what the test made in the database: dropped by
/// [`finish`](Self::finish) once the providers have stopped.
struct Database {
    admin: Client,
    /// Run in order by `finish`.
    cleanup: Vec<String>,
}

impl Database {
    /// Drops the payload table `name` under the providers that use it, so that the server
    /// refuses their next stored payload.
    async fn drop_table(&self, name: &str) {
        self.admin
            .batch_execute(&format!("DROP TABLE {}", quoted(name)))
            .await
            .unwrap();
    }

    /// Connects, or `None` after printing why the test is skipped.
    async fn connect() -> Option<Database> {
        Some(Database {
            admin: admin().await?,
            cleanup: Vec::new(),
        })
    }

    /// Drops the table `name` at the end.
    fn drops_table(&mut self, name: &str) {
        self.cleanup
            .push(format!("DROP TABLE IF EXISTS {}", quoted(name)));
    }

    /// Creates a table the test then checks nothing dropped; returns its name.
    async fn canary(&mut self) -> String {
        let canary = unique_name("canary");
        self.admin
            .batch_execute(&format!("CREATE TABLE {canary} (x int)"))
            .await
            .unwrap();
        self.drops_table(&canary);
        canary
    }

    /// Settings for instances that store large payloads in a table of their own
    /// (`payload_table`), dropped at the end.
    fn table_mode(&mut self, test: &str) -> PostgresConfig {
        let table = unique_name("payloads");
        self.drops_table(&table);
        test_config(&unique_prefix(test))
            .with_large_payloads(LargePayloads::Table)
            .with_payload_table(table)
    }

    /// Two started instances in table mode, rows kept for `ttl`, each with `config` for its
    /// local side; and their table's name.
    async fn table_pair(
        &mut self,
        test: &str,
        ttl: Duration,
        config: &Config,
    ) -> ([Arc<PostgresPubSub>; 2], String) {
        let postgres = self.table_mode(test).with_payload_ttl(ttl);
        (pair(&postgres, config).await, postgres.payload_table)
    }

    /// Whether a table named exactly `name` exists.
    async fn has_table(&self, name: &str) -> bool {
        let row = self
            .admin
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname = $1 AND relkind = 'r'",
                &[&name],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 1
    }

    async fn row_count(&self, table: &str) -> i64 {
        self.admin
            .query_one(&format!("SELECT count(*) FROM {}", quoted(table)), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Stops `nodes`, then drops what the test made.
    async fn finish(self, nodes: &[Arc<PostgresPubSub>]) {
        stop(nodes).await;
        for statement in &self.cleanup {
            self.admin.batch_execute(statement).await.unwrap();
        }
    }
}

/// A `payload_ttl` no row outlives during a test.
const KEEP: Duration = Duration::from_secs(60);

/// Stops `nodes`; every task of theirs ends.
async fn stop(nodes: &[Arc<PostgresPubSub>]) {
    for node in nodes {
        node.stop().await.unwrap();
        assert_eq!(node.running_tasks(), 0);
    }
}

/// `len` pseudo-random bytes for `seed` (xorshift64*), covering every byte value once long.
fn noise(seed: u64, len: usize) -> Bytes {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Asserts `got` is `want`, naming the first message that differs rather than printing both.
#[track_caller]
fn assert_same_payloads(got: &[Bytes], want: &[Bytes], what: &str) {
    let lengths = |messages: &[Bytes]| messages.iter().map(Bytes::len).collect::<Vec<_>>();
    assert_eq!(lengths(got), lengths(want), "{what}: message lengths");
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        let at = (0..want[i].len()).find(|&j| got[i][j] != want[i][j]).unwrap();
        panic!("{what}: message {i} differs at byte {at} of {}", want[i].len());
    }
}

/// Every byte value, 0 to 255, in order, repeated to `len` bytes.
fn every_byte(len: usize) -> Bytes {
    (0..=255u8).cycle().take(len).collect::<Vec<u8>>().into()
}

fn local_config_for_long_topics() -> Config {
    Config::default().with_limits(Limits {
        max_topic_bytes: 16 * 1024,
        ..Limits::default()
    })
}

// ----- topics -----

/// Topics that would break SQL built as text, an identifier quoted wrongly or a channel
/// truncated or case-folded: each must travel as itself. `canary` is the table the SQL-shaped
/// ones name.
fn hostile_topics(canary: &str, prefix_len: usize) -> Vec<String> {
    let mut topics: Vec<String> = [
        "it's",
        "say \"hi\"",
        "\"",
        "a;b",
        "x -- comment",
        "/* c */",
        "back\\slash",
        "\\",
        "$1",
        "$1::text",
        "$$",
        "line\nbreak",
        "cr\r\nlf",
        "nul\0byte",
        "\0",
        "ünïcödé:房间:🎉",
        "Room:A",
        "room:a",
        "ROOM:A",
        "%s%d",
        "*",
        "#",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    topics.push(format!("'); DROP TABLE {canary}; --"));
    topics.push(format!("\"; DROP TABLE {canary}; --"));
    topics.push(format!("x\"); DROP TABLE {canary}; SELECT pg_notify('a"));
    // Plain at 63 bytes with the prefix, hashed at 64.
    let longest_plain = MAX_IDENTIFIER_BYTES - prefix_len;
    topics.push("p".repeat(longest_plain));
    topics.push("p".repeat(longest_plain + 1));
    // Alike in their first 63 bytes, so a truncated channel would mix them.
    topics.push(format!("{}1", "q".repeat(80)));
    topics.push(format!("{}2", "q".repeat(80)));
    topics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_topics_are_delivered_literally_across_instances() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let canary = db.canary().await;
    let prefix = unique_prefix("hostile");
    let nodes = pair(&test_config(&prefix), &Config::default().with_capacity(1024)).await;
    let [a, b] = &nodes;
    let topics = hostile_topics(&canary, prefix.len());
    // The short SQL-shaped topics are plain channels: `LISTEN` quotes them as identifiers.
    let plain = topics
        .iter()
        .filter(|t| t.contains("DROP TABLE") && prefix.len() + t.len() <= MAX_IDENTIFIER_BYTES)
        .inspect(|t| assert_eq!(a.channel_for(t), format!("{prefix}{t}"), "{t:?}"))
        .count();
    assert_eq!(plain, 2, "the canary's name is too long for plain channels");

    let received = Received::default();
    for (i, topic) in topics.iter().enumerate() {
        for (node, side) in [(a, "a"), (b, "b")] {
            let session = format!("{side}{i}");
            received.subscribe(node, &session, topic).await;
        }
    }
    for (node, side) in [(a, "A"), (b, "B")] {
        for topic in &topics {
            node.broadcast(topic, Bytes::from(format!("{side}:{topic}")))
                .await
                .unwrap_or_else(|e| panic!("broadcast on {topic:?}: {e}"));
        }
    }
    // Sentinels: each publisher's last message on every topic.
    for (node, side) in [(a, "A"), (b, "B")] {
        for topic in &topics {
            node.broadcast(topic, Bytes::from(format!("{side}:end")))
                .await
                .unwrap();
        }
    }
    received
        .until("both sentinels at every session", |r| {
            (0..topics.len()).all(|i| {
                ["a", "b"].iter().all(|side| {
                    let session = format!("{side}{i}");
                    r.has(&session, b"A:end") && r.has(&session, b"B:end")
                })
            })
        })
        .await;

    for (i, topic) in topics.iter().enumerate() {
        for side in ["a", "b"] {
            let session = format!("{side}{i}");
            let got = received.of(&session);
            for publisher in ["A", "B"] {
                let from = received.from(&session, publisher);
                let want = vec![
                    (topic.clone(), Bytes::from(format!("{publisher}:{topic}"))),
                    (topic.clone(), Bytes::from(format!("{publisher}:end"))),
                ];
                assert_eq!(from, want, "session {side}{i} on {topic:?}, from {publisher}");
            }
            assert_eq!(got.len(), 4, "session {side}{i} on {topic:?} got {got:?}");
        }
    }
    for node in &nodes {
        assert_eq!(node.broker_stats().malformed, 0, "{:?}", node.broker_stats());
    }
    assert!(db.has_table(&canary).await, "the canary table {canary} is gone");
    db.finish(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_kb_topic_is_refused_with_a_typed_error() {
    let Some(db) = Database::connect().await else {
        return;
    };
    let prefix = unique_prefix("10kb");
    let topic = "t".repeat(10 * 1024);

    // The engine's default limit refuses it before anything else.
    let nodes = pair(&test_config(&prefix), &Config::default()).await;
    let error = nodes[1]
        .subscribe_topic("s", &topic, Handler::new(|_, _| async {}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            PubSubError::TopicTooLong {
                len: 10240,
                limit: 1024
            }
        ),
        "{error:?}"
    );
    let error = nodes[0].broadcast(&topic, "m".into()).await.unwrap_err();
    assert_eq!(error.to_string(), "topic is 10240 bytes; the limit is 1024");
    stop(&nodes).await;

    // With the limit raised, it is subscribed (on a hashed channel), but its envelope cannot
    // be inline: the broadcast is refused, naming the notification's size and the limit.
    let nodes = pair(&test_config(&prefix), &local_config_for_long_topics()).await;
    let [a, b] = &nodes;
    let received = Received::default();
    for topic in [topic.as_str(), "other"] {
        received.subscribe(a, "a", topic).await;
        received.subscribe(b, "b", topic).await;
    }
    let error = a.broadcast(&topic, "m".into()).await.unwrap_err();
    let record = Record {
        sender: None,
        payload: b"m",
    };
    let len = encoded_len(single_encoded_len(&topic, &record));
    match BrokerError::of(&error) {
        Some(&BrokerError::NotificationTooLarge { len: l, limit }) => {
            assert_eq!((l, limit), (len, NOTIFY_PAYLOAD_LIMIT));
        }
        other => panic!("expected NotificationTooLarge, got {other:?} ({error})"),
    }
    assert!(error.to_string().contains(&format!("{len} bytes")), "{error}");
    assert_eq!(a.stats().published, 0, "the refused broadcast was counted");
    // The sentinel, from the same publisher on another topic of the same sessions.
    a.broadcast("other", "end".into()).await.unwrap();
    for session in ["a", "b"] {
        received.until("the sentinel", |r| r.has(session, b"end")).await;
        assert_eq!(received.of(session), [("other".to_string(), Bytes::from("end"))]);
    }
    db.finish(&nodes).await;
}

/// `FNV-1a` over 128 bits, as `fanout::postgres` names hashed channels (pinned there).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(BASIS, |hash, &byte| (hash ^ u128::from(byte)).wrapping_mul(PRIME))
}

/// Sessions on A and B for each topic, broadcasts on each topic from both: every session gets
/// only its own topic's messages (G6), though the topics share a channel.
async fn check_topics_stay_apart(nodes: &[Arc<PostgresPubSub>; 2], topics: &[&str]) {
    let received = Received::default();
    for (i, topic) in topics.iter().enumerate() {
        for (n, node) in nodes.iter().enumerate() {
            let session = format!("n{n}t{i}");
            received.subscribe(node, &session, topic).await;
        }
    }
    for round in 0..5 {
        for (n, node) in nodes.iter().enumerate() {
            for (i, topic) in topics.iter().enumerate() {
                node.broadcast(topic, Bytes::from(format!("n{n}:t{i}:{round}")))
                    .await
                    .unwrap();
            }
        }
    }
    for (n, node) in nodes.iter().enumerate() {
        for topic in topics {
            node.broadcast(topic, Bytes::from(format!("n{n}:end")))
                .await
                .unwrap();
        }
    }
    let sessions: Vec<String> = (0..nodes.len())
        .flat_map(|n| (0..topics.len()).map(move |i| format!("n{n}t{i}")))
        .collect();
    received
        .until("both sentinels at every session", |r| {
            sessions
                .iter()
                .all(|s| r.has(s, b"n0:end") && r.has(s, b"n1:end"))
        })
        .await;
    for (i, topic) in topics.iter().enumerate() {
        for n in 0..nodes.len() {
            let session = format!("n{n}t{i}");
            let got = received.of(&session);
            for publisher in 0..nodes.len() {
                let from = received.from(&session, &format!("n{publisher}"));
                let mut want: Log = (0..5)
                    .map(|round| {
                        (
                            topic.to_string(),
                            Bytes::from(format!("n{publisher}:t{i}:{round}")),
                        )
                    })
                    .collect();
                want.push((topic.to_string(), Bytes::from(format!("n{publisher}:end"))));
                assert_eq!(from, want, "session n{n}t{i} on {topic:?}, from n{publisher}");
            }
            assert_eq!(got.len(), 12, "session n{n}t{i} on {topic:?}: {got:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_forced_onto_one_channel_keep_their_messages_apart() {
    let Some(db) = Database::connect().await else {
        return;
    };
    let prefix = unique_prefix("collide");
    let postgres = test_config(&prefix).with_channel_hash(|_| 42);
    let nodes = pair(&postgres, &Config::default()).await;
    let x = format!("x:{}", "x".repeat(80));
    let y = format!("y:{}", "y".repeat(80));
    let topics = [x.as_str(), y.as_str(), "é", "ü"];
    let channel = format!("{prefix}#{:032x}", 42);
    for node in &nodes {
        for topic in topics {
            assert_eq!(node.channel_for(topic), channel, "{topic:?}");
        }
    }
    check_topics_stay_apart(&nodes, &topics).await;
    for node in &nodes {
        let stats = node.broker_stats();
        assert_eq!(stats.malformed, 0, "{stats:?}");
    }
    db.finish(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_topic_spelt_like_a_hashed_channel_shares_it_and_stays_apart() {
    let Some(db) = Database::connect().await else {
        return;
    };
    let prefix = unique_prefix("spelt");
    let nodes = pair(&test_config(&prefix), &Config::default()).await;
    let hashed = "room:é";
    let spelt = format!("#{:032x}", fnv1a_128(hashed.as_bytes()));
    assert_eq!(nodes[0].channel_for(hashed), nodes[0].channel_for(&spelt));
    assert_eq!(nodes[0].channel_for(&spelt), format!("{prefix}{spelt}"));
    check_topics_stay_apart(&nodes, &[hashed, spelt.as_str()]).await;
    db.finish(&nodes).await;
}

/// B has a session on `x` and one on `y`, which share a channel; when `x`'s leaves, `y`'s still
/// gets A's broadcasts (G1): the channel stays listened while one of its topics has a session.
async fn check_a_shared_channel_outlives_one_topic(postgres: &PostgresConfig, x: &str, y: &str) {
    let nodes = pair(postgres, &Config::default()).await;
    let [a, b] = &nodes;
    assert_eq!(b.channel_for(x), b.channel_for(y));
    let received = Received::default();
    received.subscribe(b, "bx", x).await;
    received.subscribe(b, "by", y).await;
    a.broadcast(y, "before".into()).await.unwrap();
    received
        .until("the first message on y", |r| r.has("by", b"before"))
        .await;

    b.unsubscribe_topic("bx", x).await.unwrap();
    eventually("B to let go of x", || b.broker_stats().channels == 1).await;
    a.broadcast(y, "after".into()).await.unwrap();
    received
        .until(
            &format!("the message on {y:?} after the session on {x:?} left B"),
            |r| r.has("by", b"after"),
        )
        .await;
    assert_eq!(
        received.payloads("by"),
        [Bytes::from("before"), Bytes::from("after")]
    );
    stop(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_channel_stays_listened_while_one_of_its_topics_has_a_session() {
    let Some(_db) = Database::connect().await else {
        return;
    };
    let forced = test_config(&unique_prefix("sharedun")).with_channel_hash(|_| 42);
    check_a_shared_channel_outlives_one_topic(&forced, "x:é", "y:é").await;
    // The same with the real hash: a plain topic spelt like another's hashed channel.
    let spelt = format!("#{:032x}", fnv1a_128("room:é".as_bytes()));
    let real = test_config(&unique_prefix("sharedun"));
    check_a_shared_channel_outlives_one_topic(&real, &spelt, "room:é").await;
}

// ----- identical notifications -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_broadcasts_are_each_delivered() {
    let Some(db) = Database::connect().await else {
        return;
    };
    let prefix = unique_prefix("collapse");
    let nodes = pair(&test_config(&prefix), &Config::default().with_capacity(4096)).await;
    let [a, b] = &nodes;
    let received = Received::default();
    for topic in ["t1", "t2"] {
        received.subscribe(b, "s", topic).await;
    }
    let mut want = Log::new();

    // One at a time, each sent once the previous has arrived: every notification is the same
    // text on the same channel, from the same connection.
    for _ in 0..50 {
        a.broadcast("t1", "x".into()).await.unwrap();
        want.push(("t1".into(), "x".into()));
        let n = want.len();
        received.until("the last x", |r| r.count("s") >= n).await;
    }
    // In bursts: runs of one topic may share an envelope, and t1's identical envelopes go out
    // in one pipeline, between t2's.
    for _ in 0..200 {
        for (topic, payload) in [("t1", "x"), ("t1", "x"), ("t2", "y"), ("t1", "x")] {
            a.broadcast(topic, payload.into()).await.unwrap();
            want.push((topic.into(), payload.into()));
        }
    }
    a.broadcast("t1", "end".into()).await.unwrap();
    want.push(("t1".into(), "end".into()));
    received.until("the sentinel", |r| r.has("s", b"end")).await;
    assert_eq!(received.of("s"), want);
    let stats = b.broker_stats();
    assert_eq!(stats.received, want.len() as u64, "{stats:?}");
    db.finish(&nodes).await;
}

// ----- payloads -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_of_every_byte_value_arrive_byte_exact() {
    let Some(db) = Database::connect().await else {
        return;
    };
    let prefix = unique_prefix("bytes");
    let nodes = pair(&test_config(&prefix), &Config::default().with_capacity(1024)).await;
    let [a, b] = &nodes;
    let topic = "bytes";
    let max = max_inline_payload(topic.len(), 0);
    let mut payloads = vec![Bytes::new(), every_byte(256), every_byte(max)];
    payloads.extend((0..40u64).map(|seed| noise(seed, 1 + (seed as usize * 151) % max)));
    payloads.extend((0..=255u8).map(|byte| Bytes::from(vec![byte; 3])));

    let received = Received::default();
    received.subscribe(a, "a", topic).await;
    received.subscribe(b, "b", topic).await;
    for payload in &payloads {
        a.broadcast(topic, payload.clone()).await.unwrap();
    }
    a.broadcast(topic, "end".into()).await.unwrap();
    received.until("the sentinel at B", |r| r.has("b", b"end")).await;
    received.until("the sentinel at A", |r| r.has("a", b"end")).await;
    payloads.push("end".into());
    assert_same_payloads(&received.payloads("b"), &payloads, "remote");
    assert_same_payloads(&received.payloads("a"), &payloads, "local");
    db.finish(&nodes).await;
}

/// On `topic`, from `sender` (or `broadcast` when `None`): payloads of the inline limit minus
/// one and of the limit arrive at a local and a remote session; one byte more is refused with
/// the notification's size and PostgreSQL's limit, and reaches no session.
async fn check_the_inline_limit(nodes: &[Arc<PostgresPubSub>; 2], topic: &str, sender: Option<&str>) {
    let [a, b] = nodes;
    let received = Received::default();
    received.subscribe(a, "a", topic).await;
    received.subscribe(b, "b", topic).await;
    let send = |payload: Bytes| async move {
        match sender {
            Some(sender) => a.broadcast_from(sender, topic, payload).await,
            None => a.broadcast(topic, payload).await,
        }
    };
    let max = max_inline_payload(topic.len(), sender.map_or(0, str::len));
    let fits = [every_byte(max - 1), noise(7, max)];
    for payload in &fits {
        send(payload.clone())
            .await
            .unwrap_or_else(|e| panic!("{} bytes from {sender:?}: {e}", payload.len()));
    }

    let over = every_byte(max + 1);
    let error = send(over.clone()).await.unwrap_err();
    let record = Record {
        sender,
        payload: &over,
    };
    let len = encoded_len(single_encoded_len(topic, &record));
    assert!(len > NOTIFY_PAYLOAD_LIMIT);
    match BrokerError::of(&error) {
        Some(&BrokerError::NotificationTooLarge { len: l, limit }) => {
            assert_eq!((l, limit), (len, 7999), "{error}");
        }
        other => panic!("expected NotificationTooLarge, got {other:?} ({error})"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&format!("{len} bytes")) && message.contains("7999"),
        "{message}"
    );

    send("end".into()).await.unwrap();
    received.until("the sentinel at B", |r| r.has("b", b"end")).await;
    received.until("the sentinel at A", |r| r.has("a", b"end")).await;
    let want = [fits[0].clone(), fits[1].clone(), "end".into()];
    assert_same_payloads(
        &received.payloads("b"),
        &want,
        &format!("remote, from {sender:?}"),
    );
    assert_same_payloads(&received.payloads("a"), &want, &format!("local, from {sender:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_at_the_inline_limit_is_delivered_and_one_byte_more_is_refused() {
    let Some(db) = Database::connect().await else {
        return;
    };
    let nodes = pair(&test_config(&unique_prefix("limit")), &Config::default()).await;
    check_the_inline_limit(&nodes, "room:1", None).await;
    assert_eq!(max_inline_payload("room:1".len(), 0), 5953);
    db.finish(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_id_counts_against_the_inline_limit() {
    let Some(db) = Database::connect().await else {
        return;
    };
    let nodes = pair(&test_config(&unique_prefix("limitsnd")), &Config::default()).await;
    let (topic, sender) = ("ünïcödé:房间", "tab-with-a-rather-long-session-id:0123456789");
    check_the_inline_limit(&nodes, topic, Some(sender)).await;
    // What was one byte over with the sender fits without it.
    let over = max_inline_payload(topic.len(), sender.len()) + 1;
    nodes[0].broadcast(topic, every_byte(over)).await.unwrap();
    db.finish(&nodes).await;
}

// ----- large payloads -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_travel_through_the_table_in_order() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let (nodes, table) = db.table_pair("large", KEEP, &Config::default()).await;
    let [a, b] = &nodes;
    let row = db
        .admin
        .query_one(
            "SELECT relpersistence::text FROM pg_class WHERE relname = $1 AND relkind = 'r'",
            &[&table],
        )
        .await
        .expect("start() creates the table");
    assert_eq!(row.get::<_, String>(0), "u", "the table is UNLOGGED");

    let received = Received::default();
    for topic in ["big", "side"] {
        received.subscribe(b, "both", topic).await;
        received.subscribe(a, "local", topic).await;
    }
    received.subscribe(b, "big-only", "big").await;
    let sent: Vec<(&str, Bytes)> = vec![
        ("big", "small-0".into()),
        ("big", noise(1, 16 * 1024)),
        ("side", "small-1".into()),
        ("big", noise(2, 256 * 1024)),
        ("big", every_byte(20 * 1024)),
        ("big", "small-2".into()),
        ("side", noise(3, 16 * 1024)),
        ("big", every_byte(256)),
        ("big", noise(4, 100_000)),
        ("side", "small-3".into()),
        ("big", "small-4".into()),
        ("big", "end".into()),
    ];
    for (topic, payload) in &sent {
        a.broadcast(topic, payload.clone()).await.unwrap();
    }
    // Each session's handler runs on its own task: wait for the sentinel at every one.
    for session in ["big-only", "both", "local"] {
        received.until("the sentinel", |r| r.has(session, b"end")).await;
    }
    let big: Vec<(&str, Bytes)> = sent.iter().filter(|(t, _)| *t == "big").cloned().collect();
    for (session, want) in [("both", &sent), ("local", &sent), ("big-only", &big)] {
        let (topics, payloads): (Vec<String>, Vec<Bytes>) = received.of(session).into_iter().unzip();
        let want_topics: Vec<&str> = want.iter().map(|(t, _)| *t).collect();
        let want_payloads: Vec<Bytes> = want.iter().map(|(_, m)| m.clone()).collect();
        assert_eq!(topics, want_topics, "{session}: topics");
        assert_same_payloads(&payloads, &want_payloads, session);
    }
    assert_eq!(b.broker_stats().malformed, 0);

    db.finish(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_kb_topic_travels_in_table_mode() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let (nodes, _) = db
        .table_pair("10kbtab", KEEP, &local_config_for_long_topics())
        .await;
    let [a, b] = &nodes;
    let topic = "t".repeat(10 * 1024);
    let other = format!("{}u", "t".repeat(10 * 1024 - 1));
    assert!(a.channel_for(&topic).len() <= MAX_IDENTIFIER_BYTES);
    let received = Received::default();
    received.subscribe(b, "b", &topic).await;
    received.subscribe(b, "other", &other).await;
    a.broadcast(&topic, "hello".into()).await.unwrap();
    a.broadcast(&other, "end".into()).await.unwrap();
    received
        .until("the other topic's message", |r| r.has("other", b"end"))
        .await;
    assert_eq!(received.of("b"), [(topic.clone(), Bytes::from("hello"))]);
    assert_eq!(received.of("other"), [(other.clone(), Bytes::from("end"))]);
    db.finish(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_payloads_are_deleted_after_the_ttl() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let (nodes, table) = db.table_pair("ttl", ttl, &Config::default()).await;
    let [a, b] = &nodes;
    let received = Received::default();
    received.subscribe(b, "b", "big").await;
    let sent_at = Instant::now();
    for seed in 0..3 {
        a.broadcast("big", noise(seed, 10_000)).await.unwrap();
    }
    received
        .until("three large messages", |r| r.count("b") == 3)
        .await;
    if sent_at.elapsed() < ttl / 2 {
        assert_eq!(db.row_count(&table).await, 3, "rows before the ttl");
    }
    let deadline = Instant::now() + ttl + Duration::from_secs(10);
    while db.row_count(&table).await > 0 {
        assert!(
            Instant::now() < deadline,
            "rows remain {:?} after they were stored; payload_ttl is {ttl:?}",
            sent_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sent_at.elapsed() >= ttl,
        "rows were deleted before payload_ttl ({:?})",
        sent_at.elapsed()
    );
    db.finish(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_payloads_are_deleted_at_most_every_half_ttl() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let (nodes, table) = db.table_pair("expiry", ttl, &Config::default()).await;
    let started = Instant::now();
    let [a, b] = &nodes;
    // Counts the DELETE statements on the table, whether or not they delete rows.
    let counter = unique_name("deletes");
    db.admin
        .batch_execute(&format!(
            "CREATE SEQUENCE {counter};
             CREATE FUNCTION {counter}() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM nextval('{counter}'); RETURN NULL; END $$;
             CREATE TRIGGER {counter} AFTER DELETE ON {} FOR EACH STATEMENT
                 EXECUTE FUNCTION {counter}();",
            quoted(&table)
        ))
        .await
        .unwrap();

    // Small messages, each sent once the previous has arrived: one pipeline each.
    let received = Received::default();
    received.subscribe(b, "b", "small").await;
    let mut sent = 0;
    while started.elapsed() < 2 * ttl {
        a.broadcast("small", Bytes::from(sent.to_string())).await.unwrap();
        sent += 1;
        received.until("the last message", |r| r.count("b") == sent).await;
    }
    let elapsed = started.elapsed();
    let row = db
        .admin
        .query_one(
            &format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {counter}"),
            &[],
        )
        .await
        .unwrap();
    let deletes: i64 = row.get(0);
    // Each instance's publisher expires rows on its own: at most once per half TTL, plus the
    // first, each.
    let per_instance = (elapsed.as_secs_f64() / (ttl.as_secs_f64() / 2.0)).ceil() as i64 + 1;
    let bound = per_instance * nodes.len() as i64;
    db.cleanup
        .push(format!("DROP FUNCTION {counter}(); DROP SEQUENCE {counter};"));
    db.finish(&nodes).await;
    assert!(
        deletes <= bound,
        "{deletes} DELETE statements on the payload table in {elapsed:?} ({sent} broadcasts); \
         with payload_ttl {ttl:?}, at most {bound} expected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_payload_table_name_is_used_as_written() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let canary = db.canary().await;
    let table = format!("{}\"; DROP TABLE {canary}; --", unique_name("Payloads"));
    db.drops_table(&table);
    let postgres = test_config(&unique_prefix("badtable"))
        .with_large_payloads(LargePayloads::Table)
        .with_payload_table(&table);
    let nodes = pair(&postgres, &Config::default()).await;
    let [a, b] = &nodes;
    assert!(db.has_table(&table).await, "no table named {table:?}");
    let received = Received::default();
    received.subscribe(b, "b", "big").await;
    let payload = noise(9, 16 * 1024);
    a.broadcast("big", payload.clone()).await.unwrap();
    a.broadcast("big", "end".into()).await.unwrap();
    received.until("the sentinel", |r| r.has("b", b"end")).await;
    assert_same_payloads(&received.payloads("b"), &[payload, "end".into()], "remote");
    assert_eq!(db.row_count(&table).await, 1);
    assert!(db.has_table(&canary).await, "the canary table is gone");
    db.finish(&nodes).await;
}

/// Sends `payload_len`-byte messages from A to B for about `period`, at most 32 ahead of what
/// B has received; checks each arrived byte-exact and in order, and returns messages per
/// second.
async fn rate(nodes: &[Arc<PostgresPubSub>; 2], topic: &str, payload_len: usize, period: Duration) -> f64 {
    let [a, b] = nodes;
    let window = 32;
    let received = Received::default();
    received.subscribe(b, "b", topic).await;
    let payload = |seq: usize| -> Bytes {
        let mut bytes = noise(seq as u64, payload_len).to_vec();
        bytes[..8].copy_from_slice(&(seq as u64).to_be_bytes());
        bytes.into()
    };
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < period {
        a.broadcast(topic, payload(sent)).await.unwrap();
        sent += 1;
        if sent >= window {
            received
                .until("B to keep up", |r| r.count("b") + window > sent)
                .await;
        }
    }
    received.until("every message", |r| r.count("b") == sent).await;
    let per_second = sent as f64 / started.elapsed().as_secs_f64();
    let got = received.payloads("b");
    for (seq, message) in got.iter().enumerate() {
        assert!(
            *message == payload(seq),
            "message {seq} of {topic} arrived altered"
        );
    }
    per_second
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_rates_across_instances() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let (nodes, _) = db.table_pair("rate", KEEP, &Config::default()).await;
    for (topic, len) in [("16k", 16 * 1024), ("256k", 256 * 1024)] {
        let per_second = rate(&nodes, topic, len, Duration::from_secs(3)).await;
        println!(
            "postgres table mode, A to B: {len}-byte messages at {per_second:.0} messages/s ({:.1} MB/s)",
            per_second * len as f64 / 1e6
        );
    }
    db.finish(&nodes).await;
}

// ----- configuration -----

#[cfg(feature = "toml")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_postgres_table_builds_a_working_provider() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let table = unique_name("payloads");
    db.drops_table(&table);
    let prefix = unique_prefix("toml");
    let source = format!(
        r#"
        [postgres]
        url = "{}"
        channel_prefix = "{prefix}"
        large_payloads = "table"
        payload_table = "{table}"
        payload_ttl_ms = 30000
        health_check_interval_ms = 250
        "#,
        conformance::postgres::url()
    );
    let postgres = PostgresConfig::from_toml_str(&source).unwrap();
    assert_eq!(postgres.large_payloads, LargePayloads::Table);
    let nodes = pair(&postgres, &Config::default()).await;
    let [a, b] = &nodes;
    assert!(db.has_table(&table).await);
    let received = Received::default();
    received.subscribe(b, "b", "big").await;
    let payload = noise(5, 64 * 1024);
    a.broadcast("big", payload.clone()).await.unwrap();
    received.until("the large message", |r| r.count("b") == 1).await;
    assert_same_payloads(&received.payloads("b"), &[payload], "remote");
    db.finish(&nodes).await;
}

#[cfg(feature = "toml")]
#[test]
fn bad_toml_postgres_values_are_errors_naming_the_key() {
    let long_prefix = "p".repeat(31);
    let cases = [
        ("large_payloads = \"tables\"", "postgres.large_payloads"),
        ("large_payloads = true", "postgres.large_payloads"),
        ("payload_table = \"\"", "postgres.payload_table"),
        ("payload_table = \"a\\u0000b\"", "postgres.payload_table"),
        (
            &*format!("payload_table = \"{}\"", "t".repeat(64)),
            "postgres.payload_table",
        ),
        ("payload_ttl_ms = 0", "postgres.payload_ttl_ms"),
        ("payload_ttl_ms = 86400001", "postgres.payload_ttl_ms"),
        ("max_envelope_bytes = 10", "postgres.max_envelope_bytes"),
        (
            &*format!("channel_prefix = \"{long_prefix}\""),
            "postgres.channel_prefix",
        ),
        ("channel_prefix = \"a\\nb\"", "postgres.channel_prefix"),
        ("url = \"redis://localhost\"", "postgres.url"),
        ("payload_tables = \"x\"", "postgres.payload_tables"),
    ];
    for (line, key) in cases {
        let source = format!("[postgres]\n{line}\n");
        let error = match PostgresConfig::from_toml_str(&source) {
            Err(error) => error,
            Ok(config) => panic!("{line} accepted as {config:?}"),
        };
        assert_eq!(error.key.as_deref(), Some(key), "{line}: {error}");
        assert!(error.to_string().contains(&format!("`{key}`")), "{line}: {error}");
        assert!(!error.message.is_empty(), "{line}");
    }
}

// ----- channels and connections -----

#[test]
fn channels_are_the_topic_when_short_and_ascii_and_always_fit_63_bytes() {
    let prefix = unique_prefix("channel");
    let provider = PostgresPubSub::new(test_config(&prefix)).unwrap();
    let longest_plain = MAX_IDENTIFIER_BYTES - prefix.len();
    for topic in [
        "room:1".to_string(),
        "say \"hi\"; --".to_string(),
        "Mixed Case ~!@#$%^&*()".to_string(),
        "p".repeat(longest_plain),
    ] {
        assert_eq!(
            provider.channel_for(&topic),
            format!("{prefix}{topic}"),
            "{topic:?}"
        );
    }
    for topic in [
        "p".repeat(longest_plain + 1),
        "room:é".to_string(),
        "tab\there".to_string(),
        "nul\0".to_string(),
        "del\u{7f}".to_string(),
        "t".repeat(10 * 1024),
        "房".repeat(100),
    ] {
        let channel = provider.channel_for(&topic);
        assert!(channel.len() <= MAX_IDENTIFIER_BYTES, "{channel:?}");
        let digits = channel
            .strip_prefix(&format!("{prefix}#"))
            .unwrap_or_else(|| panic!("{topic:?} has channel {channel:?}"));
        assert!(
            digits.len() == 32
                && digits
                    .bytes()
                    .all(|d| d.is_ascii_hexdigit() && !d.is_ascii_uppercase()),
            "{channel:?}"
        );
    }
    assert_ne!(
        provider.channel_for(&"p".repeat(longest_plain + 1)),
        provider.channel_for(&"p".repeat(longest_plain + 2))
    );
}

async fn connections_named(admin: &Client, name: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_named_in_pg_stat_activity_while_started() {
    let Some(db) = Database::connect().await else {
        return;
    };
    let provider = PostgresPubSub::new(test_config(&unique_prefix("appname"))).unwrap();
    let listen = provider.application_name("listen");
    let publish = provider.application_name("publish");
    assert_eq!(
        listen,
        format!("fanout-postgres-{}-listen", provider.instance_id())
    );
    assert_eq!(connections_named(&db.admin, &listen).await, 0);
    provider.start().await.unwrap();
    assert_eq!(connections_named(&db.admin, &listen).await, 1);
    assert_eq!(connections_named(&db.admin, &publish).await, 1);
    provider.stop().await.unwrap();
    let mut remaining = (1, 1);
    let deadline = Instant::now() + conformance::WAIT;
    while remaining != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "connections still open after stop(): {remaining:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        remaining = (
            connections_named(&db.admin, &listen).await,
            connections_named(&db.admin, &publish).await,
        );
    }
}

/// A publish the server refuses on a connection that still works (here: the payload table was
/// dropped under the provider) loses that message, counted, and keeps the connection: the
/// next broadcast goes through without a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_is_counted_and_keeps_the_connection() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let (nodes, table) = db.table_pair("refused", KEEP, &Config::default()).await;
    let [a, b] = &nodes;
    let received = Received::default();
    received.subscribe(b, "b", "t").await;
    db.drop_table(&table).await;
    a.broadcast("t", Bytes::from(vec![b'x'; 16 * 1024]))
        .await
        .unwrap();
    let stats = |node: &PostgresPubSub| node.broker_stats();
    eventually("the refusal to be counted", || stats(a).publish_refusals == 1).await;
    a.broadcast("t", Bytes::from_static(b"small")).await.unwrap();
    received
        .until("the small message", |r| {
            r.payloads("b").iter().any(|p| &p[..] == b"small")
        })
        .await;
    let sa = stats(a);
    assert_eq!(
        (sa.publish_errors, sa.publish_refusals, sa.publisher_outages),
        (1, 1, 0),
        "{sa:?}"
    );
    assert_eq!(received.count("b"), 1, "the refused message never arrives");
    db.finish(&nodes).await;
}

/// `error` is an acknowledged broadcast's: the server refused its `pg_notify` statement.
fn assert_refused_statement(error: &fanout::PubSubError) {
    assert!(
        matches!(
            error.broker(),
            Some(BrokerError::Unacknowledged { why: Unacknowledged::Refused(reason) })
                if reason.contains("pg_notify refused")
        ),
        "{error:?}"
    );
}

/// Each statement of a pipeline is answered on its own: a stored payload the server refuses
/// (the table was dropped) fails its own acknowledged broadcast, while the small ones
/// pipelined with it are acknowledged and delivered, and the connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_statement_refuses_its_own_messages_only() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let (nodes, table) = db.table_pair("refused-one", KEEP, &Config::default()).await;
    let [a, b] = &nodes;
    let received = Received::default();
    received.subscribe(b, "b", "t").await;
    db.drop_table(&table).await;
    // Enough at once that the refused one shares a pipeline with accepted ones.
    let small: Vec<_> = (0..40)
        .map(|i| a.broadcast_acknowledged("t", Bytes::from(format!("small-{i}"))))
        .collect();
    let large = a.broadcast_acknowledged("t", Bytes::from(vec![b'x'; 16 * 1024]));
    let (small, large) = tokio::join!(futures_util::future::join_all(small), large);
    for (i, result) in small.iter().enumerate() {
        assert!(result.is_ok(), "small-{i}: {result:?}");
    }
    let error = large.expect_err("the table is gone");
    assert_refused_statement(&error);
    received
        .until("every small message", |r| r.count("b") >= 40)
        .await;
    let stats = a.broker_stats();
    assert_eq!(
        (
            stats.published,
            stats.publish_errors,
            stats.publish_refusals,
            stats.publisher_outages
        ),
        (40, 1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(received.count("b"), 40, "the refused message never arrives");
    db.finish(&nodes).await;
}

/// `broadcast_acknowledged` returns `Ok` once PostgreSQL completed the `pg_notify`, and the
/// typed `Unacknowledged` error naming the refusal when the server refuses it (here: the
/// payload table was dropped under the provider); a plain `broadcast` of the same returns `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_broadcast_waits_for_the_server_and_names_a_refusal() {
    let Some(mut db) = Database::connect().await else {
        return;
    };
    let (nodes, table) = db.table_pair("acked", KEEP, &Config::default()).await;
    let [a, b] = &nodes;
    let received = Received::default();
    received.subscribe(b, "b", "t").await;
    a.broadcast_acknowledged("t", Bytes::from_static(b"first"))
        .await
        .unwrap();
    assert_eq!(a.broker_stats().published, 1, "acknowledged means published");
    a.broadcast_from_acknowledged("someone", "t", Bytes::from(vec![b'L'; 16 * 1024]))
        .await
        .unwrap();
    received.until("both", |r| r.count("b") == 2).await;

    db.drop_table(&table).await;
    let error = a
        .broadcast_acknowledged("t", Bytes::from(vec![b'x'; 16 * 1024]))
        .await
        .expect_err("the table is gone");
    assert_refused_statement(&error);
    // Small messages still go through, acknowledged.
    a.broadcast_acknowledged("t", Bytes::from_static(b"small"))
        .await
        .unwrap();
    received.until("the small message", |r| r.count("b") == 3).await;
    db.finish(&nodes).await;
}
