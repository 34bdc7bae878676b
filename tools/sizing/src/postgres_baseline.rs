//! The baseline `--provider postgres` is measured against: the same traffic through plain
//! tokio-postgres, with no fanout in the way.
//!
//! One connection `LISTEN`s on every channel the run publishes to, one per topic, named as the
//! provider names them (the run's prefix, then `room:<n>`); its `Connection` runs in a task of
//! its own, polled with `poll_message`, and forwards each notification over a channel to the
//! task that counts it. A second connection publishes `SELECT pg_notify($1, $2)`, a prepared
//! statement with the channel and the payload bound, with up to `--pipeline-depth` statements
//! in flight at once: tokio-postgres writes the requests of concurrent calls back to back, so
//! they travel as one pipeline, each statement its own implicit transaction, as the provider's
//! are.
//!
//! Each message goes to a topic drawn at random out of `--topics` (the provider's publishers
//! draw the same way), for `--duration` seconds, flat out or at `--rate`. Its payload is text
//! of the length of the provider's notification for one `--message-size` message alone in its
//! envelope: the base64 of [`single_encoded_len`] bytes, `4 * ceil(n / 3)` characters. The
//! first 16 characters are the send time (microseconds, hexadecimal), so the receiving task
//! measures each message's end-to-end latency as the scenario's handlers do.
//!
//! The rate is messages received over the whole run, publishing and then draining (the wait
//! for the last notifications, at most [`DRAIN_LIMIT`]), as the provider's
//! `cross_instance_messages_per_second` is.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout::envelope::{single_encoded_len, Record};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::args::Args;
use crate::cpu::{cpu_time_of, process_cpu_seconds_since, process_cpu_time, ServerCpu};
use crate::report::{BaselineCpu, Percentiles, PostgresBaseline};
use crate::run::{new_histogram, Rng};

/// The longest the baseline waits, once publishing is over, for the notifications still on
/// their way.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// `LISTEN` statements sent in one simple query.
const LISTENS_PER_QUERY: usize = 1000;

/// Hexadecimal digits of the send time at the head of each payload.
const TIME_DIGITS: usize = 16;

/// The prefix of run `run_id`'s channel names (a process id): runs in other processes on the
/// same server neither hear nor count each other's notifications.
pub fn channel_prefix(run_id: u32) -> String {
    format!("fanout-sizing:{run_id}:")
}

/// The characters of the provider's notification payload for one `message_size` message on
/// `topic`: its envelope, alone, base64-encoded with padding.
pub fn notification_chars(topic: &str, message_size: usize) -> usize {
    let envelope = single_encoded_len(
        topic,
        &Record {
            sender: None,
            payload: &vec![0; message_size],
        },
    );
    4 * envelope.div_ceil(3)
}

/// `host:port/database` of a PostgreSQL URL, without user or password.
pub fn server_name(url: &str) -> Result<String, tokio_postgres::Error> {
    let config: tokio_postgres::Config = url.parse()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("(the user's)");
    Ok(format!("{host}:{port}/{database}"))
}

/// Runs the baseline with the workload flags of `args` against `args.database_url()`.
pub async fn run(args: &Args) -> Result<PostgresBaseline, Box<dyn std::error::Error>> {
    let url = args.database_url();
    let server = server_name(&url).map_err(|error| format!("--database-url: {error}"))?;
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .map_err(|error| format!("cannot reach postgres at {server}: {error}"))?;
        Ok::<_, String>((client, connection))
    };
    let prefix = channel_prefix(args.run_id());
    let topics: Vec<String> = (0..args.topics).map(|t| format!("room:{t}")).collect();
    let channels: Vec<String> = topics.iter().map(|topic| format!("{prefix}{topic}")).collect();
    let payload_chars: Vec<usize> = topics
        .iter()
        .map(|topic| notification_chars(topic, args.message_size))
        .collect();
    let clock = Instant::now();

    // The listening side: a connection driven by its own task, forwarding notifications to
    // the task that counts them and records their latency.
    let (listener, mut connection) = connect().await?;
    let (notifications, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(notification) = message? {
                if notifications.send(notification).is_err() {
                    break;
                }
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    let received = Arc::new(AtomicU64::new(0));
    let counter = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut latency = new_histogram();
            let mut malformed = 0u64;
            while let Some(notification) = inbox.recv().await {
                let sent = notification
                    .payload()
                    .get(..TIME_DIGITS)
                    .and_then(|digits| u64::from_str_radix(digits, 16).ok());
                match sent {
                    Some(sent) => {
                        let now = clock.elapsed().as_micros() as u64;
                        let _ = latency.record(now.saturating_sub(sent).max(1));
                    }
                    None => malformed += 1,
                }
                // Relaxed: a count read for progress; the histogram comes back through join.
                received.fetch_add(1, Ordering::Relaxed);
            }
            (latency, malformed)
        })
    };
    let listen_started = Instant::now();
    for chunk in channels.chunks(LISTENS_PER_QUERY) {
        let mut query = String::new();
        for channel in chunk {
            let _ = write!(query, "LISTEN \"{}\";", channel.replace('"', "\"\""));
        }
        listener.batch_execute(&query).await?;
    }
    let listen_seconds = listen_started.elapsed().as_secs_f64();

    // The publishing side.
    let (publisher, connection) = connect().await?;
    let publisher_driver = tokio::spawn(connection);
    let statement = publisher
        .prepare_typed("SELECT pg_notify($1, $2)", &[Type::TEXT, Type::TEXT])
        .await?;
    let listener_pid = backend_pid(&listener).await?;
    let publisher_pid = backend_pid(&publisher).await?;
    let listener_cpu_before = cpu_time_of(listener_pid, "postgres");
    let publisher_cpu_before = cpu_time_of(publisher_pid, "postgres");
    let server_cpu_before = ServerCpu::named("postgres");
    let client_cpu_before = process_cpu_time();

    let depth = args.pipeline_depth;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0u64;
    loop {
        let publishing = Instant::now() < deadline;
        if publishing {
            let due = if args.rate > 0 {
                (started.elapsed().as_secs_f64() * args.rate as f64) as u64
            } else {
                u64::MAX
            };
            while in_flight.len() < depth && sent < due {
                let t = (rng.next() % topics.len() as u64) as usize;
                let mut payload = String::with_capacity(payload_chars[t]);
                let _ = write!(payload, "{:016x}", clock.elapsed().as_micros() as u64);
                payload.extend(std::iter::repeat_n('x', payload_chars[t] - TIME_DIGITS));
                let (publisher, statement, channel) = (&publisher, &statement, channels[t].as_str());
                in_flight.push(async move { publisher.execute(statement, &[&channel, &payload]).await });
                sent += 1;
            }
        }
        if in_flight.is_empty() {
            if !publishing {
                break;
            }
            tick.tick().await;
            continue;
        }
        if args.rate > 0 {
            tokio::select! {
                done = in_flight.next() => { done.expect("not empty")?; }
                _ = tick.tick() => {}
            }
        } else {
            in_flight.next().await.expect("not empty")?;
        }
    }
    let publishing_seconds = started.elapsed().as_secs_f64();

    let drain_limit = Instant::now() + DRAIN_LIMIT;
    while received.load(Ordering::Relaxed) < sent && Instant::now() < drain_limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = server_cpu_before.seconds_until(&ServerCpu::named("postgres"));
    let client_cpu = process_cpu_seconds_since(client_cpu_before);
    let backend_cpu = |pid, before: Option<Duration>| {
        Some((cpu_time_of(pid, "postgres")?.saturating_sub(before?)).as_secs_f64())
    };
    let cpu = BaselineCpu {
        client_seconds: client_cpu,
        listener_seconds: backend_cpu(listener_pid, listener_cpu_before),
        publisher_seconds: backend_cpu(publisher_pid, publisher_cpu_before),
        server_seconds: server_cpu,
    };
    let queue_usage: f64 = publisher
        .query_one("SELECT pg_notification_queue_usage()", &[])
        .await?
        .get(0);

    drop(in_flight);
    drop(publisher);
    drop(listener);
    publisher_driver.await??;
    driver.await??;
    let (latency, malformed) = counter.await?;
    let received = received.load(Ordering::Relaxed);
    let chars = |t: usize| payload_chars.get(t).copied().unwrap_or(0);
    Ok(PostgresBaseline {
        server,
        topics: args.topics,
        message_size: args.message_size,
        payload_chars_min: chars(0),
        payload_chars_max: chars(args.topics - 1),
        pipeline_depth: depth,
        rate: args.rate,
        duration_seconds: args.duration,
        listen_seconds,
        sent,
        received,
        malformed,
        publishing_seconds,
        elapsed_seconds: elapsed,
        sent_per_second: sent as f64 / publishing_seconds,
        messages_per_second: received as f64 / elapsed,
        latency_us: Percentiles::of(&latency),
        queue_usage_after: queue_usage,
        cpu,
    })
}

/// The process id of the server backend that serves `client`.
async fn backend_pid(client: &Client) -> Result<u32, tokio_postgres::Error> {
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    Ok(pid as u32)
}
