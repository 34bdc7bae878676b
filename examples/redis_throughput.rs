//! Cross-instance throughput and latency through Redis, measured in the same run as
//! `redis-benchmark` publishing to the same server with pipelining.
//!
//! Two `RedisPubSub` instances ("servers") on one Redis: publishers on the first broadcast,
//! one session on the second receives. Messages per second counts messages *received on the
//! other instance*; redis-benchmark counts `PUBLISH` commands the server answered (to a channel
//! nobody subscribes to, so Redis does less work per message there than for us).
//!
//! ```sh
//! cargo run --release --features redis --example redis_throughput
//! # REDIS_URL=redis://host:port/ to point elsewhere; MESSAGES=… PUBLISHERS=… PAYLOAD=… to vary
//! ```

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout::envelope::{single_encoded_len, Record};
use fanout::redis::{RedisConfig, RedisPubSub};
use fanout::{Config, Handler, PubSubProvider};

const TOPIC: &str = "bench:room";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let messages = env_or("MESSAGES", 1_000_000);
    let publishers = env_or("PUBLISHERS", 4);
    let payload_bytes = env_or("PAYLOAD", 64).max(16);
    let redis = RedisConfig::from_env();
    let client = redis::Client::open(redis.url.as_str())?;
    let addr = client.get_connection_info().addr().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "6379"));

    let prefix = format!("fanout-bench:{}:", std::process::id());
    // The size of one message as an envelope of its own: what redis-benchmark publishes.
    let envelope_bytes = single_encoded_len(
        TOPIC,
        &Record {
            sender: None,
            payload: &vec![0; payload_bytes],
        },
    );

    // ---- redis-benchmark, same server, same message size, pipelined ----
    let pipeline = 16;
    let benchmark_messages = messages.max(200_000);
    let output = Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-q", "-P", &pipeline.to_string()])
        .args(["-n", &benchmark_messages.to_string()])
        .args(["publish", "fanout-bench:nobody", &"x".repeat(envelope_bytes)])
        .output();
    let benchmark_rate = match output {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let last = text.rsplit('\r').next().unwrap_or("").trim().to_string();
            let rate = last
                .split(" requests per second")
                .next()
                .and_then(|head| head.rsplit(' ').next())
                .and_then(|n| n.parse::<f64>().ok());
            let last = format!("{:.0} requests per second", rate.unwrap_or(0.0));
            println!("redis-benchmark -P {pipeline} -n {benchmark_messages} publish <{envelope_bytes}-byte message>: {last}");
            rate
        }
        Err(error) => {
            println!("redis-benchmark could not run ({error}); no baseline");
            None
        }
    };

    // ---- two instances ----
    let config = Config::default().with_capacity(fanout::MAX_CAPACITY);
    let a = Arc::new(RedisPubSub::with_config(
        redis.clone().with_channel_prefix(&prefix),
        config.clone(),
    )?);
    let b = Arc::new(RedisPubSub::with_config(
        redis.clone().with_channel_prefix(&prefix),
        config,
    )?);
    a.start().await?;
    b.start().await?;
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(messages / 64 + 1024)));
    let (count, samples) = (Arc::clone(&received), Arc::clone(&latencies));
    b.subscribe_topic(
        "receiver",
        TOPIC,
        Handler::new(move |_topic, message: Bytes| {
            let n = count.fetch_add(1, Relaxed);
            if n % 64 == 0 {
                let sent = u64::from_be_bytes(message[..8].try_into().unwrap());
                let now = epoch.elapsed().as_nanos() as u64;
                samples.lock().unwrap().push(now.saturating_sub(sent));
            }
            async {}
        }),
    )
    .await?;

    // ---- unloaded latency: one message at a time ----
    let mut one_way = Vec::new();
    for _ in 0..2_000 {
        let before = received.load(Relaxed);
        let sent = Instant::now();
        a.broadcast(TOPIC, stamped(epoch, payload_bytes)).await?;
        while received.load(Relaxed) == before {
            tokio::task::yield_now().await;
        }
        one_way.push(sent.elapsed().as_nanos() as u64);
    }
    received.store(0, Relaxed);
    latencies.lock().unwrap().clear();

    // ---- throughput ----
    let per_publisher = messages / publishers;
    let total = (per_publisher * publishers) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let a = Arc::clone(&a);
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_publisher {
                a.broadcast(TOPIC, stamped(epoch, payload_bytes)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let published_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let got = received.load(Relaxed);
    let rate = got as f64 / elapsed.as_secs_f64();

    let (stats_a, stats_b) = (a.redis_stats(), b.redis_stats());
    a.stop().await?;
    b.stop().await?;

    println!();
    println!(
        "fanout RedisPubSub, 2 instances, {publishers} publishers on one, 1 session on the other, {payload_bytes}-byte payloads ({envelope_bytes}-byte envelopes):"
    );
    println!(
        "  {got} of {total} messages received on the other instance in {:.3} s (published in {:.3} s): {:.0} messages/s",
        elapsed.as_secs_f64(),
        published_in.as_secs_f64(),
        rate
    );
    let mut loaded = latencies.lock().unwrap().clone();
    println!(
        "  latency under that load (send to handler, every 64th): {}",
        percentiles(&mut loaded)
    );
    println!(
        "  latency unloaded (one message at a time, 2000): {}",
        percentiles(&mut one_way)
    );
    println!(
        "  redis side: published {} in {} PUBLISH ({:.1} per envelope; errors {}), received {} (malformed {}), outages {} / {}",
        stats_a.published,
        stats_a.envelopes_published,
        stats_a.published as f64 / stats_a.envelopes_published.max(1) as f64,
        stats_a.publish_errors,
        stats_b.received,
        stats_b.malformed,
        stats_a.publisher_outages,
        stats_b.outages
    );
    if let Some(baseline) = benchmark_rate {
        println!();
        println!(
            "ratio: {:.0} / {:.0} = {:.0}% of redis-benchmark's PUBLISH rate",
            rate,
            baseline,
            100.0 * rate / baseline
        );
    }
    Ok(())
}

/// A payload whose first 8 bytes are the send time, in nanoseconds since `epoch`.
fn stamped(epoch: Instant, len: usize) -> Bytes {
    let mut payload = vec![b'x'; len];
    payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
    Bytes::from(payload)
}

fn percentiles(samples: &mut [u64]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let at = |q: f64| Duration::from_nanos(samples[((samples.len() - 1) as f64 * q) as usize]);
    format!(
        "p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}
