//! The pull form: a session is a receiver the caller reads, here in a consumer loop that takes
//! each burst with `recv_many` and re-renders once per burst, not once per message.
//!
//! The mailbox holds 8 messages under `drop_oldest`: 20 updates arrive before the consumer
//! runs, the 12 oldest are evicted, and the first message it then receives says how many were
//! missed before it (`missed_before`).
//!
//! As in a websocket server, the socket's reader task changes the session's topics through a
//! `SessionHandle` while the writer (the consumer) waits for messages: it subscribes to a
//! second topic, and closes the session when the socket closes.
//!
//! ```text
//! cargo run --example pull_form
//! ```

use fanout::{Config, InMemoryPubSub, Message, OverflowPolicy, PubSubProvider};
use tokio::sync::mpsc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::default()
        .with_capacity(8)
        .with_policy(OverflowPolicy::DropOldest);
    let pubsub = InMemoryPubSub::with_config(config)?;
    pubsub.start().await?;

    let mut session = pubsub.open_session("tab-1")?;
    let handle = session.handle();
    session.subscribe("counter:42").await?;
    println!("tab-1 subscribed to counter:42 (mailbox of 8, drop_oldest)");

    // A burst of 20 before the consumer runs: the mailbox keeps the newest 8.
    for n in 1..=20 {
        pubsub
            .broadcast("counter:42", format!("count={n}").into())
            .await?;
    }
    println!("published count=1..=20");

    // The consumer: one task per session, one render per burst, until the session closes.
    let (rendered, mut renders) = mpsc::unbounded_channel::<()>();
    let consumer = tokio::spawn(async move {
        let mut buffer: Vec<Message> = Vec::new();
        let mut render = 0;
        let closed = loop {
            match session.recv_many(&mut buffer, 16).await {
                Ok(taken) => {
                    render += 1;
                    let missed: u64 = buffer.iter().map(Message::missed_before).sum();
                    let latest = buffer.last().expect("recv_many took at least one");
                    println!(
                        "  render {render}: {taken} message(s), {missed} missed before them, shows {} {}",
                        latest.topic(),
                        String::from_utf8_lossy(latest.payload())
                    );
                    buffer.clear();
                    let _ = rendered.send(());
                }
                Err(closed) => break closed,
            }
        };
        println!("  consumer ends: {closed}");
    });

    renders.recv().await;

    // The socket's reader: the client asks for a second counter while the consumer waits.
    let reader = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.subscribe("counter:7").await })
    };
    reader.await??;
    println!(
        "the socket's reader subscribed tab-1 to counter:7 ({} topics)",
        handle.topics().len()
    );

    for n in 21..=23 {
        pubsub
            .broadcast("counter:42", format!("count={n}").into())
            .await?;
    }
    pubsub.broadcast("counter:7", "count=1".into()).await?;
    println!("published counter:42 count=21..=23, counter:7 count=1");
    renders.recv().await;

    // The socket closed: its reader closes the session, which ends the consumer's loop.
    handle.close();
    consumer.await?;

    let stats = pubsub.stats();
    println!(
        "stats: {} published, {} delivered, {} dropped by drop_oldest",
        stats.published, stats.delivered, stats.dropped.drop_oldest
    );
    pubsub.stop().await?;
    Ok(())
}
