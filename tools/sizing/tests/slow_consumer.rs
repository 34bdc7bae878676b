//! A receiving instance that falls behind on Redis: the server closes its subscription at the
//! pub/sub output-buffer limit, and the report says so — messages lost in the broker, a
//! slow-consumer outage — and ends at once rather than waiting for messages that never come.
//!
//! Runs a private `redis-server` on a free loopback port (its output-buffer limit lowered to
//! 256 KiB), stopped in a guard, pass or fail. Without `redis-server` on the `PATH` the test
//! prints why and passes, unless `FANOUT_REQUIRE_SERVICES=1`, when it fails.

#[path = "../../../tests/support/private_redis.rs"]
mod private_redis;
#[path = "support/report.rs"]
mod report;
#[path = "../../../tests/support/services.rs"]
mod services;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use private_redis::PrivateRedis;
use report::json_report;

/// A private server whose subscribers are closed past `pubsub_limit` of output, answering, or
/// `None` after saying why the test skips.
fn start_private(pubsub_limit: &str) -> Option<PrivateRedis> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let limit = format!("pubsub {pubsub_limit} 0 0");
    let server = match PrivateRedis::start(port, &["--client-output-buffer-limit", &limit]) {
        Ok(server) => server,
        Err(error) => return services::skip(format_args!("cannot run redis-server ({error})")),
    };
    let answering = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < answering,
            "the private redis-server did not answer within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

#[test]
fn a_subscription_the_server_closes_is_reported_as_lost_messages() {
    let Some(server) = start_private("256kb") else {
        return;
    };
    // One session on 1,000 topics whose handler takes a millisecond, behind a `block` policy
    // with a long timeout: the listener waits for its mailbox, the messages ahead of it (one
    // envelope each: consecutive ones are on different topics) reach the hand-off's bound, its
    // reader stops reading, and the server's output buffer for the subscription passes the
    // limit.
    let began = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_fanout-sizing"))
        .args(["--provider", "redis", "--redis-url", &server.url()])
        .args([
            "--sessions",
            "1",
            "--topics",
            "1000",
            "--topics-per-session",
            "1000",
        ])
        .args(["--rate", "20000", "--duration", "2", "--message-size", "512"])
        .args(["--handler-work-us", "1000", "--capacity", "16"])
        .args(["--policy", "block", "--block-timeout-ms", "5000"])
        .args(["--json", "--quiet"])
        .output()
        .unwrap();
    let took = began.elapsed();
    let report = json_report(&output);
    let redis = &report["redis"];
    let lost = redis["lost_in_broker"].as_u64().unwrap();
    let (sent, received) = (
        redis["messages_sent"].as_u64().unwrap(),
        redis["messages_received"].as_u64().unwrap(),
    );
    assert!(lost > 0, "the server closed no subscription: {report:#}");
    assert_eq!(
        lost,
        sent - received - redis["malformed"].as_u64().unwrap(),
        "{report:#}"
    );
    assert!(redis["outages"].as_u64().unwrap() >= 1, "{report:#}");
    assert!(
        redis["slow_consumer_outages"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    // Publishing (2 s), the mailbox's backlog, and the stall that ends the wait: not the
    // minute the wait for every message allows.
    assert!(took < Duration::from_secs(30), "the run took {took:?}");
}
