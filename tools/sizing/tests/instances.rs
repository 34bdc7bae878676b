//! `--instances`: the workload on separate server processes on one broker.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Without it the tests print why
//! and pass, unless `FANOUT_REQUIRE_SERVICES=1`, when they fail.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis_server::redis;

/// The tool on Redis with a small workload: `instances` processes, `duration` seconds.
fn sizing(url: &str, instances: usize, duration: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout-sizing"));
    command.args(["--provider", "redis", "--redis-url", url]);
    command.args(["--instances", &instances.to_string(), "--duration", duration]);
    command.args(["--sessions", "200", "--topics", "20", "--topics-per-session", "2"]);
    command.args(["--rate", "2000", "--json", "--quiet"]);
    command
}

/// Process ids of the running (not exited) workers of the run whose parent is `parent`.
fn workers_of(parent: u32) -> Vec<u32> {
    let run = format!("\0--run-id\0{parent}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let exited = stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
            String::from_utf8_lossy(&cmdline).contains(&run) && !exited
        })
        .collect()
}

#[tokio::test]
async fn two_instances_deliver_across_redis_and_leave_no_worker() {
    let Some(url) = redis().await else { return };
    let child = sizing(&url, 2, "1").stdout(Stdio::piped()).spawn().unwrap();
    let parent = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "fanout-sizing failed: {}", output.status);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert!(
        report["cross_instance_delivered"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(report["cross_instance_latency_us"]["samples"].as_u64().unwrap() > 0);
    let per_instance = report["instances"]["per_instance"].as_array().unwrap();
    assert_eq!(per_instance.len(), 2);
    for instance in per_instance {
        assert!(
            instance["cross_instance_delivered"].as_u64().unwrap() > 0,
            "{instance:#}"
        );
        assert!(
            instance["broker"]["received"].as_u64().unwrap() > 0,
            "{instance:#}"
        );
        assert_ne!(instance["pid"].as_u64().unwrap(), u64::from(parent));
    }
    assert_eq!(workers_of(parent), Vec::<u32>::new(), "workers left running");
}

#[tokio::test]
async fn workers_end_when_their_parent_is_killed() {
    let Some(url) = redis().await else { return };
    let mut child = sizing(&url, 2, "60").stdout(Stdio::null()).spawn().unwrap();
    let parent = child.id();
    let started = Instant::now();
    while workers_of(parent).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the workers did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    while !workers_of(parent).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "workers {:?} outlived their parent",
            workers_of(parent)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
