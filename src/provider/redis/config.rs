//! `RedisConfig`: where Redis is, how channels are named, and the timings of the connections.

use std::fmt;

use super::connection::{Address, Endpoint};
use crate::config::ConfigError;
use crate::provider::bridge::settings::{
    check_max_envelope_bytes, provider_config, redact, shared_config_methods, BridgeSettings,
};

/// The environment variable [`RedisConfig::from_env`] reads the URL from.
pub const REDIS_URL_ENV: &str = "REDIS_URL";

/// The URL used when none is given: a Redis on the local machine.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The largest message Redis accepts by default (`proto-max-bulk-len`), and so the largest
/// [`RedisConfig::max_envelope_bytes`] allowed.
pub const MAX_ENVELOPE_BYTES: usize = 512 * 1024 * 1024;

provider_config! {
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
        /// The server, as a `redis://` (or `redis+unix://`) URL; user, password and database
        /// go in it. Default [`DEFAULT_REDIS_URL`].
        pub url: String = DEFAULT_REDIS_URL.to_string(),
        /// Prepended to every topic to name its Redis channel, so several applications can
        /// share a server. Default `"fanout:"`. Every instance of one application must use the
        /// same prefix.
        pub channel_prefix: String = "fanout:".to_string(),
        /// Largest encoded envelope sent or accepted (header, topic, sender id and payload).
        /// Default 8 MiB + 64 KiB, at most [`MAX_ENVELOPE_BYTES`].
        pub max_envelope_bytes: usize = 8 * 1024 * 1024 + 64 * 1024,
    }
    pipeline_shares: "one envelope and one `PUBLISH`",
    connect_timeout: "How long connecting may take: each attempt, and each connection or \
        reconnection as a whole (on a cluster: finding a node that answers, then connecting to \
        every primary).",
    response_timeout: "How long Redis may take to answer a command (a pipeline, a `SUBSCRIBE`, \
        a `PING`) before the connection is taken as lost.",
    health_check: "with `PING`",
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
        check_max_envelope_bytes("redis", self.max_envelope_bytes, MAX_ENVELOPE_BYTES)?;
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
        self.bridge_settings_with(self.max_envelope_bytes, self.max_envelope_bytes)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RedisConfig");
        debug
            .field("url", &redact(&self.url))
            .field("channel_prefix", &self.channel_prefix)
            .field("max_envelope_bytes", &self.max_envelope_bytes);
        self.debug_bridge_fields(&mut debug);
        debug.finish()
    }
}
