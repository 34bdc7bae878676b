//! Reaching the NATS server the backend tests run against, or skipping them; a raw client for
//! publishing straight onto subjects.

use std::sync::Arc;
use std::time::Duration;

use fanout::nats::{NatsConfig, NatsPubSub};
use fanout::{Config, PubSubProvider};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The NATS URL tests use: `NATS_URL`, or the local default.
pub fn url() -> String {
    NatsConfig::from_env().url
}

/// A plain protocol client, for what the provider must survive: raw publishes onto its
/// subjects.
pub struct RawClient {
    stream: BufReader<TcpStream>,
}

impl RawClient {
    /// Connects to `url` (no credentials) and completes the handshake.
    pub async fn connect(url: &str) -> std::io::Result<RawClient> {
        let server = NatsConfig::new(url).server().map_err(std::io::Error::other)?;
        let stream = TcpStream::connect(server).await?;
        // Each command is written apart from its PING: without this, Nagle's algorithm holds
        // the PING back until the server's delayed ACK.
        stream.set_nodelay(true)?;
        let mut client = RawClient {
            stream: BufReader::new(stream),
        };
        let info = client.line().await?;
        if !info.starts_with("INFO ") {
            return Err(std::io::Error::other(format!("expected INFO, got {info:?}")));
        }
        client
            .stream
            .get_mut()
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":true,\"name\":\"fanout-test-raw\"}\r\n")
            .await?;
        client.round_trip().await?;
        Ok(client)
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::other("the server closed the connection"));
        }
        Ok(line.trim_end().to_string())
    }

    /// `PING`, then reads until `PONG`; an `-ERR` first is an error.
    async fn round_trip(&mut self) -> std::io::Result<()> {
        self.stream.get_mut().write_all(b"PING\r\n").await?;
        loop {
            let line = self.line().await?;
            match line.as_str() {
                "PONG" => return Ok(()),
                "PING" => self.stream.get_mut().write_all(b"PONG\r\n").await?,
                error if error.starts_with("-ERR") => return Err(std::io::Error::other(line)),
                _ => {}
            }
        }
    }

    /// Publishes `payload` on `subject`, and returns once the server has processed it.
    pub async fn publish(&mut self, subject: &str, payload: &[u8]) -> std::io::Result<()> {
        let mut command = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
        command.extend_from_slice(payload);
        command.extend_from_slice(b"\r\n");
        self.stream.get_mut().write_all(&command).await?;
        self.round_trip().await
    }

    /// Publishes `payload` on `subject` with the reply subject `reply`.
    pub async fn publish_with_reply(
        &mut self,
        subject: &str,
        reply: &str,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut command = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        command.extend_from_slice(payload);
        command.extend_from_slice(b"\r\n");
        self.stream.get_mut().write_all(&command).await?;
        self.round_trip().await
    }

    /// Publishes with headers (`HPUB`), which no instance sends.
    pub async fn publish_with_headers(&mut self, subject: &str, payload: &[u8]) -> std::io::Result<()> {
        let headers = b"NATS/1.0\r\nX-Test: 1\r\n\r\n";
        let mut command = format!(
            "HPUB {subject} {} {}\r\n",
            headers.len(),
            headers.len() + payload.len()
        )
        .into_bytes();
        command.extend_from_slice(headers);
        command.extend_from_slice(payload);
        command.extend_from_slice(b"\r\n");
        self.stream.get_mut().write_all(&command).await?;
        self.round_trip().await
    }
}

/// A raw client on the test server, or `None` after printing why the test is skipped.
/// Panics instead when `FANOUT_REQUIRE_SERVICES=1`.
pub async fn admin() -> Option<RawClient> {
    admin_at(&url()).await
}

/// As [`admin`], for the server at `url`.
pub async fn admin_at(url: &str) -> Option<RawClient> {
    super::reach(
        "nats",
        url,
        "set NATS_URL or start nats-server",
        RawClient::connect(url),
    )
    .await
}

/// A subject prefix no other test shares: [`super::unique_prefix`] with its colons kept (they
/// are plain characters in a NATS token) and its trailing one dropped.
pub fn unique_prefix(test: &str) -> String {
    super::unique_prefix(test).trim_end_matches(':').to_string()
}

/// Settings for test instances: fast health checks and reconnects.
pub fn test_config(prefix: &str) -> NatsConfig {
    test_config_at(&url(), prefix)
}

/// As [`test_config`], for the server at `url`.
pub fn test_config_at(url: &str, prefix: &str) -> NatsConfig {
    NatsConfig::new(url)
        .with_subject_prefix(prefix)
        .with_health_check_interval(Duration::from_millis(250))
        .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
}

/// `n` started providers on one fresh prefix, or `None` (skipped) if NATS is unreachable.
pub async fn cluster(test: &str, n: usize, config: Config) -> Option<Vec<Arc<NatsPubSub>>> {
    admin().await?;
    let prefix = unique_prefix(test);
    let mut nodes = Vec::new();
    for _ in 0..n {
        let provider = NatsPubSub::with_config(test_config(&prefix), config.clone()).expect("valid config");
        provider
            .start()
            .await
            .expect("start against a reachable nats-server");
        nodes.push(Arc::new(provider));
    }
    Some(nodes)
}
