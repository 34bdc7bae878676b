//! The baseline `--provider nats` is measured against: the same traffic over plain NATS
//! protocol connections, with no fanout in the way.
//!
//! One connection subscribes to every subject (one per topic, named as the provider names
//! them) and reads the messages in one task; another publishes, a random topic per message,
//! each `PUB` written into one 64 KiB buffer that goes out whenever it fills (and every
//! millisecond at a set `--rate`). Each payload is as long as the provider's envelope for one
//! `--message-size` message on its topic and starts with its send time, for the end-to-end
//! latency. It reports the messages received per second over publishing and draining, as the
//! provider's cross-instance rate is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout::envelope::{single_encoded_len, Record};
use fanout::nats::NatsConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;

use crate::args::Args;
use crate::cpu::process_cpu_time;
use crate::postgres_baseline::DRAIN_LIMIT;
use crate::report::{NatsBaseline, Percentiles};
use crate::run::{new_histogram, Rng};

/// Bytes of the send time (microseconds since the run began, big-endian) at the head of
/// each payload.
const TIME_BYTES: usize = 8;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A connection after the handshake: `CONNECT`, then `PING` answered.
async fn connect(server: &str) -> Result<BufReader<TcpStream>, Error> {
    let stream = TcpStream::connect(server)
        .await
        .map_err(|error| format!("cannot reach nats at {server}: {error}"))?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if !line.starts_with("INFO ") {
        return Err(format!("expected INFO from {server}, got {line:?}").into());
    }
    stream
        .get_mut()
        .write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"fanout-sizing-baseline\"}\r\nPING\r\n",
        )
        .await?;
    until_pong(&mut stream).await?;
    Ok(stream)
}

/// Reads lines until `PONG`; an `-ERR` is an error.
async fn until_pong(stream: &mut BufReader<TcpStream>) -> Result<(), Error> {
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err("the server closed the connection".into());
        }
        match line.trim_end() {
            "PONG" => return Ok(()),
            "PING" => stream.get_mut().write_all(b"PONG\r\n").await?,
            error if error.starts_with("-ERR") => return Err(error.to_string().into()),
            _ => {}
        }
    }
}

/// Runs the baseline with the workload flags of `args` against the server of `--nats-url`.
pub async fn run(args: &Args) -> Result<NatsBaseline, Error> {
    let mut nats = NatsConfig::from_env();
    if let Some(url) = &args.nats_url {
        nats.url = url.clone();
    }
    let server = nats.server()?;
    let prefix = format!("fanout-sizing-baseline.{}", std::process::id());
    let topics: Vec<String> = (0..args.topics).map(|t| format!("room:{t}")).collect();
    let subjects: Vec<String> = topics.iter().map(|topic| format!("{prefix}.{topic}")).collect();
    let payload_bytes: Vec<usize> = topics
        .iter()
        .map(|topic| {
            let record = Record {
                sender: None,
                payload: &vec![0; args.message_size],
            };
            single_encoded_len(topic, &record).max(TIME_BYTES)
        })
        .collect();
    let clock = Instant::now();

    let mut subscriber = connect(&server).await?;
    let mut subscribe = Vec::new();
    for (sid, subject) in subjects.iter().enumerate() {
        subscribe.extend_from_slice(format!("SUB {subject} {}\r\n", sid + 1).as_bytes());
    }
    // Published last: the server delivers one connection's messages in order, so it arrives
    // after every other.
    let end = format!("{prefix}.end");
    subscribe.extend_from_slice(format!("SUB {end} 0\r\nPING\r\n").as_bytes());
    subscriber.get_mut().write_all(&subscribe).await?;
    until_pong(&mut subscriber).await?;
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = Arc::clone(&received);
        let end = end.clone();
        tokio::spawn(async move {
            let mut latency = new_histogram();
            let mut line = String::new();
            let mut payload = Vec::new();
            loop {
                line.clear();
                if subscriber.read_line(&mut line).await? == 0 {
                    break;
                }
                if line == "PING\r\n" {
                    subscriber.get_mut().write_all(b"PONG\r\n").await?;
                    continue;
                }
                let Some(fields) = line.strip_prefix("MSG ") else {
                    continue;
                };
                let fields: Vec<&str> = fields.split_whitespace().collect();
                let len = fields.last().and_then(|len| len.parse::<usize>().ok());
                let (Some(subject), Some(len)) = (fields.first(), len) else {
                    return Err(format!("unreadable MSG line {line:?}").into());
                };
                if *subject == end {
                    break;
                }
                payload.resize(len + 2, 0);
                subscriber.read_exact(&mut payload).await?;
                if let Some(time) = payload.get(..TIME_BYTES) {
                    let sent = u64::from_be_bytes(time.try_into().expect("8 bytes"));
                    let now = clock.elapsed().as_micros() as u64;
                    let _ = latency.record(now.saturating_sub(sent).max(1));
                }
                // Relaxed: a count read for progress; the histogram comes back through join.
                received.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(latency)
        })
    };

    let mut publisher = connect(&server).await?;
    let client_cpu_before = process_cpu_time();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sent = 0u64;
    let mut command = Vec::new();
    {
        let mut out = BufWriter::with_capacity(64 * 1024, publisher.get_mut());
        while Instant::now() < deadline {
            let due = if args.rate > 0 {
                (started.elapsed().as_secs_f64() * args.rate as f64) as u64
            } else {
                sent + 1024
            };
            while sent < due {
                let t = (rng.next() % topics.len() as u64) as usize;
                command.clear();
                command.extend_from_slice(format!("PUB {} {}\r\n", subjects[t], payload_bytes[t]).as_bytes());
                command.extend_from_slice(&(clock.elapsed().as_micros() as u64).to_be_bytes());
                command.resize(command.len() + payload_bytes[t] - TIME_BYTES, b'x');
                command.extend_from_slice(b"\r\n");
                out.write_all(&command).await?;
                sent += 1;
            }
            if args.rate > 0 {
                out.flush().await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        out.write_all(format!("PUB {end} 0\r\n\r\nPING\r\n").as_bytes())
            .await?;
        out.flush().await?;
    }
    until_pong(&mut publisher).await?;
    let publishing_seconds = started.elapsed().as_secs_f64();

    let latency = match tokio::time::timeout(DRAIN_LIMIT, reader).await {
        Ok(read) => read??,
        Err(_) => {
            return Err(format!(
                "the subscriber had {} of {sent} messages {} s after publishing ended",
                received.load(Ordering::Relaxed),
                DRAIN_LIMIT.as_secs()
            )
            .into())
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let client_cpu_seconds = match (client_cpu_before, process_cpu_time()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
        _ => None,
    };
    let received = received.load(Ordering::Relaxed);
    Ok(NatsBaseline {
        server,
        topics: args.topics,
        message_size: args.message_size,
        rate: args.rate,
        duration_seconds: args.duration,
        sent,
        received,
        publishing_seconds,
        elapsed_seconds: elapsed,
        messages_per_second: received as f64 / elapsed,
        latency_us: Percentiles::of(&latency),
        client_cpu_seconds,
    })
}
