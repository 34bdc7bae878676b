//! `NatsConfig`: where the NATS server is, how subjects are named, the protocol limits, and
//! the timings of the connections.

use std::fmt;

use super::subject::{check_prefix, SubjectNames, DEFAULT_SUBJECT_PREFIX};
use super::wire::COMMAND_OVERHEAD;
use crate::config::{ConfigError, Limits};
use crate::provider::bridge::settings::{
    check_max_envelope_bytes, provider_config, redact, shared_config_methods, BridgeSettings,
};

/// The environment variable [`NatsConfig::from_env`] reads the URL from.
pub const NATS_URL_ENV: &str = "NATS_URL";

/// The URL used when none is given: a NATS server on the local machine.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The port of a URL that names none.
pub const DEFAULT_NATS_PORT: u16 = 4222;

/// The server's default `max_control_line`, and [`NatsConfig::max_control_line`]'s default.
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;

/// The largest `max_payload` a NATS server can be configured with (64 MB), and so the
/// largest [`NatsConfig::max_envelope_bytes`] allowed.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024 * 1024;

/// The largest envelope the publisher makes by joining messages: well under the server's
/// default `max_payload` (1 MiB), so a batch is never refused for its size.
const BATCH_ENVELOPE_BYTES: usize = 64 * 1024;

provider_config! {
    /// Settings of the NATS side of a [`NatsPubSub`](super::NatsPubSub). The local side (mailboxes,
    /// policies, limits) is a [`Config`](crate::Config), as for the in-memory provider.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fanout::nats::NatsConfig;
    ///
    /// let config = NatsConfig::new("nats://user:secret@127.0.0.1:4222")
    ///     .with_subject_prefix("myapp.pubsub")
    ///     .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500));
    /// config.validate().unwrap();
    /// ```
    #[derive(Clone, PartialEq, Eq)]
    pub struct NatsConfig {
        /// The server, as `nats://[user:password@]host[:port]` or `nats://token@host[:port]`
        /// (percent-encoded where needed). Default [`DEFAULT_NATS_URL`].
        pub url: String = DEFAULT_NATS_URL.to_string(),
        /// The subjects' first tokens: a topic's subject is `<prefix>.<topic as one token>`, so
        /// several applications can share a server. Default `"fanout"`. Every instance of one
        /// application must use the same prefix.
        pub subject_prefix: String = DEFAULT_SUBJECT_PREFIX.to_string(),
        /// The server's `max_control_line` (4096 unless the server's configuration changes it; it
        /// is not announced in `INFO`). The server closes a connection that sends a longer command
        /// line, so the provider refuses at construction a configuration in which the longest
        /// topic's `SUB` or `PUB` line could exceed it. Default [`DEFAULT_MAX_CONTROL_LINE`].
        pub max_control_line: usize = DEFAULT_MAX_CONTROL_LINE,
        /// Largest encoded envelope sent or accepted (header, topic, sender id and payload). The
        /// server's `max_payload`, learned at each connection, lowers it further. Default 1 MiB
        /// (the server's default `max_payload`), at most [`MAX_ENVELOPE_BYTES`].
        pub max_envelope_bytes: usize = 1024 * 1024,
    }
    pipeline_shares: "one envelope and one `PUB`",
    connect_timeout: "How long one connection attempt (TCP, `INFO`, `CONNECT`, the first `PONG`) \
        may take.",
    response_timeout: "How long the server may take to answer a `PING` sent after commands (a \
        pipeline of `PUB`s, `SUB`s, a health check) before the connection is taken as lost.",
    health_check: "with `PING`",
}

/// Where to connect and with which credentials, read from [`NatsConfig::url`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Credentials,
}

/// The credentials a URL carries, sent in `CONNECT`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    None,
    UserPassword { user: String, password: String },
    Token(String),
}

impl Endpoint {
    /// `host:port`, for messages.
    pub(crate) fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl NatsConfig {
    shared_config_methods!(NATS_URL_ENV, "NATS_URL", subject_prefix, with_subject_prefix);

    /// Sets the largest envelope.
    pub fn with_max_envelope_bytes(mut self, bytes: usize) -> Self {
        self.max_envelope_bytes = bytes;
        self
    }

    /// Sets the server's control-line limit.
    pub fn with_max_control_line(mut self, bytes: usize) -> Self {
        self.max_control_line = bytes;
        self
    }

    /// Checks every value; the error names the key and the bound it broke.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.endpoint()?;
        check_prefix(&self.subject_prefix)?;
        check_max_envelope_bytes("nats", self.max_envelope_bytes, MAX_ENVELOPE_BYTES)?;
        self.bridge_settings().validate("nats")
    }

    /// Checks that the longest topic `limits` allows yields `SUB` and `PUB` lines within
    /// [`max_control_line`](Self::max_control_line): a longer line would make the server close
    /// the connection.
    pub(crate) fn check_control_line(&self, limits: &Limits) -> Result<(), ConfigError> {
        let subject = SubjectNames::new(&self.subject_prefix).longest(limits.max_topic_bytes);
        let line = subject.saturating_add(COMMAND_OVERHEAD);
        if line > self.max_control_line {
            return Err(ConfigError::at_key(
                "nats.max_control_line",
                format!(
                    "is {}, but a topic of limits.max_topic_bytes = {} bytes can need a {line}-byte command line \
                     (each topic byte may take 3 in its subject): lower limits.max_topic_bytes or raise \
                     nats.max_control_line (and the server's max_control_line)",
                    self.max_control_line, limits.max_topic_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The server the URL names, as `host:port` (no credentials), or why the URL is not
    /// valid.
    pub fn server(&self) -> Result<String, ConfigError> {
        self.endpoint().map(|endpoint| endpoint.target())
    }

    /// The server and credentials the URL names.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, ConfigError> {
        parse_url(&self.url).map_err(|why| {
            ConfigError::at_key(
                "nats.url",
                format!("`{}` is not a valid NATS URL: {why}", shown_url(&self.url)),
            )
        })
    }

    /// The broker-independent part, for the bridge.
    pub(crate) fn bridge_settings(&self) -> BridgeSettings {
        self.bridge_settings_with(
            self.max_envelope_bytes,
            self.max_envelope_bytes.min(BATCH_ENVELOPE_BYTES),
        )
    }
}

/// `nats://[user:password@|token@]host[:port]`, nothing after the authority but an optional
/// `/`.
fn parse_url(url: &str) -> Result<Endpoint, String> {
    let rest = url
        .strip_prefix("nats://")
        .ok_or("it must start with nats:// (tls:// and ws:// are not supported)")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("it must name a server only, with no path or query".into());
    }
    let (userinfo, server) = match authority.rsplit_once('@') {
        Some((userinfo, server)) => (Some(userinfo), server),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None => Credentials::None,
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, password)) => Credentials::UserPassword {
                user: percent_decode(user)?,
                password: percent_decode(password)?,
            },
            None => Credentials::Token(percent_decode(userinfo)?),
        },
    };
    let (host, port) = if let Some(bracketed) = server.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("an IPv6 host lacks its `]`")?;
        (host, after.strip_prefix(':'))
    } else {
        match server.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        }
    };
    if host.is_empty() {
        return Err("it names no host".into());
    }
    let port = match port {
        None => DEFAULT_NATS_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| format!("`{port}` is not a port"))?,
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
        credentials,
    })
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let value = bytes
                .get(i + 1..i + 3)
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("a `%` in its credentials is not followed by two hex digits")?;
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "its credentials are not UTF-8".to_string())
}

/// A NATS URL with its password or token replaced by `***`, for logs and errors. Everything
/// up to the last `@` is taken as credentials, so a `/`, `?` or `#` a password forgot to
/// percent-encode is hidden too; a user name is kept.
pub(crate) fn shown_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("nats://") else {
        return redact(url);
    };
    match rest.rsplit_once('@') {
        Some((userinfo, server)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("nats://{user}:***@{server}"),
            None => format!("nats://***@{server}"),
        },
        None => url.to_string(),
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("NatsConfig");
        debug
            .field("url", &shown_url(&self.url))
            .field("subject_prefix", &self.subject_prefix)
            .field("max_control_line", &self.max_control_line)
            .field("max_envelope_bytes", &self.max_envelope_bytes);
        self.debug_bridge_fields(&mut debug);
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_server_and_credentials() {
        let endpoint = parse_url("nats://127.0.0.1:4222").unwrap();
        assert_eq!(endpoint.target(), "127.0.0.1:4222");
        assert!(endpoint.credentials == Credentials::None);
        let endpoint = parse_url("nats://me:p%40ss@host").unwrap();
        assert_eq!(endpoint.target(), "host:4222");
        assert!(
            endpoint.credentials
                == Credentials::UserPassword {
                    user: "me".into(),
                    password: "p@ss".into()
                }
        );
        let endpoint = parse_url("nats://s3cret@[::1]:5000/").unwrap();
        assert_eq!(endpoint.target(), "[::1]:5000");
        assert!(endpoint.credentials == Credentials::Token("s3cret".into()));
        for bad in [
            "redis://host",
            "nats://",
            "nats://host:0",
            "nats://host:x",
            "nats://host/db",
            "nats://a%zz@host",
            "nats://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shown_urls_hide_passwords_and_tokens() {
        assert_eq!(shown_url("nats://me:secret@host:4222"), "nats://me:***@host:4222");
        assert_eq!(shown_url("nats://secret@host:4222"), "nats://***@host:4222");
        assert_eq!(shown_url("nats://host:4222"), "nats://host:4222");
        let shown = format!("{:?}", NatsConfig::new("nats://secret@host"));
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn control_line_must_fit_the_longest_topic() {
        let config = NatsConfig::default();
        assert!(config.check_control_line(&Limits::default()).is_ok());
        let error = config
            .check_control_line(&Limits::default().with_max_topic_bytes(2000))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("nats.max_control_line") && error.contains("limits.max_topic_bytes = 2000"),
            "{error}"
        );
        assert!(config
            .with_max_control_line(8192)
            .check_control_line(&Limits::default().with_max_topic_bytes(2000))
            .is_ok());
    }

    #[test]
    fn validate_names_the_key() {
        let error = NatsConfig::default()
            .with_max_envelope_bytes(MAX_ENVELOPE_BYTES + 1)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.contains("nats.max_envelope_bytes"), "{error}");
        let error = NatsConfig::default()
            .with_subject_prefix("a.*")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.contains("nats.subject_prefix"), "{error}");
        let error = NatsConfig::new("http://x").validate().unwrap_err().to_string();
        assert!(error.contains("nats.url"), "{error}");
    }
}
