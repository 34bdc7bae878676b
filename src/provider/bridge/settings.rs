//! The settings every broker's connections share: the publish queue and pipeline, timeouts,
//! health checks and the reconnection backoff. Each provider's config holds them as its own
//! flat fields (`RedisConfig::publish_queue`, `PostgresConfig::publish_queue`, …) and hands
//! the bridge a copy.

use std::time::Duration;

use crate::config::ConfigError;

/// The broker-independent settings of one distributed provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BridgeSettings {
    /// Largest encoded envelope sent or accepted.
    pub(crate) max_envelope_bytes: usize,
    /// Largest envelope the publisher makes by joining messages (at most
    /// `max_envelope_bytes`; a single larger message still travels alone). A broker whose
    /// large messages take a slower path keeps batches under that threshold.
    pub(crate) batch_envelope_bytes: usize,
    /// Messages waiting for the publishing connection.
    pub(crate) publish_queue: usize,
    /// Most queued messages taken for one pipeline.
    pub(crate) max_pipeline: usize,
    /// How long one connection attempt may take.
    pub(crate) connect_timeout: Duration,
    /// How long the broker may take to answer a command.
    pub(crate) response_timeout: Duration,
    /// How often an idle connection is checked.
    pub(crate) health_check_interval: Duration,
    /// Delay before the second reconnection attempt; doubles after each failure.
    pub(crate) reconnect_backoff_min: Duration,
    /// The cap of the reconnection delay.
    pub(crate) reconnect_backoff_max: Duration,
}

/// A distributed provider's config: the struct with the fields given (each with its default
/// after `=`), then the settings every broker's connections share, `publish_queue` to
/// `reconnect_backoff_max`, with their documentation and defaults; its `Default`; and, for the
/// config's own code, `bridge_settings_with` and `debug_bridge_fields`. The shared fields'
/// documentation takes the broker's terms: what messages batched in one pipeline share
/// (`pipeline_shares`), the whole of `connect_timeout`'s and `response_timeout`'s, and how an
/// idle connection is checked (`health_check`).
///
/// One definition keeps the shared fields, their bounds and defaults the same for every
/// provider; the fields stay the config's own (`RedisConfig::publish_queue`), as flat public
/// fields.
macro_rules! provider_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty = $default:expr,)*
        }
        pipeline_shares: $pipeline_shares:literal,
        connect_timeout: $connect_timeout:literal,
        response_timeout: $response_timeout:literal,
        health_check: $health_check:literal $(,)?
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
            /// Messages waiting for the publishing connection; a broadcast that finds the queue
            /// full waits for room. Default 8192.
            pub publish_queue: usize,
            #[doc = concat!(
                "Most queued messages the publisher takes for one pipeline (one round trip to the ",
                "server). Consecutive messages on one topic among them share ",
                $pipeline_shares,
                ". Default 1024."
            )]
            pub max_pipeline: usize,
            #[doc = concat!($connect_timeout, " Default 2 s.")]
            pub connect_timeout: std::time::Duration,
            #[doc = concat!($response_timeout, " Default 2 s.")]
            pub response_timeout: std::time::Duration,
            #[doc = concat!(
                "How often an idle connection is checked ",
                $health_check,
                ", so that a silent network cut is noticed. Default 1 s."
            )]
            pub health_check_interval: std::time::Duration,
            /// Delay before the second reconnection attempt (the first is immediate); it
            /// doubles after each failure. Default 20 ms.
            pub reconnect_backoff_min: std::time::Duration,
            /// The cap of the reconnection delay. Default 500 ms, so a restarted server is
            /// found again within about half a second of answering.
            pub reconnect_backoff_max: std::time::Duration,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $($field: $default,)*
                    publish_queue: 8192,
                    max_pipeline: 1024,
                    connect_timeout: std::time::Duration::from_secs(2),
                    response_timeout: std::time::Duration::from_secs(2),
                    health_check_interval: std::time::Duration::from_secs(1),
                    reconnect_backoff_min: std::time::Duration::from_millis(20),
                    reconnect_backoff_max: std::time::Duration::from_millis(500),
                }
            }
        }

        impl $name {
            /// The settings the bridge runs with, with the envelope sizes the broker allows.
            fn bridge_settings_with(
                &self,
                max_envelope_bytes: usize,
                batch_envelope_bytes: usize,
            ) -> $crate::provider::bridge::settings::BridgeSettings {
                $crate::provider::bridge::settings::BridgeSettings {
                    max_envelope_bytes,
                    batch_envelope_bytes,
                    publish_queue: self.publish_queue,
                    max_pipeline: self.max_pipeline,
                    connect_timeout: self.connect_timeout,
                    response_timeout: self.response_timeout,
                    health_check_interval: self.health_check_interval,
                    reconnect_backoff_min: self.reconnect_backoff_min,
                    reconnect_backoff_max: self.reconnect_backoff_max,
                }
            }

            /// Adds the shared settings to the config's `Debug`.
            fn debug_bridge_fields(&self, debug: &mut std::fmt::DebugStruct<'_, '_>) {
                debug
                    .field("publish_queue", &self.publish_queue)
                    .field("max_pipeline", &self.max_pipeline)
                    .field("connect_timeout", &self.connect_timeout)
                    .field("response_timeout", &self.response_timeout)
                    .field("health_check_interval", &self.health_check_interval)
                    .field("reconnect_backoff_min", &self.reconnect_backoff_min)
                    .field("reconnect_backoff_max", &self.reconnect_backoff_max);
            }
        }
    };
}
pub(crate) use provider_config;

/// The constructors, and the builder methods of the settings every distributed provider's
/// config has as fields of its own (`url`, `channel_prefix`, `publish_queue`, the timeouts, the
/// backoff), for the config's `impl` block. `$env` is the constant naming the environment
/// variable `from_env` reads, `$env_name` that variable; the prefix field is `channel_prefix`
/// (set by `with_channel_prefix`) unless named as `$prefix` with its setter `$with_prefix`.
macro_rules! shared_config_methods {
    ($env:ident, $env_name:literal) => {
        $crate::provider::bridge::settings::shared_config_methods!(
            $env,
            $env_name,
            channel_prefix,
            with_channel_prefix
        );
    };
    ($env:ident, $env_name:literal, $prefix:ident, $with_prefix:ident) => {
        /// The defaults, with `url`.
        pub fn new(url: impl Into<String>) -> Self {
            Self {
                url: url.into(),
                ..Self::default()
            }
        }

        #[doc = concat!("The defaults, with the URL from the `", $env_name, "` environment variable if it is set.")]
        pub fn from_env() -> Self {
            match std::env::var($env) {
                Ok(url) if !url.is_empty() => Self::new(url),
                _ => Self::default(),
            }
        }

        #[doc = concat!("Sets `", stringify!($prefix), "`.")]
        pub fn $with_prefix(mut self, prefix: impl Into<String>) -> Self {
            self.$prefix = prefix.into();
            self
        }

        /// Sets the publish queue's capacity.
        pub fn with_publish_queue(mut self, messages: usize) -> Self {
            self.publish_queue = messages;
            self
        }

        /// Sets the connect and response timeouts.
        pub fn with_timeouts(mut self, connect: std::time::Duration, response: std::time::Duration) -> Self {
            self.connect_timeout = connect;
            self.response_timeout = response;
            self
        }

        /// Sets the health-check interval.
        pub fn with_health_check_interval(mut self, interval: std::time::Duration) -> Self {
            self.health_check_interval = interval;
            self
        }

        /// Sets the reconnection backoff: the first delay and the cap.
        pub fn with_reconnect_backoff(mut self, min: std::time::Duration, max: std::time::Duration) -> Self {
            self.reconnect_backoff_min = min;
            self.reconnect_backoff_max = max;
            self
        }
    };
}
pub(crate) use shared_config_methods;

/// The largest `publish_queue` allowed.
pub(crate) const MAX_PUBLISH_QUEUE: usize = 1 << 24;

/// The largest `max_pipeline` allowed.
pub(crate) const MAX_PIPELINE: usize = 1 << 16;

impl BridgeSettings {
    /// Checks every value except `max_envelope_bytes`, whose bounds are the broker's; errors
    /// name the key as `<section>.<field>`.
    pub(crate) fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{section}.{field}");
        within(&key("publish_queue"), self.publish_queue, MAX_PUBLISH_QUEUE)?;
        within(&key("max_pipeline"), self.max_pipeline, MAX_PIPELINE)?;
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("health_check_interval", self.health_check_interval),
            ("reconnect_backoff_max", self.reconnect_backoff_max),
        ] {
            if value.is_zero() {
                return Err(ConfigError::at_key(key(field), "is zero; it must be positive"));
            }
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err(ConfigError::at_key(
                key("reconnect_backoff_min"),
                format!(
                    "is {:?}; it must be at most reconnect_backoff_max ({:?})",
                    self.reconnect_backoff_min, self.reconnect_backoff_max
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a config's `max_envelope_bytes`: room for the envelope's header and one byte, and
/// at most `max`, the largest message the broker takes. The error names the key as
/// `<section>.max_envelope_bytes`.
pub(crate) fn check_max_envelope_bytes(section: &str, value: usize, max: usize) -> Result<(), ConfigError> {
    let least = crate::envelope::HEADER_BYTES + 1;
    if !(least..=max).contains(&value) {
        return Err(ConfigError::at_key(
            format!("{section}.max_envelope_bytes"),
            format!("is {value}; it must be between {least} and {max}"),
        ));
    }
    Ok(())
}

fn within(key: &str, value: usize, max: usize) -> Result<(), ConfigError> {
    if value == 0 || value > max {
        return Err(ConfigError::at_key(
            key,
            format!("is {value}; it must be between 1 and {max}"),
        ));
    }
    Ok(())
}

/// A connection URL with any password replaced by `***`, for logs and errors: the one in
/// the user info and a `password=` query parameter.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let shown = match rest[..authority_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
        }
        _ => url.to_string(),
    };
    let Some((base, query)) = shown.split_once('?') else {
        return shown;
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***",
            _ => pair,
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("redis://:secret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(
            redact("postgres://user:secret@host/db"),
            "postgres://user:***@host/db"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact("postgres://postgres@host/db"),
            "postgres://postgres@host/db"
        );
        assert_eq!(
            redact("postgres://host/db?user=u&password=secret&sslmode=disable"),
            "postgres://host/db?user=u&password=***&sslmode=disable"
        );
    }
}
