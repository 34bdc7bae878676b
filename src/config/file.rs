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
