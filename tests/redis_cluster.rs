//! `RedisPubSub` on a Redis Cluster of the test's own (`support::redis_cluster`: three
//! primaries, three replicas, free loopback ports), against real faults:
//!
//! - messages flow on topics the test checks are spread over all three primaries, each
//!   channel subscribed with `SSUBSCRIBE` on its own shard's primary and nowhere with
//!   `SUBSCRIBE`;
//! - `CLUSTER FAILOVER`, and a primary killed with its replica promoted: delivery on every
//!   shard resumes within 5 s of the cluster agreeing, and no broadcast waits longer than 2 s
//!   meanwhile;
//! - a busy topic's slot migrated to another primary while it is published on: delivery
//!   resumes within 5 s, nothing is duplicated, order is kept;
//! - a seed node that takes connections and never answers: an instance whose connections are
//!   cut reconnects through the nodes it last saw, sooner than its connect timeout.
//!
//! Each test starts a cluster of its own (about 2 s). Skips with a printed reason when
//! `redis-server` cannot be run, fails instead under `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(all(feature = "redis", unix))]

mod conformance;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::faults::Proxy;
use fanout::redis::{RedisConfig, RedisPubSub, RedisPubSubError};
use fanout::{Bytes, Handler, PubSubProvider};
use support::redis_cluster::{command, RedisCluster, Reply};

/// How long delivery may take to resume after the cluster has agreed on a change.
const RESUME: Duration = Duration::from_secs(5);

/// How long a broadcast may take while the cluster changes.
const BROADCAST: Duration = Duration::from_secs(2);

/// A fresh channel prefix.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{test}:{nanos:x}:")
}

/// A started provider seeded with `url`.
async fn provider(url: &str, prefix: &str) -> Arc<RedisPubSub> {
    let config = RedisConfig::new(url)
        .with_channel_prefix(prefix)
        .with_health_check_interval(Duration::from_millis(250))
        .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200));
    let provider = RedisPubSub::with_config(config, fanout::Config::default().with_capacity(4096)).unwrap();
    provider.start().await.expect("start against the cluster");
    Arc::new(provider)
}

/// (topic, payload) pairs a handler-form session received, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, String)>>>);

impl Received {
    fn handler(&self) -> Handler {
        let received = self.clone();
        Handler::new(move |topic: fanout::Topic, message: Bytes| {
            received
                .0
                .lock()
                .unwrap()
                .push((topic.to_string(), String::from_utf8_lossy(&message).into_owned()));
            async {}
        })
    }

    fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Topics that received `payload`.
    fn topics_with(&self, payload: &str) -> BTreeSet<String> {
        self.all()
            .into_iter()
            .filter(|(_, received)| received == payload)
            .map(|(topic, _)| topic)
            .collect()
    }
}

/// `room:0`, `room:1`, … until each primary owns at least three of their channels; with the
/// index of the primary of each.
fn topics_on_every_primary(cluster: &RedisCluster, prefix: &str) -> Vec<(String, usize)> {
    let mut topics = Vec::new();
    let mut per_primary = [0usize; 3];
    for n in 0.. {
        if per_primary.iter().all(|&count| count >= 3) {
            break;
        }
        let topic = format!("room:{n}");
        let slot = RedisCluster::slot_of(format!("{prefix}{topic}").as_bytes());
        let owner = cluster.primary_for_slot(slot).index;
        per_primary[owner] += 1;
        topics.push((topic, owner));
    }
    topics
}

/// An integer reply, or the elements of an array reply, as integers where they are.
fn integers(reply: &Reply) -> Vec<i64> {
    match reply {
        Reply::Integer(n) => vec![*n],
        Reply::Array(elements) => elements.iter().flat_map(integers).collect(),
        _ => Vec::new(),
    }
}

/// Broadcasts `payload` on each topic that has not received it yet, every 50 ms, until all
/// have or `RESUME` has passed since `since`; fails if a broadcast takes longer than
/// `BROADCAST`. Returns how long it took.
async fn until_every_topic_receives(
    publisher: &RedisPubSub,
    received: &Received,
    topics: &[(String, usize)],
    payload: &str,
    since: Instant,
) -> Duration {
    loop {
        let got = received.topics_with(payload);
        let missing: Vec<&String> = topics
            .iter()
            .map(|(topic, _)| topic)
            .filter(|t| !got.contains(*t))
            .collect();
        if missing.is_empty() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < RESUME,
            "delivery did not resume within {RESUME:?} on {} topics: {missing:?}",
            missing.len()
        );
        for topic in missing {
            let began = Instant::now();
            let sent =
                tokio::time::timeout(BROADCAST, publisher.broadcast(topic, payload.to_string().into())).await;
            assert!(
                sent.is_ok(),
                "a broadcast on {topic} took longer than {BROADCAST:?}"
            );
            assert!(began.elapsed() < BROADCAST);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_on_every_shard_each_channel_on_its_own_primary() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let urls = cluster.primary_urls();
    let prefix = prefix("flow");
    let (a, b) = (
        provider(&urls[0], &prefix).await,
        provider(&urls[1], &prefix).await,
    );
    let topics = topics_on_every_primary(&cluster, &prefix);
    let received = Received::default();
    for (topic, _) in &topics {
        b.subscribe_topic("tab", topic, received.handler()).await.unwrap();
    }
    until_every_topic_receives(&a, &received, &topics, "hello", Instant::now()).await;

    // Each channel is a shard channel of its slot's primary, with B's one subscriber, and no
    // node has it as a classic channel.
    for primary in cluster.primaries() {
        let mine: Vec<String> = topics
            .iter()
            .filter(|(_, owner)| *owner == primary.index)
            .map(|(topic, _)| format!("{prefix}{topic}"))
            .collect();
        assert!(mine.len() >= 3);
        let mut shard = vec!["PUBSUB".to_string(), "SHARDNUMSUB".to_string()];
        shard.extend(mine.iter().cloned());
        let counts = integers(&command(primary.port, &shard).await.unwrap());
        assert_eq!(counts, vec![1; mine.len()], "primary {}: {mine:?}", primary.index);
        let mut classic = vec!["PUBSUB".to_string(), "NUMSUB".to_string()];
        classic.extend(mine.iter().cloned());
        let counts = integers(&command(primary.port, &classic).await.unwrap());
        assert_eq!(
            counts,
            vec![0; mine.len()],
            "primary {}: classic subscriptions",
            primary.index
        );
    }
    // Nothing duplicated.
    assert_eq!(received.all().len(), topics.len());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Delivery on every shard resumes within `RESUME` of `fault` (which returns once the cluster
/// agrees), with `A` seeded on the primary the fault hits.
async fn resumes_after<F>(test: &str, fault: F)
where
    F: for<'c> FnOnce(
        &'c mut RedisCluster,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'c>>,
{
    let Some(mut cluster) = RedisCluster::start().await else {
        return;
    };
    let urls = cluster.primary_urls();
    let prefix = prefix(test);
    let (a, b) = (
        provider(&urls[0], &prefix).await,
        provider(&urls[2], &prefix).await,
    );
    let topics = topics_on_every_primary(&cluster, &prefix);
    let received = Received::default();
    for (topic, _) in &topics {
        b.subscribe_topic("tab", topic, received.handler()).await.unwrap();
    }
    until_every_topic_receives(&a, &received, &topics, "before", Instant::now()).await;

    // Broadcasts go on through the fault, none waiting past `BROADCAST`.
    let faulting = Arc::new(AtomicBool::new(true));
    let during = {
        let (a, topics, faulting) = (Arc::clone(&a), topics.clone(), Arc::clone(&faulting));
        tokio::spawn(async move {
            let mut sent = 0;
            while faulting.load(SeqCst) {
                for (topic, _) in &topics {
                    let began = Instant::now();
                    let _ = tokio::time::timeout(BROADCAST, a.broadcast(topic, "during".into()))
                        .await
                        .expect("a broadcast during the fault waited too long");
                    assert!(began.elapsed() < BROADCAST);
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    fault(&mut cluster).await;
    faulting.store(false, SeqCst);
    assert!(during.await.unwrap() > 0);

    let took = until_every_topic_receives(&a, &received, &topics, "after", Instant::now()).await;
    println!("{test}: delivery on every shard resumed {took:?} after the cluster agreed");
    // Local delivery never stopped: a session on A hears A's broadcasts. A's own subscription
    // connection may still be on its way back (its seed is the primary the fault hit): then the
    // session is subscribed locally and the subscribe says the broker has not confirmed it.
    let local = Received::default();
    if let Err(error) = a.subscribe_topic("local", &topics[0].0, local.handler()).await {
        assert!(
            matches!(
                RedisPubSubError::of(&error),
                Some(RedisPubSubError::SubscribeUnconfirmed)
            ),
            "subscribing on A: {error}"
        );
    }
    a.broadcast(&topics[0].0, "local".into()).await.unwrap();
    support::wait_until("local delivery", || local.topics_with("local").len() == 1).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_a_cluster_failover() {
    resumes_after("failover", |cluster| Box::pin(cluster.failover(0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_a_primary_is_killed() {
    resumes_after("kill", |cluster| Box::pin(cluster.kill_primary(0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_topics_slot_migrates_without_duplicates() {
    let Some(mut cluster) = RedisCluster::start().await else {
        return;
    };
    let urls = cluster.primary_urls();
    let prefix = prefix("migrate");
    let (a, b) = (
        provider(&urls[0], &prefix).await,
        provider(&urls[1], &prefix).await,
    );
    let topic = "busy";
    let slot = RedisCluster::slot_of(format!("{prefix}{topic}").as_bytes());
    let from = cluster.primary_for_slot(slot).index;
    let to = (from + 1) % 3;
    let received = Received::default();
    b.subscribe_topic("tab", topic, received.handler()).await.unwrap();

    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (a, publishing) = (Arc::clone(&a), Arc::clone(&publishing));
        tokio::spawn(async move {
            let mut seq = 0u64;
            while publishing.load(SeqCst) {
                let sent = tokio::time::timeout(BROADCAST, a.broadcast(topic, seq.to_string().into())).await;
                assert!(sent.is_ok(), "a broadcast waited past {BROADCAST:?}");
                seq += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            seq
        })
    };
    let seqs = |received: &Received| -> Vec<u64> {
        received.all().iter().map(|(_, m)| m.parse().unwrap()).collect()
    };
    support::wait_until("the first hundred messages", || seqs(&received).len() >= 100).await;
    cluster.migrate_slot(slot, to).await;
    let migrated = Instant::now();
    let last_before = *seqs(&received).last().unwrap();
    // Delivery resumes: messages well past those received when the migration ended arrive.
    while seqs(&received).iter().filter(|&&seq| seq > last_before).count() < 100 {
        assert!(
            migrated.elapsed() < RESUME,
            "delivery did not resume within {RESUME:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("delivery resumed {:?} after the migration", migrated.elapsed());
    publishing.store(false, SeqCst);
    let sent = publisher.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let got = seqs(&received);
    assert!(
        got.windows(2).all(|pair| pair[0] < pair[1]),
        "duplicated or out of order: {got:?}"
    );
    println!("{} of {sent} messages received across the migration", got.len());
    // The subscription now lives on the new owner.
    let owner = cluster.primary_for_slot(slot);
    assert_eq!(owner.index, to);
    let counts = integers(
        &command(owner.port, ["PUBSUB", "SHARDNUMSUB", &format!("{prefix}{topic}")])
            .await
            .unwrap(),
    );
    assert_eq!(counts, vec![1]);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// A seed that takes connections and never answers (a hung node, a path that drops packets)
/// keeps no reconnection from the nodes last seen: it costs a stagger, not the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_seed_leaves_reconnection_to_the_nodes_last_seen() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let primaries = cluster.primaries();
    let seed = Proxy::start(SocketAddr::from(([127, 0, 0, 1], primaries[0].port))).await;
    let prefix = prefix("silent-seed");
    let (a, b) = (
        provider(&format!("redis://{}", seed.addr), &prefix).await,
        provider(&cluster.primary_urls()[1], &prefix).await,
    );
    let topics = topics_on_every_primary(&cluster, &prefix);
    let (on_a, on_b) = (Received::default(), Received::default());
    for (topic, _) in &topics {
        a.subscribe_topic("tab", topic, on_a.handler()).await.unwrap();
        b.subscribe_topic("tab", topic, on_b.handler()).await.unwrap();
    }
    until_every_topic_receives(&b, &on_a, &topics, "from b", Instant::now()).await;
    until_every_topic_receives(&a, &on_b, &topics, "from a", Instant::now()).await;

    // The seed falls silent, then every connection of A's (and B's) is cut.
    seed.silence();
    for primary in &primaries {
        let pubsub = command(primary.port, ["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        let normal = command(
            primary.port,
            ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
        )
        .await;
        assert!(pubsub.is_ok() && normal.is_ok(), "{pubsub:?} {normal:?}");
    }
    let cut = Instant::now();
    // A's subscription is back (B's broadcasts reach it), and so is its publisher.
    until_every_topic_receives(&b, &on_a, &topics, "from b, after", cut).await;
    until_every_topic_receives(&a, &on_b, &topics, "from a, after", cut).await;
    let stats = a.redis_stats();
    assert!(
        stats.reconnects >= 1 && stats.publisher_reconnects >= 1,
        "{stats:?}"
    );
    let connect_timeout = a.redis_config().connect_timeout;
    assert!(
        stats.outage_time < connect_timeout,
        "A's subscription was out for {:?}, past the {connect_timeout:?} connect timeout",
        stats.outage_time
    );
    println!(
        "with a silent seed, A's subscription came back {:?} after its connections were cut",
        stats.outage_time
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
