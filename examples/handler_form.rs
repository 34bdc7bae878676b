//! The handler form: sessions subscribe handlers to topics; a broadcast runs every subscribed
//! session's handler, one message at a time per session, in publish order.
//!
//! Three browser tabs (sessions) on two rooms (topics): a broadcast, a `broadcast_from` that
//! skips its sender, the provider's stats, then one tab closing (`unsubscribe_all`) and the
//! provider stopping.
//!
//! ```text
//! cargo run --example handler_form
//! ```

use std::time::Duration;

use fanout::{Handler, InMemoryPubSub, PubSubProvider};
use tokio::sync::mpsc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), fanout::PubSubError> {
    let pubsub = InMemoryPubSub::new();
    pubsub.start().await?;

    // Each handler "renders" by sending a line to this channel, so main can print and count.
    let (rendered, mut renders) = mpsc::unbounded_channel::<String>();
    let subscriptions = [
        ("tab-alice", "room:lobby"),
        ("tab-bob", "room:lobby"),
        ("tab-bob", "room:rust"),
        ("tab-carol", "room:rust"),
    ];
    for (session, topic) in subscriptions {
        let rendered = rendered.clone();
        let handler = Handler::new(move |topic, message| {
            let rendered = rendered.clone();
            async move {
                let text = String::from_utf8_lossy(&message).into_owned();
                let _ = rendered.send(format!("  {session:<9} got {topic}: {text}"));
            }
        });
        pubsub.subscribe_topic(session, topic, handler).await?;
    }
    println!("subscribed: alice and bob to room:lobby, bob and carol to room:rust");

    println!("broadcast on room:lobby (every subscriber):");
    pubsub.broadcast("room:lobby", "welcome!".into()).await?;
    print_renders(&mut renders, 2).await;

    println!("broadcast_from tab-bob on room:rust (everyone but bob):");
    pubsub
        .broadcast_from("tab-bob", "room:rust", "bob: hi carol".into())
        .await?;
    print_renders(&mut renders, 1).await;

    let stats = pubsub.stats();
    println!(
        "stats: {} published, {} delivered, {} sessions, {} topics, {} subscriptions",
        stats.published, stats.delivered, stats.sessions, stats.topics, stats.subscriptions
    );

    // Bob closes his tab: every subscription of his session goes at once.
    pubsub.unsubscribe_all("tab-bob").await?;
    pubsub.broadcast("room:lobby", "bob left".into()).await?;
    println!("after unsubscribe_all(tab-bob), a broadcast on room:lobby reaches only alice:");
    print_renders(&mut renders, 1).await;
    let stats = pubsub.stats();
    println!(
        "stats: {} sessions, {} subscriptions",
        stats.sessions, stats.subscriptions
    );

    pubsub.stop().await?;
    let refused = pubsub.broadcast("room:lobby", "anyone?".into()).await;
    println!("after stop, broadcast returns: {refused:?}");
    Ok(())
}

/// Prints the next `count` renders, failing loudly if one does not come.
async fn print_renders(renders: &mut mpsc::UnboundedReceiver<String>, count: usize) {
    let mut lines = Vec::with_capacity(count);
    for _ in 0..count {
        let line = tokio::time::timeout(Duration::from_secs(1), renders.recv())
            .await
            .expect("a render within a second")
            .expect("the handlers hold the sender");
        lines.push(line);
    }
    // Sessions run concurrently with each other, so sort for a stable printout.
    lines.sort();
    for line in lines {
        println!("{line}");
    }
    // Nothing more than expected arrived (no echo to the broadcast_from sender, no delivery
    // after unsubscribe_all).
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(renders.try_recv().is_err(), "an unexpected render");
}
