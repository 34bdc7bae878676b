//! `PostgresConfig`: where PostgreSQL is, how channels are named, what happens to envelopes
//! too large for a notification, and the timings of the connections.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::channel::{fnv1a_128, quote_identifier, validate_prefix, ChannelNames};
use super::wire::{max_inline_envelope, NOTIFY_PAYLOAD_LIMIT};
use crate::config::ConfigError;
use crate::provider::bridge::settings::{
    check_max_envelope_bytes, provider_config, redact, shared_config_methods, BridgeSettings,
};

/// The environment variable [`PostgresConfig::from_env`] reads the URL from.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// The URL used when none is given: the `test` database of a PostgreSQL on the local machine.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The largest value a `bytea` column holds (1 GiB − 1), and so the largest
/// [`PostgresConfig::max_envelope_bytes`] allowed.
pub const MAX_ENVELOPE_BYTES: usize = (1 << 30) - 1;

/// The longest [`PostgresConfig::payload_ttl`] allowed. A stored envelope is needed only
/// until every listener has fetched it, moments after its notification; a longer time holds
/// disk for nothing.
pub const MAX_PAYLOAD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What a broadcast whose envelope does not fit in a notification does (more than
/// [`max_inline_envelope`]`(`[`NOTIFY_PAYLOAD_LIMIT`]`)` bytes, 5997).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LargePayloads {
    /// It is refused with a typed error; nothing is delivered. No table is needed.
    #[default]
    Refuse,
    /// The envelope is stored in an `UNLOGGED` table ([`PostgresConfig::payload_table`]) and
    /// the notification carries the row's id; listeners fetch it from there. Rows older than
    /// [`PostgresConfig::payload_ttl`] are deleted. Envelopes up to
    /// [`PostgresConfig::max_envelope_bytes`] pass.
    Table,
}

impl LargePayloads {
    /// The mode's name as a config file spells it: `refuse` or `table`.
    pub fn name(&self) -> &'static str {
        match self {
            LargePayloads::Refuse => "refuse",
            LargePayloads::Table => "table",
        }
    }
}

provider_config! {
    /// Settings of the PostgreSQL side of a `PostgresPubSub`. The local side (mailboxes, policies,
    /// limits) is a [`Config`](crate::Config), as for the in-memory provider.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fanout::postgres::{LargePayloads, PostgresConfig};
    ///
    /// let config = PostgresConfig::new("postgres://app:secret@db.internal:5432/app")
    ///     .with_channel_prefix("myapp:")
    ///     .with_large_payloads(LargePayloads::Table)
    ///     .with_payload_ttl(Duration::from_secs(30));
    /// config.validate().unwrap();
    /// assert!(!format!("{config:?}").contains("secret"));
    /// ```
    #[derive(Clone, PartialEq, Eq)]
    pub struct PostgresConfig {
        /// The server, as a `postgres://` or `postgresql://` URL; user, password, database and
        /// options (`?sslmode=…`) go in it. Default [`DEFAULT_DATABASE_URL`].
        pub url: String = DEFAULT_DATABASE_URL.to_string(),
        /// Starts every channel name, so several applications can share a database. Non-empty
        /// printable ASCII of at most
        /// [`MAX_CHANNEL_PREFIX_BYTES`](super::MAX_CHANNEL_PREFIX_BYTES) (30) bytes. A topic's
        /// channel is the prefix and the topic when that fits PostgreSQL's 63-byte identifiers and
        /// the topic is printable ASCII, else the prefix and a hash of the topic. Default
        /// `"fanout:"`. Every instance of one application must use the same prefix.
        pub channel_prefix: String = "fanout:".to_string(),
        /// What an envelope too large for a notification does. Default
        /// [`LargePayloads::Refuse`].
        pub large_payloads: LargePayloads = LargePayloads::Refuse,
        /// The table [`LargePayloads::Table`] stores envelopes in. One identifier of at most 63
        /// bytes, quoted in SQL and so used exactly as written: case and every character kept, a
        /// `.` part of the name rather than a schema separator (the schema is the first of the
        /// connection's `search_path`). Default `"fanout_payloads"`.
        pub payload_table: String = "fanout_payloads".to_string(),
        /// How long a stored envelope is kept. Default 60 s, at most [`MAX_PAYLOAD_TTL`].
        pub payload_ttl: Duration = Duration::from_secs(60),
        /// Largest encoded envelope sent or accepted (header, topic, sender id and payload) with
        /// [`LargePayloads::Table`]. Default 8 MiB + 64 KiB, at most [`MAX_ENVELOPE_BYTES`]. With
        /// [`LargePayloads::Refuse`] the limit is what fits in a notification, 5997 bytes, and this
        /// value is not used.
        pub max_envelope_bytes: usize = 8 * 1024 * 1024 + 64 * 1024,
        /// The hash of the channels' hashed form. Not a setting: tests replace it with
        /// [`with_channel_hash`](Self::with_channel_hash) to force two topics onto one channel.
        #[doc(hidden)]
        pub channel_hash: ChannelHash = ChannelHash::default(),
    }
    pipeline_shares: "one envelope",
    connect_timeout: "How long one connection attempt may take.",
    response_timeout: "How long the server may take to answer a statement before the connection \
        is taken as lost.",
    health_check: "with a query",
}

/// The hash of a [`PostgresConfig`]'s hashed channels: [`fnv1a_128`] unless a test replaced
/// it. A test hook, not a setting, so it leaves configs equal whatever it holds, and `Debug`
/// does not show it.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct ChannelHash(fn(&[u8]) -> u128);

impl Default for ChannelHash {
    fn default() -> Self {
        ChannelHash(fnv1a_128)
    }
}

impl PartialEq for ChannelHash {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ChannelHash {}

impl fmt::Debug for ChannelHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelHash")
    }
}

impl PostgresConfig {
    shared_config_methods!(DATABASE_URL_ENV, "DATABASE_URL");

    /// Sets what envelopes too large for a notification do.
    pub fn with_large_payloads(mut self, mode: LargePayloads) -> Self {
        self.large_payloads = mode;
        self
    }

    /// Sets the table large envelopes are stored in.
    pub fn with_payload_table(mut self, table: impl Into<String>) -> Self {
        self.payload_table = table.into();
        self
    }

    /// Sets how long a stored envelope is kept.
    pub fn with_payload_ttl(mut self, ttl: Duration) -> Self {
        self.payload_ttl = ttl;
        self
    }

    /// Sets the largest envelope with [`LargePayloads::Table`].
    pub fn with_max_envelope_bytes(mut self, bytes: usize) -> Self {
        self.max_envelope_bytes = bytes;
        self
    }

    /// Replaces the hash of the channels' hashed form, so that tests can make topics collide.
    /// Every instance sharing channels must use the same hash.
    #[doc(hidden)]
    pub fn with_channel_hash(mut self, hash: fn(&[u8]) -> u128) -> Self {
        self.channel_hash = ChannelHash(hash);
        self
    }

    /// Checks every value; the error names the key (`postgres.<field>`) and the bound it broke.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connect_config()?;
        validate_prefix("postgres.channel_prefix", &self.channel_prefix)?;
        if let Err(error) = quote_identifier(&self.payload_table) {
            return Err(ConfigError::at_key("postgres.payload_table", error.to_string()));
        }
        if self.payload_ttl.is_zero() || self.payload_ttl > MAX_PAYLOAD_TTL {
            return Err(ConfigError::at_key(
                "postgres.payload_ttl",
                format!(
                    "is {:?}; it must be positive and at most {:?}",
                    self.payload_ttl, MAX_PAYLOAD_TTL
                ),
            ));
        }
        check_max_envelope_bytes("postgres", self.max_envelope_bytes, MAX_ENVELOPE_BYTES)?;
        self.bridge_settings().validate("postgres")
    }

    /// The connection settings the URL holds: a `postgres://` or `postgresql://` URL that
    /// `tokio-postgres` reads, naming a host.
    pub(crate) fn connect_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let invalid = |why: String| {
            ConfigError::at_key(
                "postgres.url",
                format!("`{}` is not a valid postgres URL: {why}", shown_url(&self.url)),
            )
        };
        if !["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| self.url.starts_with(scheme))
        {
            return Err(invalid("it must start with postgres:// or postgresql://".into()));
        }
        let parsed = tokio_postgres::Config::from_str(&self.url).map_err(|e| invalid(e.to_string()))?;
        if parsed.get_hosts().is_empty() && parsed.get_hostaddrs().is_empty() {
            return Err(invalid("it names no host".into()));
        }
        Ok(parsed)
    }

    /// The broker-independent part, for the bridge: its envelope limit is the one of the
    /// [`LargePayloads`] mode.
    pub(crate) fn bridge_settings(&self) -> BridgeSettings {
        let max_envelope_bytes = match self.large_payloads {
            LargePayloads::Refuse => max_inline_envelope(NOTIFY_PAYLOAD_LIMIT),
            LargePayloads::Table => self.max_envelope_bytes,
        };
        // Batches stay inline: only a single large message takes the table's slower path.
        self.bridge_settings_with(max_envelope_bytes, max_inline_envelope(NOTIFY_PAYLOAD_LIMIT))
    }

    /// The channel naming of this config's prefix and hash.
    pub(crate) fn channel_names(&self) -> ChannelNames {
        ChannelNames::new(self.channel_prefix.clone(), self.channel_hash.0)
    }
}

/// `url` as logs and errors may show it: the password of the user info hidden by [`redact`],
/// the value of a `password` query parameter too. Text that is not a URL is not shown at all:
/// a `key=value` connection string may hold a password anywhere.
pub(crate) fn shown_url(url: &str) -> String {
    if !url.contains("://") {
        return "(not a URL, hidden)".to_string();
    }
    redact(url)
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("PostgresConfig");
        debug
            .field("url", &shown_url(&self.url))
            .field("channel_prefix", &self.channel_prefix)
            .field("large_payloads", &self.large_payloads)
            .field("payload_table", &self.payload_table)
            .field("payload_ttl", &self.payload_ttl)
            .field("max_envelope_bytes", &self.max_envelope_bytes);
        self.debug_bridge_fields(&mut debug);
        debug.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::HEADER_BYTES;

    /// Expects `config` to be refused with an error naming `key` and mentioning `mentions`.
    #[track_caller]
    fn refused(config: &PostgresConfig, key: &str, mentions: &str) -> ConfigError {
        let error = config.validate().unwrap_err();
        assert_eq!(error.key.as_deref(), Some(key), "{error:?}");
        assert!(
            error.message.contains(mentions),
            "{:?} does not mention {mentions:?}",
            error.message
        );
        error
    }

    fn every_topic_collides(_: &[u8]) -> u128 {
        7
    }

    #[test]
    fn defaults_are_valid() {
        let config = PostgresConfig::default();
        config.validate().unwrap();
        assert_eq!(config.url, DEFAULT_DATABASE_URL);
        assert_eq!(config.channel_prefix, "fanout:");
        assert_eq!(config.large_payloads, LargePayloads::Refuse);
        assert_eq!(config.payload_table, "fanout_payloads");
        assert_eq!(config.payload_ttl, Duration::from_secs(60));
        assert_eq!(config.max_envelope_bytes, 8 * 1024 * 1024 + 64 * 1024);
        assert_eq!(PostgresConfig::new("postgres://h/db").url, "postgres://h/db");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn shared_settings_have_the_redis_defaults() {
        let redis = crate::redis::RedisConfig::default().bridge_settings();
        let postgres = PostgresConfig::default()
            .with_large_payloads(LargePayloads::Table)
            .bridge_settings();
        // Batches differ by design: PostgreSQL keeps them inline.
        assert_eq!(
            postgres.batch_envelope_bytes,
            max_inline_envelope(NOTIFY_PAYLOAD_LIMIT)
        );
        let postgres = BridgeSettings {
            batch_envelope_bytes: redis.batch_envelope_bytes,
            ..postgres
        };
        assert_eq!(postgres, redis);
    }

    #[test]
    fn builders_set_their_fields() {
        let config = PostgresConfig::new("postgresql://u@h/d")
            .with_channel_prefix("app:")
            .with_large_payloads(LargePayloads::Table)
            .with_payload_table("Big \"Payloads\"")
            .with_payload_ttl(Duration::from_secs(5))
            .with_max_envelope_bytes(1 << 20)
            .with_publish_queue(16)
            .with_timeouts(Duration::from_millis(300), Duration::from_millis(400))
            .with_health_check_interval(Duration::from_millis(50))
            .with_reconnect_backoff(Duration::from_millis(1), Duration::from_millis(9));
        config.validate().unwrap();
        let expected = PostgresConfig {
            url: "postgresql://u@h/d".into(),
            channel_prefix: "app:".into(),
            large_payloads: LargePayloads::Table,
            payload_table: "Big \"Payloads\"".into(),
            payload_ttl: Duration::from_secs(5),
            max_envelope_bytes: 1 << 20,
            publish_queue: 16,
            connect_timeout: Duration::from_millis(300),
            response_timeout: Duration::from_millis(400),
            health_check_interval: Duration::from_millis(50),
            reconnect_backoff_min: Duration::from_millis(1),
            reconnect_backoff_max: Duration::from_millis(9),
            ..PostgresConfig::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn the_envelope_limit_follows_the_large_payload_mode() {
        let refuse = PostgresConfig::default().with_max_envelope_bytes(1 << 20);
        assert_eq!(refuse.bridge_settings().max_envelope_bytes, 5997);
        let table = refuse.with_large_payloads(LargePayloads::Table);
        assert_eq!(table.bridge_settings().max_envelope_bytes, 1 << 20);
    }

    #[test]
    fn urls_are_checked() {
        for url in [
            "postgres://localhost",
            "postgresql://u:p@db:6543/app?sslmode=disable",
            "postgres://u@[::1]:5432/app",
            "postgres://%2Frun%2Fpostgresql/app",
        ] {
            PostgresConfig::new(url)
                .validate()
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        refused(&PostgresConfig::new("redis://h"), "postgres.url", "postgres://");
        refused(&PostgresConfig::new(""), "postgres.url", "postgres://");
        refused(&PostgresConfig::new("postgres:///app"), "postgres.url", "no host");
        refused(
            &PostgresConfig::new("postgres://h:notaport/app"),
            "postgres.url",
            "port",
        );
    }

    #[test]
    fn url_errors_and_debug_hide_passwords() {
        let bad = PostgresConfig::new("postgres://user:hunter2@h:99999/app");
        let error = refused(&bad, "postgres.url", "postgres://user:***@h:99999/app");
        assert!(!error.to_string().contains("hunter2"), "{error}");

        let query = PostgresConfig::new("postgres://h/app?user=u&password=hunter2&port=x");
        let error = refused(&query, "postgres.url", "password=***");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(!format!("{query:?}").contains("hunter2"));

        let key_value = PostgresConfig::new("host=h password=hunter2");
        let error = refused(&key_value, "postgres.url", "postgres://");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(!format!("{key_value:?}").contains("hunter2"));

        let debug = format!("{:?}", PostgresConfig::new("postgres://u:hunter2@h/app"));
        assert!(debug.contains("postgres://u:***@h/app"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn channel_prefixes_are_checked() {
        let config = |prefix: &str| PostgresConfig::default().with_channel_prefix(prefix);
        config(&"p".repeat(30)).validate().unwrap();
        refused(&config(""), "postgres.channel_prefix", "is empty");
        refused(
            &config(&"p".repeat(31)),
            "postgres.channel_prefix",
            "the limit is 30",
        );
        refused(&config("émoi:"), "postgres.channel_prefix", "printable ASCII");
    }

    #[test]
    fn payload_tables_are_checked() {
        let config = |table: &str| PostgresConfig::default().with_payload_table(table);
        for table in [
            "t",
            "'); DROP TABLE canary; --",
            "a\"b",
            "schéma.table",
            &"t".repeat(63),
        ] {
            config(table)
                .validate()
                .unwrap_or_else(|e| panic!("{table:?}: {e}"));
        }
        refused(&config(""), "postgres.payload_table", "is empty");
        refused(
            &config(&"t".repeat(64)),
            "postgres.payload_table",
            "64 bytes; the limit is 63",
        );
        refused(&config("a\0b"), "postgres.payload_table", "NUL byte at offset 1");
    }

    #[test]
    fn payload_ttl_is_checked() {
        let config = |ttl| PostgresConfig::default().with_payload_ttl(ttl);
        config(Duration::from_millis(1)).validate().unwrap();
        config(MAX_PAYLOAD_TTL).validate().unwrap();
        refused(&config(Duration::ZERO), "postgres.payload_ttl", "positive");
        refused(
            &config(MAX_PAYLOAD_TTL + Duration::from_secs(1)),
            "postgres.payload_ttl",
            "86400s",
        );
    }

    #[test]
    fn max_envelope_bytes_is_checked() {
        let config = |bytes| PostgresConfig::default().with_max_envelope_bytes(bytes);
        config(HEADER_BYTES + 1).validate().unwrap();
        config(MAX_ENVELOPE_BYTES).validate().unwrap();
        refused(
            &config(HEADER_BYTES),
            "postgres.max_envelope_bytes",
            "between 31 and 1073741823",
        );
        refused(
            &config(MAX_ENVELOPE_BYTES + 1),
            "postgres.max_envelope_bytes",
            "1073741823",
        );
    }

    #[test]
    fn shared_settings_are_checked_under_the_postgres_section() {
        refused(
            &PostgresConfig::default().with_publish_queue(0),
            "postgres.publish_queue",
            "is 0",
        );
        let timeouts = PostgresConfig::default().with_timeouts(Duration::ZERO, Duration::from_secs(1));
        refused(&timeouts, "postgres.connect_timeout", "zero");
        let backoff =
            PostgresConfig::default().with_reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1));
        refused(
            &backoff,
            "postgres.reconnect_backoff_min",
            "at most reconnect_backoff_max",
        );
    }

    #[test]
    fn the_channel_hash_is_replaceable_and_not_compared() {
        let colliding = PostgresConfig::default().with_channel_hash(every_topic_collides);
        assert_eq!(colliding, PostgresConfig::default());
        assert!(!format!("{colliding:?}").contains("hash"));
        let names = colliding.channel_names();
        assert_eq!(names.channel("room:é"), names.channel("room:ü"));
        assert_eq!(names.channel("room:é"), format!("fanout:#{:032x}", 7));
        let default = PostgresConfig::default().channel_names();
        assert_ne!(default.channel("room:é"), default.channel("room:ü"));
        assert_eq!(default.channel("room:1"), "fanout:room:1");
    }

    #[test]
    fn large_payload_modes_are_named() {
        assert_eq!(LargePayloads::default(), LargePayloads::Refuse);
        assert_eq!(LargePayloads::Refuse.name(), "refuse");
        assert_eq!(LargePayloads::Table.name(), "table");
    }
}
