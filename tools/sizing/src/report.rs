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
    pub handler_panics: u64,
    pub memory: Memory,
    pub cpu: Cpu,
    pub elapsed_seconds: f64,
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

#[derive(Debug, Serialize)]
pub struct Memory {
    pub bytes_per_session: f64,
    pub bytes_per_subscription: f64,
    pub total_bytes: i64,
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
        let rows: Vec<(&str, String)> = vec![
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
            ("handler panics", self.handler_panics.to_string()),
            (
                "memory",
                format!(
                    "{:.0} B per session, {:.0} B per subscription, {:.1} MiB in all",
                    self.memory.bytes_per_session,
                    self.memory.bytes_per_subscription,
                    self.memory.total_bytes as f64 / (1024.0 * 1024.0)
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
