//! Command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fanout::{Config, Fallback, OverflowPolicy};

/// Size a fanout deployment: run a LiveView-like workload on a provider and report
/// deliveries/s, publish and end-to-end latency percentiles, drops by reason, memory per session
/// and per subscription (and the heap's peak while publishing), and CPU used.
#[derive(Debug, Parser)]
#[command(name = "fanout-sizing", version)]
pub struct Args {
    /// Connected sessions (browser tabs).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Distinct topics.
    #[arg(long, default_value_t = 1_000)]
    pub topics: usize,
    /// Topics each session subscribes to.
    #[arg(long, default_value_t = 5)]
    pub topics_per_session: usize,
    /// Publisher tasks (default: one per core).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Total publish rate in messages per second; 0 publishes flat out.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Payload size in bytes (at least 8: the send time travels in the payload).
    #[arg(long, default_value_t = 64)]
    pub message_size: usize,
    /// Mailbox capacity per session (overrides the config file).
    #[arg(long)]
    pub capacity: Option<usize>,
    /// Overflow policy (overrides the config file).
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// For `--policy block` and `block-once`: how long a broadcast waits for room.
    #[arg(long, default_value = "10")]
    pub block_timeout_ms: u64,
    /// For `--policy block` and `block-once`: what happens after the timeout.
    #[arg(long, value_enum, default_value = "drop-newest")]
    pub block_then: FallbackArg,
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Handler work per message in microseconds (simulated render), 0 for none.
    #[arg(long, default_value_t = 0)]
    pub handler_work_us: u64,
    /// A fanout TOML config file (capacity, policy, overrides, limits).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The provider to size.
    #[arg(long, value_enum, default_value = "memory")]
    pub provider: ProviderArg,
    /// For `--provider redis`: the server (default: the `REDIS_URL` environment variable, or
    /// redis://127.0.0.1:6379).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// For `--provider redis --baseline-only`: redis-benchmark's `-n`, rounded up to a multiple
    /// of 16 (default: as many as last about `--duration` at the rate of a calibration run).
    #[arg(long)]
    pub redis_benchmark_requests: Option<u64>,
    /// For `--provider nats`: the server (default: the `NATS_URL` environment variable, or
    /// nats://127.0.0.1:4222).
    #[arg(long)]
    pub nats_url: Option<String>,
    /// For `--provider postgres`: the server (default: the `DATABASE_URL` environment variable,
    /// or postgres://postgres@127.0.0.1:5432/test).
    #[arg(long)]
    pub database_url: Option<String>,
    /// For `--provider postgres`: run only the baseline (plain tokio-postgres, `pg_notify`
    /// pipelined to channels another connection listens on) and report it. For `--provider
    /// nats`: the client `--nats-baseline` names publishing on one connection, every subject
    /// subscribed on another. For `--provider redis`: `redis-benchmark -P 16 -r <topics> publish` flat out
    /// (`--rate 0`), every channel subscribed on a plain connection.
    #[arg(long)]
    pub baseline_only: bool,
    /// For `--provider nats --baseline-only`: the client of the baseline.
    #[arg(long, value_enum, default_value_t = NatsBaselineArg::AsyncNats)]
    pub nats_baseline: NatsBaselineArg,
    /// For `--provider postgres`: carry envelopes over the 7,999-byte notification limit in
    /// the provider's table (`large_payloads = "table"`) instead of refusing them.
    #[arg(long)]
    pub large_payloads_table: bool,
    /// For `--baseline-only`: `pg_notify` statements in flight at once.
    #[arg(long, default_value_t = 1024)]
    pub pipeline_depth: usize,
    /// For `--provider redis`, `postgres` and `nats`: run the workload on this many server
    /// processes (this program, started again) on the one broker, as a deployment runs:
    /// session `s` and publisher `p` on instance `s % N` and `p % N`; `--publishers` and
    /// `--rate` count all instances together.
    #[arg(long)]
    pub instances: Option<usize>,
    /// Runs as instance K of an `--instances` run, told when to publish on standard input and
    /// reporting on standard output; it exits when standard input closes.
    #[arg(long, hide = true, requires = "instances")]
    pub worker: Option<usize>,
    /// For `--worker`: the run's channel namespace (the parent's process id).
    #[arg(long, hide = true, requires = "worker")]
    pub run_id: Option<u32>,
    /// For `--worker`: the run's clock, in microseconds since the Unix epoch.
    #[arg(long, hide = true, requires = "worker")]
    pub epoch_us: Option<u64>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    DropNewest,
    DropOldest,
    Disconnect,
    Block,
    BlockOnce,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FallbackArg {
    DropNewest,
    DropOldest,
    Disconnect,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProviderArg {
    /// The in-memory default, `InMemoryPubSub`.
    Memory,
    /// Two `RedisPubSub` instances on one Redis, in this process: every session on the second,
    /// every publisher on the first, so every delivery crosses Redis.
    Redis,
    /// Two `PostgresPubSub` instances on one PostgreSQL, placed as for `redis`; with
    /// `--baseline-only`, plain tokio-postgres.
    Postgres,
    /// Two `NatsPubSub` instances on one NATS server, placed as for `redis`; with
    /// `--baseline-only`, the client of `--nats-baseline`.
    Nats,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum NatsBaselineArg {
    /// `async-nats` with its default options: `Client::publish` on one client, a subscription
    /// per subject on another, read in one task.
    AsyncNats,
    /// The client protocol written and read directly, `PUB`s back to back, with no client
    /// library in between.
    Protocol,
}

impl ProviderArg {
    /// The provider's name, as reports give it.
    pub fn name(self) -> &'static str {
        match self {
            ProviderArg::Memory => "memory",
            ProviderArg::Redis => "redis",
            ProviderArg::Postgres => "postgres",
            ProviderArg::Nats => "nats",
        }
    }
}

/// The server `--provider postgres` uses when neither `--database-url` nor `DATABASE_URL`
/// names one.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

impl Args {
    fn fallback(&self) -> Fallback {
        match self.block_then {
            FallbackArg::DropNewest => Fallback::DropNewest,
            FallbackArg::DropOldest => Fallback::DropOldest,
            FallbackArg::Disconnect => Fallback::Disconnect,
        }
    }

    /// The provider config: the file if given, then flag overrides; validated.
    pub fn fanout_config(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::from_toml_file(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(capacity) = self.capacity {
            config.capacity = capacity;
        }
        if let Some(policy) = self.policy {
            config.policy = match policy {
                PolicyArg::DropNewest => OverflowPolicy::DropNewest,
                PolicyArg::DropOldest => OverflowPolicy::DropOldest,
                PolicyArg::Disconnect => OverflowPolicy::Disconnect,
                PolicyArg::Block => OverflowPolicy::Block {
                    timeout: Duration::from_millis(self.block_timeout_ms),
                    then: self.fallback(),
                },
                PolicyArg::BlockOnce => OverflowPolicy::BlockOnce {
                    timeout: Duration::from_millis(self.block_timeout_ms),
                    then: self.fallback(),
                },
            };
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The namespace of this run's channels: the parent's process id for an `--instances`
    /// worker, this process's otherwise.
    pub fn run_id(&self) -> u32 {
        self.run_id.unwrap_or_else(std::process::id)
    }

    /// `--database-url`, else `DATABASE_URL`, else [`DEFAULT_DATABASE_URL`].
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty()))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string())
    }

    /// Checks the flags that clap cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.sessions == 0 || self.topics == 0 || self.topics_per_session == 0 {
            return Err("--sessions, --topics and --topics-per-session must be at least 1".into());
        }
        if self.topics_per_session > self.topics && !self.baseline_only {
            return Err(format!(
                "--topics-per-session is {}; it cannot exceed --topics ({})",
                self.topics_per_session, self.topics
            ));
        }
        if self.message_size < 8 {
            return Err(format!(
                "--message-size is {}; the minimum is 8",
                self.message_size
            ));
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err(format!(
                "--duration is {}; it must be in (0, 3600] seconds",
                self.duration
            ));
        }
        if self.baseline_only && self.provider == ProviderArg::Memory {
            return Err(
                "--baseline-only is a baseline of --provider redis, postgres or nats; add one".into(),
            );
        }
        if self.baseline_only && self.provider == ProviderArg::Redis && self.rate > 0 {
            return Err(format!(
                "--rate is {}; the redis baseline publishes flat out: add --rate 0",
                self.rate
            ));
        }
        if self.pipeline_depth == 0 {
            return Err("--pipeline-depth must be at least 1".into());
        }
        if self.publishers == Some(0) {
            return Err("--publishers must be at least 1".into());
        }
        if let Some(instances) = self.instances {
            self.check_instances(instances)?;
        }
        Ok(())
    }

    fn check_instances(&self, instances: usize) -> Result<(), String> {
        if !(2..=256).contains(&instances) {
            return Err(format!("--instances is {instances}; it must be in [2, 256]"));
        }
        if self.provider == ProviderArg::Memory || self.baseline_only || self.large_payloads_table {
            return Err(
                "--instances runs --provider redis, postgres or nats, without --baseline-only or --large-payloads-table"
                    .into(),
            );
        }
        if self.publishers.is_some_and(|publishers| publishers < instances) {
            return Err(format!(
                "--publishers counts all instances' publishers; it must be at least --instances ({instances})"
            ));
        }
        if self.worker.is_some_and(|worker| worker >= instances) {
            return Err(format!("--worker must be below --instances ({instances})"));
        }
        Ok(())
    }
}
