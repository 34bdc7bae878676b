//! A real fanout job on the in-memory default: handler-form sessions, several topics, one
//! publisher per core, every delivery accounted for. Prints throughput and the stats snapshot.
//!
//! ```text
//! cargo run --release --example fanout_job -- [sessions] [topics] [topics_per_session] [messages]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout::{Config, Handler, InMemoryPubSub, OverflowPolicy, PubSubProvider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sessions = args.first().copied().unwrap_or(10_000);
    let topics = args.get(1).copied().unwrap_or(1_000).max(1);
    let per_session = args.get(2).copied().unwrap_or(5).min(topics);
    let messages = args.get(3).copied().unwrap_or(20_000);

    let config = Config::default()
        .with_capacity(1024)
        .with_policy(OverflowPolicy::DropOldest);
    let pubsub = Arc::new(InMemoryPubSub::with_config(config)?);
    pubsub.start().await?;

    let delivered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    for s in 0..sessions {
        for k in 0..per_session {
            let topic = format!("room:{}", (s * 7 + k * 13) % topics);
            let delivered = Arc::clone(&delivered);
            let handler = Handler::new(move |_topic, _message| {
                delivered.fetch_add(1, Ordering::Relaxed);
                async {}
            });
            pubsub
                .subscribe_topic(&format!("session-{s}"), &topic, handler)
                .await?;
        }
    }
    let subscribe_time = started.elapsed();

    let publishers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let pubsub = Arc::clone(&pubsub);
        tasks.push(tokio::spawn(async move {
            for i in (p..messages).step_by(publishers) {
                let topic = format!("room:{}", (i * 31) % topics);
                pubsub
                    .broadcast(&topic, "{\"render\":true}".into())
                    .await
                    .expect("broadcast");
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let publish_time = started.elapsed();

    // Wait until every recipient has been delivered to or counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = pubsub.stats();
        if stats.delivered + stats.dropped.total() >= stats.recipients || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total_time = started.elapsed();
    let stats = pubsub.stats();
    pubsub.stop().await?;

    println!("sessions {sessions}, topics {topics}, topics/session {per_session}, messages {messages}, publishers {publishers}");
    println!(
        "subscribed {} subscriptions in {:.1?}",
        sessions * per_session,
        subscribe_time
    );
    println!("published in {publish_time:.1?}; all delivered in {total_time:.1?}");
    println!(
        "deliveries: {} handler calls ({:.0}/s), dropped {:?}",
        delivered.load(Ordering::Relaxed),
        stats.delivered as f64 / total_time.as_secs_f64(),
        stats.dropped
    );
    println!("stats: {stats:?}");
    assert_eq!(
        stats.recipients,
        stats.delivered + stats.dropped.total(),
        "every delivery accounted for"
    );
    Ok(())
}
