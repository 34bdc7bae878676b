//! The baseline `--provider redis` is measured against: `redis-benchmark` publishing while a
//! plain subscriber receives every message, so Redis does the same delivery work as it does
//! for the provider.
//!
//! The subscriber is a raw RESP2 connection that `SUBSCRIBE`s every channel the benchmark
//! publishes to and counts the messages it reads, discarding them. The benchmark is
//! `redis-benchmark -u <url> -P 16 -r <topics> -n <requests> -q publish <prefix>__rand_int__
//! <message>`: its 50 connections (the default) keep 16 `PUBLISH`es in flight each, and `-r N`
//! writes a number drawn from [0, N) over `__rand_int__`, 12 digits, zero-padded, so a message
//! goes to one of `<prefix>000000000000` … at random. With one topic it runs without `-r`, on
//! one fixed channel. The message is as long as the provider's envelope for one
//! `--message-size` message. The prefix is the run's own, so runs of other processes on the
//! same server are not counted.
//!
//! redis-benchmark sends whole pipelines, `-n` rounded up to a multiple of 16 `PUBLISH`es, so
//! `-n` is rounded up here first: then it sends exactly `-n` messages, each of which the
//! subscriber must receive. Once redis-benchmark has exited, every `PUBLISH` has been answered,
//! so every message is in the subscriber's output buffer or on its way; a `PUBLISH` to the
//! run's end channel then arrives after all of them (the server writes a connection's messages
//! in order), and the subscriber's count at that mark is final.
//!
//! The rate is the messages received from redis-benchmark's start to that mark: publishing and
//! draining, as the provider's `cross_instance_messages_per_second` counts from its first
//! publish to drained. Without `--redis-benchmark-requests`, a calibration run of
//! [`CALIBRATION_REQUESTS`] sets `-n` to last about `--duration` seconds at its rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use fanout::envelope::{single_encoded_len, Record};
use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::args::Args;
use crate::cpu::{process_cpu_seconds_since, process_cpu_time};
use crate::instance::redis_config;
use crate::postgres_baseline::DRAIN_LIMIT;
use crate::redis_scenario::server_figures;
use crate::report::{Benchmark, RedisBaseline};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// `PUBLISH`es each redis-benchmark connection has in flight (`-P`).
const PIPELINE: u64 = 16;

/// Requests of the run that measures the rate `-n` is set from.
const CALIBRATION_REQUESTS: u64 = 100_000;

/// `SUBSCRIBE` arguments sent in one command.
const CHANNELS_PER_SUBSCRIBE: usize = 1000;

/// Runs the baseline with the workload flags of `args` against the server of `--redis-url`.
pub async fn run(args: &Args) -> Result<RedisBaseline, Error> {
    let redis = redis_config(args);
    let info = redis.url.as_str().into_connection_info()?;
    let server = info.addr().to_string();
    let prefix = format!("{}room:", redis.channel_prefix);
    let (channels, channel) = if args.topics == 1 {
        (vec![format!("{prefix}0")], format!("{prefix}0"))
    } else {
        let channels = (0..args.topics).map(|t| format!("{prefix}{t:012}")).collect();
        (channels, format!("{prefix}__rand_int__"))
    };
    let end = format!("{}end", redis.channel_prefix);
    let message_bytes = single_encoded_len(
        &format!("room:{}", args.topics - 1),
        &Record {
            sender: None,
            payload: &vec![0; args.message_size],
        },
    );

    let mut subscriber = subscribe(&info, &channels, &end).await?;
    let received = Arc::new(AtomicU64::new(0));
    let (marks, marked) = mpsc::unbounded_channel();
    let reader = {
        let received = Arc::clone(&received);
        let end = end.clone().into_bytes();
        tokio::spawn(async move {
            let mut items = Vec::new();
            loop {
                if let Err(error) = subscriber.array(&mut items).await {
                    let _ = marks.send(Err(error));
                    return;
                }
                match items.as_slice() {
                    [kind, subscribed, _] if kind == b"message" && *subscribed == end => {
                        let _ = marks.send(Ok(Instant::now()));
                    }
                    [kind, _, _] if kind == b"message" => {
                        // Relaxed: read once the end mark, sent after it, has come through
                        // the channel.
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
    };
    let client = redis::Client::open(redis.url.as_str())?;
    let mut subscription = Subscription {
        benchmark: Invocation::new(&redis.url, args.topics, &channel, message_bytes),
        end,
        received,
        marked,
        admin: client.get_multiplexed_async_connection().await?,
    };

    let (requests, calibration) = match args.redis_benchmark_requests {
        Some(requests) => (requests, None),
        None => {
            let calibration = subscription.round(CALIBRATION_REQUESTS).await?;
            let rate = calibration.received as f64 / calibration.elapsed_seconds;
            ((rate * args.duration) as u64, Some(rate))
        }
    };
    let requests = requests.max(1).next_multiple_of(PIPELINE);
    let server_before = server_figures(&mut subscription.admin).await;
    let client_cpu_before = process_cpu_time();
    let measured = subscription.round(requests).await;
    let client_cpu_seconds = process_cpu_seconds_since(client_cpu_before);
    let server_after = server_figures(&mut subscription.admin).await;
    reader.abort();
    let measured = measured?;
    let (server_cpu_seconds, server_commands) = match (server_before, server_after) {
        (Some(before), Some(after)) => (
            Some(after.cpu_seconds - before.cpu_seconds),
            Some(after.commands.saturating_sub(before.commands)),
        ),
        _ => (None, None),
    };
    Ok(RedisBaseline {
        server,
        topics: args.topics,
        message_size: args.message_size,
        message_bytes,
        duration_seconds: args.duration,
        calibration_messages_per_second: calibration,
        benchmark: subscription
            .benchmark
            .report(requests, measured.requests_per_second),
        sent: requests,
        received: measured.received,
        missing: requests.saturating_sub(measured.received),
        elapsed_seconds: measured.elapsed_seconds,
        messages_per_second: measured.received as f64 / measured.elapsed_seconds,
        server_cpu_seconds,
        server_commands,
        client_cpu_seconds,
    })
}

/// The subscriber's side of the run, and what starts and ends a round of redis-benchmark.
struct Subscription {
    benchmark: Invocation,
    /// The channel whose message marks the end of a round.
    end: String,
    /// Messages the subscriber has received, end marks aside.
    received: Arc<AtomicU64>,
    /// When each end mark arrived, or why the subscriber stopped reading.
    marked: mpsc::UnboundedReceiver<Result<Instant, Error>>,
    /// Publishes the end marks and reads `INFO`.
    admin: redis::aio::MultiplexedConnection,
}

impl Subscription {
    /// Runs redis-benchmark for `requests` requests and waits until the subscriber has
    /// received what it published.
    async fn round(&mut self, requests: u64) -> Result<Round, Error> {
        let before = self.received.load(Ordering::Relaxed);
        let started = Instant::now();
        let requests_per_second = self.benchmark.run(requests).await?;
        redis::cmd("PUBLISH")
            .arg(&self.end)
            .arg("end")
            .query_async::<i64>(&mut self.admin)
            .await?;
        let mark = tokio::time::timeout(DRAIN_LIMIT, self.marked.recv()).await;
        let received = self.received.load(Ordering::Relaxed) - before;
        let drained = match mark {
            Ok(Some(Ok(drained))) => drained,
            Ok(Some(Err(error))) => {
                return Err(format!(
                    "the subscriber had {received} of {requests} messages when it stopped: {error}"
                )
                .into())
            }
            Ok(None) | Err(_) => {
                return Err(format!(
                    "the subscriber had {received} of {requests} messages {} s after redis-benchmark ended",
                    DRAIN_LIMIT.as_secs()
                )
                .into())
            }
        };
        Ok(Round {
            received,
            elapsed_seconds: (drained - started).as_secs_f64(),
            requests_per_second,
        })
    }
}

/// What one redis-benchmark run delivered.
struct Round {
    /// Messages the subscriber received.
    received: u64,
    /// From redis-benchmark's start to the subscriber's having every message.
    elapsed_seconds: f64,
    /// redis-benchmark's own figure.
    requests_per_second: f64,
}

/// The redis-benchmark command line, but for `-n`.
struct Invocation {
    url: String,
    /// `-r`'s argument: the topics a message's channel is drawn from.
    random: Option<String>,
    channel: String,
    message_bytes: usize,
}

impl Invocation {
    fn new(url: &str, topics: usize, channel: &str, message_bytes: usize) -> Invocation {
        Invocation {
            url: url.to_string(),
            random: (topics > 1).then(|| topics.to_string()),
            channel: channel.to_string(),
            message_bytes,
        }
    }

    /// Runs `requests` requests and returns redis-benchmark's requests per second.
    async fn run(&self, requests: u64) -> Result<f64, Error> {
        let message = "x".repeat(self.message_bytes);
        let mut command = tokio::process::Command::new("redis-benchmark");
        command.args(["-u", &self.url, "-P", &PIPELINE.to_string()]);
        if let Some(random) = &self.random {
            command.args(["-r", random]);
        }
        command.args([
            "-n",
            &requests.to_string(),
            "-q",
            "publish",
            &self.channel,
            &message,
        ]);
        let output = command
            .output()
            .await
            .map_err(|error| format!("redis-benchmark could not run: {error}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        // `-q` prints progress lines separated by carriage returns, then the result.
        let last = text.rsplit('\r').next().unwrap_or("").trim();
        let rate = last
            .split(" requests per second")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .filter(|_| output.status.success() && last.contains("requests per second"))
            .ok_or_else(|| {
                format!(
                    "redis-benchmark gave no rate (status {}): {last}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )
            })?;
        Ok(rate)
    }

    /// The report's account of a run of `requests` requests.
    fn report(&self, requests: u64, requests_per_second: f64) -> Benchmark {
        let random = self
            .random
            .as_ref()
            .map_or(String::new(), |topics| format!("-r {topics} "));
        Benchmark {
            command: format!(
                "redis-benchmark -u {} -P {PIPELINE} {random}-n {requests} -q publish {} <{}-byte message>",
                redacted(&self.url),
                self.channel,
                self.message_bytes
            ),
            requests_per_second,
        }
    }
}

/// The URL without its password, for the report.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// A connection subscribed to `channels` and `end`, every subscription confirmed.
async fn subscribe(
    info: &redis::ConnectionInfo,
    channels: &[String],
    end: &str,
) -> Result<RespConnection<TcpStream>, Error> {
    let ConnectionAddr::Tcp(host, port) = info.addr() else {
        return Err(format!(
            "the baseline's subscriber speaks plain TCP; {} is not",
            info.addr()
        )
        .into());
    };
    let stream = TcpStream::connect((host.as_str(), *port))
        .await
        .map_err(|error| format!("cannot reach redis at {}: {error}", info.addr()))?;
    stream.set_nodelay(true)?;
    let mut connection = RespConnection {
        input: BufReader::with_capacity(64 * 1024, stream),
        line: Vec::new(),
    };
    let mut items = Vec::new();
    let settings = info.redis_settings();
    if let Some(password) = settings.password() {
        let mut auth = vec!["AUTH"];
        auth.extend(settings.username());
        auth.push(password);
        connection.send(&auth).await?;
        connection.line().await?;
    }
    let mut subscriptions = 0;
    for chunk in channels.chunks(CHANNELS_PER_SUBSCRIBE) {
        let mut command = vec!["SUBSCRIBE"];
        command.extend(chunk.iter().map(String::as_str));
        connection.send(&command).await?;
        subscriptions += chunk.len();
    }
    connection.send(&["SUBSCRIBE", end]).await?;
    for _ in 0..=subscriptions {
        connection.array(&mut items).await?;
        if items.first().is_none_or(|kind| kind != b"subscribe") {
            return Err("expected SUBSCRIBE's confirmation".into());
        }
    }
    Ok(connection)
}

/// A RESP2 connection: commands written as arrays of bulk strings, replies read as a
/// subscribed connection gets them.
struct RespConnection<S> {
    input: BufReader<S>,
    /// The last line read, CRLF included.
    line: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RespConnection<S> {
    async fn send(&mut self, arguments: &[&str]) -> Result<(), Error> {
        let mut command = format!("*{}\r\n", arguments.len()).into_bytes();
        for argument in arguments {
            command.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
            command.extend_from_slice(argument.as_bytes());
            command.extend_from_slice(b"\r\n");
        }
        self.input.get_mut().write_all(&command).await?;
        Ok(())
    }

    /// The next line, without its CRLF; an error reply is an `Err`.
    async fn line(&mut self) -> Result<&[u8], Error> {
        self.line.clear();
        if self.input.read_until(b'\n', &mut self.line).await? == 0 {
            return Err("the server closed the connection".into());
        }
        let line = self
            .line
            .strip_suffix(b"\r\n")
            .ok_or("a reply line without CRLF")?;
        match line.split_first() {
            Some((b'-', error)) => Err(format!("redis: {}", String::from_utf8_lossy(error)).into()),
            _ => Ok(line),
        }
    }

    /// Reads one reply, an array of bulk strings and integers (a message, a subscription's
    /// confirmation), into `items`, one element each, an integer as its digits; the buffers
    /// are reused from one reply to the next.
    async fn array(&mut self, items: &mut Vec<Vec<u8>>) -> Result<(), Error> {
        let count = match self.line().await?.split_first() {
            Some((b'*', count)) => number(count)?,
            _ => {
                return Err(
                    format!("expected an array, got {:?}", String::from_utf8_lossy(&self.line)).into(),
                )
            }
        };
        items.resize_with(count, Vec::new);
        for item in items.iter_mut() {
            item.clear();
            let bulk = match self.line().await?.split_first() {
                Some((b'$', len)) => number(len)?,
                Some((b':', digits)) => {
                    item.extend_from_slice(digits);
                    continue;
                }
                _ => {
                    return Err(
                        format!("unexpected element {:?}", String::from_utf8_lossy(&self.line)).into(),
                    )
                }
            };
            item.resize(bulk + 2, 0);
            self.input.read_exact(item).await?;
            item.truncate(bulk);
        }
        Ok(())
    }
}

fn number(digits: &[u8]) -> Result<usize, Error> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| format!("not a length: {:?}", String::from_utf8_lossy(digits)).into())
}
