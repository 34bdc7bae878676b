//! Reaching the Redis server the tests run on: `REDIS_URL`, else `redis://127.0.0.1:6379`.

#[path = "../../../../tests/support/services.rs"]
pub mod services;

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string())
}

/// Redis at `REDIS_URL`, or `None` after saying why the test skips.
pub async fn redis() -> Option<String> {
    let url = redis_url();
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await
    };
    services::reach("redis", &url, "set REDIS_URL or start redis-server", ping).await?;
    Some(url)
}
