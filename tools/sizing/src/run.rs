//! Running a scenario on a provider and measuring it.
//!
//! Every payload opens with a [`stamp`]: the publishing instance and its send time on a
//! clock all instances of a run share, so each delivery yields its end-to-end latency and
//! whether it crossed from another instance.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fanout::bridge::BrokerStats;
use fanout::{Config, Handler, InMemoryPubSub, OverflowPolicy, PubSubProvider};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::alloc::{live_bytes, peak_bytes, reset_peak};
use crate::args::Args;
use crate::cpu::process_cpu_time;
use crate::report::{Block, Dropped, Memory, Report, Scenario};
use crate::tally::{Latency, Tally};

/// End-to-end latencies, one pair per thread that runs handlers (no contention while
/// recording), merged at the end: every delivery, and those from another instance.
type Shard = Arc<Mutex<(Histogram<u64>, Histogram<u64>)>>;

fn latency_shards() -> &'static Mutex<Vec<Shard>> {
    static SHARDS: OnceLock<Mutex<Vec<Shard>>> = OnceLock::new();
    SHARDS.get_or_init(|| Mutex::new(Vec::new()))
}

pub fn new_histogram() -> Histogram<u64> {
    // Microseconds up to an hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn record_latency(micros: u64, cross_instance: bool) {
    thread_local! {
        static LOCAL: RefCell<Option<Shard>> = const { RefCell::new(None) };
    }
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let shard = local.get_or_insert_with(|| {
            let shard = Arc::new(Mutex::new((new_histogram(), new_histogram())));
            latency_shards().lock().expect("shards").push(Arc::clone(&shard));
            shard
        });
        let mut shard = shard.lock().expect("shard");
        let _ = shard.0.record(micros.max(1));
        if cross_instance {
            let _ = shard.1.record(micros.max(1));
        }
    });
}

/// Bits of a stamp that hold the send time; the instance's index sits above them.
const TIME_BITS: u32 = 48;

/// The first 8 bytes of every payload, little-endian: the publishing instance's index above
/// [`TIME_BITS`] bits of microseconds since the run's clock started (eight years).
pub fn stamp(instance: usize, micros: u64) -> u64 {
    ((instance as u64) << TIME_BITS) | (micros & ((1 << TIME_BITS) - 1))
}

/// The instance and send time a [`stamp`] holds.
pub fn unstamp(stamp: u64) -> (usize, u64) {
    ((stamp >> TIME_BITS) as usize, stamp & ((1 << TIME_BITS) - 1))
}

/// The `k`th topic of session `session`.
pub fn topic_of(session: usize, k: usize, topics: usize) -> usize {
    (session * 7 + k * 13) % topics
}

pub fn policy_name(config: &Config) -> String {
    let name = config.policy.name();
    match config.policy {
        OverflowPolicy::Block { timeout, then } | OverflowPolicy::BlockOnce { timeout, then } => format!(
            "{name}({} ms, then {})",
            timeout.as_millis(),
            OverflowPolicy::from(then).name()
        ),
        _ => name.into(),
    }
}

/// A small, fast pseudo-random sequence (xorshift64*), seeded per publisher.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Runs the scenario on the in-memory provider: sessions and publishers on one instance.
pub async fn run_memory(args: &Args, config: Config) -> Result<Report, Box<dyn std::error::Error>> {
    let capacity = config.capacity;
    let policy = policy_name(&config);
    let pubsub = Arc::new(InMemoryPubSub::with_config(config)?);
    pubsub.start().await?;
    let provider: Arc<dyn PubSubProvider> = pubsub;
    let sides = Sides {
        name: "memory",
        publish: Arc::clone(&provider),
        receive: Arc::clone(&provider),
        capacity,
        policy,
    };
    let measured = measure(args, &sides, Placement::alone(0), |_| Drain::Done).await;
    provider.stop().await?;
    Ok(sides.report(args, measured?))
}

/// Where the broker's part of a run's drain stands.
pub enum Drain {
    /// Everything the other instances published for this one has been handed over.
    Done,
    /// Messages are still on their way.
    Pending,
    /// Messages are still on their way, but this instance's subscription was lost meanwhile:
    /// what the broker dropped with it never comes, so a drain that stops progressing is over.
    PendingAfterOutage,
}

impl Drain {
    /// `Done` once `received` reaches `expected`, else pending, after an outage of the
    /// receiving instance's subscription if `got` counts one.
    pub fn of(received: u64, expected: u64, got: &BrokerStats) -> Drain {
        if received >= expected {
            Drain::Done
        } else if got.outages > 0 {
            Drain::PendingAfterOutage
        } else {
            Drain::Pending
        }
    }
}

/// How far a two-instance run has drained: everything the publishing instance was given
/// (`broadcasts`) sent or counted lost (its broker counters `sent`), and everything sent
/// received or counted malformed on the other instance (`got`).
pub fn both_sides_drained(sent: &BrokerStats, got: &BrokerStats, broadcasts: u64) -> Drain {
    if sent.published + sent.publish_errors + sent.unavailable < broadcasts {
        return Drain::Pending;
    }
    Drain::of(got.received + got.malformed, sent.published, got)
}

/// Where the workload runs: publishers call `publish`, sessions live on `receive` (the same
/// provider for a single-instance run).
pub struct Sides {
    pub name: &'static str,
    pub publish: Arc<dyn PubSubProvider>,
    pub receive: Arc<dyn PubSubProvider>,
    pub capacity: usize,
    pub policy: String,
}

impl Sides {
    /// The report of a run of this process alone.
    pub fn report(&self, args: &Args, tally: Tally) -> Report {
        let scenario = scenario(args, self.capacity, self.policy.clone(), tally.subscriptions);
        Report::new(self.name, scenario, tally)
    }
}

/// The workload's shape, as the report states it.
pub fn scenario(args: &Args, capacity: usize, policy: String, subscriptions: u64) -> Scenario {
    Scenario {
        sessions: args.sessions,
        topics: args.topics,
        topics_per_session: args.topics_per_session,
        subscriptions,
        publishers: publishers(args),
        rate: args.rate,
        message_size: args.message_size,
        capacity,
        policy,
        duration_seconds: args.duration,
        handler_work_us: args.handler_work_us,
    }
}

/// Publisher tasks in all: `--publishers`, else one per core (and at least one per instance).
pub fn publishers(args: &Args) -> usize {
    args.publishers.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        cores.max(args.instances.unwrap_or(1))
    })
}

/// Which part of the workload runs here, and how it meets the other instances'.
pub struct Placement<'a> {
    /// The index of the instance `Sides::publish` is; stamped into every payload.
    pub publisher: usize,
    /// The index of the instance `Sides::receive` is: deliveries stamped otherwise crossed.
    pub receiver: usize,
    /// How many instances share the workload: session `s` and publisher `p` run on instance
    /// `s % instances` and `p % instances`, and this process runs the receiver's share.
    pub instances: usize,
    /// The run's clock: stamps count microseconds from it, in every instance alike.
    pub clock: Instant,
    /// Runs once the sessions are subscribed, before publishing; returns when publishing may
    /// begin.
    pub ready: Box<dyn FnOnce() + 'a>,
}

impl Placement<'static> {
    /// Every session and publisher in this process, `publisher` the stamp's index and `0` the
    /// receiver's.
    pub fn alone(publisher: usize) -> Self {
        Placement {
            publisher,
            receiver: 0,
            instances: 1,
            clock: Instant::now(),
            ready: Box::new(|| ()),
        }
    }
}

/// Subscribes this placement's sessions on `sides.receive`, publishes on `sides.publish` for
/// the duration, waits until every delivery is made or dropped (and `drained` says
/// [`Drain::Done`]), and tallies. Stops neither provider. `drained` reads how many broadcasts
/// were made on each topic so far.
pub async fn measure(
    args: &Args,
    sides: &Sides,
    placement: Placement<'_>,
    mut drained: impl FnMut(&[u64]) -> Drain,
) -> Result<Tally, Box<dyn std::error::Error>> {
    let Placement {
        publisher: here,
        receiver: receiving,
        instances,
        clock,
        ready,
    } = placement;
    let publishers = publishers(args);
    let receiver = Arc::clone(&sides.receive);
    let cross = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler = {
        let work = Duration::from_micros(args.handler_work_us);
        let cross = Arc::clone(&cross);
        Handler::new(move |_topic, message: Bytes| {
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&message[..8]);
            let now = clock.elapsed().as_micros() as u64;
            let (from, sent) = unstamp(u64::from_le_bytes(sent));
            let crossed = from != receiving;
            if crossed {
                // Read once, after every handler has run: any ordering will do.
                cross.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            record_latency(now.saturating_sub(sent), crossed);
            if !work.is_zero() {
                let until = Instant::now() + work;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            std::future::ready(())
        })
    };

    // Memory: sessions with their first subscription, then the remaining subscriptions.
    let base = live_bytes();
    let topic_names: Vec<String> = (0..args.topics).map(|t| format!("room:{t}")).collect();
    let session_names: Vec<(usize, String)> = (0..args.sessions)
        .filter(|s| s % instances == receiving % instances)
        .map(|s| (s, format!("session-{s}")))
        .collect();
    let sessions = session_names.len();
    let names_bytes = live_bytes() - base;
    for (s, name) in &session_names {
        let s = *s;
        receiver
            .subscribe_topic(name, &topic_names[topic_of(s, 0, args.topics)], handler.clone())
            .await?;
    }
    let after_sessions = live_bytes();
    for (s, name) in &session_names {
        let s = *s;
        for k in 1..args.topics_per_session {
            receiver
                .subscribe_topic(name, &topic_names[topic_of(s, k, args.topics)], handler.clone())
                .await?;
        }
    }
    let after_all = live_bytes();
    let subscriptions = receiver.stats().subscriptions;
    let extra = subscriptions.saturating_sub(sessions as u64);
    let per_subscription = if extra > 0 {
        (after_all - after_sessions) as f64 / extra as f64
    } else {
        0.0
    };
    let per_session =
        (after_sessions - base - names_bytes) as f64 / sessions.max(1) as f64 - per_subscription;
    ready();

    // Publish.
    let duration = Duration::from_secs_f64(args.duration);
    let progress = if args.quiet || args.json || args.worker.is_some() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(duration.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {msg}")
                .expect("valid template"),
        );
        bar
    };
    reset_peak();
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let per_publisher_rate = args.rate as f64 / publishers as f64;
    let per_topic: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..args.topics).map(|_| Default::default()).collect());
    let mut tasks = Vec::with_capacity(publishers);
    for p in (0..publishers).filter(|p| p % instances == here % instances) {
        let pubsub = Arc::clone(&sides.publish);
        let topics = topic_names.clone();
        let per_topic = Arc::clone(&per_topic);
        let size = args.message_size;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (p as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
            let mut latencies = new_histogram();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let publish_started = Instant::now();
            while Instant::now() < deadline {
                let due = if per_publisher_rate > 0.0 {
                    tick.tick().await;
                    (publish_started.elapsed().as_secs_f64() * per_publisher_rate) as u64
                } else {
                    sent + 64
                };
                while sent < due {
                    let t = (rng.next() % topics.len() as u64) as usize;
                    let mut payload = BytesMut::with_capacity(size);
                    payload.put_u64_le(stamp(here, clock.elapsed().as_micros() as u64));
                    payload.resize(size, b'x');
                    let t0 = Instant::now();
                    pubsub
                        .broadcast(&topics[t], payload.freeze())
                        .await
                        .expect("broadcast");
                    // Read after the publishers have ended: any ordering will do.
                    per_topic[t].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = latencies.record((t0.elapsed().as_micros() as u64).max(1));
                    sent += 1;
                }
                if per_publisher_rate <= 0.0 {
                    tokio::task::yield_now().await;
                }
            }
            latencies
        }));
    }
    let ticker = {
        let pubsub = Arc::clone(&receiver);
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let delivered = pubsub.stats().delivered;
                let rate = (delivered - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), delivered);
                progress.set_position(started.elapsed().as_millis() as u64);
                progress.set_message(format!("{rate:>12.0} deliveries/s"));
            }
        })
    };
    let mut publish_latency = new_histogram();
    for task in tasks {
        publish_latency.add(task.await?)?;
    }
    // Drain: wait until every (broadcast, recipient) pair is delivered or dropped and the
    // broker has handed everything over; or, once the broker lost messages with a subscription
    // it closed (they never come), until nothing has been delivered or dropped for `STALLED`.
    // A run's time then ends at its last delivery, so the wait does not count in its rates.
    let per_topic: Vec<u64> = per_topic
        .iter()
        .map(|count| count.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    const STALLED: Duration = Duration::from_secs(2);
    let drain_limit = Instant::now() + Duration::from_secs(60);
    let (mut settled, mut progressed) = (0, Instant::now());
    let stalled = loop {
        let s = receiver.stats();
        let now = Instant::now();
        let taken = s.delivered + s.dropped.total();
        if taken != settled {
            (settled, progressed) = (taken, now);
        }
        let drain = match taken >= s.recipients {
            true => drained(&per_topic),
            false => Drain::Pending,
        };
        let stalled = matches!(drain, Drain::PendingAfterOutage) && now - progressed > STALLED;
        if matches!(drain, Drain::Done) || stalled || now > drain_limit {
            break stalled;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let elapsed = match stalled {
        true => progressed - started,
        false => started.elapsed(),
    };
    let cpu = match (cpu_before, process_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => Duration::ZERO,
    };
    ticker.abort();
    progress.finish_and_clear();
    // Not `sides.publish.stats().published`: a distributed engine counts what it received
    // from other instances there too.
    let published = per_topic.iter().sum();
    let stats = receiver.stats();
    let total_bytes = live_bytes() - base;
    let peak_bytes = peak_bytes() - base;

    let mut end_to_end = new_histogram();
    let mut cross_end_to_end = new_histogram();
    for shard in latency_shards().lock().expect("shards").iter() {
        let shard = shard.lock().expect("shard");
        end_to_end.add(&shard.0)?;
        cross_end_to_end.add(&shard.1)?;
    }
    Ok(Tally {
        sessions,
        subscriptions,
        published,
        recipients: stats.recipients,
        delivered: stats.delivered,
        cross_instance_delivered: cross.load(std::sync::atomic::Ordering::Relaxed),
        publish_latency: Latency(publish_latency),
        end_to_end_latency: Latency(end_to_end),
        cross_instance_latency: Latency(cross_end_to_end),
        dropped: Dropped {
            drop_newest: stats.dropped.drop_newest,
            drop_oldest: stats.dropped.drop_oldest,
            slow_consumer: stats.dropped.slow_consumer,
            unsubscribed: stats.dropped.unsubscribed,
            stopped: stats.dropped.stopped,
        },
        disconnects: stats.disconnects,
        block: Block {
            waits: stats.block_waits,
            timeouts: stats.block_timeouts,
            skips: stats.block_skips,
        },
        handler_panics: stats.handler_panics,
        memory: Memory {
            bytes_per_session: per_session,
            bytes_per_subscription: per_subscription,
            total_bytes,
            peak_bytes,
        },
        cpu_seconds: cpu.as_secs_f64(),
        elapsed_seconds: elapsed.as_secs_f64(),
    })
}
