//! Faults and hostile input against the real Redis: killed connections, an unreachable or
//! silent server (through a local TCP proxy we can cut), garbage on our channels.
//!
//! A connection is killed by its id (`CLIENT KILL ID`), found by the name the provider gives
//! it, so that other clients of the shared server are not touched. The tests take a lock and
//! run one at a time.

#![cfg(feature = "redis")]

#[macro_use]
mod conformance;
#[path = "support/private_redis.rs"]
mod private_redis;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::faults::{
    assert_increasing, assert_local_only_while_down, assert_not_started, flow_between, free_port,
    hostile_envelopes, mutations, proxied_pair, seqs, stranger_envelope, until_flowing_again,
};
use conformance::redis::{admin, cluster, test_config};
use conformance::{eventually, skip, unique_prefix, Inbox};
use fanout::bridge::Unacknowledged;
use fanout::redis::{RedisConfig, RedisPubSub, RedisPubSubError};
use fanout::{Config, PubSubError, PubSubProvider};
use private_redis::PrivateRedis;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Closes the server's connection named `name` (`CLIENT KILL ID`), and no other; returns how
/// many it closed.
async fn kill_client(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(admin).await.unwrap();
    let field = format!("name={name}");
    let id = clients
        .lines()
        .find(|line| line.split(' ').any(|f| f == field))
        .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("no connection named {name}"))
        .to_string();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_pubsub_while_messages_flow() {
    let _serial = SERIAL.lock().await;
    let Some(mut admin) = admin().await else { return };
    let Some(nodes) = cluster("kill-pubsub", 2, Config::default()).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let (inbox, flow) = flow_between(&nodes).await;
    // A subscription on the publishing instance too, so both listeners are pubsub clients.
    a.subscribe_topic("here", "other", inbox.handler("here"))
        .await
        .unwrap();

    // Both instances' subscription connections, and no one else's on the shared server.
    let mut killed = 0;
    for node in &nodes {
        killed += kill_client(&mut admin, &format!("fanout-{}-subscriber", node.instance_id())).await;
    }
    let at = Instant::now();
    assert_eq!(killed, 2, "both instances' listeners are pubsub clients");
    eventually("the listener to resubscribe", || b.redis_stats().reconnects >= 1).await;
    let back_after = at.elapsed();
    assert!(
        back_after < Duration::from_secs(1),
        "resubscribed only after {back_after:?}"
    );

    until_flowing_again(&inbox, &flow).await;
    let outcome = flow.stop().await;
    assert_eq!(outcome.refused, 0, "A's publisher was not touched: {outcome:?}");
    let stats = b.redis_stats();
    assert!(stats.outages >= 1 && stats.connected, "{stats:?}");
    assert!(stats.outage_time > Duration::ZERO);
    assert_increasing(&seqs(&inbox, "s"));
    for node in &nodes {
        node.stop().await.unwrap();
        assert_eq!(node.running_tasks(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_of_the_publishing_connection() {
    let _serial = SERIAL.lock().await;
    let Some(mut admin) = admin().await else { return };
    let Some(nodes) = cluster("kill-publisher", 2, Config::default()).await else {
        return;
    };
    let a = &nodes[0];
    let (inbox, flow) = flow_between(&nodes).await;

    let killed = kill_client(&mut admin, &format!("fanout-{}-publisher", a.instance_id())).await;
    assert_eq!(killed, 1);
    let at = Instant::now();
    eventually("the publisher to reconnect", || {
        a.redis_stats().publisher_reconnects >= 1
    })
    .await;
    assert!(
        at.elapsed() < Duration::from_secs(1),
        "reconnected only after {:?}",
        at.elapsed()
    );

    until_flowing_again(&inbox, &flow).await;
    flow.stop().await;
    let stats = a.redis_stats();
    assert!(
        stats.publisher_outages >= 1 && stats.publisher_connected,
        "{stats:?}"
    );
    assert_increasing(&seqs(&inbox, "s"));
    for node in &nodes {
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_oversized_messages_are_skipped_and_counted() {
    let _serial = SERIAL.lock().await;
    let Some(mut admin) = admin().await else { return };
    let prefix = unique_prefix("garbage");
    let b = RedisPubSub::with_config(
        test_config(&prefix).with_max_envelope_bytes(4096),
        Config::default(),
    )
    .unwrap();
    b.start().await.unwrap();
    let inbox = Inbox::default();
    b.subscribe_topic("s", "t", inbox.handler("s")).await.unwrap();
    let channel = b.channel_for("t");
    let valid = |payload: &str| stranger_envelope("t", payload.as_bytes());
    let good = valid("hello");
    let hostile = hostile_envelopes("t");
    for message in &hostile {
        let () = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&message[..])
            .query_async::<u64>(&mut admin)
            .await
            .map(|receivers| assert_eq!(receivers, 1))
            .unwrap();
    }
    // Seeded mutations of a valid envelope: each is skipped, or (if it stays valid) delivered.
    let mutated = 200;
    for message in mutations(&good, mutated, |random| random as u8) {
        let _: u64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&message[..])
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let () = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(valid("after the garbage"))
        .query_async::<u64>(&mut admin)
        .await
        .map(drop)
        .unwrap();
    inbox
        .until("the valid message after the garbage", |i| {
            i.has("s", "after the garbage")
        })
        .await;
    assert!(
        !inbox.of("s").iter().any(|m| m.starts_with("sneaky")),
        "{:?}",
        inbox.of("s")
    );
    let stats = b.redis_stats();
    let sent = (hostile.len() + mutated + 1) as u64;
    assert_eq!(stats.malformed + stats.received, sent, "{stats:?}");
    assert!(stats.malformed >= hostile.len() as u64, "{stats:?}");
    assert!(
        stats.connected && stats.outages == 0,
        "the listener must keep running: {stats:?}"
    );
    b.stop().await.unwrap();
}

#[tokio::test]
async fn start_fails_clearly_when_redis_is_unreachable() {
    let port = free_port();
    let config = RedisConfig::new(format!("redis://127.0.0.1:{port}"))
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(500));
    let provider = RedisPubSub::new(config).unwrap();
    let error = provider.start().await.expect_err("nothing listens there");
    let message = error.to_string();
    assert!(
        matches!(
            RedisPubSubError::of(&error),
            Some(RedisPubSubError::Connect { .. })
        ),
        "{error:?}"
    );
    assert!(
        message.contains(&format!("cannot connect to redis at 127.0.0.1:{port}")),
        "{message}"
    );
    assert_eq!(provider.running_tasks(), 0);
    assert_not_started(&provider).await;
    provider.stop().await.unwrap();
}

// ----- outages through a proxy we control -----

/// The address of the shared test server.
async fn redis_addr() -> SocketAddr {
    let url = conformance::redis::url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let addr = client.get_connection_info().addr().to_string();
    tokio::net::lookup_host(addr).await.unwrap().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_local_delivery_goes_on_and_the_remote_part_is_refused() {
    let _serial = SERIAL.lock().await;
    if admin().await.is_none() {
        return;
    }
    let base = test_config(&unique_prefix("outage"));
    let (proxy, a, b) = proxied_pair(redis_addr().await, &base.url, |url| {
        RedisPubSub::with_config(RedisConfig { url, ..base.clone() }, Config::default()).unwrap()
    })
    .await;
    let inbox = Inbox::default();
    a.subscribe_topic("local", "t", inbox.handler("local"))
        .await
        .unwrap();
    b.subscribe_topic("remote", "t", inbox.handler("remote"))
        .await
        .unwrap();
    a.broadcast("t", Bytes::from("before")).await.unwrap();
    inbox
        .until("the first message on both sides", |i| {
            i.has("local", "before") && i.has("remote", "before")
        })
        .await;

    proxy.take_down();
    eventually("both connections to be seen down", || {
        let s = a.redis_stats();
        !s.connected && !s.publisher_connected
    })
    .await;
    assert_local_only_while_down(&a, &inbox, ("t", "local"), "u").await;
    // The same for a pull-form session's subscribe.
    let mut reader = a.open_session("pull").unwrap();
    let unconfirmed = reader
        .subscribe("u-pull")
        .await
        .expect_err("redis cannot confirm");
    assert!(
        matches!(unconfirmed.broker(), Some(RedisPubSubError::SubscribeUnconfirmed)),
        "{unconfirmed:?}"
    );
    assert!(a.redis_stats().unavailable >= 1);

    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.open();
    let at = Instant::now();
    eventually("both connections back", || {
        let s = a.redis_stats();
        s.connected && s.publisher_connected && s.reconnects >= 1
    })
    .await;
    assert!(
        at.elapsed() < Duration::from_secs(1),
        "back only after {:?}",
        at.elapsed()
    );
    // The subscriptions made during the outage are on Redis now, and publishing works again.
    b.broadcast("u", Bytes::from("to late")).await.unwrap();
    b.broadcast("u-pull", Bytes::from("to the reader")).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), reader.recv())
        .await
        .expect("the pull session's subscription follows on reconnect")
        .unwrap();
    assert_eq!(message.payload(), "to the reader");
    a.broadcast("t", Bytes::from("after")).await.unwrap();
    inbox
        .until("messages after the outage", |i| {
            i.has("late", "to late") && i.has("remote", "after")
        })
        .await;
    assert!(
        !inbox.has("remote", "during"),
        "a refused message must not be sent later"
    );
    let stats = a.redis_stats();
    assert!(stats.outages >= 1 && stats.publisher_outages >= 1, "{stats:?}");
    assert!(stats.outage_time >= Duration::from_millis(300), "{stats:?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_eq!(a.running_tasks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_network_cut_is_found_by_the_health_check() {
    let _serial = SERIAL.lock().await;
    if admin().await.is_none() {
        return;
    }
    let base = test_config(&unique_prefix("cut"))
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(300));
    let (proxy, a, b) = proxied_pair(redis_addr().await, &base.url, |url| {
        RedisPubSub::with_config(RedisConfig { url, ..base.clone() }, Config::default()).unwrap()
    })
    .await;
    let inbox = Inbox::default();
    a.subscribe_topic("s", "t", inbox.handler("s")).await.unwrap();

    proxy.silence();
    let at = Instant::now();
    eventually("the health check to notice", || a.redis_stats().outages >= 1).await;
    // Found within a check interval (250 ms) plus the response timeout (300 ms), with slack.
    assert!(
        at.elapsed() < Duration::from_secs(2),
        "noticed only after {:?}",
        at.elapsed()
    );
    proxy.take_down();
    proxy.open();
    eventually("the listener to come back", || a.redis_stats().reconnects >= 1).await;
    b.broadcast("t", Bytes::from("after the cut")).await.unwrap();
    inbox
        .until("delivery after the cut", |i| i.has("s", "after the cut"))
        .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsized_broadcast_is_refused_before_anything_is_delivered() {
    let Some(nodes) = cluster("oversized", 1, Config::default()).await else {
        return;
    };
    let provider = &nodes[0];
    let small = RedisPubSub::with_config(
        test_config(&unique_prefix("oversized")).with_max_envelope_bytes(100),
        Config::default(),
    )
    .unwrap();
    small.start().await.unwrap();
    let inbox = Inbox::default();
    small.subscribe_topic("s", "t", inbox.handler("s")).await.unwrap();
    let error = small
        .broadcast("t", Bytes::from(vec![b'x'; 100]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            RedisPubSubError::of(&error),
            Some(RedisPubSubError::EnvelopeTooLarge { len: 139, limit: 100 })
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "backend error: envelope is 139 bytes; the limit is 100 (max_envelope_bytes)"
    );
    small.broadcast("t", Bytes::from("fits")).await.unwrap();
    inbox.until("the message that fits", |i| i.has("s", "fits")).await;
    assert_eq!(inbox.of("s"), vec!["fits"]);
    assert!(matches!(
        provider.broadcast("", Bytes::new()).await,
        Err(PubSubError::EmptyTopic)
    ));
    small.stop().await.unwrap();
    provider.stop().await.unwrap();
}

/// A private `redis-server` on `port`, or `None` after saying why the test skips.
fn start_private(port: u16) -> Option<PrivateRedis> {
    match PrivateRedis::start(port, &[]) {
        Ok(server) => Some(server),
        Err(error) => skip(format_args!("cannot run redis-server ({error})")),
    }
}

/// Waits until `server` answers a `PING`.
async fn answering(server: &PrivateRedis) {
    let url = server.url();
    eventually("the private redis-server to answer", || {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived_and_every_topic_resubscribed() {
    let _serial = SERIAL.lock().await;
    let port = free_port();
    let Some(mut server) = start_private(port) else {
        return;
    };
    answering(&server).await;
    let config = RedisConfig::new(format!("redis://127.0.0.1:{port}"))
        .with_channel_prefix(unique_prefix("restart"))
        .with_health_check_interval(Duration::from_millis(250))
        .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200));
    let a = RedisPubSub::with_config(config.clone(), Config::default()).unwrap();
    let b = RedisPubSub::with_config(config, Config::default()).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    let inbox = Inbox::default();
    for topic in ["t1", "t2", "t3"] {
        b.subscribe_topic("s", topic, inbox.handler("s")).await.unwrap();
    }
    a.broadcast("t1", Bytes::from("before")).await.unwrap();
    inbox
        .until("delivery before the restart", |i| i.has("s", "before"))
        .await;

    server.kill();
    eventually("the outage to be seen by both", || {
        let (sa, sb) = (a.redis_stats(), b.redis_stats());
        !sa.connected && !sa.publisher_connected && !sb.connected
    })
    .await;
    let local = Inbox::default();
    a.subscribe_topic("here", "t1", local.handler("here"))
        .await
        .expect_err("redis cannot confirm while it is down");
    let refused = a
        .broadcast("t1", Bytes::from("during"))
        .await
        .expect_err("redis is down");
    assert!(matches!(
        RedisPubSubError::of(&refused),
        Some(RedisPubSubError::PublishUnavailable { .. })
    ));
    local
        .until("local delivery while redis is down", |i| i.has("here", "during"))
        .await;

    let mut server = start_private(port).expect("redis-server ran a moment ago");
    answering(&server).await;
    let answered = Instant::now();
    eventually("both instances back", || {
        let (sa, sb) = (a.redis_stats(), b.redis_stats());
        sa.connected && sa.publisher_connected && sb.connected && sb.reconnects >= 1
    })
    .await;
    assert!(
        answered.elapsed() < Duration::from_secs(1),
        "back only {:?} after redis answered",
        answered.elapsed()
    );
    for topic in ["t1", "t2", "t3"] {
        a.broadcast(topic, Bytes::from(format!("after {topic}")))
            .await
            .unwrap();
    }
    inbox
        .until("every topic delivered after the restart", |i| {
            ["t1", "t2", "t3"]
                .iter()
                .all(|t| i.has("s", &format!("after {t}")))
        })
        .await;
    assert!(!inbox.has("s", "during"));
    assert_eq!(b.redis_stats().channels, 3);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    server.kill();
}

// ----- acknowledged broadcasts -----

/// A private Redis on a free port, answering, its URL, and an admin connection to it.
async fn private_redis_with_admin() -> Option<(PrivateRedis, String, redis::aio::MultiplexedConnection)> {
    let port = free_port();
    let server = start_private(port)?;
    answering(&server).await;
    let url = format!("redis://127.0.0.1:{port}");
    let admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    Some((server, url, admin))
}

/// `broadcast_acknowledged` returns `Ok` once Redis answered the `PUBLISH`; while Redis is
/// paused (`CLIENT PAUSE`) it returns the typed `Unacknowledged` error within the response
/// timeout, where a plain `broadcast` returns `Ok` at once. Local sessions have the message
/// either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_broadcast_waits_for_redis_and_says_when_it_did_not_answer() {
    // `CLIENT PAUSE` stops every client of the server: a private one, so that no other test
    // is paused with it.
    let Some((server, url, mut admin)) = private_redis_with_admin().await else {
        return;
    };
    let response = Duration::from_millis(300);
    let quick = RedisConfig::new(url)
        .with_channel_prefix(unique_prefix("acked"))
        .with_health_check_interval(Duration::from_millis(250))
        .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .with_timeouts(Duration::from_millis(500), response);
    let a = RedisPubSub::new(quick.clone()).unwrap();
    let b = RedisPubSub::new(quick).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    let inbox = Inbox::default();
    b.subscribe_topic("remote", "t", inbox.handler("remote"))
        .await
        .unwrap();
    a.subscribe_topic("local", "t", inbox.handler("local"))
        .await
        .unwrap();

    a.broadcast_acknowledged("t", Bytes::from_static(b"acked"))
        .await
        .unwrap();
    assert_eq!(a.broker_stats().published, 1, "acknowledged means published");
    inbox
        .until("the acknowledged message", |i| i.has("remote", "acked"))
        .await;

    // Pauses every client's commands, ours included, for longer than the response timeout.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let began = Instant::now();
    let error = a
        .broadcast_acknowledged("t", Bytes::from_static(b"paused"))
        .await
        .expect_err("Redis is paused");
    let waited = began.elapsed();
    eprintln!("unacknowledged after {waited:?}: {error}");
    assert!(
        matches!(
            error.broker(),
            Some(RedisPubSubError::Unacknowledged { why: Unacknowledged::TimedOut { after } })
                if *after == response
        ),
        "{error:?}"
    );
    assert!(waited >= response && waited < response * 4, "{waited:?}");
    inbox.until("the local copy", |i| i.has("local", "paused")).await;
    // Redis answers again after the pause; the provider reconnects and carries on.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(began.elapsed())).await;
    eventually("the publisher to be back", || {
        a.broker_stats().publisher_connected
    })
    .await;
    let mut delivered = false;
    for _ in 0..50 {
        if a.broadcast_acknowledged("t", Bytes::from_static(b"after"))
            .await
            .is_ok()
        {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "no acknowledged broadcast after the pause");
    inbox
        .until("a message after the pause", |i| i.has("remote", "after"))
        .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    drop(server);
}

/// Redis answers each `PUBLISH` of a pipeline on its own, and so does the provider: a command
/// the server refuses (here `NOPERM`: the publishing user may publish on one topic's channel
/// only) loses its own messages, counted, and its acknowledged broadcast gets
/// `Unacknowledged::Refused`, while acknowledged broadcasts pipelined with it are
/// acknowledged and delivered, and the connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_refuses_its_own_messages_only() {
    // A user with limited rights: on a private server, so the shared one's ACL is untouched.
    let Some((server, url, mut admin)) = private_redis_with_admin().await else {
        return;
    };
    let prefix = unique_prefix("refused");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("limited")
        .arg("on")
        .arg(">secret")
        .arg("+@all")
        .arg("~*")
        .arg("resetchannels")
        .arg(format!("&{prefix}open"))
        .query_async(&mut admin)
        .await
        .unwrap();
    let limited = RedisConfig::new(url.replacen("redis://", "redis://limited:secret@", 1))
        .with_channel_prefix(prefix.clone());
    let a = RedisPubSub::new(limited).unwrap();
    let b = RedisPubSub::new(RedisConfig::new(url).with_channel_prefix(prefix)).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    let inbox = Inbox::default();
    for topic in ["open", "closed"] {
        b.subscribe_topic("remote", topic, inbox.handler("remote"))
            .await
            .unwrap();
    }

    // Enough at once that the refused ones share pipelines with the accepted ones.
    let open: Vec<_> = (0..40)
        .map(|i| a.broadcast_acknowledged("open", Bytes::from(format!("open-{i}"))))
        .collect();
    let closed_acked = a.broadcast_acknowledged("closed", Bytes::from_static(b"closed-acked"));
    let closed_plain: Vec<_> = (0..5)
        .map(|i| a.broadcast("closed", Bytes::from(format!("closed-{i}"))))
        .collect();
    let (open, closed_acked, closed_plain) = tokio::join!(
        futures_util::future::join_all(open),
        closed_acked,
        futures_util::future::join_all(closed_plain)
    );
    for (i, result) in open.iter().enumerate() {
        assert!(result.is_ok(), "open-{i}: {result:?}");
    }
    let error = closed_acked.expect_err("the user may not publish there");
    assert!(
        matches!(
            error.broker(),
            Some(RedisPubSubError::Unacknowledged { why: Unacknowledged::Refused(reason) })
                if reason.to_lowercase().contains("noperm")
        ),
        "{error:?}"
    );
    assert!(closed_plain.iter().all(Result::is_ok), "{closed_plain:?}");
    eventually("the refused messages to be counted", || {
        a.broker_stats().publish_errors == 6
    })
    .await;
    inbox
        .until("every open message", |i| i.of("remote").len() >= 40)
        .await;
    let stats = a.broker_stats();
    assert_eq!((stats.published, stats.publisher_outages), (40, 0), "{stats:?}");
    assert!(stats.publish_refusals >= 1, "{stats:?}");
    let got = inbox.of("remote");
    assert_eq!(got.len(), 40, "nothing on the refused channel arrives: {got:?}");
    assert!(got.iter().all(|payload| payload.starts_with("open-")), "{got:?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    drop(server);
}

/// A pause shorter than `response_timeout` is waited out, whatever the `redis` client's own
/// default cap (500 ms): the acknowledged broadcast returns `Ok` once Redis answers, and the
/// connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_within_the_response_timeout_is_waited_out() {
    // `CLIENT PAUSE` stops every client of the server: a private one.
    let Some((server, url, mut admin)) = private_redis_with_admin().await else {
        return;
    };
    let config = RedisConfig::new(url)
        .with_channel_prefix(unique_prefix("slow-answer"))
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(3));
    let a = RedisPubSub::new(config).unwrap();
    a.start().await.unwrap();
    a.broadcast_acknowledged("t", Bytes::from_static(b"before"))
        .await
        .unwrap();

    let pause = Duration::from_millis(1200);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let began = Instant::now();
    a.broadcast_acknowledged("t", Bytes::from_static(b"paused"))
        .await
        .expect("answered after the pause, within the response timeout");
    let waited = began.elapsed();
    assert!(waited >= pause - Duration::from_millis(100), "{waited:?}");
    let stats = a.broker_stats();
    assert_eq!(
        (stats.published, stats.publisher_outages, stats.publish_errors),
        (2, 0, 0),
        "{stats:?}"
    );
    a.stop().await.unwrap();
    drop(server);
}
