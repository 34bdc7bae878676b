//! Concurrent stress: subscribes, unsubscribes, `unsubscribe_all`s and broadcasts at once on a
//! small set of shared topics, on a multi-thread runtime. Checks that no session receives a
//! message twice, that the stats account for every (broadcast, recipient) pair, and that churn
//! leaves nothing behind (G7).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fanout::{Config, Engine, Handler, InMemoryPubSub, PubSubProvider, SessionReceiver, StatsSnapshot};

mod support;

use support::{eventually, settled};

// ----- helpers -----

/// A small deterministic generator (xorshift64), so each task's choices are reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A message id unique across the whole test: its source in the high half, a counter below.
fn message_id(source: u64, seq: u64) -> u64 {
    (source << 32) | seq
}

fn id_payload(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

fn id_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload.try_into().expect("an 8-byte message id"))
}

fn shared_topic(n: u64) -> String {
    format!("shared-{n}")
}

/// One session's deliveries: (incarnation, message id) → how many times. A session id starts a
/// new incarnation after `unsubscribe_all` or after it leaves its last topic (handler form), or
/// when its receiver is dropped and reopened (pull form); the contract's "same session" is one
/// incarnation.
type Deliveries = Mutex<HashMap<(u64, u64), u32>>;

fn record(deliveries: &Deliveries, incarnation: u64, id: u64) {
    *deliveries.lock().unwrap().entry((incarnation, id)).or_default() += 1;
}

fn duplicates(all: &[Deliveries]) -> Vec<(usize, u64, u64, u32)> {
    let mut found = Vec::new();
    for (session, deliveries) in all.iter().enumerate() {
        for (&(incarnation, id), &n) in deliveries.lock().unwrap().iter() {
            if n > 1 {
                found.push((session, incarnation, id, n));
            }
        }
    }
    found.sort();
    found
}

fn total(all: &[Deliveries]) -> u64 {
    all.iter()
        .map(|d| d.lock().unwrap().values().map(|&n| u64::from(n)).sum::<u64>())
        .sum()
}

fn assert_empty(stats: &StatsSnapshot, topic_count: usize, session_count: usize) {
    assert_eq!(topic_count, 0, "topic entries left: {stats:?}");
    assert_eq!(session_count, 0, "session entries left: {stats:?}");
    assert_eq!(
        (stats.sessions, stats.topics, stats.subscriptions),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// Spawns `publishers` tasks; publisher `p` broadcasts `messages` ids unique to it, each on a
/// shared topic `Rng::new(seed + p)` picks, yielding every 16 messages.
fn spawn_publishers<F, Fut>(
    publishers: u64,
    messages: u64,
    topics: u64,
    seed: u64,
    broadcast: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    (0..publishers)
        .map(|p| {
            let broadcast = broadcast.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(seed + p);
                for seq in 0..messages {
                    let topic = shared_topic(rng.below(topics));
                    broadcast(topic, id_payload(message_id(p, seq))).await;
                    if seq % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect()
}

/// Waits until `stats()` balances (and `also` holds), asserts it did and that `engine` holds
/// nothing; returns the stats.
async fn assert_balanced_and_empty(
    engine: &Engine,
    stats: impl Fn() -> StatsSnapshot,
    also: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let balanced = eventually(|| {
        let stats = stats();
        also(&stats) && settled(&stats)
    })
    .await;
    let stats = stats();
    assert!(
        balanced,
        "recipients must equal delivered + dropped once every session is gone: {stats:?}"
    );
    assert_empty(&stats, engine.topic_count(), engine.session_count());
    stats
}

/// Asserts no session incarnation got any message twice.
fn assert_no_duplicates(deliveries: &[Deliveries]) {
    let twice = duplicates(deliveries);
    assert!(
        twice.is_empty(),
        "{} (session, incarnation, id, times) delivered more than once: {:?}",
        twice.len(),
        &twice[..twice.len().min(20)]
    );
}

// ----- handler form -----

/// Publishers broadcast unique ids on four shared topics while session actors subscribe,
/// unsubscribe, `unsubscribe_all` and `broadcast_from` at random. No session incarnation may
/// see an id twice; once every session is gone the stats must balance exactly, and handler
/// invocations must equal `delivered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_churn_never_duplicates_and_accounting_holds() {
    const TOPICS: u64 = 4;
    const ACTORS: usize = 160;
    const OPS_PER_ACTOR: u64 = 300;
    const PUBLISHERS: u64 = 3;
    const MESSAGES_PER_PUBLISHER: u64 = 2000;
    let pubsub = Arc::new(InMemoryPubSub::with_config(Config::default().with_capacity(64)).unwrap());
    pubsub.start().await.unwrap();
    let deliveries: Arc<Vec<Deliveries>> = Arc::new((0..ACTORS).map(|_| Deliveries::default()).collect());
    let invocations = Arc::new(AtomicU64::new(0));

    let mut tasks = {
        let pubsub = Arc::clone(&pubsub);
        spawn_publishers(
            PUBLISHERS,
            MESSAGES_PER_PUBLISHER,
            TOPICS,
            1000,
            move |topic, payload| {
                let pubsub = Arc::clone(&pubsub);
                async move { pubsub.broadcast(&topic, payload).await.unwrap() }
            },
        )
    };
    for actor in 0..ACTORS {
        let (pubsub, deliveries, invocations) = (
            Arc::clone(&pubsub),
            Arc::clone(&deliveries),
            Arc::clone(&invocations),
        );
        tasks.push(tokio::spawn(async move {
            let session = format!("actor-{actor}");
            let mut rng = Rng::new(actor as u64);
            let mut incarnation = 0;
            let mut subscribed = BTreeSet::new();
            for op in 0..OPS_PER_ACTOR {
                let topic = rng.below(TOPICS);
                match rng.below(10) {
                    0..=4 => {
                        let deliveries = Arc::clone(&deliveries);
                        let invocations = Arc::clone(&invocations);
                        let handler = Handler::new(move |_topic, message| {
                            invocations.fetch_add(1, SeqCst);
                            record(&deliveries[actor], incarnation, id_of(&message));
                            async {}
                        });
                        pubsub
                            .subscribe_topic(&session, &shared_topic(topic), handler)
                            .await
                            .unwrap();
                        subscribed.insert(topic);
                    }
                    5..=7 => {
                        pubsub
                            .unsubscribe_topic(&session, &shared_topic(topic))
                            .await
                            .unwrap();
                        // Leaving its last topic retires a handler-form session.
                        if subscribed.remove(&topic) && subscribed.is_empty() {
                            incarnation += 1;
                        }
                    }
                    8 => {
                        let id = message_id(100 + actor as u64, op);
                        pubsub
                            .broadcast_from(&session, &shared_topic(topic), id_payload(id))
                            .await
                            .unwrap();
                    }
                    _ => {
                        pubsub.unsubscribe_all(&session).await.unwrap();
                        subscribed.clear();
                        incarnation += 1;
                    }
                }
                if op % 4 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for actor in 0..ACTORS {
        pubsub.unsubscribe_all(&format!("actor-{actor}")).await.unwrap();
    }
    let stats =
        assert_balanced_and_empty(pubsub.engine(), || pubsub.stats(), |stats| stats.sessions == 0).await;
    assert!(
        stats.delivered > 0 && stats.dropped.unsubscribed > 0,
        "the test must exercise both: {stats:?}"
    );

    pubsub.stop().await.unwrap(); // joins every session task: no handler is still running
    let stats = pubsub.stats();
    assert_eq!(
        stats.recipients,
        stats.delivered + stats.dropped.total(),
        "{stats:?}"
    );
    assert_eq!(
        invocations.load(SeqCst),
        stats.delivered,
        "one handler invocation per counted delivery"
    );
    assert_eq!(total(&deliveries), stats.delivered);
    assert_no_duplicates(&deliveries);
}

// ----- pull form -----

/// As above, for pull sessions: actors subscribe, unsubscribe, read, and close and reopen their
/// receivers while publishers broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pull_churn_never_duplicates_and_accounting_holds() {
    const TOPICS: u64 = 4;
    const ACTORS: usize = 128;
    const OPS_PER_ACTOR: u64 = 400;
    const PUBLISHERS: u64 = 3;
    const MESSAGES_PER_PUBLISHER: u64 = 2000;
    let engine = Engine::new(Config::default().with_capacity(64)).unwrap();
    let deliveries: Arc<Vec<Deliveries>> = Arc::new((0..ACTORS).map(|_| Deliveries::default()).collect());

    let tasks = {
        let engine = engine.clone();
        spawn_publishers(
            PUBLISHERS,
            MESSAGES_PER_PUBLISHER,
            TOPICS,
            2000,
            move |topic, payload| {
                let engine = engine.clone();
                async move {
                    engine.broadcast(&topic, payload).await.unwrap();
                }
            },
        )
    };
    let mut actors = Vec::new();
    for actor in 0..ACTORS {
        let (engine, deliveries) = (engine.clone(), Arc::clone(&deliveries));
        actors.push(tokio::spawn(async move {
            let session = format!("reader-{actor}");
            let mut rng = Rng::new(500 + actor as u64);
            let mut incarnation = 0;
            let mut receiver = engine.open_session(&session).unwrap();
            let drain = |receiver: &mut SessionReceiver, incarnation: u64| {
                while let Ok(message) = receiver.try_recv() {
                    record(&deliveries[actor], incarnation, id_of(message.payload()));
                }
            };
            for op in 0..OPS_PER_ACTOR {
                let topic = shared_topic(rng.below(TOPICS));
                match rng.below(10) {
                    0..=3 => receiver.subscribe(&topic).await.unwrap(),
                    4..=5 => receiver.unsubscribe(&topic).unwrap(),
                    6..=7 => drain(&mut receiver, incarnation),
                    8 => {
                        let id = message_id(100 + actor as u64, op);
                        engine
                            .broadcast_from(&session, &topic, id_payload(id))
                            .await
                            .unwrap();
                    }
                    _ => {
                        drain(&mut receiver, incarnation);
                        drop(receiver);
                        incarnation += 1;
                        receiver = engine.open_session(&session).unwrap();
                    }
                }
                if op % 4 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            (receiver, incarnation)
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for actor in actors {
        let (mut receiver, incarnation) = actor.await.unwrap();
        let actor: usize = receiver.id().trim_start_matches("reader-").parse().unwrap();
        while let Ok(message) = receiver.try_recv() {
            record(&deliveries[actor], incarnation, id_of(message.payload()));
        }
        drop(receiver);
    }
    let stats = assert_balanced_and_empty(&engine, || engine.stats(), |_| true).await;
    assert_eq!(
        total(&deliveries),
        stats.delivered,
        "every counted delivery reached a reader"
    );
    assert_no_duplicates(&deliveries);
}

/// G1 under churn: sessions that stay subscribed receive every broadcast exactly once, in
/// order, while other sessions join and leave the same topics (growing and reshaping their
/// subscriber sets) from several threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stable_subscribers_get_every_broadcast_despite_churn() {
    const TOPICS: u64 = 2;
    const STABLE: usize = 4;
    const CHURNERS: u64 = 6;
    const MESSAGES: u64 = 4000;
    let engine = Engine::new(Config::default().with_capacity(1 << 14)).unwrap();
    let mut stable: Vec<SessionReceiver> = Vec::new();
    for s in 0..STABLE {
        let receiver = engine.open_session(&format!("stable-{s}")).unwrap();
        for t in 0..TOPICS {
            receiver.subscribe(&shared_topic(t)).await.unwrap();
        }
        stable.push(receiver);
    }
    let publishing = Arc::new(AtomicU64::new(1));
    // Churn operations so far: the publisher paces itself on it, so the two interleave however
    // fast either side runs.
    let churned = Arc::new(AtomicU64::new(0));
    let mut churners = Vec::new();
    for c in 0..CHURNERS {
        let (engine, publishing, churned) = (engine.clone(), Arc::clone(&publishing), Arc::clone(&churned));
        churners.push(tokio::spawn(async move {
            let mut rng = Rng::new(3000 + c);
            // Each churner holds up to 40 receivers, so the sets span several chunks.
            let mut held: Vec<SessionReceiver> = Vec::new();
            let mut opened = 0u64;
            let mut ops = 0u64;
            while publishing.load(SeqCst) == 1 {
                match rng.below(4) {
                    0 if held.len() < 40 => {
                        let receiver = engine.open_session(&format!("churn-{c}-{opened}")).unwrap();
                        opened += 1;
                        receiver
                            .subscribe(&shared_topic(rng.below(TOPICS)))
                            .await
                            .unwrap();
                        held.push(receiver);
                    }
                    1 if !held.is_empty() => {
                        let i = rng.below(held.len() as u64) as usize;
                        held.swap_remove(i);
                    }
                    _ if !held.is_empty() => {
                        let receiver = &held[rng.below(held.len() as u64) as usize];
                        let topic = shared_topic(rng.below(TOPICS));
                        if rng.below(2) == 0 {
                            receiver.subscribe(&topic).await.unwrap();
                        } else {
                            receiver.unsubscribe(&topic).unwrap();
                        }
                    }
                    _ => {}
                }
                ops += 1;
                churned.fetch_add(1, SeqCst);
                if ops % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ops
        }));
    }
    let publisher = {
        let (engine, churned) = (engine.clone(), Arc::clone(&churned));
        tokio::spawn(async move {
            for seq in 1..=MESSAGES {
                while churned.load(SeqCst) < seq / 2 {
                    tokio::task::yield_now().await;
                }
                engine
                    .broadcast(&shared_topic(seq % TOPICS), id_payload(seq))
                    .await
                    .unwrap();
                if seq % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    publisher.await.unwrap();
    publishing.store(0, SeqCst);
    let mut churn_ops = 0;
    for churner in churners {
        churn_ops += churner.await.unwrap();
    }
    assert!(
        churn_ops > 1000,
        "the churners must have run while the publisher did ({churn_ops} ops)"
    );

    for mut receiver in stable {
        let mut got = Vec::new();
        while let Ok(message) = receiver.try_recv() {
            got.push(id_of(message.payload()));
        }
        let want: Vec<u64> = (1..=MESSAGES).collect();
        if got != want {
            let missing = want.iter().filter(|id| !got.contains(id)).count();
            panic!(
                "{}: {} messages, {missing} missing, in order: {}",
                receiver.id(),
                got.len(),
                got.windows(2).all(|w| w[0] < w[1])
            );
        }
    }
    assert_empty(&engine.stats(), engine.topic_count(), engine.session_count());
}

// ----- G7: churn leaves nothing behind -----

/// 100,000 subscribe / unsubscribe pairs on distinct topics, from four tasks at once. Each task
/// has a session that keeps an anchor topic (only topic entries churn) and, for one pair in
/// eight, a fleeting session with no other topic, created and retired (its task spawned and
/// ended) with that pair. Afterwards no topic, session or subscription is left, and every
/// session task has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn churn_of_distinct_topics_leaves_nothing_behind() {
    const TASKS: u64 = 4;
    const PAIRS: u64 = 100_000;
    let pubsub = Arc::new(InMemoryPubSub::new());
    pubsub.start().await.unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let pubsub = Arc::clone(&pubsub);
            tokio::spawn(async move {
                let anchored = format!("anchored-{t}");
                let fleeting = format!("fleeting-{t}");
                pubsub
                    .subscribe_topic(&anchored, "anchor", Handler::new(|_, _| async {}))
                    .await
                    .unwrap();
                for i in (t..PAIRS).step_by(TASKS as usize) {
                    let session = if (i / TASKS) % 8 == 0 {
                        &fleeting
                    } else {
                        &anchored
                    };
                    let topic = format!("topic-{i}");
                    pubsub
                        .subscribe_topic(session, &topic, Handler::new(|_, _| async {}))
                        .await
                        .unwrap();
                    if probed(i) {
                        pubsub.broadcast(&topic, id_payload(i)).await.unwrap();
                    }
                    pubsub.unsubscribe_topic(session, &topic).await.unwrap();
                }
                pubsub.unsubscribe_topic(&anchored, "anchor").await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = pubsub.stats();
    assert_empty(
        &stats,
        pubsub.engine().topic_count(),
        pubsub.engine().session_count(),
    );
    assert_eq!(stats.published, (0..PAIRS).filter(|&i| probed(i)).count() as u64);
    assert!(
        eventually(|| pubsub.running_tasks() <= 1).await,
        "only the reaper may be left, found {} tasks",
        pubsub.running_tasks()
    );
    pubsub.stop().await.unwrap();
    assert_eq!(pubsub.running_tasks(), 0);
}

/// Pairs whose topic also gets a broadcast while subscribed.
fn probed(i: u64) -> bool {
    i % 1000 < 4
}

/// The same churn through one pull session: 100,000 distinct topics subscribed and left.
#[tokio::test]
async fn pull_churn_of_distinct_topics_leaves_nothing_behind() {
    const PAIRS: u64 = 100_000;
    let engine = Engine::new(Config::default()).unwrap();
    let receiver = engine.open_session("churner").unwrap();
    for i in 0..PAIRS {
        let topic = format!("topic-{i}");
        receiver.subscribe(&topic).await.unwrap();
        receiver.unsubscribe(&topic).unwrap();
    }
    assert_eq!(engine.topic_count(), 0);
    assert!(receiver.topics().is_empty());
    assert_eq!(engine.session_count(), 1);
    drop(receiver);
    assert_empty(&engine.stats(), engine.topic_count(), engine.session_count());
}

/// G2 for handlers whose body is all in their future (`|t, m| async move { .. }`): busy
/// sessions are closed thousands of times while broadcasts keep arriving, and the first
/// statement of every body checks whether its session's `unsubscribe_all` has already
/// returned. None may find that it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_handler_body_begins_after_unsubscribe_all_returns() {
    const SESSIONS: u64 = 8;
    const CLOSES_EACH: u64 = 500;
    let pubsub = Arc::new(InMemoryPubSub::new());
    pubsub.start().await.unwrap();
    let late_bodies = Arc::new(AtomicU64::new(0));
    let bodies = Arc::new(AtomicU64::new(0));
    let mut closers = Vec::new();
    for s in 0..SESSIONS {
        let (pubsub, late_bodies, bodies) =
            (Arc::clone(&pubsub), Arc::clone(&late_bodies), Arc::clone(&bodies));
        closers.push(tokio::spawn(async move {
            let topic = format!("busy:{s}");
            let id = format!("tab:{s}");
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let publisher = {
                let (pubsub, topic, stop) = (Arc::clone(&pubsub), topic.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(SeqCst) {
                        pubsub.broadcast(&topic, Bytes::from_static(b"m")).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            };
            for _ in 0..CLOSES_EACH {
                let returned = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let started = Arc::new(AtomicU64::new(0));
                let handler = {
                    let (returned, started) = (Arc::clone(&returned), Arc::clone(&started));
                    let (late_bodies, bodies) = (Arc::clone(&late_bodies), Arc::clone(&bodies));
                    Handler::new(move |_topic, _message| {
                        let (returned, started) = (Arc::clone(&returned), Arc::clone(&started));
                        let (late_bodies, bodies) = (Arc::clone(&late_bodies), Arc::clone(&bodies));
                        async move {
                            if returned.load(SeqCst) {
                                late_bodies.fetch_add(1, SeqCst);
                            }
                            bodies.fetch_add(1, SeqCst);
                            started.fetch_add(1, SeqCst);
                            tokio::task::yield_now().await;
                        }
                    })
                };
                pubsub.subscribe_topic(&id, &topic, handler).await.unwrap();
                // Busy: its handler has run at least once, and more messages are queued.
                while started.load(SeqCst) == 0 {
                    tokio::task::yield_now().await;
                }
                pubsub.unsubscribe_all(&id).await.unwrap();
                returned.store(true, SeqCst);
            }
            stop.store(true, SeqCst);
            publisher.await.unwrap();
        }));
    }
    for closer in closers {
        closer.await.unwrap();
    }
    let late = late_bodies.load(SeqCst);
    let all = bodies.load(SeqCst);
    assert_eq!(
        late, 0,
        "G2: {late} of {all} handler bodies began after their session's unsubscribe_all returned"
    );
    assert!(all >= SESSIONS * CLOSES_EACH, "{all} bodies ran");
    pubsub.stop().await.unwrap();
    assert_eq!(pubsub.running_tasks(), 0);
}
