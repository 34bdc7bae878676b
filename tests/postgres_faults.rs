//! Faults and hostile input against a real PostgreSQL: a connection ended by
//! `pg_terminate_backend`, the server itself stopped and started again, a silent network cut
//! (through a local TCP proxy), an unreachable or mute server, garbage `NOTIFY`s on our
//! channels.
//!
//! Tests on the shared server touch only their own connections (found by their
//! `application_name`) and channels (a fresh prefix each), so they run in parallel with each
//! other and with other test binaries. The restart runs on a private server of its own
//! ([`PrivateServer`]). Recovery times are measured, asserted and printed (`--nocapture`).

#![cfg(feature = "postgres")]

#[macro_use]
mod conformance;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use conformance::faults::{
    assert_increasing, assert_not_started, flow_between, free_port, is_unavailable, mutations, proxied_pair,
    seqs, stranger_envelope, until_flowing_again, Flow,
};
use conformance::postgres::{admin, cluster, test_config, url, PrivateServer};
use conformance::{eventually, unique_prefix, Inbox, WAIT};
use fanout::bridge::BrokerError;
use fanout::postgres::{LargePayloads, PostgresConfig, PostgresPubSub};
use fanout::{Config, PubSubError, PubSubProvider};
use tokio::net::TcpListener;
use tokio_postgres::Client;

// ----- the server's view of our connections -----

/// The process ids of the server backends whose `application_name` is `name`.
async fn backends(admin: &Client, name: &str) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Polls until the backends named `name` satisfy `done`; returns them.
async fn backends_until(admin: &Client, name: &str, what: &str, done: impl Fn(&[i32]) -> bool) -> Vec<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        let pids = backends(admin, name).await;
        if done(&pids) {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}: backends of {name}: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Ends the one backend named `name` with `pg_terminate_backend`; returns its process id.
async fn terminate(admin: &Client, name: &str) -> i32 {
    let rows = admin
        .query(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one connection is named {name}");
    assert!(rows[0].get::<_, bool>(1), "pg_terminate_backend refused");
    rows[0].get(0)
}

/// Waits until the server at `url` answers a query; returns the moment it did.
async fn answering(url: &str) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.simple_query("SELECT 1").await.map(drop)
        };
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the server at {url} did not answer within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two instances on one prefix, A broadcasting a [`Flow`] on `flow` to the session `s` on B;
/// returns once messages arrive. `None`: the test is skipped.
async fn flowing(test: &str) -> Option<(Client, Vec<Arc<PostgresPubSub>>, Inbox, Flow)> {
    let admin = admin().await?;
    let nodes = cluster(test, 2, Config::default()).await?;
    let (inbox, flow) = flow_between(&nodes).await;
    Some((admin, nodes, inbox, flow))
}

/// Terminates the backend named `name` and waits until `back` says the provider has replaced
/// it, within a second; then the server must show one new backend of that name.
async fn terminate_until_back(admin: &Client, name: &str, back: impl FnMut() -> bool) {
    let killed = terminate(admin, name).await;
    let at = Instant::now();
    eventually(&format!("{name} to come back"), back).await;
    let back_after = at.elapsed();
    println!("{name} terminated: back after {back_after:?}");
    assert!(
        back_after < Duration::from_secs(1),
        "{name} back only after {back_after:?}"
    );
    backends_until(
        admin,
        name,
        "one new backend",
        |pids| matches!(pids, [pid] if *pid != killed),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_listen_connection_while_messages_flow() {
    let Some((admin, nodes, inbox, flow)) = flowing("kill-listen").await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    terminate_until_back(&admin, &b.application_name("listen"), || {
        b.broker_stats().reconnects >= 1
    })
    .await;
    until_flowing_again(&inbox, &flow).await;
    let outcome = flow.stop().await;
    assert_eq!(outcome.refused, 0, "A's publisher was not touched: {outcome:?}");
    let (sa, sb) = (a.broker_stats(), b.broker_stats());
    assert_eq!((sb.outages, sb.reconnects), (1, 1), "{sb:?}");
    assert!(
        sb.connected && sb.channels == 1 && sb.outage_time > Duration::ZERO,
        "{sb:?}"
    );
    assert_eq!(sb.publisher_outages, 0, "{sb:?}");
    assert_eq!((sa.outages, sa.publisher_outages), (0, 0), "{sa:?}");
    assert_eq!(sb.malformed, 0, "{sb:?}");
    assert_increasing(&seqs(&inbox, "s"));
    for node in &nodes {
        node.stop().await.unwrap();
        assert_eq!(node.running_tasks(), 0);
        for role in ["listen", "publish"] {
            let name = node.application_name(role);
            backends_until(&admin, &name, "stop to close it", <[i32]>::is_empty).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_publish_connection_while_messages_flow() {
    let Some((admin, nodes, inbox, flow)) = flowing("kill-publish").await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    terminate_until_back(&admin, &a.application_name("publish"), || {
        a.broker_stats().publisher_reconnects >= 1
    })
    .await;
    until_flowing_again(&inbox, &flow).await;
    let outcome = flow.stop().await;
    // Every broadcast is accounted for: sent, lost with the killed connection, or refused.
    eventually("A's publisher to account for every broadcast", || {
        let s = a.broker_stats();
        s.published + s.publish_errors + s.unavailable == outcome.sent
    })
    .await;
    let sa = a.broker_stats();
    assert_eq!(sa.unavailable, outcome.refused, "{sa:?}");
    assert_eq!((sa.publisher_outages, sa.publisher_reconnects), (1, 1), "{sa:?}");
    assert!(sa.publisher_connected, "{sa:?}");
    // The kill is noticed when the connection's driver ends (broadcasts are then refused
    // until it is back) or by a send that fails first (what it carried is counted lost).
    assert!(sa.publish_errors + sa.unavailable >= 1, "{sa:?}");
    assert_eq!(sa.outages, 0, "A's listener was not touched: {sa:?}");
    // B listened throughout: it has every message A's publisher sent, and perhaps some of the
    // pipeline the kill cut short (counted lost on A, committed by the server before it).
    eventually("B to receive every message A sent", || {
        b.broker_stats().received >= sa.published
    })
    .await;
    let received = b.broker_stats().received;
    assert!(
        received <= sa.published + sa.publish_errors,
        "B received {received}: {sa:?}"
    );
    inbox
        .until("B's session to handle every message", |i| {
            i.of("s").len() as u64 == received
        })
        .await;
    assert_increasing(&seqs(&inbox, "s"));
    let sb = b.broker_stats();
    assert_eq!((sb.outages, sb.publisher_outages), (0, 0), "{sb:?}");
    for node in &nodes {
        node.stop().await.unwrap();
        assert_eq!(node.running_tasks(), 0);
    }
}

/// Polls `done` until it holds or `limit` has passed; returns how long it took.
async fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let began = Instant::now();
    while !done() {
        if began.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(began.elapsed())
}

/// The bridge's docs: "a closed or killed connection is noticed at once, a silent one (a
/// network cut) by a ping every `health_check_interval`". With the health check 30 s away,
/// only the closed connection itself can tell the publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_idle_publish_connection_is_noticed_at_once() {
    let Some(admin) = admin().await else { return };
    let config =
        test_config(&unique_prefix("idle-publish")).with_health_check_interval(Duration::from_secs(30));
    let a = PostgresPubSub::with_config(config.clone(), Config::default()).unwrap();
    let b = PostgresPubSub::with_config(config, Config::default()).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    let inbox = Inbox::default();
    b.subscribe_topic("s", "t", inbox.handler("s")).await.unwrap();

    let publish = a.application_name("publish");
    let killed = terminate(&admin, &publish).await;
    // The provider may already have reconnected under the same name: wait for that pid alone.
    backends_until(&admin, &publish, "the terminated backend to exit", |pids| {
        !pids.contains(&killed)
    })
    .await;
    let noticed = within(Duration::from_secs(2), || a.broker_stats().publisher_outages >= 1).await;
    println!("an idle publish connection terminated: noticed after {noticed:?}");
    assert!(
        noticed.is_some(),
        "2 s after its backend exited, the publisher still counts no outage: {:?}",
        a.broker_stats()
    );
    eventually("the publisher to reconnect", || {
        a.broker_stats().publisher_reconnects >= 1
    })
    .await;
    a.broadcast("t", Bytes::from("after the kill")).await.unwrap();
    inbox
        .until("the broadcast after the kill", |i| i.has("s", "after the kill"))
        .await;
    assert_eq!(a.broker_stats().publish_errors, 0, "{:?}", a.broker_stats());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

const TOPICS: [&str; 3] = ["t1", "t2", "t3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_survived_and_every_topic_listened_again() {
    let Some(server) = PrivateServer::start("restart") else {
        return;
    };
    let server = Arc::new(server);
    let config = PostgresConfig {
        url: server.url(),
        ..test_config(&unique_prefix("restart"))
    };
    let a = Arc::new(PostgresPubSub::with_config(config.clone(), Config::default()).unwrap());
    let b = PostgresPubSub::with_config(config, Config::default()).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    let inbox = Inbox::default();
    for topic in TOPICS {
        b.subscribe_topic("s", topic, inbox.handler("s")).await.unwrap();
    }
    b.subscribe_topic("f", "flow", inbox.handler("f")).await.unwrap();
    a.subscribe_topic("here", "t1", inbox.handler("here"))
        .await
        .unwrap();
    a.broadcast("t1", Bytes::from("before")).await.unwrap();
    inbox
        .until("delivery before the restart", |i| {
            i.has("s", "before") && i.has("here", "before")
        })
        .await;

    let stopping = Instant::now();
    tokio::task::block_in_place(|| server.stop());
    let stopped = Instant::now();
    println!("private server stopped in {:?}", stopping.elapsed());
    eventually("both listeners to see the server gone", || {
        !a.broker_stats().connected && !b.broker_stats().connected
    })
    .await;

    // Broadcasts on A while the server is down, each timed. The first ones may return `Ok`:
    // the publisher has not yet had a command fail, so their remote part is queued, then lost
    // and counted (`publish_errors`). Once one is refused with `PublishUnavailable`, every
    // later one is, until the server is back. Local sessions get every one.
    let (mut accepted, mut refused) = (0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let mut first_refusal = None;
    for n in 0.. {
        let began = Instant::now();
        let result = a.broadcast("t1", Bytes::from(format!("during {n}"))).await;
        let took = began.elapsed();
        slowest = slowest.max(took);
        assert!(took < Duration::from_secs(2), "broadcast {n} took {took:?}");
        match &result {
            Ok(()) => {
                assert!(
                    first_refusal.is_none(),
                    "broadcast {n} returned Ok after a refusal"
                );
                accepted += 1;
            }
            Err(error) => match BrokerError::of(error) {
                Some(BrokerError::PublishUnavailable { down_for }) => {
                    assert!(*down_for <= stopping.elapsed(), "{error}");
                    assert!(
                        error.to_string().contains("reached local sessions only"),
                        "{error}"
                    );
                    first_refusal.get_or_insert(stopped.elapsed());
                    refused += 1;
                }
                _ => panic!("broadcast {n} during the outage: {error:?}"),
            },
        }
        if refused == 5 {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "no broadcast refused within 2 s of the stop ({accepted} returned Ok)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "during the outage: {accepted} broadcast(s) Ok before the publisher noticed, the first refusal {:?} after the server stopped, the slowest broadcast {slowest:?}",
        first_refusal.unwrap()
    );
    let during = accepted + refused;
    inbox
        .until("local delivery on A during the outage", |i| {
            i.of("here").iter().filter(|m| m.starts_with("during")).count() as u64 == during
        })
        .await;
    let on_b = b.broadcast("t2", Bytes::from("local on B")).await;
    assert!(
        on_b.as_ref().is_ok() || on_b.as_ref().is_err_and(is_unavailable),
        "{on_b:?}"
    );
    inbox
        .until("local delivery on B during the outage", |i| {
            i.has("s", "local on B")
        })
        .await;
    let began = Instant::now();
    let unconfirmed = a
        .subscribe_topic("late", "u", inbox.handler("late"))
        .await
        .expect_err("the server cannot confirm while it is down");
    assert!(
        matches!(
            BrokerError::of(&unconfirmed),
            Some(BrokerError::SubscribeUnconfirmed)
        ),
        "{unconfirmed:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(2), "{:?}", began.elapsed());

    let flow = Flow::start(Arc::clone(&a), "flow");
    let restarting = tokio::task::spawn_blocking({
        let server = Arc::clone(&server);
        move || server.restart()
    });
    let answered = answering(&server.url()).await;
    restarting.await.unwrap();
    inbox
        .until("the first message from A at B after the restart", |i| {
            !i.of("f").is_empty()
        })
        .await;
    let first_message = answered.elapsed();
    println!("server restarted: the first message from A reached B {first_message:?} after it answered");
    assert!(
        first_message < Duration::from_secs(5),
        "the first message from A reached B {first_message:?} after the server answered"
    );
    eventually("both instances back", || {
        let (sa, sb) = (a.broker_stats(), b.broker_stats());
        sa.connected && sa.publisher_connected && sb.connected && sb.publisher_connected
    })
    .await;
    println!(
        "both instances back {:?} after the server answered",
        answered.elapsed()
    );
    assert_eq!(b.broker_stats().channels, 4, "t1, t2, t3, flow");
    assert_eq!(a.broker_stats().channels, 2, "t1, u");

    for topic in TOPICS {
        a.broadcast(topic, Bytes::from(format!("after {topic}")))
            .await
            .unwrap();
    }
    b.broadcast("u", Bytes::from("to late")).await.unwrap();
    inbox
        .until("every topic delivered after the restart", |i| {
            i.has("late", "to late") && TOPICS.iter().all(|t| i.has("s", &format!("after {t}")))
        })
        .await;
    assert!(
        !inbox.of("s").iter().any(|m| m.starts_with("during")),
        "a broadcast made during the outage reached B: {:?}",
        inbox.of("s")
    );
    let outcome = flow.stop().await;
    assert_increasing(&seqs(&inbox, "f"));
    let (sa, sb) = (a.broker_stats(), b.broker_stats());
    assert_eq!(
        sa.publish_errors, accepted,
        "the broadcasts accepted during the outage are counted lost: {sa:?}"
    );
    assert_eq!(sa.unavailable, refused + outcome.refused, "{sa:?}");
    assert_eq!((sa.outages, sa.reconnects), (1, 1), "{sa:?}");
    assert_eq!((sa.publisher_outages, sa.publisher_reconnects), (1, 1), "{sa:?}");
    assert_eq!((sb.outages, sb.reconnects), (1, 1), "{sb:?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_eq!(a.running_tasks() + b.running_tasks(), 0);
}

// ----- a silent network, through a proxy we control -----

/// The address of the shared test server.
async fn server_addr() -> SocketAddr {
    let config: tokio_postgres::Config = url().parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the proxy needs a TCP host; the URL names {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut addrs = tokio::net::lookup_host((host.as_str(), port)).await.unwrap();
    addrs.next().expect("the server's host resolves")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_network_cut_is_found_by_the_health_check() {
    if admin().await.is_none() {
        return;
    }
    let base = test_config(&unique_prefix("cut"))
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(300));
    let (proxy, a, b) = proxied_pair(server_addr().await, &base.url, |url| {
        PostgresPubSub::with_config(PostgresConfig { url, ..base.clone() }, Config::default()).unwrap()
    })
    .await;
    let inbox = Inbox::default();
    a.subscribe_topic("on-a", "t", inbox.handler("on-a"))
        .await
        .unwrap();
    b.subscribe_topic("on-b", "u", inbox.handler("on-b"))
        .await
        .unwrap();
    b.broadcast("t", Bytes::from("before")).await.unwrap();
    a.broadcast("u", Bytes::from("before")).await.unwrap();
    inbox
        .until("delivery both ways before the cut", |i| {
            i.has("on-a", "before") && i.has("on-b", "before")
        })
        .await;

    proxy.silence();
    let cut = Instant::now();
    eventually("the listener's health check to notice", || {
        a.broker_stats().outages >= 1
    })
    .await;
    let listener_noticed = cut.elapsed();
    eventually("the publisher's health check to notice", || {
        a.broker_stats().publisher_outages >= 1
    })
    .await;
    let publisher_noticed = cut.elapsed();
    println!("silent cut: noticed by the listener after {listener_noticed:?}, by the publisher after {publisher_noticed:?}");
    // One check interval, then the response timeout, with a second of slack for a busy machine.
    let bound = base.health_check_interval + base.response_timeout + Duration::from_secs(1);
    assert!(
        listener_noticed < bound && publisher_noticed < bound,
        "noticed after {listener_noticed:?} and {publisher_noticed:?}; the bound is {bound:?}"
    );

    proxy.open();
    let opened = Instant::now();
    eventually("both connections back", || {
        let s = a.broker_stats();
        s.reconnects >= 1 && s.connected && s.publisher_reconnects >= 1 && s.publisher_connected
    })
    .await;
    let back_after = opened.elapsed();
    println!("silent cut: both connections back {back_after:?} after the path opened");
    // A connection attempt in flight (at most the connect timeout) or the next one (at most
    // the backoff cap away), with slack.
    let bound = base.connect_timeout + base.reconnect_backoff_max + Duration::from_secs(1);
    assert!(
        back_after < bound,
        "back after {back_after:?}; the bound is {bound:?}"
    );
    b.broadcast("t", Bytes::from("after the cut")).await.unwrap();
    a.broadcast("u", Bytes::from("after the cut")).await.unwrap();
    inbox
        .until("delivery both ways after the cut", |i| {
            i.has("on-a", "after the cut") && i.has("on-b", "after the cut")
        })
        .await;
    // The listener's outage began by the time it was seen and lasted until the path opened.
    let stats = a.broker_stats();
    let silent_after_notice = opened.duration_since(cut) - listener_noticed;
    assert!(stats.outage_time >= silent_after_notice, "{stats:?}");
    assert_eq!(stats.channels, 1, "{stats:?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_eq!(a.running_tasks() + b.running_tasks(), 0);
}

// ----- unreachable servers -----

#[tokio::test]
async fn start_fails_clearly_when_postgres_is_unreachable() {
    let port = free_port();
    let url = format!("postgres://postgres:secret@127.0.0.1:{port}/test");
    let provider = PostgresPubSub::new(PostgresConfig::new(&url)).unwrap();
    for attempt in ["first", "second"] {
        let began = Instant::now();
        let error = provider.start().await.expect_err("nothing listens there");
        assert!(began.elapsed() < Duration::from_secs(2), "{:?}", began.elapsed());
        let shown = format!("postgres://postgres:***@127.0.0.1:{port}/test");
        match BrokerError::of(&error) {
            Some(BrokerError::Connect { broker, target, .. }) => {
                assert_eq!((*broker, target.as_str()), ("postgres", shown.as_str()));
            }
            _ => panic!("{attempt} start: {error:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!("cannot connect to postgres at {shown}: ")),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
        assert!(!format!("{error:?}").contains("secret"), "{error:?}");
        assert_eq!(provider.running_tasks(), 0);
        assert_not_started(&provider).await;
    }
    provider.stop().await.unwrap();
    assert!(matches!(
        provider.broadcast("t", Bytes::from("x")).await,
        Err(PubSubError::Stopped)
    ));
}

/// libpq's URLs may carry the password as a query parameter; `PostgresConfig`'s `Debug`
/// hides it there, and so must the error of a failed start.
#[tokio::test]
async fn a_password_in_the_url_query_is_hidden_from_the_connect_error() {
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/test?password=secret");
    let provider = PostgresPubSub::new(PostgresConfig::new(&url)).unwrap();
    let error = provider.start().await.expect_err("nothing listens there");
    assert!(
        matches!(BrokerError::of(&error), Some(BrokerError::Connect { .. })),
        "{error:?}"
    );
    assert!(!error.to_string().contains("secret"), "{error}");
    assert!(!format!("{error:?}").contains("secret"), "{error:?}");
    assert_eq!(provider.running_tasks(), 0);
}

#[tokio::test]
async fn start_gives_up_after_the_connect_timeout_when_postgres_does_not_answer() {
    // The kernel completes the handshake for a bound listener nobody accepts from: the
    // connection opens, and no byte ever comes back.
    let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = mute.local_addr().unwrap().port();
    let timeout = Duration::from_millis(500);
    let config = PostgresConfig::new(format!("postgres://postgres@127.0.0.1:{port}/test"))
        .with_timeouts(timeout, timeout);
    let provider = PostgresPubSub::new(config).unwrap();
    let began = Instant::now();
    let error = provider.start().await.expect_err("the server never answers");
    let took = began.elapsed();
    println!("start against a mute server gave up after {took:?}");
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(1),
        "gave up after {took:?}"
    );
    assert!(
        matches!(BrokerError::of(&error), Some(BrokerError::Connect { .. })),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("connecting timed out after 500 ms"),
        "{error}"
    );
    assert_eq!(provider.running_tasks(), 0);
    assert_not_started(&provider).await;
}

// ----- hostile notifications -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_notifications_are_skipped_and_counted() {
    let Some(admin) = admin().await else { return };
    let prefix = unique_prefix("garbage");
    // One receiver of each large-payload mode: only `table` fetches `@` references.
    let plain = PostgresPubSub::with_config(test_config(&prefix), Config::default()).unwrap();
    let table = PostgresPubSub::with_config(
        test_config(&prefix).with_large_payloads(LargePayloads::Table),
        Config::default(),
    )
    .unwrap();
    let sender = PostgresPubSub::with_config(test_config(&prefix), Config::default()).unwrap();
    let receivers = [&plain, &table];
    for provider in [&plain, &table, &sender] {
        provider.start().await.unwrap();
    }
    let inbox = Inbox::default();
    plain
        .subscribe_topic("plain", "t", inbox.handler("plain"))
        .await
        .unwrap();
    table
        .subscribe_topic("table", "t", inbox.handler("table"))
        .await
        .unwrap();
    let channel = plain.channel_for("t");
    assert_eq!(channel, table.channel_for("t"));

    let notify = |text: String| {
        let (admin, channel) = (&admin, &channel);
        async move {
            admin
                .execute("SELECT pg_notify($1, $2)", &[channel, &text])
                .await
                .unwrap();
        }
    };
    let store = |body: Vec<u8>| {
        let admin = &admin;
        async move {
            let row = admin
                .query_one(
                    "INSERT INTO fanout_payloads (body) VALUES ($1) RETURNING id",
                    &[&body],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0)
        }
    };

    let good = BASE64.encode(stranger_envelope("t", b"hello"));
    let garbage_row = store(b"garbage".to_vec()).await;
    let foreign_row = store(stranger_envelope("not-t", b"sneaky stored")).await;
    let hostile: Vec<String> = vec![
        String::new(),
        "not base64!".into(),
        "héllo".into(),
        r#"{"event":"foreign json"}"#.into(),
        good.trim_end_matches('=').into(),
        format!("{good}AAAA"),
        BASE64.encode(b"garbage"),
        "====".into(),
        BASE64.encode(&stranger_envelope("t", b"hello")[..20]),
        BASE64.encode(stranger_envelope("not-t", b"sneaky")),
        "@".into(),
        "@abc".into(),
        "@12x".into(),
        "@007".into(),
        "@-0".into(),
        "@+5".into(),
        "@99999999999999999999".into(),
        format!("@{}", i64::MAX),
        "@-5".into(),
        format!("@{garbage_row}"),
        format!("@{foreign_row}"),
    ];
    for text in &hostile {
        notify(text.clone()).await;
    }
    // A stored envelope that is valid: delivered where references are fetched.
    let valid_row = store(stranger_envelope("t", b"stored")).await;
    notify(format!("@{valid_row}")).await;
    notify(BASE64.encode(stranger_envelope("t", b"inline"))).await;
    inbox
        .until("the valid notification after the garbage", |i| {
            i.has("plain", "inline") && i.has("table", "inline")
        })
        .await;
    let hostile_count = hostile.len() as u64;
    let (sp, st) = (plain.broker_stats(), table.broker_stats());
    assert_eq!((sp.malformed, sp.received), (hostile_count + 1, 1), "{sp:?}");
    assert_eq!((st.malformed, st.received), (hostile_count, 2), "{st:?}");
    assert_eq!(inbox.of("plain"), ["inline"]);
    assert_eq!(inbox.of("table"), ["stored", "inline"]);

    // Seeded mutations of a valid notification: each is skipped, or (if it stays valid)
    // delivered; never both, never neither.
    let mutated = 200;
    for text in mutations(good.as_bytes(), mutated, |random| b'!' + (random % 94) as u8) {
        notify(String::from_utf8(text).unwrap()).await;
    }
    sender.broadcast("t", Bytes::from("real")).await.unwrap();
    inbox
        .until("a real broadcast after the garbage", |i| {
            i.has("plain", "real") && i.has("table", "real")
        })
        .await;
    for (provider, session) in receivers.iter().zip(["plain", "table"]) {
        let stats = provider.broker_stats();
        let sent = hostile_count + 2 + mutated as u64 + 1;
        assert_eq!(stats.malformed + stats.received, sent, "{session}: {stats:?}");
        assert!(stats.malformed >= hostile_count, "{session}: {stats:?}");
        assert!(
            stats.connected && stats.outages == 0,
            "the listener keeps running: {stats:?}"
        );
        let got = inbox.of(session);
        assert!(!got.iter().any(|m| m.starts_with("sneaky")), "{session}: {got:?}");
        assert_eq!(got.last().map(String::as_str), Some("real"));
    }
    admin
        .execute(
            "DELETE FROM fanout_payloads WHERE id = ANY($1)",
            &[&vec![garbage_row, foreign_row, valid_row]],
        )
        .await
        .unwrap();
    for provider in [&plain, &table, &sender] {
        provider.stop().await.unwrap();
        assert_eq!(provider.running_tasks(), 0);
    }
}

// ----- a backlog is not an outage -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_draining_a_backlog_is_not_taken_for_lost() {
    // PostgreSQL sends every pending notification before its next reply, so while B drains a
    // backlog its health query and its LISTEN / UNLISTEN wait behind it, past a short response
    // timeout. A connection that is handing over messages is alive: no outage, nothing lost;
    // and a topic left and joined again meanwhile is listened to once the backlog is through.
    let Some(_admin) = admin().await else { return };
    let prefix = unique_prefix("backlog");
    let quick = test_config(&prefix)
        .with_timeouts(Duration::from_secs(2), Duration::from_millis(300))
        .with_health_check_interval(Duration::from_millis(20));
    let a = PostgresPubSub::new(test_config(&prefix)).unwrap();
    let b = PostgresPubSub::new(quick).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    let inbox = Inbox::default();
    // Many channels make each notification costlier for B's backend to hand over.
    for t in 0..10_000 {
        b.subscribe_topic("s", &format!("room:{t}"), inbox.handler("s"))
            .await
            .unwrap();
    }
    let sent: u64 = 150_000;
    let began = Instant::now();
    for seq in 0..sent {
        a.broadcast(&format!("room:{}", seq % 10_000), Bytes::from(seq.to_string()))
            .await
            .unwrap();
    }
    // While B drains: its last session on one topic leaves and another joins it, and a
    // session joins a topic and leaves before its subscribe is confirmed. Each call returns.
    let churn = Instant::now();
    b.unsubscribe_topic("s", "room:0").await.unwrap();
    let rejoined = Inbox::default();
    b.subscribe_topic("t", "room:0", rejoined.handler("t"))
        .await
        .unwrap();
    let passing = {
        let b = Arc::new(b);
        let joiner = Arc::clone(&b);
        let joined = tokio::spawn(async move {
            joiner
                .subscribe_topic("u", "passing", Inbox::default().handler("u"))
                .await
        });
        tokio::task::yield_now().await;
        b.unsubscribe_all("u").await.unwrap();
        let outcome = tokio::time::timeout(WAIT, joined).await;
        (b, outcome)
    };
    let (b, joined) = passing;
    let b = Arc::try_unwrap(b).unwrap();
    assert!(
        matches!(joined, Ok(Ok(_))),
        "a subscribe whose session left while it waited: {joined:?}"
    );
    eprintln!("churn during the backlog took {:?}", churn.elapsed());
    // Handed to B's engine (the one session's mailbox drops by its policy; that is not
    // the point here).
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.broker_stats().received < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = b.broker_stats();
    eprintln!(
        "drained {} of {sent} in {:?}; B: {stats:?}",
        stats.received,
        began.elapsed()
    );
    assert_eq!(stats.received, sent, "{stats:?}");
    assert_eq!((stats.outages, stats.malformed), (0, 0), "{stats:?}");
    // The topic left and joined during the backlog is listened to.
    a.broadcast("room:0", Bytes::from_static(b"after")).await.unwrap();
    rejoined
        .until("the message after the backlog", |i| i.has("t", "after"))
        .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
