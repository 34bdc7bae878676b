//! `RedisConfig`: where Redis is, how channels are named, and the timings of the connections.

use std::fmt;
use std::time::Duration;

use super::connection::{Address, Endpoint};
use crate::config::ConfigError;
use crate::provider::bridge::settings::{redact, shared_config_methods, BridgeSettings};

/// The environment variable [`RedisConfig::from_env`] reads the URL from.
pub const REDIS_URL_ENV: &str = "REDIS_URL";

/// The URL used when none is given: a Redis on the local machine.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The largest message Redis accepts by default (`proto-max-bulk-len`), and so the largest
/// [`RedisConfig::max_envelope_bytes`] allowed.
pub const MAX_ENVELOPE_BYTES: usize = 512 * 1024 * 1024;

/// Settings of the Redis side of a [`RedisPubSub`](super::RedisPubSub). The local side (mailboxes,
/// policies, limits) is a [`Config`](crate::Config), as for the in-memory provider.
///
/// ```
/// use std::time::Duration;
/// use fanout::redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379/0")
///     .with_channel_prefix("myapp:pubsub:")
///     .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500));
/// config.validate().unwrap();
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The server, as a `redis://` (or `redis+unix://`) URL; user, password and database go in
    /// it. Default [`DEFAULT_REDIS_URL`].
    pub url: String,
    /// Prepended to every topic to name its Redis channel, so several applications can share a
    /// server. Default `"fanout:"`. Every instance of one application must use the same prefix.
    pub channel_prefix: String,
    /// Largest encoded envelope sent or accepted (header, topic, sender id and payload).
    /// Default 8 MiB + 64 KiB, at most [`MAX_ENVELOPE_BYTES`].
    pub max_envelope_bytes: usize,
    /// Messages waiting for the publishing connection; a broadcast that finds the queue full
    /// waits for room. Default 8192.
    pub publish_queue: usize,
    /// Most queued messages the publisher takes for one pipeline (one round trip to Redis).
    /// Consecutive messages on one topic among them share one envelope and one `PUBLISH`.
    /// Default 1024.
    pub max_pipeline: usize,
    /// How long connecting may take: each attempt, and each connection or reconnection as a
    /// whole (on a cluster: finding a node that answers, then connecting to every primary).
    /// Default 2 s.
    pub connect_timeout: Duration,
    /// How long Redis may take to answer a command (a pipeline, a `SUBSCRIBE`, a `PING`) before
    /// the connection is taken as lost. Default 2 s.
    pub response_timeout: Duration,
    /// How often an idle connection is checked with `PING`, so that a silent network cut is
    /// noticed. Default 1 s.
    pub health_check_interval: Duration,
    /// Delay before the second reconnection attempt (the first is immediate); it doubles after
    /// each failure. Default 20 ms.
    pub reconnect_backoff_min: Duration,
    /// The cap of the reconnection delay. Default 500 ms, so a restarted Redis is found again
    /// within about half a second of answering.
    pub reconnect_backoff_max: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_REDIS_URL.to_string(),
            channel_prefix: "fanout:".to_string(),
            max_envelope_bytes: 8 * 1024 * 1024 + 64 * 1024,
            publish_queue: 8192,
            max_pipeline: 1024,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(1),
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_millis(500),
        }
    }
}

impl RedisConfig {
    shared_config_methods!(REDIS_URL_ENV, "REDIS_URL");

    /// Sets the largest envelope.
    pub fn with_max_envelope_bytes(mut self, bytes: usize) -> Self {
        self.max_envelope_bytes = bytes;
        self
    }

    /// Checks every value; the error names the key and the bound it broke.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.endpoint()?;
        if self.max_envelope_bytes < crate::envelope::HEADER_BYTES + 1
            || self.max_envelope_bytes > MAX_ENVELOPE_BYTES
        {
            return Err(ConfigError::at_key(
                "redis.max_envelope_bytes",
                format!(
                    "is {}; it must be between {} and {MAX_ENVELOPE_BYTES}",
                    self.max_envelope_bytes,
                    crate::envelope::HEADER_BYTES + 1
                ),
            ));
        }
        self.bridge_settings().validate("redis")
    }

    /// The server and credentials the URL names. The database number is not used: Redis
    /// pub/sub channels do not belong to a database.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, ConfigError> {
        let invalid = |why: String| {
            ConfigError::at_key(
                "redis.url",
                format!("`{}` is not a valid redis URL: {why}", redact(&self.url)),
            )
        };
        let client = redis::Client::open(self.url.as_str()).map_err(|error| invalid(error.to_string()))?;
        let info = client.get_connection_info();
        let address = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Address::Tcp {
                host: host.clone(),
                port: *port,
            },
            redis::ConnectionAddr::Unix(path) => Address::Unix(path.clone()),
            _ => return Err(invalid("TLS is not supported".into())),
        };
        let settings = info.redis_settings();
        Ok(Endpoint {
            address,
            username: settings.username().map(str::to_string),
            password: settings.password().map(str::to_string),
        })
    }

    /// The broker-independent part, for the bridge.
    pub(crate) fn bridge_settings(&self) -> BridgeSettings {
        BridgeSettings {
            max_envelope_bytes: self.max_envelope_bytes,
            batch_envelope_bytes: self.max_envelope_bytes,
            publish_queue: self.publish_queue,
            max_pipeline: self.max_pipeline,
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            health_check_interval: self.health_check_interval,
            reconnect_backoff_min: self.reconnect_backoff_min,
            reconnect_backoff_max: self.reconnect_backoff_max,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("channel_prefix", &self.channel_prefix)
            .field("max_envelope_bytes", &self.max_envelope_bytes)
            .field("publish_queue", &self.publish_queue)
            .field("max_pipeline", &self.max_pipeline)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("health_check_interval", &self.health_check_interval)
            .field("reconnect_backoff_min", &self.reconnect_backoff_min)
            .field("reconnect_backoff_max", &self.reconnect_backoff_max)
            .finish()
    }
}
