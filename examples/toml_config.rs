//! A config file with per-prefix overrides, and each policy at work on a slow session.
//!
//! Loads `examples/fanout.toml` (or the file given as the first argument): a mailbox of 8,
//! `drop_oldest` by default, `drop_newest` with `max_queued = 4` for `presence:` topics, and
//! `block` for 50 ms then `disconnect` for `orders:` topics, with size limits. A session that
//! reads nothing meets each policy in turn, and the stats count the drops by reason.
//!
//! ```text
//! cargo run --example toml_config
//! ```

use std::time::Instant;

use fanout::{Config, InMemoryPubSub, PubSubProvider};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Display, not Debug: the config error names the file, line, column and key.
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fanout.toml").into());
    let config = Config::from_toml_file(&path)?;
    let shown = path
        .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/"))
        .unwrap_or(&path);
    println!(
        "loaded {shown}: capacity {}, default policy {}",
        config.capacity,
        config.policy.name()
    );
    for o in &config.overrides {
        let policy = o.policy.map_or("(default)", |p| p.name());
        let max_queued = o.max_queued.map_or("capacity".to_string(), |m| m.to_string());
        println!(
            "  override {:<10} policy {policy}, admits up to {max_queued}",
            o.prefix
        );
    }

    let pubsub = InMemoryPubSub::with_config(config)?;
    pubsub.start().await?;

    // A tab whose socket stalled: subscribed to three topics, it reads nothing.
    let mut slow = pubsub.open_session("tab-slow")?;
    for topic in ["presence:lobby", "ticker:eur", "orders:42"] {
        slow.subscribe(topic).await?;
    }

    for n in 0..6 {
        pubsub
            .broadcast("presence:lobby", format!("user {n} online").into())
            .await?;
    }
    let dropped = pubsub.stats().dropped;
    println!(
        "6 on presence:lobby -> {} queued, {} refused by drop_newest (max_queued 4)",
        slow.queued(),
        dropped.drop_newest
    );

    for n in 0..10 {
        pubsub.broadcast("ticker:eur", format!("eur {n}").into()).await?;
    }
    let dropped = pubsub.stats().dropped;
    println!(
        "10 on ticker:eur     -> {} queued, {} oldest evicted by drop_oldest",
        slow.queued(),
        dropped.drop_oldest
    );

    let started = Instant::now();
    pubsub.broadcast("orders:42", "order 42 shipped".into()).await?;
    println!(
        "1 on orders:42       -> the broadcast waited {} ms, then disconnected the session: {:?}",
        started.elapsed().as_millis(),
        slow.close_reason()
    );
    match slow.recv().await {
        Ok(message) => println!("the slow session still received {message:?}"),
        Err(closed) => println!("the slow session's next recv: {closed}"),
    }

    let too_big = vec![b'x'; 2000];
    let refused = pubsub.broadcast("ticker:eur", too_big.into()).await;
    println!("a 2000-byte payload: {}", refused.unwrap_err());

    let stats = pubsub.stats();
    let d = stats.dropped;
    println!(
        "stats: {} published; dropped: {} drop_newest, {} drop_oldest, {} slow_consumer \
         (the disconnected session's queue and the message it had no room for); \
         {} disconnect, {} block wait(s), {} timed out",
        stats.published,
        d.drop_newest,
        d.drop_oldest,
        d.slow_consumer,
        stats.disconnects,
        stats.block_waits,
        stats.block_timeouts
    );
    pubsub.stop().await?;
    Ok(())
}
