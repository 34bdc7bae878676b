//! `--provider nats --baseline-only`: each client of the baseline publishes and receives every
//! message, on one subject and on many.
//!
//! Needs NATS at `NATS_URL` (default `nats://127.0.0.1:4222`). Without it the tests print why
//! and pass, unless `FANOUT_REQUIRE_SERVICES=1`, when they fail.

#[path = "support/report.rs"]
mod report;
#[path = "../../../tests/support/services.rs"]
mod services;

use report::json_report;
use std::process::Command;

/// NATS at `NATS_URL`, or `None` after saying why the test skips.
async fn nats() -> Option<String> {
    let url = std::env::var("NATS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string());
    let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let address = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_string();
    let connect = tokio::net::TcpStream::connect(address);
    services::reach("nats", &url, "set NATS_URL or start nats-server", connect).await?;
    Some(url)
}

/// The baseline of `client` on `topics` topics at 4,000 messages a second for half a second.
fn baseline(url: &str, client: &str, topics: usize) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout-sizing"))
        .args(["--provider", "nats", "--nats-url", url, "--baseline-only"])
        .args(["--nats-baseline", client, "--topics", &topics.to_string()])
        .args(["--rate", "4000", "--duration", "0.5", "--json", "--quiet"])
        .output()
        .unwrap();
    json_report(&output)
}

#[tokio::test]
async fn each_client_receives_every_message_it_publishes() {
    let Some(url) = nats().await else { return };
    for client in ["async-nats", "protocol"] {
        for topics in [1, 100] {
            let report = baseline(&url, client, topics);
            assert_eq!(report["client"], client, "{report:#}");
            let sent = report["sent"].as_u64().unwrap();
            assert!(sent >= 1_000, "{report:#}");
            assert_eq!(report["received"].as_u64().unwrap(), sent, "{report:#}");
            assert_eq!(report["missing"], 0, "{report:#}");
            assert_eq!(
                report["latency_us"]["samples"].as_u64().unwrap(),
                sent,
                "{report:#}"
            );
            let rate = report["messages_per_second"].as_f64().unwrap();
            assert!(rate > 1_000.0 && rate < 8_000.0, "{report:#}");
        }
    }
}
