//! `--nats-baseline protocol`: plain NATS protocol connections. One subscribes to every
//! subject and reads the messages in one task; the other writes `PUB`s into one 64 KiB buffer
//! that goes out whenever it fills (and every millisecond at a set `--rate`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;

use super::{drained, record_latency, Error, Measured, Pace, Workload, TIME_BYTES};
use crate::args::Args;
use crate::cpu::{process_cpu_seconds_since, process_cpu_time};
use crate::run::new_histogram;

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

pub(super) async fn run(args: &Args, workload: &Workload) -> Result<Measured, Error> {
    let mut subscriber = connect(&workload.server).await?;
    let mut subscribe = Vec::new();
    for (sid, subject) in workload.subjects.iter().enumerate() {
        subscribe.extend_from_slice(format!("SUB {subject} {}\r\n", sid + 1).as_bytes());
    }
    // Published last: the server delivers one connection's messages in order, so it arrives
    // after every other.
    let end = &workload.end;
    subscribe.extend_from_slice(format!("SUB {end} 0\r\nPING\r\n").as_bytes());
    subscriber.get_mut().write_all(&subscribe).await?;
    until_pong(&mut subscriber).await?;
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = Arc::clone(&received);
        let end = end.clone();
        let clock = workload.clock;
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
                record_latency(clock, &mut latency, &payload);
                // Relaxed: a count read for progress; the histogram comes back through join.
                received.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(latency)
        })
    };

    let mut publisher = connect(&workload.server).await?;
    let client_cpu_before = process_cpu_time();
    let mut pace = Pace::new(args);
    let mut sent = 0u64;
    let mut command = Vec::new();
    {
        let mut out = BufWriter::with_capacity(64 * 1024, publisher.get_mut());
        while pace.publishing() {
            let due = pace.due(sent);
            while sent < due {
                let t = pace.next_subject(workload.subjects.len());
                let len = workload.payload_bytes[t];
                command.clear();
                command.extend_from_slice(format!("PUB {} {len}\r\n", workload.subjects[t]).as_bytes());
                command.extend_from_slice(&workload.now_micros().to_be_bytes());
                command.resize(command.len() + len - TIME_BYTES, b'x');
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
    let publishing_seconds = pace.started.elapsed().as_secs_f64();

    let latency = drained(reader, &received, sent).await?;
    let elapsed_seconds = pace.started.elapsed().as_secs_f64();
    let client_cpu_seconds = process_cpu_seconds_since(client_cpu_before);
    Ok(Measured {
        sent,
        received: received.load(Ordering::Relaxed),
        publishing_seconds,
        elapsed_seconds,
        latency,
        client_cpu_seconds,
    })
}
