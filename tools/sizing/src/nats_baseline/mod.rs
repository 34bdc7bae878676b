//! The baselines `--provider nats` is measured against: the same traffic through a plain
//! client, with no fanout in the way.
//!
//! - `--nats-baseline async-nats` (the default): `async-nats`, as an application would use it
//!   without fanout: one client publishing, a random topic per message, and another with a
//!   subscription on every subject, read together in one task.
//! - `--nats-baseline protocol`: the client protocol spoken directly, `PUB`s written back to
//!   back into a 64 KiB buffer on one connection and every subject subscribed on another, with no
//!   client library in between: a stricter bar than `async-nats`.
//!
//! Both publish the same workload: one subject per topic (named as the provider names them),
//! each payload as long as the provider's envelope for one `--message-size` message on its
//! topic and starting with its send time, for the end-to-end latency. Both report the
//! messages received per second over publishing and draining, as the provider's
//! cross-instance rate is counted.

mod async_nats_client;
mod protocol;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fanout::envelope::{single_encoded_len, Record};
use fanout::nats::NatsConfig;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::args::{Args, NatsBaselineArg};
use crate::cpu::ServerCpu;
use crate::nats_scenario::NATS_SERVER;
use crate::postgres_baseline::DRAIN_LIMIT;
use crate::report::{NatsBaseline, Percentiles};
use crate::run::Rng;

/// Bytes of the send time (microseconds since the run began, big-endian) at the head of
/// each payload.
const TIME_BYTES: usize = 8;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What both baselines publish, and to where.
struct Workload {
    /// The server's URL, as `--nats-url` or the environment gave it.
    url: String,
    /// The server, as `host:port`.
    server: String,
    /// One per topic.
    subjects: Vec<String>,
    /// The payload length of each subject's messages.
    payload_bytes: Vec<usize>,
    /// Published last, once, after every other message.
    end: String,
    /// The run's clock: send times are microseconds on it.
    clock: Instant,
}

impl Workload {
    fn of(args: &Args) -> Result<Self, Error> {
        let mut nats = NatsConfig::from_env();
        if let Some(url) = &args.nats_url {
            nats.url = url.clone();
        }
        let server = nats.server()?;
        let prefix = format!("fanout-sizing-baseline.{}", std::process::id());
        let topics: Vec<String> = (0..args.topics).map(|t| format!("room:{t}")).collect();
        let payload_bytes = topics
            .iter()
            .map(|topic| {
                let record = Record {
                    sender: None,
                    payload: &vec![0; args.message_size],
                };
                single_encoded_len(topic, &record).max(TIME_BYTES)
            })
            .collect();
        Ok(Self {
            url: nats.url,
            server,
            subjects: topics.iter().map(|topic| format!("{prefix}.{topic}")).collect(),
            payload_bytes,
            end: format!("{prefix}.end"),
            clock: Instant::now(),
        })
    }

    /// The send time to write at the head of a payload.
    fn now_micros(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }
}

/// Records the latency of a payload that starts with its send time on `clock`.
fn record_latency(clock: Instant, latency: &mut Histogram<u64>, payload: &[u8]) {
    if let Some(time) = payload.get(..TIME_BYTES) {
        let sent = u64::from_be_bytes(time.try_into().expect("8 bytes"));
        let now = clock.elapsed().as_micros() as u64;
        let _ = latency.record(now.saturating_sub(sent).max(1));
    }
}

/// When publishing stops, and how many messages should be out by now.
struct Pace {
    started: Instant,
    deadline: Instant,
    rate: u64,
    rng: Rng,
}

impl Pace {
    fn new(args: &Args) -> Self {
        let started = Instant::now();
        Self {
            started,
            deadline: started + Duration::from_secs_f64(args.duration),
            rate: args.rate,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Whether publishing goes on.
    fn publishing(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// How many messages should have been sent by now: at `--rate 0`, `sent` and 1,024 more.
    fn due(&self, sent: u64) -> u64 {
        if self.rate > 0 {
            (self.started.elapsed().as_secs_f64() * self.rate as f64) as u64
        } else {
            sent + 1024
        }
    }

    /// The subject of the next message: a random one.
    fn next_subject(&mut self, subjects: usize) -> usize {
        (self.rng.next() % subjects as u64) as usize
    }
}

/// What one baseline run measured.
struct Measured {
    sent: u64,
    received: u64,
    publishing_seconds: f64,
    /// From the start of publishing to the last message received.
    elapsed_seconds: f64,
    latency: Histogram<u64>,
    client_cpu_seconds: Option<f64>,
}

/// What the subscribing task returned, once it has every message or within [`DRAIN_LIMIT`]
/// of the end of publishing; `received` and `sent` say how far it got if not.
async fn drained<T>(
    reader: JoinHandle<Result<T, Error>>,
    received: &AtomicU64,
    sent: u64,
) -> Result<T, Error> {
    match tokio::time::timeout(DRAIN_LIMIT, reader).await {
        Ok(read) => read?,
        Err(_) => Err(format!(
            "the subscriber had {} of {sent} messages {} s after publishing ended",
            received.load(Ordering::Relaxed),
            DRAIN_LIMIT.as_secs()
        )
        .into()),
    }
}

/// Runs the baseline `--nats-baseline` names with the workload flags of `args` against the
/// server of `--nats-url`.
pub async fn run(args: &Args) -> Result<NatsBaseline, Error> {
    let workload = Workload::of(args)?;
    let server_cpu_before = ServerCpu::named(NATS_SERVER);
    let (client, measured) = match args.nats_baseline {
        NatsBaselineArg::AsyncNats => ("async-nats", async_nats_client::run(args, &workload).await?),
        NatsBaselineArg::Protocol => ("protocol", protocol::run(args, &workload).await?),
    };
    let server_cpu_seconds = server_cpu_before.seconds_until(&ServerCpu::named(NATS_SERVER));
    Ok(NatsBaseline {
        client,
        server: workload.server,
        topics: args.topics,
        message_size: args.message_size,
        rate: args.rate,
        duration_seconds: args.duration,
        sent: measured.sent,
        received: measured.received,
        missing: measured.sent.saturating_sub(measured.received),
        publishing_seconds: measured.publishing_seconds,
        elapsed_seconds: measured.elapsed_seconds,
        messages_per_second: measured.received as f64 / measured.elapsed_seconds,
        latency_us: Percentiles::of(&measured.latency),
        client_cpu_seconds: measured.client_cpu_seconds,
        server_cpu_seconds,
    })
}
