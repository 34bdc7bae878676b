//! G9: bad input is a typed error that names the limit it broke, and affects nothing else.
//!
//! Each test rejects one kind of input through every operation that takes it, then checks the
//! provider is exactly as before: same stats, same registry, and existing subscriptions still
//! deliver.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use fanout::{
    Bytes, Config, Handler, InMemoryPubSub, Limits, PubSubError, PubSubJsonExt, PubSubProvider, SessionForm,
    SessionPubSub, SessionReceiver, StatsSnapshot,
};

mod support;

use support::{wait_until, Inbox};

const MAX_TOPIC: usize = 16;
const MAX_PAYLOAD: usize = 32;
const MAX_SESSION_ID: usize = 8;

fn small_limits() -> Config {
    Config::default().with_limits(Limits {
        max_topic_bytes: MAX_TOPIC,
        max_payload_bytes: MAX_PAYLOAD,
        max_session_id_bytes: MAX_SESSION_ID,
    })
}

/// A provider with small limits, a receiver and a handler session on `room`, and the stats
/// before anything was rejected.
struct Fixture {
    pubsub: InMemoryPubSub,
    reader: SessionReceiver,
    writer: Inbox,
    before: StatsSnapshot,
}

impl Fixture {
    async fn new() -> Fixture {
        let pubsub = InMemoryPubSub::with_config(small_limits()).unwrap();
        pubsub.start().await.unwrap();
        let reader = pubsub.open_session("reader").unwrap();
        reader.subscribe("room").await.unwrap();
        let writer = Inbox::default();
        pubsub
            .subscribe_topic("writer", "room", writer.handler())
            .await
            .unwrap();
        let before = pubsub.stats();
        Fixture {
            pubsub,
            reader,
            writer,
            before,
        }
    }

    /// Nothing changed, and both existing subscriptions still deliver.
    async fn assert_untouched(mut self) {
        let engine = self.pubsub.engine();
        assert_eq!(self.pubsub.stats(), self.before, "stats changed");
        assert_eq!(engine.topic_count(), 1);
        assert_eq!(engine.session_count(), 2);
        for session in ["reader", "writer"] {
            let topics = engine.session_topics(session);
            assert_eq!(topics.len(), 1, "{session}'s topics");
            assert_eq!(topics[0], "room");
        }
        assert_eq!(self.pubsub.running_tasks(), 2);

        self.pubsub.broadcast("room", "still-here".into()).await.unwrap();
        let message = self.reader.try_recv().expect("the receiver still delivers");
        assert_eq!(message.payload(), "still-here");
        let writer = self.writer.clone();
        wait_until("the handler session to deliver", || {
            writer.payloads() == ["still-here"]
        })
        .await;
    }
}

/// Asserts `result` is an error whose `Display` is `expected`, and returns it.
#[track_caller]
fn rejected<T: std::fmt::Debug>(what: &str, result: Result<T, PubSubError>, expected: &str) -> PubSubError {
    match result {
        Err(error) => {
            assert_eq!(error.to_string(), expected, "{what}");
            error
        }
        Ok(value) => panic!("{what} accepted bad input: {value:?}"),
    }
}

/// What each operation that takes a topic returns for `topic`, named.
async fn topic_operations(f: &Fixture, topic: &str) -> Vec<(&'static str, Result<(), PubSubError>)> {
    let (pubsub, engine) = (&f.pubsub, f.pubsub.engine());
    vec![
        (
            "subscribe_topic",
            pubsub
                .subscribe_topic("writer", topic, Handler::new(|_, _| async {}))
                .await,
        ),
        (
            "unsubscribe_topic",
            pubsub.unsubscribe_topic("writer", topic).await,
        ),
        ("broadcast", pubsub.broadcast(topic, "m".into()).await),
        (
            "broadcast_from",
            pubsub.broadcast_from("writer", topic, "m".into()).await,
        ),
        (
            "engine broadcast",
            engine.broadcast(topic, "m".into()).await.map(drop),
        ),
        ("receiver subscribe", f.reader.subscribe(topic).await),
        ("receiver unsubscribe", f.reader.unsubscribe(topic)),
    ]
}

/// What each operation that takes a session id returns for `session_id`, named.
async fn session_id_operations(
    f: &Fixture,
    session_id: &str,
) -> Vec<(&'static str, Result<(), PubSubError>)> {
    let (pubsub, engine) = (&f.pubsub, f.pubsub.engine());
    vec![
        (
            "subscribe_topic",
            pubsub
                .subscribe_topic(session_id, "room", Handler::new(|_, _| async {}))
                .await,
        ),
        (
            "unsubscribe_topic",
            pubsub.unsubscribe_topic(session_id, "room").await,
        ),
        ("unsubscribe_all", pubsub.unsubscribe_all(session_id).await),
        (
            "broadcast_from",
            pubsub.broadcast_from(session_id, "room", "m".into()).await,
        ),
        (
            "engine broadcast_from",
            engine
                .broadcast_from(session_id, "room", "m".into())
                .await
                .map(drop),
        ),
        ("open_session", pubsub.open_session(session_id).map(drop)),
    ]
}

/// Asserts every result is rejected with `expected` as its `Display` and an error `is_expected`
/// accepts.
#[track_caller]
fn assert_each_rejected(
    results: Vec<(&str, Result<(), PubSubError>)>,
    expected: &str,
    is_expected: impl Fn(&PubSubError) -> bool,
) {
    for (what, result) in results {
        let error = rejected(what, result, expected);
        assert!(is_expected(&error), "{what}: {error:?}");
    }
}

#[tokio::test]
async fn empty_topic_is_rejected_by_every_operation() {
    let f = Fixture::new().await;
    let mut results = topic_operations(&f, "").await;
    results.insert(
        1,
        (
            "subscribe_topic (new session)",
            f.pubsub
                .subscribe_topic("new", "", Handler::new(|_, _| async {}))
                .await,
        ),
    );
    assert_each_rejected(results, "topic is empty", |error| {
        matches!(error, PubSubError::EmptyTopic)
    });

    f.assert_untouched().await;
}

#[tokio::test]
async fn topic_over_the_limit_is_rejected_naming_the_limit() {
    let f = Fixture::new().await;
    let long = "t".repeat(MAX_TOPIC + 1);
    let results = topic_operations(&f, &long).await;
    assert_each_rejected(results, "topic is 17 bytes; the limit is 16", |error| {
        matches!(error, PubSubError::TopicTooLong { len: 17, limit: 16 })
    });

    f.assert_untouched().await;
}

#[tokio::test]
async fn topic_limit_counts_bytes_not_characters() {
    let pubsub = InMemoryPubSub::with_config(small_limits()).unwrap();
    let mut reader = pubsub.open_session("reader").unwrap();
    // Eight two-byte characters: exactly the limit.
    let at_limit = "é".repeat(8);
    reader.subscribe(&at_limit).await.unwrap();
    pubsub.broadcast(&at_limit, "m".into()).await.unwrap();
    assert_eq!(reader.try_recv().unwrap().payload(), "m");

    let over = "é".repeat(9);
    rejected(
        "subscribe",
        reader.subscribe(&over).await,
        "topic is 18 bytes; the limit is 16",
    );
    assert_eq!(pubsub.engine().topic_count(), 1);
}

#[tokio::test]
async fn default_topic_limit_is_named_in_the_error() {
    let pubsub = InMemoryPubSub::new();
    let topic = "x".repeat(70_000);
    let error = rejected(
        "broadcast",
        pubsub.broadcast(&topic, "m".into()).await,
        "topic is 70000 bytes; the limit is 1024",
    );
    assert!(matches!(
        error,
        PubSubError::TopicTooLong {
            len: 70_000,
            limit: 1024
        }
    ));
    assert_eq!(pubsub.stats().published, 0);
}

#[tokio::test]
async fn payload_over_the_limit_is_rejected_naming_the_limit() {
    let f = Fixture::new().await;
    let (pubsub, engine) = (&f.pubsub, f.pubsub.engine());
    let big = Bytes::from(vec![b'p'; MAX_PAYLOAD + 1]);
    let expected = "payload is 33 bytes; the limit is 32";

    let results = vec![
        ("broadcast", pubsub.broadcast("room", big.clone()).await),
        (
            "broadcast_from",
            pubsub.broadcast_from("writer", "room", big.clone()).await,
        ),
        (
            "engine broadcast",
            engine.broadcast("room", big.clone()).await.map(drop),
        ),
        (
            "engine broadcast_from",
            engine
                .broadcast_from("writer", "room", big.clone())
                .await
                .map(drop),
        ),
    ];
    assert_each_rejected(results, expected, |error| {
        matches!(error, PubSubError::PayloadTooLarge { len: 33, limit: 32 })
    });
    // The JSON helpers check the encoded size: 40 characters and two quotes.
    let text = "j".repeat(40);
    let json_expected = "payload is 42 bytes; the limit is 32";
    rejected(
        "broadcast_json",
        pubsub.broadcast_json("room", &text).await,
        json_expected,
    );
    rejected(
        "broadcast_from_json",
        pubsub.broadcast_from_json("writer", "room", &text).await,
        json_expected,
    );

    f.assert_untouched().await;
}

#[tokio::test]
async fn payload_at_the_limit_and_empty_payload_are_accepted() {
    let pubsub = InMemoryPubSub::with_config(small_limits()).unwrap();
    let mut reader = pubsub.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();

    pubsub
        .broadcast("room", Bytes::from(vec![b'p'; MAX_PAYLOAD]))
        .await
        .unwrap();
    pubsub.broadcast("room", Bytes::new()).await.unwrap();

    assert_eq!(reader.try_recv().unwrap().payload().len(), MAX_PAYLOAD);
    assert!(reader.try_recv().unwrap().payload().is_empty());
}

#[tokio::test]
async fn empty_session_id_is_rejected_by_every_operation() {
    let f = Fixture::new().await;
    let results = session_id_operations(&f, "").await;
    assert_each_rejected(results, "session id is empty", |error| {
        matches!(error, PubSubError::EmptySessionId)
    });

    f.assert_untouched().await;
}

#[tokio::test]
async fn session_id_over_the_limit_is_rejected_naming_the_limit() {
    let f = Fixture::new().await;
    let long = "s".repeat(MAX_SESSION_ID + 1);
    let results = session_id_operations(&f, &long).await;
    assert_each_rejected(results, "session id is 9 bytes; the limit is 8", |error| {
        matches!(error, PubSubError::SessionIdTooLong { len: 9, limit: 8 })
    });

    f.assert_untouched().await;
}

#[tokio::test]
async fn session_pubsub_with_a_bad_session_id_fails_every_operation() {
    let provider: Arc<dyn PubSubProvider> = Arc::new(InMemoryPubSub::with_config(small_limits()).unwrap());
    for (session_id, expected) in [
        ("", "session id is empty"),
        ("ninebytes", "session id is 9 bytes; the limit is 8"),
    ] {
        let tab = SessionPubSub::new(Arc::clone(&provider), session_id);
        rejected(
            "subscribe",
            tab.subscribe("room", Handler::new(|_, _| async {})).await,
            expected,
        );
        rejected("unsubscribe", tab.unsubscribe("room").await, expected);
        rejected("unsubscribe_all", tab.unsubscribe_all().await, expected);
        rejected(
            "broadcast_from",
            tab.broadcast_from("room", "m".into()).await,
            expected,
        );
    }
    // Nothing was created or counted.
    assert_eq!(provider.stats(), StatsSnapshot::default());
}

// ----- mixing the two forms of a session -----

#[tokio::test]
async fn open_session_with_a_handler_session_id_is_rejected() {
    let f = Fixture::new().await;

    let error = rejected(
        "open_session",
        f.pubsub.open_session("writer").map(drop),
        "session id `writer` is already in use by a handler session",
    );
    match error {
        PubSubError::SessionIdInUse { session_id, existing } => {
            assert_eq!(session_id, "writer");
            assert_eq!(existing, SessionForm::Handler);
        }
        other => panic!("expected SessionIdInUse, got {other:?}"),
    }

    f.assert_untouched().await;
}

#[tokio::test]
async fn subscribe_topic_with_a_receiver_session_id_is_rejected() {
    let f = Fixture::new().await;

    let error = rejected(
        "subscribe_topic",
        f.pubsub
            .subscribe_topic("reader", "elsewhere", Handler::new(|_, _| async {}))
            .await,
        "session id `reader` is already in use by a receiver session",
    );
    assert!(matches!(
        error,
        PubSubError::SessionIdInUse {
            existing: SessionForm::Receiver,
            ..
        }
    ));

    // No topic was created for the rejected subscription.
    f.assert_untouched().await;
}

#[tokio::test]
async fn second_receiver_for_a_live_id_is_rejected() {
    let f = Fixture::new().await;

    let error = rejected(
        "open_session",
        f.pubsub.open_session("reader").map(drop),
        "session id `reader` is already in use by a receiver session",
    );
    assert!(matches!(
        error,
        PubSubError::SessionIdInUse {
            existing: SessionForm::Receiver,
            ..
        }
    ));

    f.assert_untouched().await;
}

// ----- no runtime -----

/// Polls `future` once, on the calling thread, with a waker that does nothing.
fn poll_once<F: Future + ?Sized>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn subscribe_topic_outside_a_runtime_returns_no_runtime() {
    assert!(tokio::runtime::Handle::try_current().is_err());
    let pubsub = InMemoryPubSub::new();

    let mut subscribe = pubsub.subscribe_topic("s", "room", Handler::new(|_, _| async {}));
    let outcome = poll_once(subscribe.as_mut());

    match outcome {
        Poll::Ready(Err(error @ PubSubError::NoRuntime)) => assert_eq!(
            error.to_string(),
            "no tokio runtime is running: handler sessions need one for their task"
        ),
        Poll::Ready(other) => panic!("expected NoRuntime, got {other:?}"),
        Poll::Pending => panic!("subscribe_topic waited instead of failing"),
    }
    drop(subscribe);
    assert_eq!(pubsub.engine().session_count(), 0);
    assert_eq!(pubsub.engine().topic_count(), 0);
    assert_eq!(pubsub.stats(), StatsSnapshot::default());
    assert_eq!(pubsub.running_tasks(), 0);
}

#[test]
fn pull_sessions_work_outside_a_runtime() {
    let pubsub = InMemoryPubSub::new();
    let mut reader = pubsub.open_session("reader").unwrap();
    // In one process a pull-form subscribe is done when first polled.
    {
        let subscribe = std::pin::pin!(reader.subscribe("room"));
        assert!(matches!(poll_once(subscribe), Poll::Ready(Ok(()))));
    }

    let mut broadcast = pubsub.broadcast("room", "m".into());
    assert!(matches!(poll_once(broadcast.as_mut()), Poll::Ready(Ok(()))));

    assert_eq!(reader.try_recv().unwrap().payload(), "m");
}
