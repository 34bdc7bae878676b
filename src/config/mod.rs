//! Capacity, overflow policy and limits: built in code or loaded from a TOML file.
//!
//! Every session has one bounded mailbox of [`Config::capacity`] messages, shared by all its
//! topics. When a broadcast finds it full, the [`OverflowPolicy`] of the message's topic decides.
//! [`TopicOverride`]s change the policy (and an admission limit) for topics under a prefix; the
//! longest matching prefix wins, and what it leaves unset comes from the provider-wide values.
//!
//! ```toml
//! capacity = 256
//! policy = "drop_oldest"
//!
//! [[override]]
//! prefix = "presence:"
//! policy = "drop_newest"
//! max_queued = 32
//!
//! [[override]]
//! prefix = "billing:"
//! policy = { block = { timeout_ms = 50, then = "disconnect" } }
//!
//! [limits]
//! max_topic_bytes = 1024
//! ```
//!
//! # Keys
//!
//! The file and the builder set the same values and accept the same ranges: both go through
//! [`Config::validate`], whose errors name the key as the file spells it. What each value means
//! at its bounds is on the field it sets.
//!
//! | file key | builder | accepted | default |
//! | --- | --- | --- | --- |
//! | `capacity` | [`Config::with_capacity`] | 1 to [`MAX_CAPACITY`] | 256 |
//! | `policy` | [`Config::with_policy`] | any [`OverflowPolicy`]; a wait of 1 ms to [`MAX_BLOCK_TIMEOUT`] | `"drop_oldest"` |
//! | `stop_grace_ms` | [`Config::with_stop_grace`] | 0, or 1 ms to [`MAX_STOP_GRACE`] | 5000 |
//! | `close_grace_ms` | [`Config::with_close_grace`] | 0, or 1 ms to [`MAX_CLOSE_GRACE`] | 5000 |
//! | `[[override]]` | [`Config::with_topic_override`] (or [`Config::with_override`] for a policy alone) | any number | none |
//! | `override[i].prefix` | [`TopicOverride::new`] | non-empty, each once | (required) |
//! | `override[i].policy` | [`TopicOverride::with_policy`] | as `policy` | the provider-wide `policy` |
//! | `override[i].max_queued` | [`TopicOverride::with_max_queued`] | 1 to `capacity` | `capacity` |
//! | `limits.max_topic_bytes` | [`Limits::with_max_topic_bytes`] | 1 to 2³² − 1 | 1024 |
//! | `limits.max_payload_bytes` | [`Limits::with_max_payload_bytes`] | 1 to 2³² − 1 | 8 MiB |
//! | `limits.max_session_id_bytes` | [`Limits::with_max_session_id_bytes`] | 1 to 65535 | 256 |

#[cfg(feature = "toml")]
pub(crate) mod file;

use std::fmt;
use std::time::Duration;

/// The largest mailbox capacity a config may ask for: 2²⁰ messages.
pub const MAX_CAPACITY: usize = 1 << 20;

/// The longest wait of a [`OverflowPolicy::Block`] or [`OverflowPolicy::BlockOnce`] a config
/// accepts: one hour.
pub const MAX_BLOCK_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest [`Config::stop_grace`] a config accepts: one hour.
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(3600);

/// The longest [`Config::close_grace`] a config accepts: one hour.
pub const MAX_CLOSE_GRACE: Duration = Duration::from_secs(3600);

/// The shortest non-zero duration a config accepts: tokio's timer counts whole milliseconds,
/// so a shorter wait would last a millisecond anyway, and a file could not write it.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// What a broadcast does when it finds a session's mailbox full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// The new message is not queued for that session (counted as `drop_newest`).
    DropNewest,
    /// The oldest queued message is evicted to make room (counted as `drop_oldest`); the session
    /// learns how many it missed.
    DropOldest,
    /// The session is a slow consumer: it is closed, unsubscribed from everything, and told why.
    Disconnect,
    /// The broadcaster waits up to `timeout` for room, then applies `then`. A session that
    /// stopped reading costs every broadcast that finds it full the whole `timeout`.
    Block {
        /// How long one broadcast waits, in total, for full mailboxes to make room: from 1 ms
        /// to [`MAX_BLOCK_TIMEOUT`], waited in full when no mailbox makes room. Zero is refused
        /// (a wait of nothing is `then` itself: configure `then` as the policy instead), and so
        /// is anything under 1 ms (tokio's timer counts whole milliseconds).
        timeout: Duration,
        /// What happens to a mailbox still full when the time is up.
        then: Fallback,
    },
    /// As [`Block`](Self::Block), but a session whose wait timed out is not waited for again
    /// until it has taken a message: until then, broadcasts that find its mailbox full apply
    /// `then` at once (counted in `block_skips`). Backpressure for sessions that are slow, not
    /// for sessions that stopped: a stalled session costs each broadcast one push attempt
    /// instead of one `timeout`.
    BlockOnce {
        /// How long one broadcast waits, in total, for full mailboxes to make room; bounded as
        /// [`Block`](Self::Block)'s.
        timeout: Duration,
        /// What happens to a mailbox still full when the time is up, and to the mailbox of a
        /// session not waited for.
        then: Fallback,
    },
}

/// The policy a [`OverflowPolicy::Block`] or [`OverflowPolicy::BlockOnce`] falls back to when
/// its wait times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// As [`OverflowPolicy::DropNewest`].
    DropNewest,
    /// As [`OverflowPolicy::DropOldest`].
    DropOldest,
    /// As [`OverflowPolicy::Disconnect`].
    Disconnect,
}

impl From<Fallback> for OverflowPolicy {
    fn from(value: Fallback) -> Self {
        match value {
            Fallback::DropNewest => OverflowPolicy::DropNewest,
            Fallback::DropOldest => OverflowPolicy::DropOldest,
            Fallback::Disconnect => OverflowPolicy::Disconnect,
        }
    }
}

/// Overrides for every topic that starts with `prefix`.
///
/// Built as `TopicOverride::new(prefix)`, then [`with_policy`](Self::with_policy) and
/// [`with_max_queued`](Self::with_max_queued), and added with
/// [`Config::with_topic_override`]; or written as a `[[override]]` table in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOverride {
    /// The topic prefix this override applies to (literal, non-empty, used by one override
    /// only). The longest matching prefix wins, so an override that sets nothing still gives
    /// its topics the provider-wide values instead of a shorter prefix's.
    pub prefix: String,
    /// The overflow policy for these topics; `None` keeps the provider-wide one.
    pub policy: Option<OverflowPolicy>,
    /// Admit a message of these topics only while the session's mailbox holds fewer than this
    /// many messages; a fuller mailbox counts as full for them, and their policy applies.
    /// `None` admits up to the capacity.
    ///
    /// - **1**: a message of these topics is admitted only into an empty mailbox. Under
    ///   `drop_oldest` it evicts every queued message, of any topic, and is queued alone.
    /// - **[`Config::capacity`]**: the largest, and the same as `None`.
    /// - 0 (no message of these topics could ever be queued) and more than the capacity are
    ///   refused (`override[i].max_queued`).
    pub max_queued: Option<usize>,
}

impl TopicOverride {
    /// An override for the topics starting with `prefix` that sets nothing yet: they take the
    /// provider-wide values.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            policy: None,
            max_queued: None,
        }
    }

    /// Sets the overflow policy for these topics.
    pub fn with_policy(mut self, policy: OverflowPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Sets how many queued messages a session's mailbox may hold and still admit a message of
    /// these topics (see [`max_queued`](Self::max_queued)).
    pub fn with_max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = Some(max_queued);
        self
    }
}

/// Size limits checked on every operation ([G9]).
///
/// A value of exactly the limit is accepted; one byte more is refused with the
/// [`PubSubError`](crate::PubSubError) that names the limit. Each limit is at least 1 (topics
/// and session ids are never empty, whatever the limits); 0 is refused.
///
/// [G9]: crate::docs::contract#g9-errors-are-values
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted topic, in bytes. Default 1024. From 1 (one-byte topics only) to
    /// 2³² − 1, the most an envelope's length field carries.
    pub max_topic_bytes: usize,
    /// Largest accepted payload, in bytes. Default 8 MiB. From 1 to 2³² − 1, the most an
    /// envelope's length field carries. An empty payload is always accepted.
    pub max_payload_bytes: usize,
    /// Longest accepted session id, in bytes. Default 256. From 1 (one-byte ids only) to 65535.
    pub max_session_id_bytes: usize,
}

impl Limits {
    /// Sets the longest accepted topic, in bytes.
    pub fn with_max_topic_bytes(mut self, bytes: usize) -> Self {
        self.max_topic_bytes = bytes;
        self
    }

    /// Sets the largest accepted payload, in bytes.
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets the longest accepted session id, in bytes.
    pub fn with_max_session_id_bytes(mut self, bytes: usize) -> Self {
        self.max_session_id_bytes = bytes;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_topic_bytes: 1024,
            max_payload_bytes: 8 * 1024 * 1024,
            max_session_id_bytes: 256,
        }
    }
}

/// Configuration of the in-memory engine (and of the local side of distributed providers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Mailbox capacity of every session: how many messages it holds that it has not taken
    /// yet. Default 256.
    ///
    /// - **1**: a session holds one message. A message its handler is running is no longer in
    ///   the mailbox, so a handler-form session has at most one message in its handler and one
    ///   waiting; under `drop_oldest` a reader that falls behind sees only the latest.
    /// - **[`MAX_CAPACITY`]**: the largest. A mailbox's memory follows what it holds, not its
    ///   capacity, so a large capacity costs memory only while a session is that far behind.
    /// - 0 and more than `MAX_CAPACITY` are refused (`capacity`).
    pub capacity: usize,
    /// Overflow policy for topics no override matches. Default [`OverflowPolicy::DropOldest`].
    pub policy: OverflowPolicy,
    /// Per-prefix overrides; the longest matching prefix wins.
    pub overrides: Vec<TopicOverride>,
    /// Size limits.
    pub limits: Limits,
    /// How long `stop()` waits for handlers still running. Default 5 s.
    ///
    /// `stop()` first closes every session: queued messages are discarded (counted as
    /// stopped) and no handler call starts afterwards. It then waits up to this long for the
    /// session tasks to end, and cancels those still running: a handler's future is dropped
    /// at the `.await` it is parked on, counted in
    /// [`handlers_cancelled`](crate::StatsSnapshot::handlers_cancelled), and the number of
    /// tasks cancelled is logged. This grace, not [`close_grace`](Self::close_grace), applies
    /// to the sessions `stop()` closes: it bounds `stop()` as a whole.
    ///
    /// - **0**: no wait of its own. Tasks still running are cancelled at the timer's next
    ///   tick, under a millisecond later (tokio's timer counts whole milliseconds): a handler
    ///   whose future waits for anything that does not come by then (I/O, a lock, a timer) is
    ///   cancelled; one that needs only to be polled may finish first.
    /// - **[`MAX_STOP_GRACE`]**: the longest; a handler that never finishes holds `stop()`
    ///   this long.
    /// - A non-zero grace under 1 ms (tokio's timer counts whole milliseconds) and one over
    ///   `MAX_STOP_GRACE` are refused (`stop_grace_ms`).
    ///
    /// Whatever the grace, a poll in progress (a handler's synchronous part included) cannot
    /// be interrupted: `stop()` returns once it has returned. Distributed providers give their
    /// broker connections at least their response timeout to close, whatever this value.
    pub stop_grace: Duration,
    /// How long a handler still running when its session ends may go on. Default 5 s.
    ///
    /// A handler-form session ends with `unsubscribe_all`, with the `unsubscribe_topic` of its
    /// last topic, or when a broadcast disconnects it as a slow consumer. A handler whose
    /// future is then still waiting (parked at an `.await`) gets this long from the close to
    /// finish; after that its future is dropped (cancelled) at the `.await` it is parked on,
    /// counted in [`handlers_cancelled`](crate::StatsSnapshot::handlers_cancelled) and logged
    /// (a warning at most once a second, carrying how many were cancelled since the last one),
    /// and the session's task ends. So no session's task outlives its session by more than
    /// this grace ([G7]). A handler's synchronous part (the call that returns its future) and
    /// each poll of its future cannot be interrupted: they are waited for, and a handler
    /// stuck in one holds its task that long. Sessions closed by `stop()` get
    /// [`stop_grace`](Self::stop_grace) instead.
    ///
    /// - **0**: cancel at once: the session's task, woken by the close, drops the handler's
    ///   future without polling it again.
    /// - **[`MAX_CLOSE_GRACE`]**: the longest.
    /// - A non-zero grace under 1 ms (tokio's timer counts whole milliseconds) and one over
    ///   `MAX_CLOSE_GRACE` are refused (`close_grace_ms`).
    ///
    /// A non-zero grace needs a tokio runtime with timers enabled; on one without, a handler
    /// still running at its session's end is cancelled at once.
    ///
    /// [G7]: crate::docs::contract#g7-bounded-memory
    pub close_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            capacity: 256,
            policy: OverflowPolicy::DropOldest,
            overrides: Vec::new(),
            limits: Limits::default(),
            stop_grace: Duration::from_secs(5),
            close_grace: Duration::from_secs(5),
        }
    }
}

/// What a config check found wrong: the key, where it is (for files) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ConfigError {
    /// The offending key, as a dotted path (`override[1].max_queued`), when known.
    pub key: Option<String>,
    /// 1-based line and column in the file, when loaded from one.
    pub position: Option<(usize, usize)>,
    /// The file, when loaded from one.
    pub file: Option<String>,
    /// What is wrong, naming the limit broken.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some((line, col))) => write!(f, "{file}:{line}:{col}: ")?,
            (None, Some((line, col))) => write!(f, "line {line}, column {col}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, None) => {}
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    pub(crate) fn at_key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            position: None,
            file: None,
            message: message.into(),
        }
    }
}

/// The policy and admission limit that apply to one topic, resolved once per topic entry so a
/// broadcast never matches prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliveryRule {
    pub(crate) policy: OverflowPolicy,
    /// Messages of this topic are admitted while the mailbox holds fewer than this many.
    pub(crate) max_queued: usize,
}

impl DeliveryRule {
    /// The same admission limit under a `block` policy's fallback.
    pub(crate) fn falling_back_to(self, then: Fallback) -> DeliveryRule {
        DeliveryRule {
            policy: then.into(),
            max_queued: self.max_queued,
        }
    }
}

impl OverflowPolicy {
    /// The policy's name as a config file spells it: `drop_newest`, `drop_oldest`,
    /// `disconnect`, `block` or `block_once`.
    pub fn name(&self) -> &'static str {
        match self {
            OverflowPolicy::DropNewest => "drop_newest",
            OverflowPolicy::DropOldest => "drop_oldest",
            OverflowPolicy::Disconnect => "disconnect",
            OverflowPolicy::Block { .. } => "block",
            OverflowPolicy::BlockOnce { .. } => "block_once",
        }
    }

    /// For the waiting policies (`block`, `block_once`): how long a broadcast waits and what
    /// applies after.
    pub(crate) fn wait(&self) -> Option<(Duration, Fallback)> {
        match *self {
            OverflowPolicy::Block { timeout, then } | OverflowPolicy::BlockOnce { timeout, then } => {
                Some((timeout, then))
            }
            _ => None,
        }
    }
}

impl Config {
    /// Sets the mailbox capacity.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the provider-wide overflow policy.
    pub fn with_policy(mut self, policy: OverflowPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Adds a per-prefix override of the policy alone; the same as
    /// `with_topic_override(TopicOverride::new(prefix).with_policy(policy))`.
    pub fn with_override(self, prefix: impl Into<String>, policy: OverflowPolicy) -> Self {
        self.with_topic_override(TopicOverride::new(prefix).with_policy(policy))
    }

    /// Adds a per-prefix override: a policy, an admission limit, or both (a file's
    /// `[[override]]` table).
    pub fn with_topic_override(mut self, topic_override: TopicOverride) -> Self {
        self.overrides.push(topic_override);
        self
    }

    /// Sets the size limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how long `stop()` waits for running handlers (see [`stop_grace`](Self::stop_grace)).
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Sets how long a handler still running when its session ends may go on before it is
    /// cancelled (see [`close_grace`](Self::close_grace)).
    pub fn with_close_grace(mut self, grace: Duration) -> Self {
        self.close_grace = grace;
        self
    }

    /// Checks every value; the error names the key and the bound it broke.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(ConfigError::at_key(
                "capacity",
                format!("is {}; it must be between 1 and {MAX_CAPACITY}", self.capacity),
            ));
        }
        check_policy("policy", &self.policy)?;
        check_grace("stop_grace_ms", self.stop_grace, MAX_STOP_GRACE)?;
        check_grace("close_grace_ms", self.close_grace, MAX_CLOSE_GRACE)?;
        for (i, o) in self.overrides.iter().enumerate() {
            if o.prefix.is_empty() {
                return Err(ConfigError::at_key(format!("override[{i}].prefix"), "is empty"));
            }
            if let Some(j) = self.overrides[..i].iter().position(|p| p.prefix == o.prefix) {
                return Err(ConfigError::at_key(
                    format!("override[{i}].prefix"),
                    format!("`{}` is already used by override[{j}]", o.prefix),
                ));
            }
            if let Some(policy) = &o.policy {
                check_policy(&format!("override[{i}].policy"), policy)?;
            }
            if let Some(max) = o.max_queued {
                if max == 0 || max > self.capacity {
                    return Err(ConfigError::at_key(
                        format!("override[{i}].max_queued"),
                        format!(
                            "is {max}; it must be between 1 and the capacity ({})",
                            self.capacity
                        ),
                    ));
                }
            }
        }
        let limits = &self.limits;
        for (key, value, max) in [
            (
                "limits.max_topic_bytes",
                limits.max_topic_bytes,
                u32::MAX as usize,
            ),
            (
                "limits.max_payload_bytes",
                limits.max_payload_bytes,
                u32::MAX as usize,
            ),
            (
                "limits.max_session_id_bytes",
                limits.max_session_id_bytes,
                u16::MAX as usize,
            ),
        ] {
            if value == 0 || value > max {
                return Err(ConfigError::at_key(
                    key,
                    format!("is {value}; it must be between 1 and {max}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether any topic may use the `block` policy.
    pub(crate) fn may_block(&self) -> bool {
        let blocks = |p: &OverflowPolicy| p.wait().is_some();
        blocks(&self.policy)
            || self
                .overrides
                .iter()
                .any(|o| o.policy.as_ref().is_some_and(blocks))
    }

    /// The rule for one topic: the longest matching override, else the provider-wide values.
    pub(crate) fn rule_for(&self, topic: &str) -> DeliveryRule {
        let best = self
            .overrides
            .iter()
            .filter(|o| topic.starts_with(o.prefix.as_str()))
            .max_by_key(|o| o.prefix.len());
        DeliveryRule {
            policy: best.and_then(|o| o.policy).unwrap_or(self.policy),
            max_queued: best
                .and_then(|o| o.max_queued)
                .unwrap_or(self.capacity)
                .min(self.capacity),
        }
    }
}

/// A grace: 0, or 1 ms to `max`.
fn check_grace(key: &str, grace: Duration, max: Duration) -> Result<(), ConfigError> {
    if !grace.is_zero() && !(MIN_WAIT..=max).contains(&grace) {
        return Err(ConfigError::at_key(
            key,
            format!(
                "is {}; it must be 0 or between 1 and {} ms",
                format_duration(grace),
                max.as_millis()
            ),
        ));
    }
    Ok(())
}

fn check_policy(key: &str, policy: &OverflowPolicy) -> Result<(), ConfigError> {
    if let Some((timeout, _)) = policy.wait() {
        if !(MIN_WAIT..=MAX_BLOCK_TIMEOUT).contains(&timeout) {
            return Err(ConfigError::at_key(
                format!("{key}.{}.timeout_ms", policy.name()),
                format!(
                    "is {}; it must be between 1 and {} ms",
                    format_duration(timeout),
                    MAX_BLOCK_TIMEOUT.as_millis()
                ),
            ));
        }
    }
    Ok(())
}

/// A duration as a file writes it (`50 ms`), or exactly when it is not whole milliseconds
/// (`500µs`, `1.5ms`).
fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() % 1_000_000 == 0 {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{duration:?}")
    }
}
