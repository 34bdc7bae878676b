//! Criterion benchmarks of the dispatch path, fanout against its peers in the same groups:
//! `tokio::sync::broadcast`, `async-broadcast`, and a port of the seed design.
//!
//! ```text
//! cargo bench --bench fanout                      # everything (about 20 minutes)
//! cargo bench --bench fanout -- end_to_end        # one group
//! ```
//!
//! Groups: `publish_cost` (publisher-side time per broadcast, per subscriber), `end_to_end`
//! (one topic, every session draining; deliveries per second), `liveview` (10,000 sessions on 5
//! of 1,000 topics, a publisher per core), `churn` (subscribe + unsubscribe into a populated
//! topic), `slow_consumer` (1,000 sessions, one stalled, per overflow policy).

mod peers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanout::{Fallback, OverflowPolicy};
use tokio::runtime::Runtime;

use peers::{AsyncBroadcastPeer, FanoutHandlers, FanoutPull, Layout, Peer, SeedPort, Sink, TokioBroadcast};

const PAYLOAD: &[u8] = &[b'x'; 64];
const LIMIT: Duration = Duration::from_secs(120);

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

fn payload() -> Bytes {
    Bytes::from_static(PAYLOAD)
}

/// Publisher-side cost of one broadcast to `n` subscribers of one topic, consumers draining.
fn publish_cost<P: Peer>(c: &mut Criterion, rt: &Runtime, sizes: &[usize]) {
    let mut group = c.benchmark_group("publish_cost");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &n in sizes {
        let layout = Layout {
            sessions: n,
            topics: 1,
            per_session: 1,
            capacity: 1024,
        };
        let sink = Arc::new(Sink::default());
        // Built on first use, so a filtered-out benchmark builds nothing.
        let mut built: Option<Arc<P>> = None;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new(P::NAME, n), |b| {
            b.iter_custom(|iters| {
                let peer = Arc::clone(
                    built.get_or_insert_with(|| Arc::new(rt.block_on(P::build(&layout, Arc::clone(&sink))))),
                );
                let sink = Arc::clone(&sink);
                // The publisher is a task on the runtime, as broadcasts are in a server.
                rt.block_on(rt.spawn(async move {
                    let mut spent = Duration::ZERO;
                    let mut expected = sink.total();
                    for i in 0..iters {
                        let start = Instant::now();
                        peer.publish(0, payload()).await;
                        spent += start.elapsed();
                        expected += n as u64;
                        // Let consumers catch up (untimed) before mailboxes could fill.
                        if i % 256 == 255 {
                            sink.wait_for(expected, LIMIT).await;
                        }
                    }
                    sink.wait_for(expected, LIMIT).await;
                    spent
                }))
                .expect("publisher task")
            })
        });
        if let Some(peer) = built {
            shutdown(rt, peer);
        }
    }
    group.finish();
}

/// One publisher, one topic, `n` draining sessions: time until every session has every message.
fn end_to_end<P: Peer>(c: &mut Criterion, rt: &Runtime, sizes: &[usize]) {
    const BATCH: u64 = 200;
    let mut group = c.benchmark_group("end_to_end");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    for &n in sizes {
        let layout = Layout {
            sessions: n,
            topics: 1,
            per_session: 1,
            capacity: 1024,
        };
        let sink = Arc::new(Sink::default());
        // Built on first use, so a filtered-out benchmark builds nothing.
        let mut built: Option<Arc<P>> = None;
        group.throughput(Throughput::Elements(BATCH * n as u64));
        group.bench_function(BenchmarkId::new(P::NAME, n), |b| {
            b.iter_custom(|iters| {
                let peer = Arc::clone(
                    built.get_or_insert_with(|| Arc::new(rt.block_on(P::build(&layout, Arc::clone(&sink))))),
                );
                let sink = Arc::clone(&sink);
                rt.block_on(rt.spawn(async move {
                    let start = Instant::now();
                    let mut expected = sink.total();
                    for _ in 0..iters {
                        for _ in 0..BATCH {
                            peer.publish(0, payload()).await;
                        }
                        expected += BATCH * n as u64;
                        sink.wait_for(expected, LIMIT).await;
                    }
                    start.elapsed()
                }))
                .expect("publisher task")
            })
        });
        if let Some(peer) = built {
            shutdown(rt, peer);
        }
    }
    group.finish();
}

/// 10,000 sessions each on 5 of 1,000 topics; a publisher per core broadcasting to pseudo-random
/// topics; deliveries per second.
fn liveview<P: Peer>(c: &mut Criterion, rt: &Runtime) {
    const PER_PUBLISHER: usize = 500;
    let layout = Layout {
        sessions: 10_000,
        topics: 1_000,
        per_session: 5,
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
    let mut group = c.benchmark_group("liveview");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let sink = Arc::new(Sink::default());
    let mut built: Option<Arc<P>> = None;
    group.throughput(Throughput::Elements(per_iteration));
    group.bench_function(BenchmarkId::new(P::NAME, "10k_sessions_5_of_1k_topics"), |b| {
        b.iter_custom(|iters| {
            let peer = Arc::clone(
                built.get_or_insert_with(|| Arc::new(rt.block_on(P::build(&layout, Arc::clone(&sink))))),
            );
            rt.block_on(async {
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
    if let Some(peer) = built {
        shutdown(rt, peer);
    }
    group.finish();
}

/// Subscribe + unsubscribe of a new session into a topic already holding `n` subscribers.
fn churn<P: Peer>(c: &mut Criterion, rt: &Runtime, sizes: &[usize]) {
    let mut group = c.benchmark_group("churn");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &n in sizes {
        let layout = Layout {
            sessions: n,
            topics: 1,
            per_session: 1,
            capacity: 16,
        };
        let mut built: Option<P> = None;
        let mut id = 0;
        group.bench_function(BenchmarkId::new(P::NAME, n), |b| {
            let peer = built.get_or_insert_with(|| rt.block_on(P::build(&layout, Arc::new(Sink::default()))));
            b.iter(|| {
                id += 1;
                rt.block_on(peer.churn(0, id))
            })
        });
        if let Some(peer) = built {
            rt.block_on(peer.shutdown());
        }
    }
    group.finish();
}

/// 1,000 sessions on one topic, one of them never reads: the others' end-to-end throughput.
fn slow_consumer(c: &mut Criterion, rt: &Runtime) {
    const BATCH: u64 = 200;
    const SESSIONS: usize = 1_000;
    let mut group = c.benchmark_group("slow_consumer");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(BATCH * (SESSIONS as u64 - 1)));
    let policies: [(&str, Option<OverflowPolicy>); 6] = [
        ("none_stalled", None),
        ("drop_newest", Some(OverflowPolicy::DropNewest)),
        ("drop_oldest", Some(OverflowPolicy::DropOldest)),
        ("disconnect", Some(OverflowPolicy::Disconnect)),
        (
            "block_1ms_then_disconnect",
            Some(OverflowPolicy::Block {
                timeout: Duration::from_millis(1),
                then: Fallback::Disconnect,
            }),
        ),
        (
            "block_1ms_then_drop_newest",
            Some(OverflowPolicy::Block {
                timeout: Duration::from_millis(1),
                then: Fallback::DropNewest,
            }),
        ),
    ];
    for (name, policy) in policies {
        let layout = Layout {
            sessions: SESSIONS - 1,
            topics: 1,
            per_session: 1,
            capacity: 256,
        };
        let sink = Arc::new(Sink::default());
        let peer = rt.block_on(FanoutPull::build_with(
            &layout,
            Arc::clone(&sink),
            policy.unwrap_or(OverflowPolicy::DropOldest),
        ));
        // The stalled session: subscribed, never read.
        let stalled = policy.map(|_| {
            let receiver = peer.engine().open_session("stalled").expect("open");
            receiver.subscribe("room:0").expect("subscribe");
            receiver
        });
        let peer = Arc::new(peer);
        group.bench_function(BenchmarkId::new("fanout", name), |b| {
            b.iter_custom(|iters| {
                let (peer, sink) = (Arc::clone(&peer), Arc::clone(&sink));
                rt.block_on(rt.spawn(async move {
                    let start = Instant::now();
                    let mut expected = sink.total();
                    for _ in 0..iters {
                        for _ in 0..BATCH {
                            peer.publish(0, payload()).await;
                        }
                        expected += BATCH * (SESSIONS as u64 - 1);
                        sink.wait_for(expected, LIMIT).await;
                    }
                    start.elapsed()
                }))
                .expect("publisher task")
            })
        });
        drop(stalled);
        shutdown(rt, peer);
    }
    group.finish();
}

fn all_peers(c: &mut Criterion) {
    let rt = runtime();
    let publish_sizes = [1, 10, 1_000, 10_000, 100_000];
    publish_cost::<FanoutPull>(c, &rt, &publish_sizes);
    publish_cost::<TokioBroadcast>(c, &rt, &publish_sizes);
    publish_cost::<AsyncBroadcastPeer>(c, &rt, &publish_sizes);
    publish_cost::<SeedPort>(c, &rt, &publish_sizes[..4]);

    let e2e_sizes = [1_000, 10_000];
    end_to_end::<FanoutPull>(c, &rt, &e2e_sizes);
    end_to_end::<FanoutHandlers>(c, &rt, &e2e_sizes);
    end_to_end::<TokioBroadcast>(c, &rt, &e2e_sizes);
    end_to_end::<AsyncBroadcastPeer>(c, &rt, &e2e_sizes);
    end_to_end::<SeedPort>(c, &rt, &e2e_sizes);

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

    slow_consumer(c, &rt);
}

criterion_group!(benches, all_peers);
criterion_main!(benches);
