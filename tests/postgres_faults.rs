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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::postgres::{admin, cluster};
use conformance::{eventually, Inbox, WAIT};
use fanout::bridge::BrokerError;
use fanout::postgres::PostgresPubSub;
use fanout::{Config, PubSubError, PubSubProvider};
use tokio_postgres::Client;

/// Broadcasts `1, 2, 3, …` on a topic, one a millisecond, until stopped. A broadcast whose
/// remote part is refused (`PublishUnavailable`, during a publisher outage) is counted; any
/// other error fails the test when the flow is stopped.
struct Flow {
    /// The number of the latest broadcast that has returned.
    last: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// How the broadcasts of a stopped [`Flow`] returned.
#[derive(Debug)]
struct FlowOutcome {
    sent: u64,
    refused: u64,
}

impl Flow {
    fn start(provider: Arc<PostgresPubSub>, topic: &'static str) -> Flow {
        let last = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let (sent, refusals, stop) = (Arc::clone(&last), Arc::clone(&refused), Arc::clone(&stopping));
        let task = tokio::spawn(async move {
            for seq in 1.. {
                if stop.load(SeqCst) {
                    return;
                }
                match provider.broadcast(topic, Bytes::from(seq.to_string())).await {
                    Ok(()) => {}
                    Err(error) if is_unavailable(&error) => {
                        refusals.fetch_add(1, SeqCst);
                    }
                    Err(error) => panic!("broadcast {seq} failed: {error:?}"),
                }
                sent.store(seq, SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Flow {
            last,
            refused,
            stopping,
            task,
        }
    }

    fn last(&self) -> u64 {
        self.last.load(SeqCst)
    }

    /// Stops after the broadcast in progress has returned.
    async fn stop(mut self) -> FlowOutcome {
        self.stopping.store(true, SeqCst);
        (&mut self.task).await.expect("the flow's broadcasts");
        FlowOutcome {
            sent: self.last(),
            refused: self.refused.load(SeqCst),
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_unavailable(error: &PubSubError) -> bool {
    matches!(
        BrokerError::of(error),
        Some(BrokerError::PublishUnavailable { .. })
    )
}

fn seqs(inbox: &Inbox, session: &str) -> Vec<u64> {
    inbox.of(session).iter().map(|m| m.parse().unwrap()).collect()
}

fn assert_increasing(seqs: &[u64]) {
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "duplicated or out of order: {seqs:?}"
    );
}

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

/// Two instances on one prefix, A broadcasting a [`Flow`] on `flow` to the session `s` on B;
/// returns once messages arrive. `None`: the test is skipped.
async fn flowing(test: &str) -> Option<(Client, Vec<Arc<PostgresPubSub>>, Inbox, Flow)> {
    let admin = admin().await?;
    let nodes = cluster(test, 2, Config::default()).await?;
    let inbox = Inbox::default();
    nodes[1]
        .subscribe_topic("s", "flow", inbox.handler("s"))
        .await
        .unwrap();
    let flow = Flow::start(Arc::clone(&nodes[0]), "flow");
    inbox.until("messages to flow", |i| i.of("s").len() >= 20).await;
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

/// Waits until `s` has received a number the flow broadcast after this call.
async fn until_flowing_again(inbox: &Inbox, flow: &Flow) {
    let published_after = flow.last();
    inbox
        .until("a message published after the reconnect", |i| {
            seqs(i, "s").last().is_some_and(|&s| s > published_after + 5)
        })
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
    // The flow never pauses long enough for a ping: a send found the connection dead, and
    // what it carried is counted lost.
    assert!(sa.publish_errors >= 1, "{sa:?}");
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
