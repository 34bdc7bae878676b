//! Loading a [`Config`] from TOML. Unknown keys and bad values are errors that name the key and
//! its line and column; nothing is silently ignored.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Config, ConfigError, Fallback, Limits, OverflowPolicy, TopicOverride};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    capacity: Option<Spanned<usize>>,
    policy: Option<Spanned<RawPolicy>>,
    #[serde(rename = "override", default)]
    overrides: Vec<Spanned<RawOverride>>,
    limits: Option<Spanned<RawLimits>>,
    stop_grace_ms: Option<Spanned<u64>>,
    close_grace_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawPolicy {
    DropNewest,
    DropOldest,
    Disconnect,
    Block { timeout_ms: u64, then: RawFallback },
    BlockOnce { timeout_ms: u64, then: RawFallback },
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawFallback {
    DropNewest,
    DropOldest,
    Disconnect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    prefix: Spanned<String>,
    policy: Option<Spanned<RawPolicy>>,
    max_queued: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_topic_bytes: Option<Spanned<usize>>,
    max_payload_bytes: Option<Spanned<usize>>,
    max_session_id_bytes: Option<Spanned<usize>>,
}

impl RawPolicy {
    fn into_policy(self) -> OverflowPolicy {
        match self {
            RawPolicy::DropNewest => OverflowPolicy::DropNewest,
            RawPolicy::DropOldest => OverflowPolicy::DropOldest,
            RawPolicy::Disconnect => OverflowPolicy::Disconnect,
            RawPolicy::Block { timeout_ms, then } => OverflowPolicy::Block {
                timeout: Duration::from_millis(timeout_ms),
                then: then.into_fallback(),
            },
            RawPolicy::BlockOnce { timeout_ms, then } => OverflowPolicy::BlockOnce {
                timeout: Duration::from_millis(timeout_ms),
                then: then.into_fallback(),
            },
        }
    }
}

impl RawFallback {
    fn into_fallback(self) -> Fallback {
        match self {
            RawFallback::DropNewest => Fallback::DropNewest,
            RawFallback::DropOldest => Fallback::DropOldest,
            RawFallback::Disconnect => Fallback::Disconnect,
        }
    }
}

impl Config {
    /// Parses a TOML document. Keys left out keep their [`Config::default`] values; an unknown
    /// key, a value of the wrong type or out of range is an error naming the key and position.
    pub fn from_toml_str(source: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(source).map_err(|e| parse_error(source, &e))?;
        let mut spans: Vec<(String, Range<usize>)> = Vec::new();
        let mut config = Config::default();
        if let Some(capacity) = raw.capacity {
            spans.push(("capacity".into(), capacity.span()));
            config.capacity = capacity.into_inner();
        }
        if let Some(policy) = raw.policy {
            spans.push(("policy".into(), policy.span()));
            config.policy = policy.into_inner().into_policy();
        }
        if let Some(grace) = raw.stop_grace_ms {
            spans.push(("stop_grace_ms".into(), grace.span()));
            config.stop_grace = Duration::from_millis(grace.into_inner());
        }
        if let Some(grace) = raw.close_grace_ms {
            spans.push(("close_grace_ms".into(), grace.span()));
            config.close_grace = Duration::from_millis(grace.into_inner());
        }
        for (i, o) in raw.overrides.into_iter().enumerate() {
            let key = format!("override[{i}]");
            spans.push((key.clone(), o.span()));
            let o = o.into_inner();
            spans.push((format!("{key}.prefix"), o.prefix.span()));
            let policy = o.policy.map(|p| {
                spans.push((format!("{key}.policy"), p.span()));
                p.into_inner().into_policy()
            });
            let max_queued = o.max_queued.map(|m| {
                spans.push((format!("{key}.max_queued"), m.span()));
                m.into_inner()
            });
            config.overrides.push(TopicOverride {
                prefix: o.prefix.into_inner(),
                policy,
                max_queued,
            });
        }
        if let Some(limits) = raw.limits {
            spans.push(("limits".into(), limits.span()));
            let limits = limits.into_inner();
            let defaults = Limits::default();
            let mut take = |name: &str, value: Option<Spanned<usize>>, default: usize| {
                value.map_or(default, |v| {
                    spans.push((format!("limits.{name}"), v.span()));
                    v.into_inner()
                })
            };
            config.limits = Limits {
                max_topic_bytes: take(
                    "max_topic_bytes",
                    limits.max_topic_bytes,
                    defaults.max_topic_bytes,
                ),
                max_payload_bytes: take(
                    "max_payload_bytes",
                    limits.max_payload_bytes,
                    defaults.max_payload_bytes,
                ),
                max_session_id_bytes: take(
                    "max_session_id_bytes",
                    limits.max_session_id_bytes,
                    defaults.max_session_id_bytes,
                ),
            };
        }
        config.validate().map_err(|e| locate(e, source, &spans))?;
        Ok(config)
    }

    /// Reads and parses a TOML file; errors carry the file name.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        read_file(path.as_ref(), Config::from_toml_str)
    }
}

/// Reads the file at `path` and parses it with `parse`; errors carry the file name.
pub(crate) fn read_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        key: None,
        position: None,
        file: Some(name.clone()),
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&source).map_err(|mut e| {
        e.file = Some(name);
        e
    })
}

/// The settings every provider's table shares that a file gives in milliseconds, under the key
/// `<field>_ms`.
#[cfg(any(feature = "postgres", feature = "nats"))]
const SHARED_MILLISECOND_FIELDS: [&str; 5] = [
    "connect_timeout",
    "response_timeout",
    "health_check_interval",
    "reconnect_backoff_min",
    "reconnect_backoff_max",
];

/// A provider's table as a file gives it (`[nats]`, `[postgres]`): the struct with the fields
/// given, each an `Option<Spanned<_>>`, then those of the settings every provider's config has
/// (`max_envelope_bytes`, `publish_queue`, `max_pipeline`, and the durations of
/// `provider_config!` in milliseconds under `<field>_ms`); and `take_shared`, which stores
/// those the file gives in a `$config`. serde cannot `flatten` a struct of the shared keys
/// into a table that denies unknown keys, hence one definition expanded in each table.
#[cfg(any(feature = "postgres", feature = "nats"))]
macro_rules! provider_table {
    (
        $(#[$meta:meta])*
        struct $raw:ident for $config:ty {
            $($field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        struct $raw {
            $($field: Option<toml::Spanned<$ty>>,)*
            max_envelope_bytes: Option<toml::Spanned<usize>>,
            publish_queue: Option<toml::Spanned<usize>>,
            max_pipeline: Option<toml::Spanned<usize>>,
            connect_timeout_ms: Option<toml::Spanned<u64>>,
            response_timeout_ms: Option<toml::Spanned<u64>>,
            health_check_interval_ms: Option<toml::Spanned<u64>>,
            reconnect_backoff_min_ms: Option<toml::Spanned<u64>>,
            reconnect_backoff_max_ms: Option<toml::Spanned<u64>>,
        }

        impl $raw {
            /// Stores the shared settings the table gives in `config`.
            fn take_shared(&mut self, table: &mut $crate::config::file::ProviderTable, config: &mut $config) {
                let c = config;
                table.take("max_envelope_bytes", self.max_envelope_bytes.take(), &mut c.max_envelope_bytes);
                table.take("publish_queue", self.publish_queue.take(), &mut c.publish_queue);
                table.take("max_pipeline", self.max_pipeline.take(), &mut c.max_pipeline);
                table.take_ms("connect_timeout", self.connect_timeout_ms.take(), &mut c.connect_timeout);
                table.take_ms("response_timeout", self.response_timeout_ms.take(), &mut c.response_timeout);
                let interval = &mut c.health_check_interval;
                table.take_ms("health_check_interval", self.health_check_interval_ms.take(), interval);
                let min = &mut c.reconnect_backoff_min;
                table.take_ms("reconnect_backoff_min", self.reconnect_backoff_min_ms.take(), min);
                let max = &mut c.reconnect_backoff_max;
                table.take_ms("reconnect_backoff_max", self.reconnect_backoff_max_ms.take(), max);
            }
        }
    };
}
#[cfg(any(feature = "postgres", feature = "nats"))]
pub(crate) use provider_table;

/// The values a provider's table (`[postgres]`, `[nats]`) gives, with where each stands in
/// the file, under the key validation names (`<section>.<field>`), so that a validation error
/// points at the value that broke it and names the key as the file spells it.
#[cfg(any(feature = "postgres", feature = "nats"))]
pub(crate) struct ProviderTable {
    section: &'static str,
    /// The provider's own fields the file gives in milliseconds, under the key `<field>_ms`
    /// (beside [`SHARED_MILLISECOND_FIELDS`]).
    millisecond_fields: &'static [&'static str],
    spans: Vec<(String, Range<usize>)>,
}

#[cfg(any(feature = "postgres", feature = "nats"))]
impl ProviderTable {
    /// The table `section`, standing at `span`.
    pub(crate) fn new(
        section: &'static str,
        millisecond_fields: &'static [&'static str],
        span: Range<usize>,
    ) -> Self {
        Self {
            section,
            millisecond_fields,
            spans: vec![(section.to_string(), span)],
        }
    }

    /// No table in the file: validation errors are located nowhere.
    pub(crate) fn absent(section: &'static str, millisecond_fields: &'static [&'static str]) -> Self {
        Self {
            section,
            millisecond_fields,
            spans: Vec::new(),
        }
    }

    /// Stores `value`, if the file gives it, in `field`.
    pub(crate) fn take<T>(&mut self, key: &str, value: Option<Spanned<T>>, field: &mut T) {
        self.take_as(key, value, field, |value| value);
    }

    /// Stores a `<key>_ms` value, if the file gives it, in the duration `field`.
    pub(crate) fn take_ms(&mut self, key: &str, value: Option<Spanned<u64>>, field: &mut Duration) {
        self.take_as(key, value, field, Duration::from_millis);
    }

    /// Stores `value`, if the file gives it, in `field`, through `convert`.
    pub(crate) fn take_as<R, T>(
        &mut self,
        key: &str,
        value: Option<Spanned<R>>,
        field: &mut T,
        convert: impl FnOnce(R) -> T,
    ) {
        if let Some(value) = value {
            self.spans.push((format!("{}.{key}", self.section), value.span()));
            *field = convert(value.into_inner());
        }
    }

    /// `error` from validating what the table gave, positioned at the value it names (else at
    /// the table), under the key the file spells: `<section>.<field>_ms` for a duration.
    pub(crate) fn locate(&self, error: ConfigError, source: &str) -> ConfigError {
        let mut error = locate(error, source, &self.spans);
        if let Some(key) = &mut error.key {
            let field = key
                .strip_prefix(self.section)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or_default();
            if self.millisecond_fields.contains(&field) || SHARED_MILLISECOND_FIELDS.contains(&field) {
                key.push_str("_ms");
            }
        }
        error
    }
}

/// For tests of the provider tables: `parsed` is an error naming `key` at `position` (line and
/// column) whose message mentions `mentions`.
#[cfg(all(test, any(feature = "postgres", feature = "nats")))]
#[track_caller]
pub(crate) fn assert_error_at<T: std::fmt::Debug>(
    parsed: Result<T, ConfigError>,
    key: &str,
    position: (usize, usize),
    mentions: &str,
) {
    let error = match parsed {
        Err(error) => error,
        Ok(config) => panic!("accepted as {config:?}"),
    };
    assert_eq!(error.key.as_deref(), Some(key), "key of {error:?}");
    assert_eq!(error.position, Some(position), "position of {error:?}");
    assert!(
        error.message.contains(mentions),
        "{:?} does not mention {mentions:?}",
        error.message
    );
}

/// Gives a validation error the position of the most specific key it names that `spans`
/// (dotted keys and where their values stand in `source`) records: the key itself, else the
/// nearest table holding it.
pub(crate) fn locate(mut error: ConfigError, source: &str, spans: &[(String, Range<usize>)]) -> ConfigError {
    let mut key = error.key.clone().unwrap_or_default();
    loop {
        if let Some((_, span)) = spans.iter().find(|(k, _)| *k == key) {
            error.position = Some(line_col(source, span.start));
            break;
        }
        match key.rfind('.') {
            Some(dot) => key.truncate(dot),
            None => break,
        }
    }
    error
}

/// A deserialisation error as a [`ConfigError`] naming the key and position at fault.
pub(crate) fn parse_error(source: &str, error: &toml::de::Error) -> ConfigError {
    let start = error.span().map(|s| s.start);
    ConfigError {
        key: start.and_then(|offset| key_at(source, offset)),
        position: start.map(|offset| line_col(source, offset)),
        file: None,
        message: error.message().trim().to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(source, offset.min(source.len()));
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A line without its trailing `# comment` (table headers hold no `#` outside quotes here:
/// every table and key this config knows is a bare word), trimmed.
fn without_comment(line: &str) -> &str {
    line.split('#').next().unwrap_or("").trim()
}

/// The dotted key written on the line holding `offset`, qualified by its table header.
fn key_at(source: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(source, offset.min(source.len()));
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = source[line_start..].lines().next().unwrap_or("").trim();
    if line.starts_with('[') {
        let header = without_comment(line);
        let name = header.trim_matches(|c| c == '[' || c == ']').trim();
        // An empty header (`[`, `[]`) names no key; the error keeps its position.
        return (!name.is_empty()).then(|| name.to_string());
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"').to_string();
    if key.is_empty() {
        return None;
    }
    let mut table: Option<String> = None;
    let mut array_index = 0usize;
    let mut array_name: Option<String> = None;
    for header in source[..line_start].lines().map(without_comment) {
        if let Some(name) = header.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
            let name = name.trim().to_string();
            array_index = if array_name.as_deref() == Some(&name) {
                array_index + 1
            } else {
                0
            };
            table = Some(format!("{name}[{array_index}]"));
            array_name = Some(name);
        } else if let Some(name) = header.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = Some(name.trim().to_string());
        }
    }
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    })
}
