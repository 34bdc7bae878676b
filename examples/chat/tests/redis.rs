//! Two chat servers, each with its own `RedisPubSub` on the same Redis, share rooms.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Without it the test prints
//! why and passes, unless `FANOUT_REQUIRE_SERVICES=1`, when it fails.

#![cfg(feature = "redis")]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fanout::RedisConfig;
use fanout_chat::Chat;
use support::{serve, Server, Tab};

fn services_required() -> bool {
    std::env::var("FANOUT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A server on Redis under `prefix`, or `None` (after saying why) when Redis is unreachable
/// and not required.
async fn server_on_redis(prefix: &str) -> Option<Server> {
    let redis = RedisConfig::from_env()
        .with_channel_prefix(prefix)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(2));
    match Chat::over_redis(redis, fanout_chat::default_config()).await {
        Ok(chat) => Some(serve(chat).await),
        Err(error) if !services_required() => {
            eprintln!(
                "skipped: redis is unreachable ({error}); set FANOUT_REQUIRE_SERVICES=1 to fail instead"
            );
            None
        }
        Err(error) => panic!("redis is unreachable ({error}) and FANOUT_REQUIRE_SERVICES=1"),
    }
}

#[tokio::test]
async fn tabs_on_two_servers_share_a_room() {
    // A prefix of this run's own, so concurrent runs on one Redis do not meet.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("fanout-chat-test:{}-{nanos}:", std::process::id());
    let Some(a) = server_on_redis(&prefix).await else {
        return;
    };
    let Some(b) = server_on_redis(&prefix).await else {
        return;
    };

    let mut alice = Tab::join(&a, "lobby", "alice").await;
    let mut bob = Tab::join(&b, "lobby", "bob").await;
    let mut carol = Tab::join(&b, "kitchen", "carol").await;
    // Session ids are unique across the two servers: `broadcast_from` excludes by id everywhere.
    assert_ne!(alice.session, bob.session);

    alice.send("hello from server A").await;
    assert_eq!(
        bob.next_message().await,
        ("alice".into(), "hello from server A".into())
    );
    bob.send("hello from server B").await;
    // Had alice's own message come back through Redis, it would be first.
    assert_eq!(
        alice.next_message().await,
        ("bob".into(), "hello from server B".into())
    );
    carol.expect_nothing(Duration::from_millis(200)).await;

    alice.close().await;
    support::eventually("alice's session on A is gone", || a.chat.stats().sessions == 0).await;
    for server in [&a, &b] {
        server.chat.provider().stop().await.unwrap();
    }
}
