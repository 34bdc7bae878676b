//! Reaching the Redis the backend tests run against, or skipping them.

use std::time::Duration;

use fanout::redis::{RedisConfig, RedisPubSub};
use fanout::{Config, PubSubProvider};

/// The Redis URL tests use: `REDIS_URL`, or the local default.
pub fn url() -> String {
    RedisConfig::from_env().url
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
    super::reach("redis", &url, "set REDIS_URL or start redis-server", attempt).await
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
    let prefix = super::unique_prefix(test);
    let mut nodes = Vec::new();
    for _ in 0..n {
        let provider = RedisPubSub::with_config(test_config(&prefix), config.clone()).expect("valid config");
        provider.start().await.expect("start against a reachable redis");
        nodes.push(std::sync::Arc::new(provider));
    }
    Some(nodes)
}
