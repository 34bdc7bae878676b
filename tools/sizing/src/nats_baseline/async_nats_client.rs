//! `--nats-baseline async-nats`: two `async-nats` clients with their default options. One
//! subscribes to every subject and reads all the subscriptions in one task (`select_all`);
//! the other publishes with `Client::publish`, which queues each message for the client's
//! connection task to write.
//!
//! `async-nats` gives each subscription a channel of its own, so the end message (sent last,
//! carrying the count sent) can be read before messages still queued on other subscriptions:
//! the reader goes on until it has the count, or nothing came for a second (messages the
//! client dropped as a slow consumer are `missing`). The run's time ends at the last message
//! read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures_util::stream::{select_all, StreamExt};

use super::{drained, record_latency, Error, Measured, Pace, Workload};
use crate::args::Args;
use crate::cpu::{process_cpu_seconds_since, process_cpu_time};
use crate::run::new_histogram;

/// How long the reader waits for messages after the end message, once none arrive.
const QUIET: Duration = Duration::from_secs(1);

async fn connect(workload: &Workload) -> Result<async_nats::Client, Error> {
    async_nats::ConnectOptions::new()
        .name("fanout-sizing-baseline")
        .connect(workload.url.as_str())
        .await
        .map_err(|error| format!("cannot reach nats at {}: {error}", workload.server).into())
}

pub(super) async fn run(args: &Args, workload: &Workload) -> Result<Measured, Error> {
    let subscriber = connect(workload).await?;
    let mut subscriptions = Vec::with_capacity(workload.subjects.len() + 1);
    for subject in &workload.subjects {
        subscriptions.push(subscriber.subscribe(subject.clone()).await?);
    }
    subscriptions.push(subscriber.subscribe(workload.end.clone()).await?);
    // The server handles a connection's commands in order: once a message published on this
    // connection comes back, every subscription above is in place.
    let ready = format!("{}.ready", workload.end);
    let mut readiness = subscriber.subscribe(ready.clone()).await?;
    subscriber.publish(ready, Default::default()).await?;
    readiness.next().await.ok_or("the subscribing client closed")?;

    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = Arc::clone(&received);
        let end = workload.end.clone();
        let clock = workload.clock;
        tokio::spawn(async move {
            let mut latency = new_histogram();
            let mut messages = select_all(subscriptions);
            let mut expected = None;
            let mut last = Instant::now();
            loop {
                let message = if expected.is_some() {
                    match tokio::time::timeout(QUIET, messages.next()).await {
                        Ok(message) => message,
                        Err(_) => break,
                    }
                } else {
                    messages.next().await
                };
                let Some(message) = message else {
                    return Err::<_, Error>("the subscribing client closed".into());
                };
                if message.subject.as_str() == end {
                    let count = message.payload.get(..8).and_then(|count| count.try_into().ok());
                    expected = Some(u64::from_be_bytes(count.ok_or("an unreadable end message")?));
                } else {
                    record_latency(clock, &mut latency, &message.payload);
                    last = Instant::now();
                    // Relaxed: a count read for progress; the histogram comes back through join.
                    received.fetch_add(1, Ordering::Relaxed);
                }
                if expected.is_some_and(|expected| received.load(Ordering::Relaxed) >= expected) {
                    break;
                }
            }
            Ok((latency, last))
        })
    };

    let publisher = connect(workload).await?;
    let subjects: Vec<async_nats::Subject> = workload.subjects.iter().map(|s| s.as_str().into()).collect();
    let client_cpu_before = process_cpu_time();
    let mut pace = Pace::new(args);
    let mut sent = 0u64;
    while pace.publishing() {
        let due = pace.due(sent);
        while sent < due {
            let t = pace.next_subject(subjects.len());
            let len = workload.payload_bytes[t];
            let mut payload = BytesMut::with_capacity(len);
            payload.put_u64(workload.now_micros());
            payload.resize(len, b'x');
            publisher.publish(subjects[t].clone(), payload.freeze()).await?;
            sent += 1;
        }
        if args.rate > 0 {
            publisher.flush().await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    publisher
        .publish(workload.end.clone(), sent.to_be_bytes().to_vec().into())
        .await?;
    publisher.flush().await?;
    let publishing_seconds = pace.started.elapsed().as_secs_f64();

    let (latency, last) = drained(reader, &received, sent).await?;
    let client_cpu_seconds = process_cpu_seconds_since(client_cpu_before);
    Ok(Measured {
        sent,
        received: received.load(Ordering::Relaxed),
        publishing_seconds,
        elapsed_seconds: last.saturating_duration_since(pace.started).as_secs_f64(),
        latency,
        client_cpu_seconds,
    })
}
