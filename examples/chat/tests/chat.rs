//! The chat server driven by websocket clients on loopback, as browser tabs would.

mod support;

use std::time::Duration;

use fanout::{Config, OverflowPolicy};
use fanout_chat::{Chat, ServerEvent};
use support::{eventually, in_memory, serve, Received, Server, Tab, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn page_is_served() {
    let server = in_memory().await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("the page in time")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("content-type: text/html"), "{response}");
    assert!(response.contains("<title>fanout chat</title>"));
    assert!(response.contains("new WebSocket("));
}

#[tokio::test]
async fn two_tabs_in_one_room_see_each_other_without_echo() {
    let server = in_memory().await;
    let mut alice = Tab::join(&server, "lobby", "alice").await;
    let mut bob = Tab::join(&server, "lobby", "bob").await;
    assert_ne!(alice.session, bob.session);

    alice.send("hi bob").await;
    assert_eq!(bob.next_message().await, ("alice".into(), "hi bob".into()));
    bob.send("hi alice").await;
    // Had alice's own message come back, it would be first in her session's mailbox.
    assert_eq!(alice.next_message().await, ("bob".into(), "hi alice".into()));
    alice.expect_nothing(Duration::from_millis(100)).await;
    bob.expect_nothing(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_tab_in_another_room_receives_nothing() {
    let server = in_memory().await;
    let mut alice = Tab::join(&server, "lobby", "alice").await;
    let mut bob = Tab::join(&server, "lobby", "bob").await;
    let mut carol = Tab::join(&server, "kitchen", "carol").await;
    let mut dave = Tab::join(&server, "kitchen", "dave").await;

    alice.send("for the lobby only").await;
    // Bob has it: the broadcast has reached every subscriber of the lobby.
    assert_eq!(bob.next_message().await.1, "for the lobby only");
    dave.send("marker").await;
    assert_eq!(carol.next_message().await, ("dave".into(), "marker".into()));
    carol.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn closed_tab_leaves_no_session_behind() {
    let server = in_memory().await;
    let chat = &server.chat;
    let alice = Tab::join(&server, "lobby", "alice").await;
    let mut bob = Tab::join(&server, "lobby", "bob").await;
    let stats = chat.stats();
    assert_eq!((stats.sessions, stats.subscriptions, stats.topics), (2, 2, 1));

    alice.close().await;
    eventually("alice's session is gone", || chat.stats().sessions == 1).await;
    assert_eq!(chat.stats().subscriptions, 1);
    // Bob's session is untouched.
    let mut carol = Tab::join(&server, "lobby", "carol").await;
    carol.send("still here?").await;
    assert_eq!(bob.next_message().await.1, "still here?");

    // A tab that vanishes without a close handshake counts as closed too.
    drop(bob);
    carol.close().await;
    eventually("every session is gone", || {
        let s = chat.stats();
        (s.sessions, s.subscriptions, s.topics) == (0, 0, 0)
    })
    .await;
}

#[tokio::test]
async fn bad_join_is_refused() {
    let server = in_memory().await;
    let long_room = "r".repeat(fanout_chat::MAX_ROOM_CHARS + 1);
    let url = format!("ws://{}/ws?room={long_room}&name=alice", server.addr);
    let refused = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer in time");
    assert!(refused.is_err(), "a room name over the limit is refused");
    assert_eq!(server.chat.stats().sessions, 0);
}

/// A server with mailboxes of 2 under `policy`, with Alice, and Bob, who reads nothing through a
/// small receive buffer: the server's writes to him stall, his handler with them, and his
/// mailbox fills.
async fn slow_room(policy: OverflowPolicy) -> (Server, Tab, Tab) {
    let config = Config::default().with_capacity(2).with_policy(policy);
    let server = serve(Chat::in_memory(config).await.unwrap()).await;
    let alice = Tab::join(&server, "lobby", "alice").await;
    let bob = Tab::join_with_receive_buffer(&server, "lobby", "bob", Some(4096)).await;
    (server, alice, bob)
}

/// `tab` sends messages of the largest size, 100 at a time, until `done` holds; returns how
/// many it sent.
async fn send_until(tab: &mut Tab, what: &str, done: impl Fn() -> bool) -> u64 {
    let text = "x".repeat(fanout_chat::MAX_TEXT_CHARS);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut sent = 0;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        for _ in 0..100 {
            tab.send(&text).await;
        }
        sent += 100;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sent
}

#[tokio::test]
async fn slow_tab_is_disconnected_with_a_reason() {
    let (server, mut alice, mut bob) = slow_room(OverflowPolicy::Disconnect).await;
    let chat = &server.chat;
    send_until(&mut alice, "bob is disconnected", || chat.stats().disconnects > 0).await;
    eventually("bob's session is gone", || chat.stats().sessions == 1).await;
    assert!(chat.stats().dropped.slow_consumer > 0);

    // Bob reads what had reached him, then the close frame that says why.
    let frame = loop {
        match bob.receive().await {
            Received::Event(_) => continue,
            Received::Closed(frame) => break frame.expect("a close frame"),
        }
    };
    assert_eq!(u16::from(frame.code), 1013);
    assert!(frame.reason.contains("slow consumer"), "{}", frame.reason);
    // Alice goes on.
    let mut carol = Tab::join(&server, "lobby", "carol").await;
    carol.send("still on").await;
    assert_eq!(alice.next_message().await.1, "still on");
}

#[tokio::test]
async fn slow_tab_is_told_what_it_missed() {
    let (server, mut alice, mut bob) = slow_room(OverflowPolicy::DropOldest).await;
    let chat = &server.chat;
    let mut sent = send_until(&mut alice, "a message is evicted", || {
        chat.stats().dropped.drop_oldest > 0
    })
    .await;
    alice.send("last").await;
    sent += 1;

    // Every message reaches bob or is counted in a `missed` event before the next one he gets.
    let (mut received, mut missed) = (0, 0);
    loop {
        match bob.next_event().await {
            ServerEvent::Missed { count } => missed += count,
            ServerEvent::Message { text, .. } => {
                received += 1;
                if text == "last" {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(missed > 0);
    assert_eq!(received + missed, sent);
    assert_eq!(chat.stats().dropped.drop_oldest, missed);
    assert_eq!(
        chat.stats().sessions,
        2,
        "drop_oldest keeps the slow tab connected"
    );
}
