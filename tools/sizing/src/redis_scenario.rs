//! `--provider redis`: the scenario on two `RedisPubSub` instances sharing one Redis.
//!
//! Every session lives on the receiving instance and every publisher on the other, so every
//! delivery crosses Redis: the figures are those of the slower, remote path (with sessions
//! split between instances, the local share would be delivered in-process, at the memory
//! provider's rate). Both instances run in this process, on one tokio runtime, so the CPU
//! figure is both instances together; the Redis server's own CPU is reported beside it.
//! `--baseline-only` runs the baseline this is compared with instead
//! ([`redis_baseline`](crate::redis_baseline)).

use std::sync::Arc;

use fanout::redis::RedisPubSub;
use fanout::{Config, PubSubProvider};

use crate::args::Args;
use crate::instance::redis_config;
use crate::report::{per_command, Crossing, RedisSection, Report};
use crate::run::{both_sides_drained, measure, policy_name, Placement, Sides};

/// Runs the scenario on two instances of the Redis provider.
pub async fn run_redis(args: &Args, config: Config) -> Result<Report, Box<dyn std::error::Error>> {
    let redis = redis_config(args);
    let client = ::redis::Client::open(redis.url.as_str())?;
    let server = client.get_connection_info().addr().to_string();
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|error| format!("cannot reach redis at {server}: {error}"))?;

    let capacity = config.capacity;
    let policy = policy_name(&config);
    let publishing = Arc::new(RedisPubSub::with_config(redis.clone(), config.clone())?);
    let receiving = Arc::new(RedisPubSub::with_config(redis, config)?);
    publishing.start().await?;
    receiving.start().await?;
    let sides = Sides {
        name: "redis",
        publish: Arc::clone(&publishing) as Arc<dyn PubSubProvider>,
        receive: Arc::clone(&receiving) as Arc<dyn PubSubProvider>,
        capacity,
        policy,
    };
    let server_before = server_figures(&mut admin).await;
    let drained = |_: &[u64]| {
        let (sent, got) = (publishing.redis_stats(), receiving.redis_stats());
        both_sides_drained(&sent, &got, publishing.stats().published)
    };
    let measured = measure(args, &sides, Placement::alone(1), drained).await;
    let server_after = server_figures(&mut admin).await;
    let (sent, got) = (publishing.redis_stats(), receiving.redis_stats());
    publishing.stop().await?;
    receiving.stop().await?;
    let mut report = sides.report(args, measured?);

    let (cpu, commands) = match (server_before, server_after) {
        (Some(before), Some(after)) => (
            Some(after.cpu_seconds - before.cpu_seconds),
            Some(after.commands.saturating_sub(before.commands)),
        ),
        _ => (None, None),
    };
    report.redis = Some(RedisSection {
        server,
        messages_sent: sent.published,
        publish_commands: sent.envelopes_published,
        messages_per_publish: per_command(sent.published, sent.envelopes_published),
        crossing: Crossing::of(&sent, &got, report.elapsed_seconds),
        server_cpu_seconds: cpu,
        server_commands: commands,
    });
    Ok(report)
}

/// The Redis server's counters at one moment.
pub struct ServerFigures {
    /// `used_cpu_sys` plus `used_cpu_user`.
    pub cpu_seconds: f64,
    /// `total_commands_processed`.
    pub commands: u64,
}

/// The server's CPU time and commands processed so far, from `INFO`; `None` if unavailable.
pub async fn server_figures(admin: &mut ::redis::aio::MultiplexedConnection) -> Option<ServerFigures> {
    let info: String = ::redis::cmd("INFO").arg("all").query_async(admin).await.ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let cpu = |name: &str| field(name)?.parse::<f64>().ok();
    Some(ServerFigures {
        cpu_seconds: cpu("used_cpu_sys")? + cpu("used_cpu_user")?,
        commands: field("total_commands_processed")?.parse().ok()?,
    })
}
