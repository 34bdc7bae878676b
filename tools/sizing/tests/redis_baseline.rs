//! `--provider redis --baseline-only`: redis-benchmark publishing while a plain subscriber
//! receives.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`) and `redis-benchmark` on the
//! `PATH`. Without them the tests print why and pass, unless `FANOUT_REQUIRE_SERVICES=1`, when
//! they fail.

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/report.rs"]
mod report;

use std::process::Command;

use redis_server::{redis, services};
use report::json_report;

/// The baseline on Redis at `url` with `topics` topics, or `None` after saying why the test
/// skips.
fn baseline(url: &str, topics: usize, flags: &[&str]) -> Option<serde_json::Value> {
    if Command::new("redis-benchmark").arg("--version").output().is_err() {
        return services::skip("redis-benchmark is not on the PATH");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_fanout-sizing"))
        .args(["--provider", "redis", "--redis-url", url, "--baseline-only"])
        .args([
            "--rate",
            "0",
            "--topics",
            &topics.to_string(),
            "--json",
            "--quiet",
        ])
        .args(flags)
        .output()
        .unwrap();
    Some(json_report(&output))
}

#[tokio::test]
async fn subscriber_receives_every_message_on_random_and_fixed_channels() {
    let Some(url) = redis().await else { return };
    for topics in [1, 100] {
        let Some(report) = baseline(&url, topics, &["--redis-benchmark-requests", "20000"]) else {
            return;
        };
        assert_eq!(report["sent"], 20_000, "{report:#}");
        assert_eq!(report["received"], 20_000, "{report:#}");
        assert_eq!(report["missing"], 0, "{report:#}");
        assert!(report["messages_per_second"].as_f64().unwrap() > 0.0);
        let command = report["benchmark"]["command"].as_str().unwrap();
        assert_eq!(command.contains("-r 100 "), topics == 100, "{command}");
    }
}

#[tokio::test]
async fn requests_round_up_to_whole_pipelines() {
    let Some(url) = redis().await else { return };
    let Some(report) = baseline(&url, 10, &["--redis-benchmark-requests", "1001"]) else {
        return;
    };
    // redis-benchmark sends 16 PUBLISHes per pipeline: 1001 requests would publish 1008.
    assert_eq!(report["sent"], 1008, "{report:#}");
    assert_eq!(report["received"], 1008, "{report:#}");
}

#[tokio::test]
async fn calibration_sets_the_requests() {
    let Some(url) = redis().await else { return };
    let Some(report) = baseline(&url, 100, &["--duration", "0.5"]) else {
        return;
    };
    assert!(report["calibration_messages_per_second"].as_f64().unwrap() > 0.0);
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent % 16 == 0, "{report:#}");
    assert_eq!(report["received"].as_u64().unwrap(), sent);
}
