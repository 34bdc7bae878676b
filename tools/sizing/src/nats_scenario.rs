//! `--provider nats`: the scenario on two `NatsPubSub` instances sharing one NATS server.
//!
//! Placed as for Redis: every session lives on the receiving instance and every publisher on
//! the other, so every delivery crosses the server (pipelined `PUB`s on one connection, one
//! `SUB` per topic on another). Both instances run in this process, on one tokio runtime; the
//! server's own CPU is read from its process when it runs on the local machine.

use std::sync::Arc;

use fanout::nats::NatsPubSub;
use fanout::{Config, PubSubProvider};

use crate::args::Args;
use crate::cpu::ServerCpu;
use crate::instance::nats_config;
use crate::report::{per_command, Crossing, NatsSection, Report};
use crate::run::{both_sides_drained, measure, policy_name, Placement, Sides};

/// Runs the scenario on two instances of the NATS provider.
pub async fn run_nats(args: &Args, config: Config) -> Result<Report, Box<dyn std::error::Error>> {
    let nats = nats_config(args);
    let server = nats.server()?;
    let capacity = config.capacity;
    let policy = policy_name(&config);
    let publishing = Arc::new(NatsPubSub::with_config(nats.clone(), config.clone())?);
    let receiving = Arc::new(NatsPubSub::with_config(nats, config)?);
    publishing.start().await?;
    receiving.start().await?;
    let sides = Sides {
        name: "nats",
        publish: Arc::clone(&publishing) as Arc<dyn PubSubProvider>,
        receive: Arc::clone(&receiving) as Arc<dyn PubSubProvider>,
        capacity,
        policy,
    };
    let server_cpu_before = ServerCpu::named(NATS_SERVER);
    let drained = |_: &[u64]| {
        let (sent, got) = (publishing.nats_stats(), receiving.nats_stats());
        both_sides_drained(&sent, &got, publishing.stats().published)
    };
    let measured = measure(args, &sides, Placement::alone(1), drained).await;
    let server_cpu_seconds = server_cpu_before.seconds_until(&ServerCpu::named(NATS_SERVER));
    let (sent, got) = (publishing.nats_stats(), receiving.nats_stats());
    publishing.stop().await?;
    receiving.stop().await?;
    let mut report = sides.report(args, measured?);
    report.nats = Some(NatsSection {
        server,
        subject_prefix: publishing.nats_config().subject_prefix.clone(),
        messages_sent: sent.published,
        pub_commands: sent.envelopes_published,
        messages_per_pub: per_command(sent.published, sent.envelopes_published),
        crossing: Crossing::of(&sent, &got, report.elapsed_seconds),
        server_cpu_seconds,
    });
    Ok(report)
}

/// The server's process name, whose CPU is read when it runs on the local machine.
pub const NATS_SERVER: &str = "nats-server";
