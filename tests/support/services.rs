//! Reaching the services backend tests need: a test whose service is missing skips, saying
//! why, or fails under `FANOUT_REQUIRE_SERVICES=1`. Included by path by the conformance suite and
//! by `tools/sizing`'s tests.
#![allow(dead_code)]

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// Whether backend tests must fail, rather than skip, when their service is unreachable.
pub fn services_required() -> bool {
    std::env::var("FANOUT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Ends a test whose service is missing: `None` after printing `skipping: {why}`, or, under
/// `FANOUT_REQUIRE_SERVICES=1`, a panic.
pub fn skip<T>(why: impl Display) -> Option<T> {
    if services_required() {
        panic!("{why}, and FANOUT_REQUIRE_SERVICES=1");
    }
    eprintln!("skipping: {why}");
    None
}

/// What `attempt` to reach `service` at `url` yields, or, when it fails or takes over 3 s,
/// [`skip`] with the reason and `remedy` (how to make the service reachable).
pub async fn reach<T, E: Display>(
    service: &str,
    url: &str,
    remedy: &str,
    attempt: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    let reason = match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(reached)) => return Some(reached),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer within 3 s".to_string(),
    };
    skip(format_args!(
        "{service} at {url} is unreachable ({reason}); {remedy}"
    ))
}
