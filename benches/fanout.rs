//! Criterion benchmarks of the dispatch path: fanout against its peers, `tokio::sync::broadcast`,
//! `async-broadcast` and `seed-port` (a port of PyView's `InMemoryPubSub`). Every implementation
//! runs through the same [`peers::Peer`] trait in the same group, so each ratio comes from one
//! run.
//!
//! ```text
//! cargo bench --bench fanout                     # every group
//! cargo bench --bench fanout -- '^end_to_end/'   # one group (the filter is a regex on the id)
//! ```
//!
//! Groups: `publish_cost` (publisher-side time per broadcast, per subscriber), `end_to_end`
//! (one topic, every session draining; deliveries per second; a static payload) and
//! `end_to_end_heap` (the same with a payload allocated per broadcast), `liveview` (10,000 sessions on 5
//! of 1,000 topics, a publisher per core), `churn` (subscribe + unsubscribe into a populated
//! topic), `registry_lookup` (one topic lookup among 1,000 and 1,000,000 live topics),
//! `slow_consumer` (1,000 sessions, one stalled, per overflow policy); and `machine`, the
//! round trip of a cache line between two cores at the start and the end of the run (the
//! placement of the threads' cores, which every other figure moves with). `benches/README.md`
//! describes each group's parameters and how a run becomes its Results block.

mod peers;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use crossbeam_utils::CachePadded;
use fanout::{Config, Fallback, OverflowPolicy};
use tokio::runtime::Runtime;

use peers::{AsyncBroadcastPeer, FanoutHandlers, FanoutPull, Layout, Peer, SeedPort, Sink, TokioBroadcast};

const PAYLOAD: &[u8] = &[b'x'; 64];
const LIMIT: Duration = Duration::from_secs(120);
/// Mailbox / channel capacity: fanout's default, and what peers get too.
const CAPACITY: usize = 256;
/// Messages per round in the end-to-end and slow-consumer scenarios (below `CAPACITY`, so no
/// policy drops anything when nothing is stalled).
const BATCH: u64 = 200;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .expect("runtime")
}

/// Shuts a peer down once the benchmark closures have released it.
fn shutdown<P: Peer>(rt: &Runtime, peer: Arc<P>) {
    if let Ok(peer) = Arc::try_unwrap(peer) {
        rt.block_on(peer.shutdown());
    }
}

/// A 64-byte static payload (what every scenario publishes unless it says otherwise).
fn payload() -> Bytes {
    Payload::Static.make()
}

/// What the end-to-end scenario publishes.
#[derive(Clone, Copy)]
enum Payload {
    /// 64 static bytes: cloning them costs nothing, which flatters a peer that clones the
    /// payload for every receiver.
    Static,
    /// 64 bytes allocated for each broadcast, as a rendered update is: a peer that clones the
    /// payload for every receiver pays a shared reference-count increment per delivery.
    Heap,
}

impl Payload {
    fn make(self) -> Bytes {
        match self {
            Payload::Static => Bytes::from_static(PAYLOAD),
            Payload::Heap => Bytes::from(PAYLOAD.to_vec()),
        }
    }

    fn end_to_end_group(self) -> &'static str {
        match self {
            Payload::Static => "end_to_end",
            Payload::Heap => "end_to_end_heap",
        }
    }
}

/// A criterion group with the settings every scenario in this file uses: 10 samples, 0.5 s of
/// warm-up and `measure` of measurement per benchmark.
///
/// With `FANOUT_BENCH_QUICK` set in the environment, 50 ms of warm-up and 100 ms of measurement
/// instead, to check the report pipeline (`FANOUT_BENCH_QUICK=1 scripts/bench_runs.sh 1`), not
/// to measure. (Criterion's `--warm-up-time` and `--measurement-time` flags do not reach these
/// groups: a group's own settings take precedence over them.)
fn group<'a>(c: &'a mut Criterion, name: &str, measure: Duration) -> BenchmarkGroup<'a, WallTime> {
    let (warm_up, measure) = if std::env::var_os("FANOUT_BENCH_QUICK").is_some() {
        (Duration::from_millis(50), Duration::from_millis(100))
    } else {
        (Duration::from_millis(500), measure)
    };
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(warm_up)
        .measurement_time(measure);
    group
}

/// `n` sessions on one topic.
fn one_topic(n: usize, capacity: usize) -> Layout {
    Layout {
        sessions: n,
        topics: 1,
        per_session: 1,
        stride: 13,
        capacity,
    }
}

/// A peer built on first use, so a benchmark that the filter leaves out builds nothing.
struct Lazy<P> {
    layout: Layout,
    sink: Arc<Sink>,
    built: Option<Arc<P>>,
}

impl<P: Peer> Lazy<P> {
    fn new(layout: Layout) -> Self {
        Self {
            layout,
            sink: Arc::new(Sink::default()),
            built: None,
        }
    }

    fn get(&mut self, rt: &Runtime) -> (Arc<P>, Arc<Sink>) {
        let (layout, sink) = (&self.layout, &self.sink);
        let peer = self
            .built
            .get_or_insert_with(|| Arc::new(rt.block_on(P::build(layout, Arc::clone(sink)))));
        (Arc::clone(peer), Arc::clone(sink))
    }

    fn finish(self, rt: &Runtime) {
        if let Some(peer) = self.built {
            shutdown(rt, peer);
        }
    }
}

/// Runs `work` as a task on the runtime (publishers are tasks in a server) and returns what
/// it measured.
fn on_runtime<T: Send + 'static>(rt: &Runtime, work: impl Future<Output = T> + Send + 'static) -> T {
    rt.block_on(rt.spawn(work)).expect("publisher task")
}

/// Publisher-side cost of one broadcast to `n` subscribers of one topic, consumers draining.
fn publish_cost<P: Peer>(c: &mut Criterion, rt: &Runtime, sizes: &[usize]) {
    let mut group = group(c, "publish_cost", Duration::from_secs(3));
    for &n in sizes {
        let mut lazy = Lazy::<P>::new(one_topic(n, CAPACITY));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new(P::NAME, n), |b| {
            b.iter_custom(|iters| {
                let (peer, sink) = lazy.get(rt);
                on_runtime(rt, async move {
                    let mut spent = Duration::ZERO;
                    let mut expected = sink.total();
                    for i in 0..iters {
                        let start = Instant::now();
                        peer.publish(0, payload()).await;
                        spent += start.elapsed();
                        expected += n as u64;
                        // Let consumers catch up (untimed) before mailboxes could fill.
                        if i % (CAPACITY as u64 / 2) == CAPACITY as u64 / 2 - 1 {
                            sink.wait_for(expected, LIMIT).await;
                        }
                    }
                    sink.wait_for(expected, LIMIT).await;
                    spent
                })
            })
        });
        lazy.finish(rt);
    }
    group.finish();
}

/// One publisher, one topic, `n` draining sessions: time until every session has every message.
/// The group is named after the payload ([`Payload::end_to_end_group`]).
fn end_to_end<P: Peer>(c: &mut Criterion, rt: &Runtime, sizes: &[usize], kind: Payload) {
    let mut group = group(c, kind.end_to_end_group(), Duration::from_secs(5));
    for &n in sizes {
        let mut lazy = Lazy::<P>::new(one_topic(n, CAPACITY));
        group.throughput(Throughput::Elements(BATCH * n as u64));
        group.bench_function(BenchmarkId::new(P::NAME, n), |b| {
            b.iter_custom(|iters| {
                let (peer, sink) = lazy.get(rt);
                on_runtime(rt, publish_batches(peer, sink, 0, iters, BATCH * n as u64, kind))
            })
        });
        lazy.finish(rt);
    }
    group.finish();
}

/// Publishes `iters` batches of [`BATCH`] messages on `topic`, waiting after each until
/// `deliveries_per_batch` more deliveries arrived; returns the time taken.
async fn publish_batches<P: Peer>(
    peer: Arc<P>,
    sink: Arc<Sink>,
    topic: usize,
    iters: u64,
    deliveries_per_batch: u64,
    kind: Payload,
) -> Duration {
    let start = Instant::now();
    let mut expected = sink.total();
    for _ in 0..iters {
        for _ in 0..BATCH {
            peer.publish(topic, kind.make()).await;
        }
        expected += deliveries_per_batch;
        sink.wait_for(expected, LIMIT).await;
    }
    start.elapsed()
}

/// 10,000 sessions each on 5 of 1,000 topics; a publisher per core broadcasting to pseudo-random
/// topics; deliveries per second.
fn liveview<P: Peer>(c: &mut Criterion, rt: &Runtime) {
    const PER_PUBLISHER: usize = 500;
    let layout = Layout {
        sessions: 10_000,
        topics: 1_000,
        per_session: 5,
        stride: 13,
        capacity: 256,
    };
    let publishers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let plan: Arc<Vec<Vec<usize>>> = Arc::new(
        (0..publishers)
            .map(|p| {
                (0..PER_PUBLISHER)
                    .map(|i| (p * 7919 + i * 104_729) % layout.topics)
                    .collect()
            })
            .collect(),
    );
    let fanout_of = layout.fanout_of_topics();
    let per_iteration: u64 = plan.iter().flatten().map(|&t| fanout_of[t]).sum();
    let mut group = group(c, "liveview", Duration::from_secs(5));
    let mut lazy = Lazy::<P>::new(layout);
    group.throughput(Throughput::Elements(per_iteration));
    group.bench_function(BenchmarkId::new(P::NAME, "10k_sessions_5_of_1k_topics"), |b| {
        b.iter_custom(|iters| {
            let (peer, sink) = lazy.get(rt);
            let plan = Arc::clone(&plan);
            on_runtime(rt, async move {
                let start = Instant::now();
                let mut expected = sink.total();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..publishers)
                        .map(|p| {
                            let peer = Arc::clone(&peer);
                            let plan = Arc::clone(&plan);
                            tokio::spawn(async move {
                                for &t in &plan[p] {
                                    peer.publish(t, payload()).await;
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("publisher");
                    }
                    expected += per_iteration;
                    sink.wait_for(expected, LIMIT).await;
                }
                start.elapsed()
            })
        })
    });
    lazy.finish(rt);
    group.finish();
}

/// Subscribe + unsubscribe of a new session into a topic already holding `n` subscribers.
fn churn<P: Peer>(c: &mut Criterion, rt: &Runtime, sizes: &[usize]) {
    let mut group = group(c, "churn", Duration::from_secs(3));
    for &n in sizes {
        let mut lazy = Lazy::<P>::new(one_topic(n, 16));
        let mut id = 0;
        group.bench_function(BenchmarkId::new(P::NAME, n), |b| {
            let (peer, _) = lazy.get(rt);
            b.iter(|| {
                id += 1;
                rt.block_on(peer.churn(0, id))
            })
        });
        lazy.finish(rt);
    }
    group.finish();
}

/// One registry lookup (a topic's subscriber count) among `n` live topics, spread over 1,000
/// sessions of `n / 1,000` topics each; the names looked up are pseudo-random live topics.
fn registry_lookup<P: Peer>(c: &mut Criterion, rt: &Runtime, sizes: &[usize]) {
    const SESSIONS: usize = 1_000;
    let mut group = group(c, "registry_lookup", Duration::from_secs(3));
    for &n in sizes {
        // Stride n / SESSIONS with 7 coprime to it: session s takes 7s + k * stride, and no
        // two sessions share a topic, so all n topics are live.
        let layout = Layout {
            sessions: SESSIONS,
            topics: n,
            per_session: n / SESSIONS,
            stride: n / SESSIONS,
            capacity: 16,
        };
        let names: Vec<String> = (0..4_096).map(|i| peers::topic_name((i * 7_919) % n)).collect();
        let mut lazy = Lazy::<P>::new(layout);
        group.bench_function(BenchmarkId::new(P::NAME, n), |b| {
            b.iter_custom(|iters| {
                let (peer, _) = lazy.get(rt);
                let names = &names;
                rt.block_on(async move {
                    let start = Instant::now();
                    for i in 0..iters as usize {
                        let name = &names[i % names.len()];
                        let count = std::hint::black_box(peer.subscriber_count(name).await);
                        assert_eq!(count, 1, "{name} is live with one subscriber");
                    }
                    start.elapsed()
                })
            })
        });
        lazy.finish(rt);
    }
    group.finish();
}

/// 1,000 sessions on one topic, one of them never reads: the others' end-to-end throughput,
/// per overflow policy.
///
/// All scenarios share one engine and one set of 999 reading sessions, each subscribed to one
/// topic per scenario; each policy is a per-prefix override on its topic, and each stalled
/// scenario has its own never-reading session on its topic. So the baseline and every policy
/// run on the same sessions, mailboxes and runtime, and the noise between processes (larger
/// than within one) does not land between the baseline and the policies.
fn slow_consumer(c: &mut Criterion, rt: &Runtime) {
    const SESSIONS: usize = 1_000;
    let block = |then| OverflowPolicy::Block {
        timeout: Duration::from_millis(1),
        then,
    };
    let block_once = |then| OverflowPolicy::BlockOnce {
        timeout: Duration::from_millis(1),
        then,
    };
    // Topic `room:{i}` runs scenario i; `None` is the baseline (nobody stalled).
    let scenarios: [(&str, Option<OverflowPolicy>); 7] = [
        ("none_stalled", None),
        ("drop_newest", Some(OverflowPolicy::DropNewest)),
        ("drop_oldest", Some(OverflowPolicy::DropOldest)),
        ("disconnect", Some(OverflowPolicy::Disconnect)),
        ("block_1ms_then_disconnect", Some(block(Fallback::Disconnect))),
        ("block_1ms_then_drop_newest", Some(block(Fallback::DropNewest))),
        (
            "block_once_1ms_then_drop_newest",
            Some(block_once(Fallback::DropNewest)),
        ),
    ];
    let mut config = Config::default().with_policy(OverflowPolicy::DropOldest);
    for (i, (_, policy)) in scenarios.iter().enumerate() {
        if let Some(policy) = policy {
            config = config.with_override(peers::topic_name(i), *policy);
        }
    }
    let layout = Layout {
        sessions: SESSIONS - 1,
        topics: scenarios.len(),
        per_session: scenarios.len(),
        stride: 1,
        capacity: 256,
    };
    let sink = Arc::new(Sink::default());
    let peer = Arc::new(rt.block_on(FanoutPull::build_with(&layout, Arc::clone(&sink), config)));
    // The stalled sessions: subscribed, never read.
    let stalled: Vec<_> = scenarios
        .iter()
        .enumerate()
        .filter(|(_, (_, policy))| policy.is_some())
        .map(|(i, (name, _))| {
            let receiver = peer
                .engine()
                .open_session(&format!("stalled-{name}"))
                .expect("open");
            rt.block_on(receiver.subscribe(&peers::topic_name(i)))
                .expect("subscribe");
            receiver
        })
        .collect();

    let mut group = group(c, "slow_consumer", Duration::from_secs(4));
    group.throughput(Throughput::Elements(BATCH * (SESSIONS as u64 - 1)));
    let deliveries = BATCH * (SESSIONS as u64 - 1);
    // Per scenario: (time of its rounds, time of the baseline rounds run alternately with
    // them). Criterion times each scenario alone; this pairs every round with a baseline
    // round a few milliseconds away, which a slow drift of the machine's speed cannot separate.
    let mut paired = vec![(Duration::ZERO, Duration::ZERO); scenarios.len()];
    for (topic, (name, _)) in scenarios.iter().enumerate() {
        let pair = &mut paired[topic];
        group.bench_function(BenchmarkId::new("fanout", name), |b| {
            b.iter_custom(|iters| {
                let (peer, sink) = (Arc::clone(&peer), Arc::clone(&sink));
                let (spent, baseline) = on_runtime(rt, async move {
                    let (mut spent, mut baseline) = (Duration::ZERO, Duration::ZERO);
                    for _ in 0..iters {
                        spent += publish_batches(
                            Arc::clone(&peer),
                            Arc::clone(&sink),
                            topic,
                            1,
                            deliveries,
                            Payload::Static,
                        )
                        .await;
                        if topic != 0 {
                            baseline += publish_batches(
                                Arc::clone(&peer),
                                Arc::clone(&sink),
                                0,
                                1,
                                deliveries,
                                Payload::Static,
                            )
                            .await;
                        }
                    }
                    (spent, baseline)
                });
                pair.0 += spent;
                pair.1 += baseline;
                spent
            })
        });
    }
    group.finish();
    drop(stalled);
    shutdown(rt, peer);
    // Read by scripts/bench_report.py.
    for ((name, _), (spent, baseline)) in scenarios.iter().zip(paired).skip(1) {
        if spent.is_zero() {
            continue; // left out by a `--bench` filter
        }
        println!(
            "slow_consumer paired: {name} {:.4} of the interleaved baseline's throughput",
            baseline.as_secs_f64() / spent.as_secs_f64()
        );
    }
}

/// Not fanout but the machine: one cache line handed back and forth between two threads, whose
/// round trip is what moving a line between two cores costs. Measured at the start and at the
/// end of every run. A virtual machine's vCPUs may sit on near or far cores of the host, and
/// move between them while it runs; everything that moves cache lines between cores (every
/// delivery to a session on the other core) moves with this figure, so compare runs, and the
/// sides of an A/B, only at similar round trips.
fn core_to_core(c: &mut Criterion, when: &str) {
    let mut group = group(c, "machine", Duration::from_secs(1));
    group.bench_function(BenchmarkId::new("core_to_core_round_trip", when), |b| {
        b.iter_custom(round_trips)
    });
    group.finish();
}

/// Times `n` round trips of a line between this thread and a second one.
fn round_trips(n: u64) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    let line = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let other = Arc::clone(&line);
    // The other thread says it is running (`READY`), then answers each odd value with the next
    // even one; the clock starts once it runs.
    const READY: u64 = u64::MAX;
    let echo = std::thread::spawn(move || {
        other.store(READY, Ordering::Release);
        for i in 0..n {
            while other.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            other.store(2 * i + 2, Ordering::Release);
        }
    });
    while line.load(Ordering::Acquire) != READY {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    for i in 0..n {
        line.store(2 * i + 1, Ordering::Release);
        while line.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let took = start.elapsed();
    echo.join().expect("echo thread");
    took
}

fn all_peers(c: &mut Criterion) {
    core_to_core(c, "start");
    let rt = runtime();
    let publish_sizes = [1, 10, 1_000, 10_000, 100_000];
    publish_cost::<FanoutPull>(c, &rt, &publish_sizes);
    publish_cost::<TokioBroadcast>(c, &rt, &publish_sizes);
    publish_cost::<AsyncBroadcastPeer>(c, &rt, &publish_sizes);
    publish_cost::<SeedPort>(c, &rt, &publish_sizes[..4]);

    let e2e_sizes = [1_000, 10_000];
    for kind in [Payload::Static, Payload::Heap] {
        end_to_end::<FanoutPull>(c, &rt, &e2e_sizes, kind);
        end_to_end::<FanoutHandlers>(c, &rt, &e2e_sizes, kind);
        end_to_end::<TokioBroadcast>(c, &rt, &e2e_sizes, kind);
        end_to_end::<AsyncBroadcastPeer>(c, &rt, &e2e_sizes, kind);
        end_to_end::<SeedPort>(c, &rt, &e2e_sizes, kind);
    }

    liveview::<FanoutPull>(c, &rt);
    liveview::<FanoutHandlers>(c, &rt);
    liveview::<TokioBroadcast>(c, &rt);
    liveview::<AsyncBroadcastPeer>(c, &rt);
    liveview::<SeedPort>(c, &rt);

    let churn_sizes = [10, 1_000, 100_000];
    churn::<FanoutPull>(c, &rt, &churn_sizes);
    churn::<FanoutHandlers>(c, &rt, &churn_sizes);
    churn::<TokioBroadcast>(c, &rt, &churn_sizes);
    churn::<AsyncBroadcastPeer>(c, &rt, &churn_sizes);
    churn::<SeedPort>(c, &rt, &churn_sizes);

    let registry_sizes = [1_000, 1_000_000];
    registry_lookup::<FanoutPull>(c, &rt, &registry_sizes);
    registry_lookup::<TokioBroadcast>(c, &rt, &registry_sizes);
    registry_lookup::<AsyncBroadcastPeer>(c, &rt, &registry_sizes);
    registry_lookup::<SeedPort>(c, &rt, &registry_sizes);

    slow_consumer(c, &rt);
    drop(rt);
    core_to_core(c, "end");
}

criterion_group!(benches, all_peers);
criterion_main!(benches);
