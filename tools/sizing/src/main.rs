//! `fanout-sizing`: run a workload on a fanout provider and report what a deployment of that
//! shape needs — throughput, latency percentiles, drops, memory and CPU.
//!
//! ```text
//! cargo run --release -p fanout-sizing                      # the default scenario: 10 s of publishing
//! cargo run --release -p fanout-sizing -- --sessions 50000 --topics-per-session 10 --rate 0 --json
//! cargo run --release -p fanout-sizing -- --provider redis --rate 0   # two instances on REDIS_URL
//! ```

mod alloc;
mod args;
mod cpu;
mod redis_benchmark;
mod redis_scenario;
mod report;
mod run;

use clap::Parser;

use args::{Args, ProviderArg};

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(async {
        match args.provider {
            ProviderArg::Memory => run::run_memory(&args, config).await,
            ProviderArg::Redis => redis_scenario::run_redis(&args, config).await,
        }
    });
    match report {
        Ok(report) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable report")
            );
            std::process::ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.table());
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fanout-sizing: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
