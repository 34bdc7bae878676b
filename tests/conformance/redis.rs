//! Reaching the Redis the backend tests run against, or skipping them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fanout::redis::{RedisConfig, RedisPubSub};
use fanout::{Config, PubSubProvider};

/// The Redis URL tests use: `REDIS_URL`, or the local default.
pub fn url() -> String {
    RedisConfig::from_env().url
}

/// Whether backend tests must fail, rather than skip, when their service is unreachable.
pub fn services_required() -> bool {
    std::env::var("FANOUT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A channel prefix no other test (or test run) shares.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("fanout-test:{test}:{}:{nanos:x}:{n}:", std::process::id())
}

/// A plain connection for administering the server in tests (`CLIENT KILL`, raw `PUBLISH`),
/// or `None` after printing why the test is skipped. Panics instead when
/// `FANOUT_REQUIRE_SERVICES=1`.
pub async fn admin() -> Option<redis::aio::MultiplexedConnection> {
    let url = url();
    let attempt = async {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").exec_async(&mut connection).await?;
        Ok::<_, redis::RedisError>(connection)
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(connection)) => Some(connection),
        outcome => {
            let reason = match outcome {
                Ok(Err(error)) => error.to_string(),
                _ => "no answer within 3 s".to_string(),
            };
            if services_required() {
                panic!("redis at {url} is unreachable ({reason}) and FANOUT_REQUIRE_SERVICES=1");
            }
            eprintln!(
                "skipping: redis at {url} is unreachable ({reason}); set REDIS_URL or start redis-server"
            );
            None
        }
    }
}

/// Settings for test instances: fast health checks and reconnects.
pub fn test_config(prefix: &str) -> RedisConfig {
    RedisConfig::new(url())
        .with_channel_prefix(prefix)
        .with_health_check_interval(Duration::from_millis(250))
        .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
}

/// `n` started providers on one fresh prefix, or `None` (skipped) if Redis is unreachable.
pub async fn cluster(test: &str, n: usize, config: Config) -> Option<Vec<std::sync::Arc<RedisPubSub>>> {
    admin().await?;
    let prefix = unique_prefix(test);
    let mut nodes = Vec::new();
    for _ in 0..n {
        let provider = RedisPubSub::with_config(test_config(&prefix), config.clone()).expect("valid config");
        provider.start().await.expect("start against a reachable redis");
        nodes.push(std::sync::Arc::new(provider));
    }
    Some(nodes)
}
