//! The report: what was measured, as a table or JSON.

use std::fmt::Write as _;

use fanout::bridge::BrokerStats;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::tally::Tally;

#[derive(Debug, Serialize)]
pub struct Report {
    pub provider: &'static str,
    pub scenario: Scenario,
    pub published: u64,
    pub recipients: u64,
    pub delivered: u64,
    pub deliveries_per_second: f64,
    /// Deliveries of messages published on another instance than the session's (every
    /// delivery of the in-process distributed scenarios; none of `memory`).
    pub cross_instance_delivered: u64,
    pub cross_instance_deliveries_per_second: f64,
    pub publishes_per_second: f64,
    pub publish_latency_us: Percentiles,
    pub end_to_end_latency_us: Percentiles,
    /// `end_to_end_latency_us` of the cross-instance deliveries alone.
    pub cross_instance_latency_us: Percentiles,
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
    /// The PostgreSQL side, for `--provider postgres`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSection>,
    /// The NATS side, for `--provider nats`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSection>,
    /// Each server process and the broker's, for `--instances`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstancesSection>,
}

impl Report {
    /// The report of `tally`, with no provider's section.
    pub fn new(provider: &'static str, scenario: Scenario, tally: Tally) -> Report {
        let per_second = |count: u64| count as f64 / tally.elapsed_seconds;
        Report {
            provider,
            scenario,
            published: tally.published,
            recipients: tally.recipients,
            delivered: tally.delivered,
            deliveries_per_second: per_second(tally.delivered),
            cross_instance_delivered: tally.cross_instance_delivered,
            cross_instance_deliveries_per_second: per_second(tally.cross_instance_delivered),
            publishes_per_second: per_second(tally.published),
            publish_latency_us: Percentiles::of(&tally.publish_latency.0),
            end_to_end_latency_us: Percentiles::of(&tally.end_to_end_latency.0),
            cross_instance_latency_us: Percentiles::of(&tally.cross_instance_latency.0),
            dropped: tally.dropped,
            disconnects: tally.disconnects,
            block: tally.block,
            handler_panics: tally.handler_panics,
            memory: tally.memory,
            cpu: Cpu {
                seconds: tally.cpu_seconds,
                cores_busy: tally.cpu_seconds / tally.elapsed_seconds,
            },
            elapsed_seconds: tally.elapsed_seconds,
            redis: None,
            postgres: None,
            nats: None,
            instances: None,
        }
    }
}

/// `--instances N`: N server processes on one broker, sessions and publishers spread over them.
#[derive(Debug, Serialize)]
pub struct InstancesSection {
    /// The server processes, in instance order.
    pub per_instance: Vec<InstanceFigures>,
    /// The broker's server process(es) on the local machine, if found.
    pub broker: BrokerCpu,
    /// From the go to publish to the last instance's last delivery, as the parent timed it.
    pub wall_seconds: f64,
}

/// One server process of an `--instances` run.
#[derive(Debug, Serialize)]
pub struct InstanceFigures {
    pub instance: usize,
    pub pid: u32,
    pub sessions: usize,
    pub published: u64,
    pub delivered: u64,
    pub cross_instance_delivered: u64,
    pub broker: BrokerFigures,
    pub dropped: Dropped,
    /// User plus system CPU from its first broadcast to drained (its `/proc/<pid>/stat`).
    pub cpu_seconds: f64,
    /// `cpu_seconds` per wall second of the same span.
    pub cores_busy: f64,
    pub elapsed_seconds: f64,
}

/// One instance's broker-side counters at the end of its run.
#[derive(Debug, Serialize, Deserialize)]
pub struct BrokerFigures {
    /// Messages sent to the broker.
    pub sent: u64,
    /// Messages received from it (other instances' only).
    pub received: u64,
    /// Messages not sent: the connection failed or the broker refused them.
    pub lost: u64,
    /// Envelopes received that did not decode.
    pub malformed: u64,
    /// Times a connection to the broker was lost.
    pub outages: u64,
}

/// The broker server's CPU over an `--instances` run.
#[derive(Debug, Serialize)]
pub struct BrokerCpu {
    /// The server, as the URL names it.
    pub server: String,
    /// Its nodes: every node of a Redis Cluster (from `CLUSTER NODES`), else the server alone.
    pub nodes: Vec<BrokerNode>,
    /// CPU of every node's processes together.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` per wall second.
    pub cores_busy: Option<f64>,
}

/// A node of the broker and its processes on the local machine.
#[derive(Debug, Serialize)]
pub struct BrokerNode {
    /// As `ip:port`.
    pub address: String,
    /// The process listening on the node's port (from `/proc/net/tcp{,6}` and `/proc/*/fd`),
    /// then its descendants (PostgreSQL's backends); empty when the node is not on the local
    /// machine.
    pub processes: Vec<BrokerProcess>,
}

/// A process of the broker's server.
#[derive(Debug, Serialize)]
pub struct BrokerProcess {
    pub pid: u32,
    pub name: String,
}

/// What crossed the broker between the two instances of a provider's scenario, and what was
/// lost on the way: the figures every broker's section has, in the same place.
#[derive(Debug, Serialize)]
pub struct Crossing {
    /// Messages the receiving instance got from the broker and handed to its sessions.
    pub messages_received: u64,
    /// `messages_received` over the whole run (publishing and draining).
    pub cross_instance_messages_per_second: f64,
    /// Messages the publishing instance did not send: refused, lost with a connection, or
    /// broadcast while its connection was down.
    pub publish_errors: u64,
    /// Envelopes the receiving instance could not read.
    pub malformed: u64,
    /// Connections lost, on both instances.
    pub outages: u64,
    /// Of the receiving instance's subscription outages, those that followed its reader
    /// stalling on a full hand-off to the listener: most likely closed by the server for
    /// falling behind (Redis's `client-output-buffer-limit pubsub`, a NATS slow consumer).
    pub slow_consumer_outages: u64,
    /// Messages the broker took from the publishing instance that the receiving one never
    /// got: dropped with a subscription the server closed, or in flight when a connection
    /// was lost (these brokers deliver at most once).
    pub lost_in_broker: u64,
}

impl Crossing {
    /// The figures of a run of `elapsed_seconds`, from the publishing instance's broker
    /// counters (`sent`) and the receiving instance's (`got`) at its end.
    pub fn of(sent: &BrokerStats, got: &BrokerStats, elapsed_seconds: f64) -> Crossing {
        Crossing {
            messages_received: got.received,
            cross_instance_messages_per_second: got.received as f64 / elapsed_seconds,
            publish_errors: sent.publish_errors + sent.unavailable,
            malformed: got.malformed,
            outages: sent.publisher_outages + got.outages,
            slow_consumer_outages: got.slow_consumer_outages,
            lost_in_broker: sent.published.saturating_sub(got.received + got.malformed),
        }
    }
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
    #[serde(flatten)]
    pub crossing: Crossing,
    /// CPU the Redis server used during the run (`INFO cpu`; the whole server, not just us).
    pub server_cpu_seconds: Option<f64>,
    /// Commands the Redis server processed during the run (`INFO stats`; the whole server).
    pub server_commands: Option<u64>,
}

/// Two `PostgresPubSub` instances on one PostgreSQL: publishers on the first, sessions on the
/// second.
#[derive(Debug, Serialize)]
pub struct PostgresSection {
    /// The server, as `host:port/database`.
    pub server: String,
    /// Messages the publishing instance sent.
    pub messages_sent: u64,
    /// `pg_notify` statements (envelopes) that carried them.
    pub notify_statements: u64,
    pub messages_per_notify: f64,
    #[serde(flatten)]
    pub crossing: Crossing,
    /// CPU the server's processes on the local machine used during the run (all of them, not just
    /// this run's backends); `None` when the server is elsewhere.
    pub server_cpu_seconds: Option<f64>,
}

/// Two `NatsPubSub` instances on one NATS server: publishers on the first, sessions on the
/// second.
#[derive(Debug, Serialize)]
pub struct NatsSection {
    /// The server, as `host:port`.
    pub server: String,
    /// The subjects' prefix, this run's own.
    pub subject_prefix: String,
    /// Messages the publishing instance sent.
    pub messages_sent: u64,
    /// `PUB` commands (envelopes) that carried them.
    pub pub_commands: u64,
    pub messages_per_pub: f64,
    #[serde(flatten)]
    pub crossing: Crossing,
    /// CPU every `nats-server` process on the local machine used during the run (the whole
    /// server, not just this run); `None` when the server is elsewhere.
    pub server_cpu_seconds: Option<f64>,
}

/// `--provider nats --baseline-only`: the client of `--nats-baseline` publishing on one
/// connection, every subject subscribed on another.
#[derive(Debug, Serialize)]
pub struct NatsBaseline {
    /// `async-nats` or `protocol` (`--nats-baseline`).
    pub client: &'static str,
    /// The server, as `host:port`.
    pub server: String,
    /// Subjects subscribed and published to, one per topic.
    pub topics: usize,
    pub message_size: usize,
    pub rate: u64,
    pub duration_seconds: f64,
    /// `PUB`s written.
    pub sent: u64,
    /// Messages the subscribing connection read.
    pub received: u64,
    /// Sent and never read: dropped by the server or the client as a slow consumer.
    pub missing: u64,
    pub publishing_seconds: f64,
    /// Publishing, then draining.
    pub elapsed_seconds: f64,
    /// `received` over `elapsed_seconds`: the figure the provider's
    /// `cross_instance_messages_per_second` is compared with.
    pub messages_per_second: f64,
    pub latency_us: Percentiles,
    /// CPU this process used while publishing and draining.
    pub client_cpu_seconds: Option<f64>,
    /// CPU every `nats-server` process on the local machine used over the run (subscribing,
    /// publishing and draining); `None` for a server elsewhere.
    pub server_cpu_seconds: Option<f64>,
}

/// `--provider postgres --baseline-only`: plain tokio-postgres, `pg_notify` pipelined on one
/// connection to channels another connection `LISTEN`s on.
#[derive(Debug, Serialize)]
pub struct PostgresBaseline {
    /// The server, as `host:port/database`.
    pub server: String,
    /// Channels listened on and published to, one per topic.
    pub topics: usize,
    pub message_size: usize,
    /// Payload characters, on the shortest topic name and on the longest.
    pub payload_chars_min: usize,
    pub payload_chars_max: usize,
    /// `pg_notify` statements in flight at once, at most.
    pub pipeline_depth: usize,
    pub rate: u64,
    pub duration_seconds: f64,
    /// How long the `LISTEN`s took.
    pub listen_seconds: f64,
    /// `pg_notify` statements completed.
    pub sent: u64,
    /// Notifications the listening connection got.
    pub received: u64,
    /// Received notifications without a send time (not this run's).
    pub malformed: u64,
    pub publishing_seconds: f64,
    /// Publishing, then draining.
    pub elapsed_seconds: f64,
    /// `sent` over `publishing_seconds`.
    pub sent_per_second: f64,
    /// `received` over `elapsed_seconds`: the figure the provider's
    /// `cross_instance_messages_per_second` is compared with.
    pub messages_per_second: f64,
    /// From just before `pg_notify` to the listening side's counting task.
    pub latency_us: Percentiles,
    /// `pg_notification_queue_usage()` at the end: the share of the server's notification
    /// queue still held (by any listener on the server).
    pub queue_usage_after: f64,
    pub cpu: BaselineCpu,
}

/// CPU used during a baseline run, from publishing to drained: by this process, and by the
/// server (each of those `None` when the server is not on the local machine).
#[derive(Debug, Serialize)]
pub struct BaselineCpu {
    /// This process: both connections' client side and the counting task.
    pub client_seconds: Option<f64>,
    /// The backend serving the listening connection.
    pub listener_seconds: Option<f64>,
    /// The backend serving the publishing connection.
    pub publisher_seconds: Option<f64>,
    /// Every `postgres` process on the local machine, these two included.
    pub server_seconds: Option<f64>,
}

/// `--provider redis --baseline-only`: `redis-benchmark` publishing, a channel drawn at random
/// per message, while a plain connection subscribed to every channel receives each message.
#[derive(Debug, Serialize)]
pub struct RedisBaseline {
    /// The server, as `host:port`.
    pub server: String,
    /// Channels subscribed and published to.
    pub topics: usize,
    pub message_size: usize,
    /// Bytes of each published message: the provider's envelope for one `message_size`
    /// message.
    pub message_bytes: usize,
    pub duration_seconds: f64,
    /// The subscriber's rate in the calibration run that set `-n`; `None` when
    /// `--redis-benchmark-requests` did.
    pub calibration_messages_per_second: Option<f64>,
    pub benchmark: Benchmark,
    /// Messages redis-benchmark published: one per request.
    pub sent: u64,
    /// Messages the subscriber received.
    pub received: u64,
    /// `sent` less `received`.
    pub missing: u64,
    /// From redis-benchmark's start to the subscriber's having every message.
    pub elapsed_seconds: f64,
    /// `received` over `elapsed_seconds`: the figure the provider's
    /// `cross_instance_messages_per_second` is compared with.
    pub messages_per_second: f64,
    /// CPU the Redis server used over the run (`INFO cpu`; the whole server).
    pub server_cpu_seconds: Option<f64>,
    /// Commands the Redis server processed over the run (`INFO stats`; the whole server).
    pub server_commands: Option<u64>,
    /// CPU this process (the subscriber) used over the run.
    pub client_cpu_seconds: Option<f64>,
}

/// A `redis-benchmark` run.
#[derive(Debug, Serialize)]
pub struct Benchmark {
    pub command: String,
    /// redis-benchmark's own figure: requests answered per second.
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dropped {
    pub drop_newest: u64,
    pub drop_oldest: u64,
    pub slow_consumer: u64,
    pub unsubscribed: u64,
    pub stopped: u64,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "drop_newest {}, drop_oldest {}, slow_consumer {}, unsubscribed {}, stopped {}",
            self.drop_newest, self.drop_oldest, self.slow_consumer, self.unsubscribed, self.stopped
        )
    }
}

impl Dropped {
    /// Adds `other`'s counts, reason by reason.
    pub fn add(&mut self, other: &Dropped) {
        self.drop_newest += other.drop_newest;
        self.drop_oldest += other.drop_oldest;
        self.slow_consumer += other.slow_consumer;
        self.unsubscribed += other.unsubscribed;
        self.stopped += other.stopped;
    }
}

/// The `block` policy's waits: how many broadcasts waited for a full mailbox, how many of those
/// waits timed out, and how many full mailboxes were not waited for (the session had timed out
/// before and read nothing since).
#[derive(Debug, Serialize, Deserialize)]
pub struct Block {
    pub waits: u64,
    pub timeouts: u64,
    pub skips: u64,
}

#[derive(Debug, Serialize, Deserialize)]
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
            ("dropped", self.dropped.to_string()),
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
        if self.provider != "memory" {
            rows.insert(
                2,
                (
                    "cross-instance",
                    format!(
                        "{} deliveries ({:.0}/s)",
                        self.cross_instance_delivered, self.cross_instance_deliveries_per_second
                    ),
                ),
            );
            rows.insert(5, ("cross-instance (us)", pct(&self.cross_instance_latency_us)));
        }
        if let Some(redis) = &self.redis {
            rows.extend(redis.rows());
        }
        if let Some(postgres) = &self.postgres {
            rows.extend(postgres.rows());
        }
        if let Some(nats) = &self.nats {
            rows.extend(nats.rows());
        }
        if let Some(instances) = &self.instances {
            rows.extend(instances.rows());
        }
        out.push_str(&rows_table(rows));
        out
    }
}

fn rows_table(rows: Vec<(&str, String)>) -> String {
    let mut out = String::new();
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<width$}  {v}");
    }
    out
}

fn seconds(s: Option<f64>) -> String {
    s.map_or("unknown".to_string(), |s| format!("{s:.2} s"))
}

fn pct(p: &Percentiles) -> String {
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        p.p50, p.p99, p.p999, p.max, p.samples
    )
}

impl RedisSection {
    fn rows(&self) -> Vec<(&'static str, String)> {
        BrokerRows {
            labels: [
                "redis: cross-instance",
                "redis: publishing",
                "redis: faults",
                "redis: server",
            ],
            crossing: &self.crossing,
            sent: self.messages_sent,
            commands: self.publish_commands,
            command: "PUBLISH",
            server: format!(
                "{} at {}, {} commands",
                self.server_cpu_seconds
                    .map_or("cpu unknown".to_string(), |s| format!("{s:.2} s cpu")),
                self.server,
                self.server_commands.map_or("?".to_string(), |n| n.to_string())
            ),
        }
        .rows()
    }
}

impl PostgresSection {
    fn rows(&self) -> Vec<(&'static str, String)> {
        BrokerRows {
            labels: [
                "postgres: cross-instance",
                "postgres: publishing",
                "postgres: faults",
                "postgres: server",
            ],
            crossing: &self.crossing,
            sent: self.messages_sent,
            commands: self.notify_statements,
            command: "pg_notify",
            server: format!("{} cpu at {}", seconds(self.server_cpu_seconds), self.server),
        }
        .rows()
    }
}

impl NatsSection {
    fn rows(&self) -> Vec<(&'static str, String)> {
        BrokerRows {
            labels: [
                "nats: cross-instance",
                "nats: publishing",
                "nats: faults",
                "nats: server",
            ],
            crossing: &self.crossing,
            sent: self.messages_sent,
            commands: self.pub_commands,
            command: "PUB",
            server: format!(
                "{} cpu at {} (subjects {}.*)",
                seconds(self.server_cpu_seconds),
                self.server,
                self.subject_prefix
            ),
        }
        .rows()
    }
}

impl InstancesSection {
    fn rows(&self) -> Vec<(&'static str, String)> {
        let mut rows: Vec<(&'static str, String)> = self
            .per_instance
            .iter()
            .map(|i| {
                (
                    "instance",
                    format!(
                        "{} (pid {}): {} sessions, {} published, {} delivered ({} cross-instance), {:.2} s cpu ({:.2} cores busy); broker: {} sent, {} received, {} lost, {} malformed, {} outages; dropped: {}",
                        i.instance,
                        i.pid,
                        i.sessions,
                        i.published,
                        i.delivered,
                        i.cross_instance_delivered,
                        i.cpu_seconds,
                        i.cores_busy,
                        i.broker.sent,
                        i.broker.received,
                        i.broker.lost,
                        i.broker.malformed,
                        i.broker.outages,
                        i.dropped
                    ),
                )
            })
            .collect();
        let b = &self.broker;
        let found: Vec<String> = b
            .nodes
            .iter()
            .filter_map(|node| match node.processes.as_slice() {
                [] => None,
                [first, rest @ ..] => Some(format!(
                    "{} pid {}{}{}",
                    first.name,
                    first.pid,
                    if b.nodes.len() > 1 {
                        format!(" at {}", node.address)
                    } else {
                        String::new()
                    },
                    if rest.is_empty() {
                        String::new()
                    } else {
                        format!(" and {} descendants", rest.len())
                    }
                )),
            })
            .collect();
        let processes = match found.len() {
            0 => "no local process listens on its port".to_string(),
            1 => format!("{}, found by its listening port", found[0]),
            _ => format!("{}, found by their listening ports", found.join(", ")),
        };
        let cluster = if b.nodes.len() > 1 {
            format!("Redis Cluster, {} nodes: ", b.nodes.len())
        } else {
            String::new()
        };
        rows.push((
            "broker",
            format!(
                "{cluster}{} cpu ({} cores busy) over {:.2} s at {}: {}",
                seconds(b.cpu_seconds),
                b.cores_busy.map_or("?".to_string(), |c| format!("{c:.2}")),
                self.wall_seconds,
                b.server,
                processes
            ),
        ));
        rows
    }
}

/// The rows every broker's section prints: what crossed, how it was published, faults, and
/// the server.
struct BrokerRows<'a> {
    labels: [&'static str; 4],
    crossing: &'a Crossing,
    sent: u64,
    commands: u64,
    /// The broker's publish command, as the row names it.
    command: &'static str,
    server: String,
}

impl BrokerRows<'_> {
    fn rows(self) -> Vec<(&'static str, String)> {
        let [crossed, publishing, faults, server] = self.labels;
        let c = self.crossing;
        vec![
            (
                crossed,
                format!(
                    "{} messages received on the other instance ({:.0}/s)",
                    c.messages_received, c.cross_instance_messages_per_second
                ),
            ),
            (
                publishing,
                format!(
                    "{} messages in {} {} ({:.1} per envelope), {} lost",
                    self.sent,
                    self.commands,
                    self.command,
                    per_command(self.sent, self.commands),
                    c.publish_errors
                ),
            ),
            (
                faults,
                format!(
                    "{} malformed, {} outages ({} of a slow consumer), {} messages lost in the broker",
                    c.malformed, c.outages, c.slow_consumer_outages, c.lost_in_broker
                ),
            ),
            (server, self.server),
        ]
    }
}

/// Messages per publish command: `sent` over `commands`, 0 when nothing was sent.
pub fn per_command(sent: u64, commands: u64) -> f64 {
    sent as f64 / commands.max(1) as f64
}

impl NatsBaseline {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "nats baseline: {} publishing on one connection, {} subjects subscribed on another, {} B messages, {}, {:.1} s",
            self.client,
            self.topics,
            self.message_size,
            if self.rate == 0 { "full speed".to_string() } else { format!("{} msg/s", self.rate) },
            self.duration_seconds,
        );
        let rows = vec![
            (
                "received",
                format!(
                    "{} of {} sent ({:.0}/s over {:.2} s)",
                    self.received, self.sent, self.messages_per_second, self.elapsed_seconds
                ),
            ),
            ("latency (us)", pct(&self.latency_us)),
            (
                "cpu",
                format!(
                    "{} this process, {} the server at {}",
                    seconds(self.client_cpu_seconds),
                    seconds(self.server_cpu_seconds),
                    self.server
                ),
            ),
        ];
        out.push_str(&rows_table(rows));
        out
    }
}

impl RedisBaseline {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "redis baseline: redis-benchmark publishing {} B messages ({} B payloads in an envelope) to {} channel{}, all subscribed on one plain connection, {:.1} s",
            self.message_bytes,
            self.message_size,
            self.topics,
            if self.topics == 1 { "" } else { "s" },
            self.duration_seconds,
        );
        let rows = vec![
            (
                "received",
                format!(
                    "{} of {} sent, {} missing ({:.0}/s over {:.2} s)",
                    self.received, self.sent, self.missing, self.messages_per_second, self.elapsed_seconds
                ),
            ),
            (
                "redis-benchmark",
                format!(
                    "{:.0} req/s: {}",
                    self.benchmark.requests_per_second, self.benchmark.command
                ),
            ),
            (
                "calibration",
                self.calibration_messages_per_second
                    .map_or("none: -n from --redis-benchmark-requests".to_string(), |rate| {
                        format!("{rate:.0} msg/s set -n")
                    }),
            ),
            (
                "cpu",
                format!(
                    "{} this process; server {} at {}, {} commands",
                    seconds(self.client_cpu_seconds),
                    seconds(self.server_cpu_seconds),
                    self.server,
                    self.server_commands.map_or("?".to_string(), |n| n.to_string())
                ),
            ),
        ];
        out.push_str(&rows_table(rows));
        out
    }
}

impl PostgresBaseline {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "postgres baseline: tokio-postgres, pg_notify pipelined {} deep on one connection to {} channels LISTENed on by another, {}-{} character payloads ({} B messages), {}, {:.1} s",
            self.pipeline_depth,
            self.topics,
            self.payload_chars_min,
            self.payload_chars_max,
            self.message_size,
            if self.rate == 0 { "full speed".to_string() } else { format!("{} msg/s", self.rate) },
            self.duration_seconds,
        );
        let rows = vec![
            (
                "sent",
                format!(
                    "{} pg_notify ({:.0}/s over {:.2} s)",
                    self.sent, self.sent_per_second, self.publishing_seconds
                ),
            ),
            (
                "received",
                format!(
                    "{} notifications ({:.0}/s over {:.2} s), {} malformed",
                    self.received, self.messages_per_second, self.elapsed_seconds, self.malformed
                ),
            ),
            ("end-to-end latency (us)", pct(&self.latency_us)),
            (
                "listen",
                format!("{} channels in {:.3} s", self.topics, self.listen_seconds),
            ),
            (
                "cpu",
                format!(
                    "this process {}; server: listening backend {}, publishing backend {}, all postgres processes {}",
                    seconds(self.cpu.client_seconds),
                    seconds(self.cpu.listener_seconds),
                    seconds(self.cpu.publisher_seconds),
                    seconds(self.cpu.server_seconds)
                ),
            ),
            (
                "server",
                format!(
                    "{}, notification queue {:.4}% full at the end",
                    self.server,
                    100.0 * self.queue_usage_after
                ),
            ),
        ];
        out.push_str(&rows_table(rows));
        out
    }
}
