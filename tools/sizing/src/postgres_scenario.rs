//! `--provider postgres`: the scenario on two `PostgresPubSub` instances sharing one
//! PostgreSQL.
//!
//! Placed as for Redis: every session lives on the receiving instance and every publisher on
//! the other, so every delivery crosses PostgreSQL (`pg_notify` on one connection, `LISTEN` on
//! another, one channel per topic). Both instances run in this process, on one tokio runtime.
//!
//! The figure to compare is `cross_instance_messages_per_second` against the baseline's
//! `messages_per_second` ([`postgres_baseline`](crate::postgres_baseline), `--baseline-only`)
//! with the same workload flags, on the same server, alternated run by run as separate
//! processes: `scripts/broker_ratio.py` does that.

use crate::args::Args;
use crate::report::Report;
use fanout::Config;

/// Runs the scenario on two instances of the PostgreSQL provider.
pub async fn run_postgres(args: &Args, config: Config) -> Result<Report, Box<dyn std::error::Error>> {
    use std::sync::Arc;

    use fanout::postgres::PostgresPubSub;
    use fanout::PubSubProvider;

    use crate::cpu::ServerCpu;
    use crate::instance::postgres_config;
    use crate::postgres_baseline::server_name;
    use crate::report::{per_command, Crossing, PostgresSection};
    use crate::run::{both_sides_drained, measure, policy_name, Placement, Sides};

    let mut postgres = postgres_config(args);
    let server = server_name(&postgres.url).map_err(|error| format!("--database-url: {error}"))?;
    if args.large_payloads_table {
        postgres = postgres
            .with_large_payloads(fanout::postgres::LargePayloads::Table)
            .with_payload_table(format!("fanout_sizing_{}", std::process::id()));
    }

    let capacity = config.capacity;
    let policy = policy_name(&config);
    let publishing = Arc::new(PostgresPubSub::with_config(postgres.clone(), config.clone())?);
    let receiving = Arc::new(PostgresPubSub::with_config(postgres, config)?);
    publishing
        .start()
        .await
        .map_err(|error| format!("cannot start on postgres at {server}: {error}"))?;
    receiving
        .start()
        .await
        .map_err(|error| format!("cannot start on postgres at {server}: {error}"))?;
    let sides = Sides {
        name: "postgres",
        publish: Arc::clone(&publishing) as Arc<dyn PubSubProvider>,
        receive: Arc::clone(&receiving) as Arc<dyn PubSubProvider>,
        capacity,
        policy,
    };
    let server_cpu_before = ServerCpu::named("postgres");
    let drained = |_: &[u64]| {
        let (sent, got) = (publishing.broker_stats(), receiving.broker_stats());
        both_sides_drained(&sent, &got, publishing.stats().published)
    };
    let measured = measure(args, &sides, Placement::alone(1), drained).await;
    let server_cpu = server_cpu_before.seconds_until(&ServerCpu::named("postgres"));
    let (sent, got) = (publishing.broker_stats(), receiving.broker_stats());
    publishing.stop().await?;
    receiving.stop().await?;
    if args.large_payloads_table {
        // The table is this run's own (named after the process): drop it.
        let table = &publishing.postgres_config().payload_table;
        let (client, connection) =
            tokio_postgres::connect(&args.database_url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
            .await?;
    }
    let mut report = sides.report(args, measured?);

    report.postgres = Some(PostgresSection {
        server,
        messages_sent: sent.published,
        notify_statements: sent.envelopes_published,
        messages_per_notify: per_command(sent.published, sent.envelopes_published),
        crossing: Crossing::of(&sent, &got, report.elapsed_seconds),
        server_cpu_seconds: server_cpu,
    });
    Ok(report)
}
