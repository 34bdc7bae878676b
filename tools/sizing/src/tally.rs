//! What one process measured, raw: counts and whole histograms, so that the tallies of several
//! instances add up to one report. Workers send theirs to the parent as JSON.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::report::{Block, Dropped, Memory};
use crate::run::new_histogram;

/// One process's part of a run, from its sessions subscribing to their last delivery.
#[derive(Debug, Serialize, Deserialize)]
pub struct Tally {
    /// Sessions on this instance.
    pub sessions: usize,
    pub subscriptions: u64,
    /// Broadcasts this instance's publishers made.
    pub published: u64,
    pub recipients: u64,
    pub delivered: u64,
    /// Deliveries of messages another instance published.
    pub cross_instance_delivered: u64,
    pub publish_latency: Latency,
    pub end_to_end_latency: Latency,
    pub cross_instance_latency: Latency,
    pub dropped: Dropped,
    pub disconnects: u64,
    pub block: Block,
    pub handler_panics: u64,
    pub memory: Memory,
    /// User plus system CPU of this process from the first broadcast to drained.
    pub cpu_seconds: f64,
    /// From the first broadcast to drained.
    pub elapsed_seconds: f64,
}

impl Tally {
    /// The tally of a run whose instances measured `parts`: counts and histograms added,
    /// memory per session and per subscription averaged over sessions, the longest elapsed
    /// time. `None` for no parts.
    pub fn merge(parts: Vec<Tally>) -> Option<Tally> {
        let mut parts = parts.into_iter();
        let mut all = parts.next()?;
        for part in parts {
            let sessions = (all.sessions + part.sessions).max(1) as f64;
            let mean = |a: f64, b: f64| (a * all.sessions as f64 + b * part.sessions as f64) / sessions;
            all.memory = Memory {
                bytes_per_session: mean(all.memory.bytes_per_session, part.memory.bytes_per_session),
                bytes_per_subscription: mean(
                    all.memory.bytes_per_subscription,
                    part.memory.bytes_per_subscription,
                ),
                total_bytes: all.memory.total_bytes + part.memory.total_bytes,
                peak_bytes: all.memory.peak_bytes + part.memory.peak_bytes,
            };
            all.sessions += part.sessions;
            all.subscriptions += part.subscriptions;
            all.published += part.published;
            all.recipients += part.recipients;
            all.delivered += part.delivered;
            all.cross_instance_delivered += part.cross_instance_delivered;
            all.publish_latency.add(&part.publish_latency);
            all.end_to_end_latency.add(&part.end_to_end_latency);
            all.cross_instance_latency.add(&part.cross_instance_latency);
            all.dropped.add(&part.dropped);
            all.disconnects += part.disconnects;
            all.block.waits += part.block.waits;
            all.block.timeouts += part.block.timeouts;
            all.block.skips += part.block.skips;
            all.handler_panics += part.handler_panics;
            all.cpu_seconds += part.cpu_seconds;
            all.elapsed_seconds = all.elapsed_seconds.max(part.elapsed_seconds);
        }
        Some(all)
    }
}

/// A latency histogram (microseconds) that travels as JSON: its recorded values, each with
/// its count.
#[derive(Debug)]
pub struct Latency(pub Histogram<u64>);

impl Latency {
    fn add(&mut self, other: &Latency) {
        // Both come from `new_histogram`: the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }
}

impl Serialize for Latency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let counts: Vec<(u64, u64)> = self
            .0
            .iter_recorded()
            .map(|value| (value.value_iterated_to(), value.count_at_value()))
            .collect();
        counts.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let counts = Vec::<(u64, u64)>::deserialize(deserializer)?;
        let mut histogram = new_histogram();
        for (value, count) in counts {
            histogram
                .record_n(value, count)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(Latency(histogram))
    }
}
