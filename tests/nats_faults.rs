//! Faults against a NATS server of the test's own (`nats-server` on a free loopback port, never
//! the shared one other tests use): killed and restarted, frozen (`SIGSTOP`) and thawed,
//! requiring credentials, and refusing to let a user publish on some subjects. The server is killed by a guard when the test ends, pass or fail.
//!
//! Skips with a printed reason when `nats-server` cannot be run, fails instead under
//! `FANOUT_REQUIRE_SERVICES=1`.

#![cfg(feature = "nats")]

#[macro_use]
mod conformance;

use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::faults::{assert_local_only_while_down, free_port};
use conformance::nats::{test_config_at, unique_prefix, RawClient};
use conformance::{eventually, skip, Inbox};
use fanout::bridge::Unacknowledged;
use fanout::nats::{NatsConfig, NatsPubSub, NatsPubSubError};
use fanout::PubSubProvider;

/// A `nats-server` of one test's own; killed when dropped.
struct PrivateNats {
    port: u16,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    /// Starts `nats-server` on a free port with `args`, and waits until it answers.
    async fn start(args: &[&str]) -> Option<PrivateNats> {
        let mut server = PrivateNats {
            port: free_port(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
        };
        if let Err(error) = server.spawn() {
            return skip(format_args!("cannot run nats-server ({error})"));
        }
        server.answering().await;
        Some(server)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Waits until the server accepts a connection.
    async fn answering(&self) {
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + conformance::WAIT;
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server on {address} never answered"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, and waits until it answers.
    async fn restart(&mut self) {
        self.kill();
        self.spawn().expect("nats-server ran a moment ago");
        self.answering().await;
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server process.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
        if signal == "STOP" {
            // The signal is delivered to each thread as it next runs: wait until all stand
            // still, so that nothing sent from now on is processed before `CONT`.
            let deadline = Instant::now() + conformance::WAIT;
            while !all_threads_stopped(pid) {
                assert!(Instant::now() < deadline, "nats-server {pid} did not stop");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.filter_map(Result::ok).all(|thread| {
        std::fs::read_to_string(thread.path().join("stat"))
            .ok()
            .and_then(|stat| Some(stat[stat.rfind(')')? + 2..].starts_with('T')))
            .unwrap_or(false)
    })
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two started instances on `server`, with quick health checks and reconnects.
async fn pair(server: &PrivateNats, test: &str, response: Duration) -> (NatsPubSub, NatsPubSub) {
    let config = test_config_at(&server.url(), &unique_prefix(test))
        .with_timeouts(Duration::from_millis(500), response);
    started_pair(config).await
}

/// Two instances with `config`, started.
async fn started_pair(config: NatsConfig) -> (NatsPubSub, NatsPubSub) {
    let a = NatsPubSub::new(config.clone()).unwrap();
    let b = NatsPubSub::new(config).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    (a, b)
}

/// Waits until both connections of both instances are up again, B's subscription connection
/// after a reconnect.
async fn both_back(a: &NatsPubSub, b: &NatsPubSub) {
    eventually("both instances back", || {
        let (sa, sb) = (a.nats_stats(), b.nats_stats());
        sa.connected && sa.publisher_connected && sb.connected && sb.publisher_connected && sb.reconnects >= 1
    })
    .await;
}

/// While the server is away, local sessions still receive and broadcasts return within 2 s
/// with `PublishUnavailable`; once it answers again both instances are back within 5 s, every
/// topic subscribed again, and messages cross again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_survived_and_every_topic_resubscribed() {
    let Some(mut server) = PrivateNats::start(&[]).await else {
        return;
    };
    let (a, b) = pair(&server, "restart", Duration::from_millis(500)).await;
    let inbox = Inbox::default();
    for topic in ["t1", "t2", "t.3"] {
        b.subscribe_topic("s", topic, inbox.handler("s")).await.unwrap();
    }
    a.subscribe_topic("here", "t1", inbox.handler("here"))
        .await
        .unwrap();
    a.broadcast("t1", Bytes::from("before")).await.unwrap();
    inbox
        .until("delivery before the restart", |i| {
            i.has("s", "before") && i.has("here", "before")
        })
        .await;

    server.kill();
    eventually("the outage to be seen by both", || {
        let (sa, sb) = (a.nats_stats(), b.nats_stats());
        !sa.connected && !sa.publisher_connected && !sb.connected
    })
    .await;
    assert_local_only_while_down(&a, &inbox, ("t1", "here"), "t2").await;

    server.restart().await;
    let answered = Instant::now();
    both_back(&a, &b).await;
    let back_after = answered.elapsed();
    eprintln!("both instances back {back_after:?} after the server answered");
    assert!(
        back_after < Duration::from_secs(5),
        "back only {back_after:?} after the server answered"
    );
    for topic in ["t1", "t2", "t.3"] {
        a.broadcast(topic, Bytes::from(format!("after {topic}")))
            .await
            .unwrap();
    }
    b.broadcast("t2", Bytes::from("to late")).await.unwrap();
    inbox
        .until("every topic after the restart", |i| {
            ["t1", "t2", "t.3"]
                .iter()
                .all(|topic| i.has("s", &format!("after {topic}")))
                && i.has("here", "after t1")
                && i.has("late", "to late")
        })
        .await;
    assert!(!inbox.has("s", "during"), "published while the server was away");
    for node in [&a, &b] {
        let stats = node.nats_stats();
        assert!(stats.outages >= 1 && stats.reconnects >= 1, "{stats:?}");
        assert!(stats.outage_time > Duration::ZERO, "{stats:?}");
        node.stop().await.unwrap();
        assert_eq!(node.running_tasks(), 0);
    }
    assert!(a.nats_stats().publisher_outages >= 1);
}

/// A server that stops answering but keeps its sockets open: an acknowledged broadcast fails
/// with `TimedOut` after the response timeout (its local sessions have it), the health check
/// finds the silent subscription connection, and both recover once the server runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_found_and_an_acknowledged_broadcast_times_out() {
    let Some(server) = PrivateNats::start(&[]).await else {
        return;
    };
    let response = Duration::from_millis(400);
    let (a, b) = pair(&server, "frozen", response).await;
    let inbox = Inbox::default();
    b.subscribe_topic("remote", "t", inbox.handler("remote"))
        .await
        .unwrap();
    a.subscribe_topic("local", "t", inbox.handler("local"))
        .await
        .unwrap();
    a.broadcast_acknowledged("t", Bytes::from("acked")).await.unwrap();
    assert_eq!(a.nats_stats().published, 1, "acknowledged means published");
    inbox
        .until("the acknowledged message", |i| i.has("remote", "acked"))
        .await;

    server.signal("STOP");
    let began = Instant::now();
    let error = a
        .broadcast_acknowledged("t", Bytes::from("frozen"))
        .await
        .expect_err("the server is frozen");
    let waited = began.elapsed();
    assert!(
        matches!(
            error.broker(),
            Some(NatsPubSubError::Unacknowledged { why: Unacknowledged::TimedOut { after } })
                if *after == response
        ),
        "{error:?}"
    );
    assert!(waited >= response && waited < response * 4, "{waited:?}");
    inbox.until("the local copy", |i| i.has("local", "frozen")).await;
    eventually("the health check to find B's silent connection", || {
        b.nats_stats().outages >= 1
    })
    .await;

    server.signal("CONT");
    both_back(&a, &b).await;
    a.broadcast("t", Bytes::from("thawed")).await.unwrap();
    inbox
        .until("delivery after the thaw", |i| i.has("remote", "thawed"))
        .await;
    for node in [&a, &b] {
        node.stop().await.unwrap();
        assert_eq!(node.running_tasks(), 0);
    }
}

/// User and password, or a token, from the URL go in `CONNECT`; without them `start()` fails
/// with the server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_url_are_sent_and_a_refusal_fails_start() {
    for (args, credentials) in [
        (
            &["--user", "fan", "--pass", "p@ss:word"][..],
            "fan:p%40ss%3Aword@",
        ),
        (&["--auth", "s3cret-token"][..], "s3cret-token@"),
    ] {
        let Some(server) = PrivateNats::start(args).await else {
            return;
        };
        let prefix = unique_prefix("auth");
        let anonymous = NatsPubSub::new(test_config_at(&server.url(), &prefix)).unwrap();
        let error = anonymous
            .start()
            .await
            .expect_err("the server requires credentials");
        let message = error.to_string();
        assert!(
            matches!(NatsPubSubError::of(&error), Some(NatsPubSubError::Connect { .. }))
                && message.contains("Authorization Violation"),
            "{message}"
        );
        assert_eq!(anonymous.running_tasks(), 0);
        assert!(RawClient::connect(&server.url()).await.is_err());

        let url = format!("nats://{credentials}127.0.0.1:{}", server.port);
        let (a, b) = started_pair(test_config_at(&url, &prefix)).await;
        let inbox = Inbox::default();
        b.subscribe_topic("s", "t", inbox.handler("s")).await.unwrap();
        a.broadcast("t", Bytes::from("signed in")).await.unwrap();
        inbox
            .until("delivery with credentials", |i| i.has("s", "signed in"))
            .await;
        for node in [&a, &b] {
            node.stop().await.unwrap();
        }
    }
}

/// A `PUB` the server refuses for permissions is reported by an `-ERR` before the `PONG` of its
/// batch: the messages on that subject are counted refused (an acknowledged broadcast gets
/// `Refused`), the others in the same batch are published, and the connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_server_refuses_loses_only_its_own_messages() {
    let prefix = unique_prefix("perm");
    let config_file = std::env::temp_dir().join(format!("fanout-nats-perm-{}.conf", std::process::id()));
    // The user may publish anywhere under the prefix but on the topic `closed`.
    let denied = NatsPubSub::new(NatsConfig::default().with_subject_prefix(&prefix))
        .unwrap()
        .channel_for("closed");
    std::fs::write(
        &config_file,
        format!(
            "authorization {{ users = [ {{ user: app, password: pw, permissions: {{ publish: {{ deny: [\"{denied}\"] }} }} }} ] }}\n"
        ),
    )
    .unwrap();
    let server = PrivateNats::start(&["-c", config_file.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&config_file);
    let Some(server) = server else {
        return;
    };
    let url = format!("nats://app:pw@127.0.0.1:{}", server.port);
    let (a, b) = started_pair(test_config_at(&url, &prefix)).await;
    let inbox = Inbox::default();
    for topic in ["open", "closed"] {
        b.subscribe_topic("s", topic, inbox.handler("s")).await.unwrap();
    }
    let error = a
        .broadcast_acknowledged("closed", Bytes::from("refused"))
        .await
        .expect_err("the user may not publish there");
    assert!(
        matches!(
            error.broker(),
            Some(NatsPubSubError::Unacknowledged { why: Unacknowledged::Refused(reason) })
                if reason.contains("Permissions Violation")
        ),
        "{error:?}"
    );
    a.broadcast_acknowledged("open", Bytes::from("accepted"))
        .await
        .unwrap();
    inbox
        .until("the accepted message", |i| i.has("s", "accepted"))
        .await;
    assert!(!inbox.has("s", "refused"));
    let stats = a.nats_stats();
    assert_eq!(
        (stats.publish_refusals, stats.publish_errors, stats.published),
        (1, 1, 1),
        "{stats:?}"
    );
    assert!(
        stats.publisher_connected && stats.publisher_outages == 0,
        "{stats:?}"
    );
    for node in [&a, &b] {
        node.stop().await.unwrap();
    }
}

/// Starts a private server with `config` (a nats-server configuration file's text).
async fn private_with_config(name: &str, config: &str) -> Option<PrivateNats> {
    let path = std::env::temp_dir().join(format!("fanout-nats-{name}-{}.conf", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let server = PrivateNats::start(&["-c", path.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&path);
    server
}

/// A `SUB` the server refuses for permissions is not an outage: the topic's subscribe returns
/// `SubscribeRefused` (subscribed on this instance only), other topics keep working, and the
/// connection is kept; nothing reconnects for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_server_refuses_is_typed_and_not_an_outage() {
    let prefix = unique_prefix("sub-perm");
    let denied = NatsPubSub::new(NatsConfig::default().with_subject_prefix(&prefix))
        .unwrap()
        .channel_for("closed");
    let Some(server) = private_with_config(
        "sub-perm",
        &format!(
            "authorization {{ users = [ {{ user: app, password: pw, permissions: {{ subscribe: {{ deny: [\"{denied}\"] }} }} }} ] }}\n"
        ),
    )
    .await
    else {
        return;
    };
    let url = format!("nats://app:pw@127.0.0.1:{}", server.port);
    let (a, b) = started_pair(test_config_at(&url, &prefix)).await;
    let inbox = Inbox::default();
    b.subscribe_topic("s", "open", inbox.handler("s")).await.unwrap();
    let error = b
        .subscribe_topic("s", "closed", inbox.handler("s"))
        .await
        .expect_err("the user may not subscribe there");
    assert!(
        matches!(error.broker(), Some(NatsPubSubError::SubscribeRefused { reason }) if reason.contains("Permissions Violation")),
        "{error:?}"
    );
    // Another session on the refused topic is told at once, from what the listener knows.
    let again = b
        .subscribe_topic("t", "closed", inbox.handler("t"))
        .await
        .expect_err("still refused");
    assert!(
        matches!(again.broker(), Some(NatsPubSubError::SubscribeRefused { .. })),
        "{again:?}"
    );
    // Local delivery on the refused topic goes on; the other topic crosses instances.
    b.broadcast("closed", Bytes::from("local")).await.unwrap();
    a.broadcast("open", Bytes::from("remote")).await.unwrap();
    inbox
        .until("both messages", |i| i.has("s", "local") && i.has("s", "remote"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = b.nats_stats();
    assert_eq!(
        (stats.outages, stats.subscribe_refusals, stats.channels),
        (0, 1, 1),
        "{stats:?}"
    );
    assert!(stats.connected, "{stats:?}");
    for node in [&a, &b] {
        node.stop().await.unwrap();
    }
}

/// A `SUB` over the server's subscription limit is dropped by the server with an `-ERR` that
/// names no subject: it is not confirmed (`SubscribeRefused`), never reported as subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_over_the_servers_limit_is_not_confirmed() {
    let prefix = unique_prefix("sub-limit");
    let Some(server) = private_with_config("sub-limit", "max_subscriptions: 2\n").await else {
        return;
    };
    let (a, b) = started_pair(test_config_at(&server.url(), &prefix)).await;
    let inbox = Inbox::default();
    b.subscribe_topic("s", "t1", inbox.handler("s")).await.unwrap();
    b.subscribe_topic("s", "t2", inbox.handler("s")).await.unwrap();
    let error = b
        .subscribe_topic("s", "t3", inbox.handler("s"))
        .await
        .expect_err("over the server's limit");
    assert!(
        matches!(error.broker(), Some(NatsPubSubError::SubscribeRefused { .. })),
        "{error:?}"
    );
    for topic in ["t1", "t2"] {
        a.broadcast(topic, Bytes::from(topic)).await.unwrap();
    }
    inbox
        .until("the confirmed topics' messages", |i| {
            i.has("s", "t1") && i.has("s", "t2")
        })
        .await;
    let stats = b.nats_stats();
    assert_eq!(
        (stats.channels, stats.subscribe_refusals, stats.outages),
        (2, 1, 0),
        "{stats:?}"
    );
    for node in [&a, &b] {
        node.stop().await.unwrap();
    }
}

/// A slow consumer: B's only session blocks the listener (a `block_once` policy waiting 3 s on
/// a stalled handler), so B's reader stops at its backlog bound, the server's buffer for B
/// passes its `max_pending` and the server closes the connection, without saying why. B counts
/// the stall and the outage as a slow consumer's, reconnects, and delivers again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_counted_as_such_and_recovers() {
    let prefix = unique_prefix("slow");
    let Some(server) = private_with_config("slow", "max_pending: 262144\nmax_payload: 65536\n").await else {
        return;
    };
    let url = format!("nats://127.0.0.1:{}", server.port);
    let a = NatsPubSub::new(test_config_at(&url, &prefix)).unwrap();
    let slow = fanout::Config::default()
        .with_capacity(1)
        .with_policy(fanout::OverflowPolicy::BlockOnce {
            timeout: Duration::from_secs(3),
            then: fanout::Fallback::DropNewest,
        });
    let b = NatsPubSub::with_config(test_config_at(&url, &prefix), slow).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = {
        let (gate, received) = (std::sync::Arc::clone(&gate), std::sync::Arc::clone(&received));
        fanout::Handler::new(move |_topic, message: Bytes| {
            let (gate, received) = (std::sync::Arc::clone(&gate), std::sync::Arc::clone(&received));
            async move {
                if &message[..] == b"after" {
                    received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                let _ = gate.acquire().await;
            }
        })
    };
    b.subscribe_topic("s", "t", handler).await.unwrap();
    // 1 KiB messages, far more than the backlog bound and `max_pending` hold.
    let payload = Bytes::from(vec![b'x'; 1024]);
    for _ in 0..20_000 {
        if a.broadcast("t", payload.clone()).await.is_err() {
            break;
        }
    }
    eventually("B's slow-consumer outage", || {
        b.nats_stats().slow_consumer_outages >= 1
    })
    .await;
    gate.add_permits(1 << 20);
    let stats = b.nats_stats();
    assert!(stats.inbound_stalls >= 1, "{stats:?}");
    assert!(stats.outages >= stats.slow_consumer_outages, "{stats:?}");
    eventually("B reconnected", || {
        let stats = b.nats_stats();
        stats.connected && stats.reconnects >= 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "nothing delivered after the reconnect");
        a.broadcast("t", "after".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in [&a, &b] {
        node.stop().await.unwrap();
    }
}
