//! The report: what was measured, as a table or JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub provider: &'static str,
    pub scenario: Scenario,
    pub published: u64,
    pub recipients: u64,
    pub delivered: u64,
    pub deliveries_per_second: f64,
    pub publishes_per_second: f64,
    pub publish_latency_us: Percentiles,
    pub end_to_end_latency_us: Percentiles,
    pub dropped: Dropped,
    pub disconnects: u64,
    pub block: Block,
    pub handler_panics: u64,
    pub memory: Memory,
    pub cpu: Cpu,
    pub elapsed_seconds: f64,
    /// The Redis side, for `--provider redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSection>,
}

/// Two `RedisPubSub` instances on one Redis: publishers on the first, sessions on the second.
#[derive(Debug, Serialize)]
pub struct RedisSection {
    /// The server, as `host:port`.
    pub server: String,
    /// Messages the publishing instance sent to Redis.
    pub messages_sent: u64,
    /// `PUBLISH` commands (envelopes) that carried them.
    pub publish_commands: u64,
    pub messages_per_publish: f64,
    /// Messages the receiving instance got from Redis and handed to its sessions.
    pub messages_received: u64,
    /// `messages_received` over the whole run (publishing and draining).
    pub cross_instance_messages_per_second: f64,
    pub publish_errors: u64,
    pub malformed: u64,
    pub outages: u64,
    /// CPU the Redis server used during the run (`INFO cpu`; the whole server, not just us).
    pub server_cpu_seconds: Option<f64>,
    /// Commands the Redis server processed during the run (`INFO stats`; the whole server).
    pub server_commands: Option<u64>,
    pub benchmark: Option<Benchmark>,
    /// `cross_instance_messages_per_second` over the benchmark's requests per second.
    pub ratio_to_benchmark: Option<f64>,
}

/// `redis-benchmark` run against the same server, just before the workload.
#[derive(Debug, Serialize)]
pub struct Benchmark {
    pub command: String,
    pub requests_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct Scenario {
    pub sessions: usize,
    pub topics: usize,
    pub topics_per_session: usize,
    pub subscriptions: u64,
    pub publishers: usize,
    pub rate: u64,
    pub message_size: usize,
    pub capacity: usize,
    pub policy: String,
    pub duration_seconds: f64,
    pub handler_work_us: u64,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub samples: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            samples: h.len(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Dropped {
    pub drop_newest: u64,
    pub drop_oldest: u64,
    pub slow_consumer: u64,
    pub unsubscribed: u64,
    pub stopped: u64,
}

/// The `block` policy's waits: how many broadcasts waited for a full mailbox, how many of those
/// waits timed out, and how many full mailboxes were not waited for (the session had timed out
/// before and read nothing since).
#[derive(Debug, Serialize)]
pub struct Block {
    pub waits: u64,
    pub timeouts: u64,
    pub skips: u64,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    pub bytes_per_session: f64,
    pub bytes_per_subscription: f64,
    pub total_bytes: i64,
    /// The most the run's heap held at once while publishing (queued messages and mailbox
    /// blocks included), above the same base as `total_bytes`.
    pub peak_bytes: i64,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    pub seconds: f64,
    pub cores_busy: f64,
}

impl Report {
    pub fn table(&self) -> String {
        let s = &self.scenario;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "fanout sizing: {} provider, {} sessions x {} of {} topics ({} subscriptions), {} publishers at {}, {} B messages, capacity {}, policy {}, {:.1} s{}",
            self.provider,
            s.sessions,
            s.topics_per_session,
            s.topics,
            s.subscriptions,
            s.publishers,
            if s.rate == 0 { "full speed".to_string() } else { format!("{} msg/s", s.rate) },
            s.message_size,
            s.capacity,
            s.policy,
            s.duration_seconds,
            if s.handler_work_us > 0 { format!(", {} us handler work", s.handler_work_us) } else { String::new() },
        );
        let mut rows: Vec<(&str, String)> = vec![
            (
                "published",
                format!("{} ({:.0}/s)", self.published, self.publishes_per_second),
            ),
            (
                "deliveries",
                format!("{} ({:.0}/s)", self.delivered, self.deliveries_per_second),
            ),
            ("publish latency (us)", pct(&self.publish_latency_us)),
            ("end-to-end latency (us)", pct(&self.end_to_end_latency_us)),
            (
                "dropped",
                format!(
                    "drop_newest {}, drop_oldest {}, slow_consumer {}, unsubscribed {}, stopped {}",
                    self.dropped.drop_newest,
                    self.dropped.drop_oldest,
                    self.dropped.slow_consumer,
                    self.dropped.unsubscribed,
                    self.dropped.stopped
                ),
            ),
            ("disconnects", self.disconnects.to_string()),
            (
                "block",
                format!(
                    "{} waits, {} timed out, {} skipped (still stalled)",
                    self.block.waits, self.block.timeouts, self.block.skips
                ),
            ),
            ("handler panics", self.handler_panics.to_string()),
            (
                "memory",
                format!(
                    "{:.0} B per session, {:.0} B per subscription, {:.1} MiB in all, {:.1} MiB at peak",
                    self.memory.bytes_per_session,
                    self.memory.bytes_per_subscription,
                    self.memory.total_bytes as f64 / (1024.0 * 1024.0),
                    self.memory.peak_bytes as f64 / (1024.0 * 1024.0)
                ),
            ),
            (
                "cpu",
                format!(
                    "{:.2} s ({:.2} cores busy)",
                    self.cpu.seconds, self.cpu.cores_busy
                ),
            ),
        ];
        if let Some(redis) = &self.redis {
            rows.extend(redis.rows(s.rate));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
        out
    }
}

fn pct(p: &Percentiles) -> String {
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        p.p50, p.p99, p.p999, p.max, p.samples
    )
}

impl RedisSection {
    fn rows(&self, rate: u64) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            (
                "redis: cross-instance",
                format!(
                    "{} messages received on the other instance ({:.0}/s)",
                    self.messages_received, self.cross_instance_messages_per_second
                ),
            ),
            (
                "redis: publishing",
                format!(
                    "{} messages in {} PUBLISH ({:.1} per envelope), {} lost",
                    self.messages_sent, self.publish_commands, self.messages_per_publish, self.publish_errors
                ),
            ),
            (
                "redis: faults",
                format!("{} malformed, {} outages", self.malformed, self.outages),
            ),
            (
                "redis: server",
                format!(
                    "{} at {}, {} commands",
                    self.server_cpu_seconds
                        .map_or("cpu unknown".to_string(), |s| format!("{s:.2} s cpu")),
                    self.server,
                    self.server_commands.map_or("?".to_string(), |n| n.to_string())
                ),
            ),
        ];
        match (&self.benchmark, self.ratio_to_benchmark) {
            (Some(benchmark), Some(ratio)) => {
                rows.push((
                    "redis-benchmark",
                    format!(
                        "{:.0} req/s: {}",
                        benchmark.requests_per_second, benchmark.command
                    ),
                ));
                rows.push((
                    "ratio",
                    format!(
                        "{:.0} / {:.0} = {:.0}% of redis-benchmark{}",
                        self.cross_instance_messages_per_second,
                        benchmark.requests_per_second,
                        100.0 * ratio,
                        if rate > 0 {
                            " (publishing was capped by --rate; use --rate 0 to measure throughput)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            _ => rows.push(("redis-benchmark", "not run".to_string())),
        }
        rows
    }
}
