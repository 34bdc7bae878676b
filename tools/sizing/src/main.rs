//! `fanout-sizing`: run a workload on a fanout provider and report what a deployment of that
//! shape needs — throughput, latency percentiles, drops, memory and CPU.
//!
//! ```text
//! cargo run --release -p fanout-sizing                      # the default scenario: 10 s of publishing
//! cargo run --release -p fanout-sizing -- --sessions 50000 --topics-per-session 10 --rate 0 --json
//! cargo run --release -p fanout-sizing -- --provider redis --rate 0   # two instances on REDIS_URL
//! cargo run --release -p fanout-sizing -- --provider redis --baseline-only --rate 0 --topics 100
//! cargo run --release -p fanout-sizing -- --provider postgres --baseline-only --rate 0 --topics 100
//! cargo run --release -p fanout-sizing -- --provider nats --rate 0 --topics 100   # NATS_URL
//! cargo run --release -p fanout-sizing -- --provider redis --instances 3 --rate 0   # 3 processes
//! ```

mod alloc;
mod args;
mod cluster_nodes;
mod cpu;
mod instance;
mod instances;
mod nats_baseline;
mod nats_scenario;
mod postgres_baseline;
mod postgres_scenario;
mod redis_baseline;
mod redis_scenario;
mod report;
mod run;
mod tally;
mod worker;

use clap::Parser;
use serde::Serialize;

use args::{Args, ProviderArg};
use report::{NatsBaseline, PostgresBaseline, RedisBaseline, Report};

#[global_allocator]
static ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match args.check().and_then(|()| args.fanout_config()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("fanout-sizing: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    if let (Some(instances), None) = (args.instances, args.worker) {
        return print(
            &args,
            instances::run(&args, &config, instances).map(Output::Scenario),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(index) = args.worker {
        return match runtime.block_on(worker::run(&args, config, index)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                // One write, so that the instances' lines do not interleave.
                let line = format!("fanout-sizing: instance {index}: {error}\n");
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                std::process::ExitCode::FAILURE
            }
        };
    }
    let output = runtime.block_on(async {
        match args.provider {
            ProviderArg::Memory => run::run_memory(&args, config).await.map(Output::Scenario),
            ProviderArg::Redis if args.baseline_only => redis_baseline::run(&args)
                .await
                .map(Output::RedisBaseline)
                .map_err(|error| error as Box<dyn std::error::Error>),
            ProviderArg::Redis => redis_scenario::run_redis(&args, config)
                .await
                .map(Output::Scenario),
            ProviderArg::Postgres if args.baseline_only => {
                postgres_baseline::run(&args).await.map(Output::Baseline)
            }
            ProviderArg::Postgres => postgres_scenario::run_postgres(&args, config)
                .await
                .map(Output::Scenario),
            ProviderArg::Nats if args.baseline_only => nats_baseline::run(&args)
                .await
                .map(Output::NatsBaseline)
                .map_err(|error| error as Box<dyn std::error::Error>),
            ProviderArg::Nats => nats_scenario::run_nats(&args, config).await.map(Output::Scenario),
        }
    });
    print(&args, output)
}

/// Prints what a run measured, as `--json` asks, or why it failed.
fn print(args: &Args, output: Result<Output, Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match output {
        Ok(output) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&output).expect("serialisable report")
            );
            std::process::ExitCode::SUCCESS
        }
        Ok(output) => {
            print!("{}", output.table());
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fanout-sizing: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a run measured: a scenario on a provider, or a broker's baseline alone.
// One per process, printed once: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize)]
#[serde(untagged)]
enum Output {
    Scenario(Report),
    Baseline(PostgresBaseline),
    NatsBaseline(NatsBaseline),
    RedisBaseline(RedisBaseline),
}

impl Output {
    fn table(&self) -> String {
        match self {
            Output::Scenario(report) => report.table(),
            Output::Baseline(baseline) => baseline.table(),
            Output::NatsBaseline(baseline) => baseline.table(),
            Output::RedisBaseline(baseline) => baseline.table(),
        }
    }
}
