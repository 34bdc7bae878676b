//! `RecordingPubSub`: records every call, successful or not, and still delivers.

use std::sync::Arc;

use fanout::{Bytes, Call, Config, PubSubError, PubSubProvider, RecordingPubSub, SessionPubSub};

mod support;

use support::{wait_until, Inbox};

fn subscribed(session_id: &str, topic: &str, ok: bool) -> Call {
    Call::Subscribed {
        session_id: session_id.into(),
        topic: topic.into(),
        ok,
    }
}

fn broadcast(topic: &str, message: &'static str, from: Option<&str>, ok: bool) -> Call {
    Call::Broadcast {
        topic: topic.into(),
        message: Bytes::from_static(message.as_bytes()),
        from: from.map(Into::into),
        acknowledged: false,
        ok,
    }
}

/// `call`, made by an acknowledged broadcast.
fn acknowledged(mut call: Call) -> Call {
    if let Call::Broadcast { acknowledged, .. } = &mut call {
        *acknowledged = true;
    }
    call
}

#[tokio::test]
async fn records_every_call_in_order() {
    let pubsub = RecordingPubSub::new();
    pubsub.start().await.unwrap();
    pubsub
        .subscribe_topic("s1", "room", Inbox::default().handler())
        .await
        .unwrap();
    pubsub
        .subscribe_topic("s2", "room", Inbox::default().handler())
        .await
        .unwrap();
    pubsub.broadcast("room", "a".into()).await.unwrap();
    pubsub.broadcast_from("s1", "room", "b".into()).await.unwrap();
    pubsub.broadcast_acknowledged("room", "c".into()).await.unwrap();
    pubsub
        .broadcast_from_acknowledged("s2", "room", "d".into())
        .await
        .unwrap();
    pubsub.unsubscribe_topic("s1", "room").await.unwrap();
    pubsub.unsubscribe_all("s2").await.unwrap();
    pubsub.stop().await.unwrap();

    assert_eq!(
        pubsub.calls(),
        vec![
            Call::Started { ok: true },
            subscribed("s1", "room", true),
            subscribed("s2", "room", true),
            broadcast("room", "a", None, true),
            broadcast("room", "b", Some("s1"), true),
            acknowledged(broadcast("room", "c", None, true)),
            acknowledged(broadcast("room", "d", Some("s2"), true)),
            Call::Unsubscribed {
                session_id: "s1".into(),
                topic: "room".into(),
                ok: true,
            },
            Call::UnsubscribedAll {
                session_id: "s2".into(),
                ok: true,
            },
            Call::Stopped { ok: true },
        ]
    );
}

#[tokio::test]
async fn helpers_list_successful_calls() {
    let pubsub = RecordingPubSub::new();
    assert!(!pubsub.started());
    assert!(!pubsub.stopped());
    pubsub.start().await.unwrap();
    let inbox = Inbox::default();
    pubsub.subscribe_topic("s1", "a", inbox.handler()).await.unwrap();
    pubsub.subscribe_topic("s1", "b", inbox.handler()).await.unwrap();
    pubsub.subscribe_topic("s2", "a", inbox.handler()).await.unwrap();
    pubsub.broadcast("a", "one".into()).await.unwrap();
    pubsub.broadcast_from("s2", "b", "two".into()).await.unwrap();
    pubsub.unsubscribe_topic("s1", "b").await.unwrap();
    pubsub.unsubscribe_all("s2").await.unwrap();

    assert!(pubsub.started());
    assert!(!pubsub.stopped());
    let subscriptions: Vec<(String, String)> = pubsub
        .subscriptions()
        .into_iter()
        .map(|(s, t)| (s, t.to_string()))
        .collect();
    assert_eq!(
        subscriptions,
        [("s1", "a"), ("s1", "b"), ("s2", "a")].map(|(s, t)| (s.to_string(), t.to_string()))
    );
    let unsubscriptions = pubsub.unsubscriptions();
    assert_eq!(unsubscriptions.len(), 1);
    assert_eq!(unsubscriptions[0].0, "s1");
    assert_eq!(unsubscriptions[0].1, "b");
    assert_eq!(
        pubsub.broadcasts(),
        vec![("a".into(), "one".into()), ("b".into(), "two".into())]
    );

    pubsub.stop().await.unwrap();
    assert!(pubsub.stopped());
}

#[tokio::test]
async fn failed_calls_are_recorded_with_ok_false() {
    let pubsub = RecordingPubSub::new();
    pubsub.start().await.unwrap();

    assert!(matches!(
        pubsub.broadcast("", "x".into()).await,
        Err(PubSubError::EmptyTopic)
    ));
    assert!(matches!(
        pubsub
            .subscribe_topic("", "room", Inbox::default().handler())
            .await,
        Err(PubSubError::EmptySessionId)
    ));
    assert!(pubsub.unsubscribe_topic("s", "").await.is_err());
    assert!(pubsub.unsubscribe_all("").await.is_err());
    assert!(pubsub.broadcast_from("", "room", "y".into()).await.is_err());

    assert_eq!(
        pubsub.calls(),
        vec![
            Call::Started { ok: true },
            broadcast("", "x", None, false),
            subscribed("", "room", false),
            Call::Unsubscribed {
                session_id: "s".into(),
                topic: "".into(),
                ok: false,
            },
            Call::UnsubscribedAll {
                session_id: "".into(),
                ok: false,
            },
            broadcast("room", "y", Some(""), false),
        ]
    );
    // The helpers list successful calls only.
    assert!(pubsub.subscriptions().is_empty());
    assert!(pubsub.unsubscriptions().is_empty());
    assert!(pubsub.broadcasts().is_empty());
}

#[tokio::test]
async fn start_after_stop_is_recorded_as_failed() {
    let pubsub = RecordingPubSub::new();
    pubsub.stop().await.unwrap();
    assert!(matches!(pubsub.start().await, Err(PubSubError::Stopped)));
    pubsub.stop().await.unwrap();

    assert_eq!(
        pubsub.calls(),
        vec![
            Call::Stopped { ok: true },
            Call::Started { ok: false },
            Call::Stopped { ok: true },
        ]
    );
    assert!(!pubsub.started());
    assert!(pubsub.stopped());
}

#[tokio::test]
async fn recording_still_delivers() {
    let pubsub = RecordingPubSub::new();
    pubsub.start().await.unwrap();
    let (alice, bob) = (Inbox::default(), Inbox::default());
    pubsub
        .subscribe_topic("alice", "room", alice.handler())
        .await
        .unwrap();
    pubsub
        .subscribe_topic("bob", "room", bob.handler())
        .await
        .unwrap();

    pubsub.broadcast("room", "to-all".into()).await.unwrap();
    pubsub
        .broadcast_from("alice", "room", "from-alice".into())
        .await
        .unwrap();

    wait_until("both deliveries", || alice.len() == 1 && bob.len() == 2).await;
    assert_eq!(alice.payloads(), ["to-all"]);
    assert_eq!(bob.payloads(), ["to-all", "from-alice"]);
    let stats = pubsub.stats();
    assert_eq!(stats, pubsub.inner().stats());
    assert_eq!((stats.published, stats.delivered), (2, 3));
}

#[tokio::test]
async fn clear_forgets_records_but_keeps_subscriptions() {
    let pubsub = RecordingPubSub::new();
    pubsub.start().await.unwrap();
    let inbox = Inbox::default();
    pubsub
        .subscribe_topic("s", "room", inbox.handler())
        .await
        .unwrap();
    pubsub.broadcast("room", "before".into()).await.unwrap();

    pubsub.clear();

    assert!(pubsub.calls().is_empty());
    assert!(pubsub.subscriptions().is_empty());
    assert!(!pubsub.started());
    assert_eq!(pubsub.inner().engine().session_topics("s").len(), 1);
    pubsub.broadcast("room", "after".into()).await.unwrap();
    wait_until("both deliveries", || inbox.len() == 2).await;
    assert_eq!(inbox.payloads(), ["before", "after"]);
    assert_eq!(pubsub.calls(), vec![broadcast("room", "after", None, true)]);
}

#[tokio::test]
async fn records_calls_made_through_session_pubsub() {
    let pubsub = Arc::new(RecordingPubSub::new());
    let provider: Arc<dyn PubSubProvider> = pubsub.clone();
    let tab = SessionPubSub::new(provider, "tab-1");

    tab.subscribe("room", Inbox::default().handler()).await.unwrap();
    tab.broadcast_from("room", "hi".into()).await.unwrap();
    tab.broadcast_acknowledged("room", "all".into()).await.unwrap();
    tab.broadcast_from_acknowledged("room", "others".into())
        .await
        .unwrap();
    tab.unsubscribe("room").await.unwrap();
    tab.unsubscribe_all().await.unwrap();

    assert_eq!(
        pubsub.calls(),
        vec![
            subscribed("tab-1", "room", true),
            broadcast("room", "hi", Some("tab-1"), true),
            acknowledged(broadcast("room", "all", None, true)),
            acknowledged(broadcast("room", "others", Some("tab-1"), true)),
            Call::Unsubscribed {
                session_id: "tab-1".into(),
                topic: "room".into(),
                ok: true,
            },
            Call::UnsubscribedAll {
                session_id: "tab-1".into(),
                ok: true,
            },
        ]
    );
}

#[test]
fn with_config_applies_and_validates_the_config() {
    let pubsub = RecordingPubSub::with_config(Config::default().with_capacity(7)).unwrap();
    assert_eq!(pubsub.inner().engine().config().capacity, 7);

    let error = RecordingPubSub::with_config(Config::default().with_capacity(0)).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("capacity"));
}
