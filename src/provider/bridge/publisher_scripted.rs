//! The publisher task against a scripted broker: every way a pipeline can end, and what each
//! acknowledged broadcast is told, checked against the counters.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::super::broker::{
    Answers, Broker, ConnectError, Inbound, Outgoing, PipelineLost, Reason, Refusals, Subscription,
};
use super::super::error::{BrokerError, Unacknowledged};
use super::super::settings::BridgeSettings;
use super::super::stats::{BrokerCounters, BrokerStats};
use super::super::Shared;
use super::{Outbound, Publisher, PublisherState};
use crate::envelope::{EnvelopeLimits, InstanceId};
use crate::sync::{lock, Mutex};
use crate::topic::Topic;

/// How the scripted broker answers one pipeline.
enum Script {
    /// One answer per envelope.
    Answer(Vec<Result<(), &'static str>>),
    /// The connection fails after `answered` envelopes were answered `Ok`.
    Fail { answered: usize },
    /// Never answers.
    Hang,
}

/// A broker that answers pipelines as scripted (every envelope `Ok` once the script is out)
/// and records the size of each pipeline it was sent.
#[derive(Default)]
struct Scripted {
    scripts: Mutex<VecDeque<Script>>,
    pipelines: Mutex<Vec<usize>>,
    /// Whether opening a publishing connection fails.
    unreachable: std::sync::atomic::AtomicBool,
}

impl Scripted {
    fn then(&self, script: Script) {
        lock(&self.scripts).push_back(script);
    }

    /// From now on, opening a publishing connection fails.
    fn stay_unreachable(&self) {
        self.unreachable.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn pipelines(&self) -> Vec<usize> {
        lock(&self.pipelines).clone()
    }
}

impl Broker for Scripted {
    type Subscription = NoSubscription;
    type Publisher = ();

    const NAME: &'static str = "scripted";

    fn target(&self) -> String {
        "scripted".into()
    }

    fn channel(&self, topic: &str) -> String {
        topic.into()
    }

    fn carries(&self, channel: &str, topic: &str) -> bool {
        channel == topic
    }

    fn check_envelope(&self, _envelope_len: usize) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn open_subscription(&self) -> Result<NoSubscription, ConnectError> {
        Err("the scripted broker has no subscription connection".into())
    }

    async fn open_publisher(&self) -> Result<(), ConnectError> {
        if self.unreachable.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("unreachable".into());
        }
        Ok(())
    }

    fn publish(
        &self,
        _publisher: &mut (),
        envelopes: &[Outgoing<'_>],
    ) -> impl Future<Output = Result<Answers, PipelineLost>> + Send {
        lock(&self.pipelines).push(envelopes.len());
        let script = lock(&self.scripts).pop_front();
        let all_ok = vec![Ok(()); envelopes.len()];
        async move {
            match script {
                None => Ok(all_ok),
                Some(Script::Answer(answers)) => Ok(answers
                    .into_iter()
                    .map(|answer| answer.map_err(String::from))
                    .collect()),
                Some(Script::Fail { answered }) => Err(PipelineLost {
                    answered: vec![Ok(()); answered],
                    reason: "the scripted connection failed".into(),
                }),
                Some(Script::Hang) => std::future::pending().await,
            }
        }
    }

    async fn ping_publisher(&self, _publisher: &mut ()) -> Result<(), Reason> {
        Ok(())
    }
}

/// The scripted broker's subscription side, which these tests never open.
struct NoSubscription;

impl Subscription for NoSubscription {
    type Message = ();

    fn subscribe(&self, _channels: Vec<String>) -> BoxFuture<'static, Result<Refusals, Reason>> {
        futures_util::future::ready(Err("no subscriptions".into())).boxed()
    }

    fn unsubscribe(&self, _channels: Vec<String>) -> BoxFuture<'static, Result<(), Reason>> {
        futures_util::future::ready(Err("no subscriptions".into())).boxed()
    }

    fn ping(&self) -> BoxFuture<'static, Result<(), Reason>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    async fn next(&mut self) -> Option<()> {
        None
    }

    fn channel(_message: &()) -> &str {
        ""
    }

    async fn envelope<'a>(&'a self, _message: &'a ()) -> Result<Bytes, Inbound> {
        Err(Inbound::Malformed("no messages".into()))
    }
}

/// A publisher over a scripted broker, not yet running.
struct Harness {
    shared: Arc<Shared<Scripted>>,
    queue: mpsc::Sender<Outbound>,
    shutdown: watch::Sender<bool>,
    publisher: Option<Publisher<Scripted>>,
}

const RESPONSE: Duration = Duration::from_secs(10);

impl Harness {
    fn new(max_pipeline: usize, flush_grace: Duration) -> Self {
        let settings = BridgeSettings {
            max_envelope_bytes: 1 << 20,
            batch_envelope_bytes: 1 << 20,
            publish_queue: 64,
            max_pipeline,
            connect_timeout: Duration::from_secs(1),
            response_timeout: RESPONSE,
            health_check_interval: Duration::from_secs(60),
            reconnect_backoff_min: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_millis(10),
        };
        let shared = Arc::new(Shared {
            broker: Scripted::default(),
            envelope_limits: EnvelopeLimits::new(
                &crate::config::Limits::default(),
                settings.max_envelope_bytes,
            ),
            settings,
            instance: InstanceId(7),
            counters: BrokerCounters::default(),
            publisher: PublisherState::new(),
        });
        let (queue, outbound) = mpsc::channel(64);
        let (shutdown, stopping) = watch::channel(false);
        let publisher = Publisher::new(Arc::clone(&shared), outbound, stopping, flush_grace);
        Harness {
            shared,
            queue,
            shutdown,
            publisher: Some(publisher),
        }
    }

    /// Queues an acknowledged broadcast on `topic`; its answer arrives on the receiver.
    async fn acked(&self, topic: &str) -> oneshot::Receiver<Result<(), Unacknowledged>> {
        let (ack, answer) = oneshot::channel();
        let message = Outbound {
            topic: Topic::from(topic),
            sender: None,
            payload: Bytes::from_static(b"m"),
            ack: Some(ack),
            _budget: None,
        };
        self.queue.send(message).await.unwrap();
        answer
    }

    /// Queues an acknowledged broadcast on each of `topics` (one envelope each), starts the
    /// task, and returns their answers.
    async fn run_acked(&mut self, topics: &[&str]) -> Vec<Result<(), Unacknowledged>> {
        let mut receivers = Vec::new();
        for topic in topics {
            receivers.push(self.acked(topic).await);
        }
        self.start();
        let mut answers = Vec::new();
        for receiver in receivers {
            answers.push(answer(receiver).await);
        }
        answers
    }

    fn start(&mut self) -> JoinHandle<()> {
        // As `Bridge::start` does once the connection is open.
        self.shared.publisher.set_up();
        let publisher = self.publisher.take().unwrap();
        tokio::spawn(publisher.run(()))
    }

    fn stats(&self) -> BrokerStats {
        self.shared.stats()
    }
}

/// Waits for an answer, which must come within a second.
async fn answer(receiver: oneshot::Receiver<Result<(), Unacknowledged>>) -> Result<(), Unacknowledged> {
    tokio::time::timeout(Duration::from_secs(1), receiver)
        .await
        .expect("answered within a second")
        .expect("answered, not dropped")
}

fn lost(answer: &Result<(), Unacknowledged>) -> bool {
    matches!(answer, Err(Unacknowledged::Lost(_)))
}

#[tokio::test]
async fn each_envelope_of_a_pipeline_is_answered_on_its_own() {
    let mut harness = Harness::new(16, RESPONSE);
    harness
        .shared
        .broker
        .then(Script::Answer(vec![Ok(()), Err("not allowed"), Ok(())]));
    // Three topics: three envelopes, queued before the task runs, so they share a pipeline.
    let got = harness.run_acked(&["a", "b", "c"]).await;
    assert_eq!(harness.shared.broker.pipelines(), [3]);
    assert_eq!(
        got,
        [Ok(()), Err(Unacknowledged::Refused("not allowed".into())), Ok(())]
    );
    let stats = harness.stats();
    assert_eq!(
        (
            stats.published,
            stats.publish_errors,
            stats.publish_refusals,
            stats.publisher_outages
        ),
        (2, 1, 1, 0)
    );
}

#[tokio::test]
async fn a_connection_lost_mid_pipeline_keeps_the_answers_read_before_it() {
    let mut harness = Harness::new(16, RESPONSE);
    harness.shared.broker.then(Script::Fail { answered: 1 });
    let got = harness.run_acked(&["a", "b", "c"]).await;
    assert_eq!(got[0], Ok(()), "answered before the failure");
    assert!(lost(&got[1]) && lost(&got[2]), "{got:?}");
    let stats = harness.stats();
    assert_eq!((stats.published, stats.publish_errors), (1, 2), "{stats:?}");
}

#[tokio::test]
async fn a_caller_told_of_a_lost_connection_finds_it_down() {
    let mut harness = Harness::new(16, RESPONSE);
    harness.shared.broker.then(Script::Fail { answered: 0 });
    harness.shared.broker.stay_unreachable();
    let receiver = harness.acked("a").await;
    harness.start();
    assert!(lost(&answer(receiver).await));
    assert!(
        !harness.shared.publisher.is_up(),
        "down before the caller is told"
    );
    assert_eq!(harness.stats().publish_errors, 1);
}

#[tokio::test]
async fn messages_queued_while_reconnecting_are_answered_at_once() {
    let mut harness = Harness::new(16, RESPONSE);
    harness.shared.broker.then(Script::Fail { answered: 0 });
    // Never comes back: an answer that waited for the connection would never come.
    harness.shared.broker.stay_unreachable();
    let first = harness.acked("a").await;
    harness.start();
    assert!(lost(&answer(first).await));
    // A broadcast that read the connection up just before it went down queues anyway.
    let raced = harness.acked("b").await;
    assert!(lost(&answer(raced).await));
    assert_eq!(harness.stats().publish_errors, 2);
}

#[tokio::test]
async fn a_broker_that_miscounts_its_answers_is_a_lost_connection() {
    let mut harness = Harness::new(16, RESPONSE);
    harness.shared.broker.then(Script::Answer(vec![Ok(())]));
    let answers = [harness.acked("a").await, harness.acked("b").await];
    harness.start();
    for receiver in answers {
        assert!(lost(&answer(receiver).await));
    }
    let stats = harness.stats();
    assert_eq!((stats.published, stats.publish_errors), (0, 2));
}

#[tokio::test]
async fn stop_flushes_what_is_queued() {
    let mut harness = Harness::new(16, RESPONSE);
    let answers = [harness.acked("a").await, harness.acked("b").await];
    harness.shutdown.send(true).unwrap();
    let task = harness.start();
    for receiver in answers {
        assert_eq!(answer(receiver).await, Ok(()));
    }
    task.await.unwrap();
    let stats = harness.stats();
    assert_eq!((stats.published, stats.publish_errors), (2, 0));
    assert!(!stats.publisher_connected);
    assert!(
        harness.queue.send(outbound_plain("late")).await.is_err(),
        "the queue is closed"
    );
}

#[tokio::test]
async fn after_a_failed_flush_the_rest_is_counted_and_not_sent() {
    // Two messages per pipeline: the first fails, the second is never sent.
    let mut harness = Harness::new(2, RESPONSE);
    harness.shared.broker.then(Script::Fail { answered: 0 });
    let mut answers = Vec::new();
    for topic in ["a", "b", "c", "d"] {
        answers.push(harness.acked(topic).await);
    }
    harness.shutdown.send(true).unwrap();
    let task = harness.start();
    for receiver in answers {
        assert!(lost(&answer(receiver).await));
    }
    task.await.unwrap();
    assert_eq!(harness.shared.broker.pipelines(), [2]);
    assert_eq!(harness.stats().publish_errors, 4);
}

#[tokio::test]
async fn a_flush_ends_at_the_stop_grace_however_slow_the_broker() {
    let grace = Duration::from_millis(100);
    let mut harness = Harness::new(1, grace);
    harness.shared.broker.then(Script::Hang);
    let answers = [harness.acked("a").await, harness.acked("b").await];
    harness.shutdown.send(true).unwrap();
    let began = tokio::time::Instant::now();
    let task = harness.start();
    for receiver in answers {
        assert_eq!(answer(receiver).await, Err(Unacknowledged::Stopped));
    }
    task.await.unwrap();
    let took = began.elapsed();
    assert!(took >= grace && took < grace * 5, "{took:?}");
    assert_eq!(
        harness.shared.broker.pipelines(),
        [1],
        "the second was never sent"
    );
    assert_eq!(harness.stats().publish_errors, 2);
}

fn outbound_plain(topic: &str) -> Outbound {
    Outbound {
        topic: Topic::from(topic),
        sender: None,
        payload: Bytes::from_static(b"m"),
        ack: None,
        _budget: None,
    }
}
