//! `Config`: loading from TOML (defaults, every key, errors that name the key and position),
//! validation of code-built configs, the builder and the file agreeing key by key, what each
//! value does at its bounds, and providers refusing an invalid one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanout::{
    Bytes, Config, ConfigError, Engine, Fallback, Handler, InMemoryPubSub, Limits, OverflowPolicy,
    PubSubError, PubSubProvider, SessionReceiver, TopicOverride, TryRecvError, MAX_BLOCK_TIMEOUT,
    MAX_CAPACITY, MAX_CLOSE_GRACE, MAX_STOP_GRACE,
};
use tokio::sync::Semaphore;

mod support;

use support::{started, text, wait_until, Inbox};

/// Parses `source`, expecting an error.
#[track_caller]
fn parse_error(source: &str) -> ConfigError {
    match Config::from_toml_str(source) {
        Err(error) => error,
        Ok(config) => panic!("accepted {source:?} as {config:?}"),
    }
}

/// Checks an error's key and 1-based (line, column), and that its message mentions `mentions`.
#[track_caller]
fn assert_error(error: &ConfigError, key: &str, position: (usize, usize), mentions: &str) {
    assert_eq!(error.key.as_deref(), Some(key), "key of {error:?}");
    assert_eq!(error.position, Some(position), "position of {error:?}");
    assert!(
        error.message.contains(mentions),
        "{:?} does not mention {mentions:?}",
        error.message
    );
    assert_eq!(error.file, None);
}

/// Parses `source`, expecting an error with [`assert_error`]'s key, position and mention.
#[track_caller]
fn parse_error_at(source: &str, key: &str, position: (usize, usize), mentions: &str) -> ConfigError {
    let error = parse_error(source);
    assert_error(&error, key, position, mentions);
    error
}

/// A file under the system temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("fanout-config-test-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const FULL_EXAMPLE: &str = r#"
capacity = 128
policy = "drop_newest"
stop_grace_ms = 250
close_grace_ms = 750

[[override]]
prefix = "presence:"
policy = "drop_oldest"
max_queued = 32

[[override]]
prefix = "billing:"
policy = { block = { timeout_ms = 50, then = "disconnect" } }

[[override]]
prefix = "chat:"
max_queued = 100

[limits]
max_topic_bytes = 200
max_payload_bytes = 65536
max_session_id_bytes = 64
"#;

// ----- loading -----

#[test]
fn loads_a_full_example() {
    let config = Config::from_toml_str(FULL_EXAMPLE).unwrap();

    assert_eq!(
        config,
        Config {
            capacity: 128,
            policy: OverflowPolicy::DropNewest,
            overrides: vec![
                TopicOverride {
                    prefix: "presence:".into(),
                    policy: Some(OverflowPolicy::DropOldest),
                    max_queued: Some(32),
                },
                TopicOverride {
                    prefix: "billing:".into(),
                    policy: Some(OverflowPolicy::Block {
                        timeout: Duration::from_millis(50),
                        then: Fallback::Disconnect,
                    }),
                    max_queued: None,
                },
                TopicOverride {
                    prefix: "chat:".into(),
                    policy: None,
                    max_queued: Some(100),
                },
            ],
            limits: Limits {
                max_topic_bytes: 200,
                max_payload_bytes: 65536,
                max_session_id_bytes: 64,
            },
            stop_grace: Duration::from_millis(250),
            close_grace: Duration::from_millis(750),
        }
    );
}

#[test]
fn loads_the_documented_example() {
    let source = r#"
capacity = 256
policy = "drop_oldest"

[[override]]
prefix = "presence:"
policy = "drop_newest"
max_queued = 32

[[override]]
prefix = "billing:"
policy = { block = { timeout_ms = 50, then = "disconnect" } }

[limits]
max_topic_bytes = 1024
"#;
    let config = Config::from_toml_str(source).unwrap();
    assert_eq!(config.capacity, 256);
    assert_eq!(config.overrides.len(), 2);
    assert_eq!(config.overrides[0].policy, Some(OverflowPolicy::DropNewest));
    assert_eq!(config.limits, Limits::default());
}

#[test]
fn missing_keys_keep_their_defaults() {
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    assert_eq!(
        Config::from_toml_str("# nothing but a comment\n").unwrap(),
        Config::default()
    );

    let config = Config::from_toml_str("capacity = 8").unwrap();
    assert_eq!(config, Config::default().with_capacity(8));

    let config = Config::from_toml_str("[limits]\nmax_topic_bytes = 10\n").unwrap();
    assert_eq!(
        config.limits,
        Limits {
            max_topic_bytes: 10,
            ..Limits::default()
        }
    );
    assert_eq!(config.capacity, Config::default().capacity);
    assert_eq!(config.policy, Config::default().policy);
}

#[test]
fn every_policy_name_parses() {
    let cases = [
        (r#""drop_newest""#, OverflowPolicy::DropNewest),
        (r#""drop_oldest""#, OverflowPolicy::DropOldest),
        (r#""disconnect""#, OverflowPolicy::Disconnect),
        (
            r#"{ block = { timeout_ms = 1, then = "drop_newest" } }"#,
            OverflowPolicy::Block {
                timeout: Duration::from_millis(1),
                then: Fallback::DropNewest,
            },
        ),
        (
            r#"{ block = { timeout_ms = 3600000, then = "drop_oldest" } }"#,
            OverflowPolicy::Block {
                timeout: MAX_BLOCK_TIMEOUT,
                then: Fallback::DropOldest,
            },
        ),
        (
            r#"{ block = { timeout_ms = 50, then = "disconnect" } }"#,
            OverflowPolicy::Block {
                timeout: Duration::from_millis(50),
                then: Fallback::Disconnect,
            },
        ),
        (
            r#"{ block_once = { timeout_ms = 5, then = "drop_newest" } }"#,
            OverflowPolicy::BlockOnce {
                timeout: Duration::from_millis(5),
                then: Fallback::DropNewest,
            },
        ),
    ];
    for (value, expected) in cases {
        let config = Config::from_toml_str(&format!("policy = {value}")).unwrap();
        assert_eq!(config.policy, expected, "policy = {value}");
    }
}

#[test]
fn block_policy_also_parses_as_a_table() {
    let source = "[policy.block]\ntimeout_ms = 75\nthen = \"drop_oldest\"\n";
    let config = Config::from_toml_str(source).unwrap();
    assert_eq!(
        config.policy,
        OverflowPolicy::Block {
            timeout: Duration::from_millis(75),
            then: Fallback::DropOldest,
        }
    );
}

// ----- errors: key and position -----

#[test]
fn unknown_key_is_an_error_naming_it_and_its_position() {
    let error = parse_error_at("capacity = 8\ncapasity = 9\n", "capasity", (2, 1), "capasity");
    assert_eq!(
        error.to_string().split(": ").take(2).collect::<Vec<_>>(),
        ["line 2, column 1", "`capasity`"]
    );
}

#[test]
fn unknown_key_in_a_table_is_named_with_its_table() {
    parse_error_at(
        "[limits]\nmax_topic_bytes = 10\nmax_topics = 5\n",
        "limits.max_topics",
        (3, 1),
        "max_topics",
    );

    let source =
        "[[override]]\nprefix = \"a:\"\n\n[[override]]\nprefix = \"b:\"\n  policcy = \"disconnect\"\n";
    parse_error_at(source, "override[1].policcy", (6, 3), "policcy");

    // An unknown table: its name, where the name starts.
    parse_error_at(
        "capacity = 8\n[limitz]\nmax_topic_bytes = 5\n",
        "limitz",
        (2, 2),
        "limitz",
    );
}

#[test]
fn unknown_key_under_a_commented_table_header_is_named_with_its_table() {
    let source = "[limits] # sizes\nmax_topics = 5\n";
    parse_error_at(source, "limits.max_topics", (2, 1), "max_topics");

    let source =
        "[[override]] # first\nprefix = \"a:\"\n\n[[override]] # second\nprefix = \"b:\"\nmax_qeued = 1\n";
    parse_error_at(source, "override[1].max_qeued", (6, 1), "max_qeued");

    // An unknown table, its header commented.
    parse_error_at(
        "capacity = 8
[limitz] # typo
max_topic_bytes = 5
",
        "limitz",
        (2, 2),
        "limitz",
    );
}

#[test]
fn wrong_type_is_an_error_at_the_value() {
    parse_error_at("capacity = \"big\"\n", "capacity", (1, 12), "invalid type");

    parse_error_at(
        "[[override]]\nprefix = 5\n",
        "override[0].prefix",
        (2, 10),
        "invalid type",
    );
}

#[test]
fn negative_number_is_an_error_at_the_value() {
    parse_error_at(
        "[limits]\nmax_payload_bytes = -5\n",
        "limits.max_payload_bytes",
        (2, 21),
        "-5",
    );

    parse_error_at("capacity = -1\n", "capacity", (1, 12), "-1");
}

#[test]
fn zero_capacity_is_an_error_naming_the_bound() {
    let error = parse_error_at(
        "policy = \"drop_newest\"\ncapacity = 0\n",
        "capacity",
        (2, 12),
        "between 1 and 1048576",
    );
    assert_eq!(
        error.to_string(),
        "line 2, column 12: `capacity`: is 0; it must be between 1 and 1048576"
    );
}

#[test]
fn max_queued_above_capacity_is_an_error() {
    let source = "capacity = 8\n\n[[override]]\nprefix = \"p:\"\nmax_queued = 9\n";
    parse_error_at(
        source,
        "override[0].max_queued",
        (5, 14),
        "between 1 and the capacity (8)",
    );
}

#[test]
fn zero_block_timeout_is_an_error() {
    // The position is that of the policy value, the innermost span recorded.
    parse_error_at(
        "policy = { block = { timeout_ms = 0, then = \"drop_newest\" } }\n",
        "policy.block.timeout_ms",
        (1, 10),
        "is 0 ms",
    );

    let source =
        "[[override]]\nprefix = \"b:\"\npolicy = { block = { timeout_ms = 0, then = \"disconnect\" } }\n";
    parse_error_at(source, "override[0].policy.block.timeout_ms", (3, 10), "is 0 ms");
    parse_error_at(
        "policy = { block_once = { timeout_ms = 0, then = \"drop_newest\" } }\n",
        "policy.block_once.timeout_ms",
        (1, 10),
        "is 0 ms",
    );
}

#[test]
fn block_timeout_over_the_maximum_is_an_error() {
    parse_error_at(
        "policy = { block = { timeout_ms = 3600001, then = \"drop_newest\" } }\n",
        "policy.block.timeout_ms",
        (1, 10),
        "3600000 ms",
    );
}

#[test]
fn duplicate_prefix_is_an_error_at_the_second() {
    let source = "[[override]]\nprefix = \"a:\"\n\n[[override]]\nprefix = \"a:\"\n";
    parse_error_at(source, "override[1].prefix", (5, 10), "override[0]");
}

#[test]
fn empty_prefix_is_an_error() {
    parse_error_at(
        "[[override]]\nprefix = \"\"\n",
        "override[0].prefix",
        (2, 10),
        "empty",
    );
}

#[test]
fn unknown_policy_name_is_an_error() {
    parse_error_at(
        "policy = \"drop_everything\"\n",
        "policy",
        (1, 10),
        "drop_everything",
    );

    // A bad fallback inside the inline table: the line's key, the value's column.
    parse_error_at(
        "policy = { block = { timeout_ms = 5, then = \"retry\" } }\n",
        "policy",
        (1, 45),
        "retry",
    );
}

#[test]
fn missing_prefix_is_an_error() {
    parse_error_at(
        "[[override]]\npolicy = \"disconnect\"\n",
        "override",
        (1, 1),
        "missing field `prefix`",
    );
}

#[test]
fn limits_out_of_range_are_errors() {
    parse_error_at(
        "[limits]\nmax_session_id_bytes = 65536\n",
        "limits.max_session_id_bytes",
        (2, 24),
        "65535",
    );

    parse_error_at(
        "[limits]\nmax_topic_bytes = 0\n",
        "limits.max_topic_bytes",
        (2, 19),
        "is 0",
    );
}

// ----- files -----

#[test]
fn missing_file_is_an_error_naming_the_file() {
    let path = std::env::temp_dir().join("fanout-config-test-does-not-exist.toml");
    let error = Config::from_toml_file(&path).unwrap_err();

    let name = path.display().to_string();
    assert_eq!(error.file.as_deref(), Some(name.as_str()));
    assert_eq!((error.key.as_deref(), error.position), (None, None));
    assert!(
        error.message.starts_with("cannot read the file"),
        "{}",
        error.message
    );
    assert!(error.to_string().starts_with(&format!("{name}: ")));
}

#[test]
fn file_loads_like_a_string() {
    let file = TempFile::new("full", FULL_EXAMPLE);
    assert_eq!(
        Config::from_toml_file(&file.0).unwrap(),
        Config::from_toml_str(FULL_EXAMPLE).unwrap()
    );
}

#[test]
fn file_errors_carry_the_file_name_and_position() {
    let file = TempFile::new("zero", "capacity = 0\n");
    let error = Config::from_toml_file(&file.0).unwrap_err();

    let name = file.0.display().to_string();
    assert_eq!(error.file.as_deref(), Some(name.as_str()));
    assert_eq!(error.key.as_deref(), Some("capacity"));
    assert_eq!(error.position, Some((1, 12)));
    assert_eq!(
        error.to_string(),
        format!("{name}:1:12: `capacity`: is 0; it must be between 1 and 1048576")
    );
}

// ----- validate, for configs built in code -----

#[test]
fn validate_accepts_the_default_and_the_bounds() {
    Config::default().validate().unwrap();
    Config::default().with_capacity(1).validate().unwrap();
    Config::default().with_capacity(MAX_CAPACITY).validate().unwrap();
    Config::default()
        .with_policy(OverflowPolicy::Block {
            timeout: MAX_BLOCK_TIMEOUT,
            then: Fallback::Disconnect,
        })
        .validate()
        .unwrap();
}

#[test]
fn validate_rejects_each_bad_value_naming_its_key() {
    let block = |timeout| OverflowPolicy::Block {
        timeout,
        then: Fallback::DropNewest,
    };
    let with_max_queued = |capacity, max_queued| {
        Config::default()
            .with_capacity(capacity)
            .with_topic_override(TopicOverride::new("p:").with_max_queued(max_queued))
    };
    let limits = |max_topic_bytes, max_payload_bytes, max_session_id_bytes| {
        Config::default().with_limits(Limits {
            max_topic_bytes,
            max_payload_bytes,
            max_session_id_bytes,
        })
    };
    let cases = [
        (Config::default().with_capacity(0), "capacity", "is 0"),
        (
            Config::default().with_capacity(MAX_CAPACITY + 1),
            "capacity",
            "1048576",
        ),
        (
            Config::default().with_policy(block(Duration::ZERO)),
            "policy.block.timeout_ms",
            "is 0 ms",
        ),
        (
            Config::default().with_policy(block(MAX_BLOCK_TIMEOUT + Duration::from_millis(1))),
            "policy.block.timeout_ms",
            "3600000 ms",
        ),
        (
            Config::default().with_override("", OverflowPolicy::Disconnect),
            "override[0].prefix",
            "empty",
        ),
        (
            Config::default()
                .with_override("a:", OverflowPolicy::Disconnect)
                .with_override("b:", OverflowPolicy::DropNewest)
                .with_override("a:", OverflowPolicy::DropOldest),
            "override[2].prefix",
            "override[0]",
        ),
        (
            Config::default().with_override("a:", block(Duration::ZERO)),
            "override[0].policy.block.timeout_ms",
            "is 0 ms",
        ),
        (with_max_queued(8, 0), "override[0].max_queued", "is 0"),
        (with_max_queued(8, 9), "override[0].max_queued", "(8)"),
        (limits(0, 1, 1), "limits.max_topic_bytes", "is 0"),
        (limits(1, 0, 1), "limits.max_payload_bytes", "is 0"),
        (limits(1, 1, 0), "limits.max_session_id_bytes", "is 0"),
        (limits(1, 1, 65_536), "limits.max_session_id_bytes", "65535"),
    ];
    for (config, key, mentions) in cases {
        let error = config.validate().unwrap_err();
        assert_eq!(error.key.as_deref(), Some(key), "{config:?}");
        assert!(
            error.message.contains(mentions),
            "{key}: {:?} does not mention {mentions:?}",
            error.message
        );
        assert_eq!((error.position, error.file.as_deref()), (None, None));
        assert!(error.to_string().starts_with(&format!("`{key}`: ")));
    }
    with_max_queued(8, 8).validate().unwrap();
}

// ----- the builder and the file: the same keys, the same ranges -----

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn block(timeout: Duration, then: Fallback) -> OverflowPolicy {
    OverflowPolicy::Block { timeout, then }
}

fn block_once(timeout: Duration, then: Fallback) -> OverflowPolicy {
    OverflowPolicy::BlockOnce { timeout, then }
}

/// The largest topic and payload limit: an envelope's 32-bit length field.
const MAX_LENGTH_LIMIT: usize = u32::MAX as usize;

/// Names every field of `Config`, `TopicOverride` and `Limits`: a field added to one of them
/// stops this file compiling here, beside the tables that need rows for its key.
fn every_field(config: Config) {
    let Config {
        capacity: _,
        policy: _,
        overrides,
        limits,
        stop_grace: _,
        close_grace: _,
    } = config;
    for TopicOverride {
        prefix: _,
        policy: _,
        max_queued: _,
    } in overrides
    {}
    let Limits {
        max_topic_bytes: _,
        max_payload_bytes: _,
        max_session_id_bytes: _,
    } = limits;
}

/// A `Limits` builder call, as `Limits::with_max_topic_bytes`.
type SetLimit = fn(Limits, usize) -> Limits;

/// Each `[limits]` key, the builder call that sets it, and its largest value.
const LIMIT_KEYS: [(&str, SetLimit, usize); 3] = [
    ("max_topic_bytes", Limits::with_max_topic_bytes, MAX_LENGTH_LIMIT),
    (
        "max_payload_bytes",
        Limits::with_max_payload_bytes,
        MAX_LENGTH_LIMIT,
    ),
    ("max_session_id_bytes", Limits::with_max_session_id_bytes, 65_535),
];

/// `[limits]` with `key = value`, as a file writes it and as the builder sets it.
fn limit_row(key: &str, set: SetLimit, value: usize) -> (String, Config) {
    let config = Config::default().with_limits(set(Limits::default(), value));
    (format!("[limits]\n{key} = {value}"), config)
}

/// Each key as a file writes it, beside the builder calls that set it: at its bounds and
/// between them.
fn same_config_rows() -> Vec<(String, Config)> {
    let d = Config::default;
    let over = TopicOverride::new;
    let rows = [
        ("capacity = 1", d().with_capacity(1)),
        ("capacity = 1048576", d().with_capacity(MAX_CAPACITY)),
        (
            "policy = \"drop_newest\"",
            d().with_policy(OverflowPolicy::DropNewest),
        ),
        (
            "policy = \"drop_oldest\"",
            d().with_policy(OverflowPolicy::DropOldest),
        ),
        (
            "policy = \"disconnect\"",
            d().with_policy(OverflowPolicy::Disconnect),
        ),
        (
            "policy = { block = { timeout_ms = 1, then = \"drop_newest\" } }",
            d().with_policy(block(ms(1), Fallback::DropNewest)),
        ),
        (
            "policy = { block = { timeout_ms = 3600000, then = \"drop_oldest\" } }",
            d().with_policy(block(MAX_BLOCK_TIMEOUT, Fallback::DropOldest)),
        ),
        (
            "policy = { block_once = { timeout_ms = 1, then = \"disconnect\" } }",
            d().with_policy(block_once(ms(1), Fallback::Disconnect)),
        ),
        (
            "policy = { block_once = { timeout_ms = 3600000, then = \"drop_newest\" } }",
            d().with_policy(block_once(MAX_BLOCK_TIMEOUT, Fallback::DropNewest)),
        ),
        ("stop_grace_ms = 0", d().with_stop_grace(Duration::ZERO)),
        ("stop_grace_ms = 1", d().with_stop_grace(ms(1))),
        ("stop_grace_ms = 3600000", d().with_stop_grace(MAX_STOP_GRACE)),
        ("close_grace_ms = 0", d().with_close_grace(Duration::ZERO)),
        ("close_grace_ms = 1", d().with_close_grace(ms(1))),
        ("close_grace_ms = 3600000", d().with_close_grace(MAX_CLOSE_GRACE)),
        (
            "[[override]]\nprefix = \"p:\"",
            d().with_topic_override(over("p:")),
        ),
        (
            "[[override]]\nprefix = \"p:\"\npolicy = \"disconnect\"",
            d().with_override("p:", OverflowPolicy::Disconnect),
        ),
        (
            "[[override]]\nprefix = \"p:\"\npolicy = { block = { timeout_ms = 50, then = \"drop_oldest\" } }",
            d().with_topic_override(over("p:").with_policy(block(ms(50), Fallback::DropOldest))),
        ),
        (
            "[[override]]\nprefix = \"p:\"\nmax_queued = 1",
            d().with_topic_override(over("p:").with_max_queued(1)),
        ),
        (
            "capacity = 8\n[[override]]\nprefix = \"p:\"\npolicy = \"drop_newest\"\nmax_queued = 8",
            d().with_capacity(8).with_topic_override(
                over("p:")
                    .with_policy(OverflowPolicy::DropNewest)
                    .with_max_queued(8),
            ),
        ),
        (
            "[[override]]\nprefix = \"a:\"\npolicy = \"disconnect\"\n[[override]]\nprefix = \"a:b:\"",
            d().with_override("a:", OverflowPolicy::Disconnect)
                .with_topic_override(over("a:b:")),
        ),
        ("[limits]", d().with_limits(Limits::default())),
    ];
    let mut rows: Vec<(String, Config)> = rows
        .into_iter()
        .map(|(source, config)| (source.to_string(), config))
        .collect();
    for (key, set, max) in LIMIT_KEYS {
        for value in [1, max] {
            rows.push(limit_row(key, set, value));
        }
    }
    rows
}

#[test]
fn builder_and_file_give_the_same_config_for_every_key() {
    for (source, built) in same_config_rows() {
        assert_eq!(Config::from_toml_str(&source).as_ref(), Ok(&built), "{source}");
        built.validate().unwrap();
        every_field(built);
    }
}

/// Each key just past each of its bounds, as a file writes it and as the builder sets it, and
/// the key an error names.
fn refused_rows() -> Vec<(String, Config, String)> {
    let d = Config::default;
    let over = TopicOverride::new;
    let rows = [
        ("capacity = 0", d().with_capacity(0), "capacity"),
        (
            "capacity = 1048577",
            d().with_capacity(MAX_CAPACITY + 1),
            "capacity",
        ),
        (
            "policy = { block = { timeout_ms = 0, then = \"drop_newest\" } }",
            d().with_policy(block(Duration::ZERO, Fallback::DropNewest)),
            "policy.block.timeout_ms",
        ),
        (
            "policy = { block = { timeout_ms = 3600001, then = \"drop_newest\" } }",
            d().with_policy(block(MAX_BLOCK_TIMEOUT + ms(1), Fallback::DropNewest)),
            "policy.block.timeout_ms",
        ),
        (
            "policy = { block_once = { timeout_ms = 0, then = \"disconnect\" } }",
            d().with_policy(block_once(Duration::ZERO, Fallback::Disconnect)),
            "policy.block_once.timeout_ms",
        ),
        (
            "policy = { block_once = { timeout_ms = 3600001, then = \"disconnect\" } }",
            d().with_policy(block_once(MAX_BLOCK_TIMEOUT + ms(1), Fallback::Disconnect)),
            "policy.block_once.timeout_ms",
        ),
        (
            "stop_grace_ms = 3600001",
            d().with_stop_grace(MAX_STOP_GRACE + ms(1)),
            "stop_grace_ms",
        ),
        (
            "close_grace_ms = 3600001",
            d().with_close_grace(MAX_CLOSE_GRACE + ms(1)),
            "close_grace_ms",
        ),
        (
            "[[override]]\nprefix = \"\"",
            d().with_topic_override(over("")),
            "override[0].prefix",
        ),
        (
            "[[override]]\nprefix = \"a:\"\n[[override]]\nprefix = \"a:\"",
            d().with_topic_override(over("a:"))
                .with_topic_override(over("a:")),
            "override[1].prefix",
        ),
        (
            "[[override]]\nprefix = \"p:\"\npolicy = { block = { timeout_ms = 0, then = \"drop_oldest\" } }",
            d().with_override("p:", block(Duration::ZERO, Fallback::DropOldest)),
            "override[0].policy.block.timeout_ms",
        ),
        (
            "[[override]]\nprefix = \"p:\"\nmax_queued = 0",
            d().with_topic_override(over("p:").with_max_queued(0)),
            "override[0].max_queued",
        ),
        (
            "capacity = 8\n[[override]]\nprefix = \"p:\"\nmax_queued = 9",
            d().with_capacity(8)
                .with_topic_override(over("p:").with_max_queued(9)),
            "override[0].max_queued",
        ),
    ];
    let mut rows: Vec<(String, Config, String)> = rows
        .into_iter()
        .map(|(source, config, key)| (source.to_string(), config, key.to_string()))
        .collect();
    for (key, set, max) in LIMIT_KEYS {
        for value in [0, max + 1] {
            let (source, config) = limit_row(key, set, value);
            rows.push((source, config, format!("limits.{key}")));
        }
    }
    rows
}

#[test]
fn builder_and_file_refuse_the_same_values_naming_the_same_key() {
    for (source, built, key) in refused_rows() {
        let from_file = parse_error(&source);
        let from_builder = built.validate().unwrap_err();
        assert_eq!(from_file.key.as_ref(), Some(&key), "{source}");
        assert_eq!(from_builder.key.as_ref(), Some(&key), "{built:?}");
        assert_eq!(from_file.message, from_builder.message, "{source}");
        assert!(
            from_file.position.is_some(),
            "{source}: {from_file:?} has no position"
        );
        assert_eq!(from_builder.position, None);
    }
}

#[test]
fn a_stop_grace_out_of_range_is_an_error_at_its_value() {
    parse_error_at(
        "capacity = 8\nstop_grace_ms = 3600001\n",
        "stop_grace_ms",
        (2, 17),
        "is 3600001 ms; it must be 0 or between 1 and 3600000 ms",
    );
}

#[test]
fn a_close_grace_out_of_range_is_an_error_at_its_value() {
    parse_error_at(
        "capacity = 8\nclose_grace_ms = 3600001\n",
        "close_grace_ms",
        (2, 18),
        "is 3600001 ms; it must be 0 or between 1 and 3600000 ms",
    );
}

/// A grace's builder call, as `Config::with_stop_grace`.
type SetGrace = fn(Config, Duration) -> Config;

#[test]
fn durations_under_a_millisecond_are_refused() {
    let graces: [(SetGrace, &str); 2] = [
        (Config::with_stop_grace, "stop_grace_ms"),
        (Config::with_close_grace, "close_grace_ms"),
    ];
    for (set, key) in graces {
        let error = set(Config::default(), Duration::from_micros(500))
            .validate()
            .unwrap_err();
        assert_eq!(error.key.as_deref(), Some(key));
        assert_eq!(
            error.message,
            "is 500µs; it must be 0 or between 1 and 3600000 ms"
        );
    }

    let error = Config::default()
        .with_override("p:", block_once(Duration::from_micros(999), Fallback::DropNewest))
        .validate()
        .unwrap_err();
    assert_eq!(
        error.key.as_deref(),
        Some("override[0].policy.block_once.timeout_ms")
    );
    assert_eq!(error.message, "is 999µs; it must be between 1 and 3600000 ms");

    // Past the maximum by less than a millisecond: the message does not round it down to it.
    let error = Config::default()
        .with_policy(block(
            MAX_BLOCK_TIMEOUT + Duration::from_micros(1),
            Fallback::DropNewest,
        ))
        .validate()
        .unwrap_err();
    assert_eq!(
        error.message,
        "is 3600.000001s; it must be between 1 and 3600000 ms"
    );

    // A fraction above a millisecond is accepted: the timer rounds it up.
    Config::default()
        .with_stop_grace(Duration::from_micros(1500))
        .validate()
        .unwrap();
}

// ----- values at their bounds -----

/// Everything queued for `reader`, with how many messages were evicted before each.
fn drain(reader: &mut SessionReceiver) -> Vec<(String, u64)> {
    std::iter::from_fn(|| match reader.try_recv() {
        Ok(message) => Some((text(message.payload()), message.missed_before())),
        Err(TryRecvError::Empty) => None,
        Err(other) => panic!("the reader closed: {other}"),
    })
    .collect()
}

/// `(queued, dropped)` of one broadcast.
async fn broadcast(engine: &Engine, topic: &str, payload: &'static str) -> (usize, usize) {
    let fanout = engine
        .broadcast(topic, Bytes::from_static(payload.as_bytes()))
        .await
        .unwrap();
    (fanout.queued, fanout.dropped)
}

#[tokio::test]
async fn capacity_one_holds_one_message_beside_the_one_in_a_handler() {
    let config = Config::default()
        .with_capacity(1)
        .with_policy(OverflowPolicy::DropNewest);
    let pubsub = started(config).await;
    let (inbox, gate) = (Inbox::default(), Arc::new(Semaphore::new(0)));
    pubsub
        .subscribe_topic("s", "room", inbox.stalled_handler(&gate))
        .await
        .unwrap();
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("the handler to take m0", || inbox.len() == 1).await;

    assert_eq!(broadcast(pubsub.engine(), "room", "m1").await, (1, 0), "m1 waits");
    assert_eq!(broadcast(pubsub.engine(), "room", "m2").await, (0, 1), "full");
    gate.add_permits(2);
    wait_until("the handler to take m1", || inbox.len() == 2).await;
    assert_eq!(inbox.payloads(), ["m0", "m1"]);
    assert_eq!(pubsub.stats().dropped.drop_newest, 1);
}

#[tokio::test]
async fn capacity_one_under_drop_oldest_leaves_a_reader_the_latest() {
    let engine = Engine::new(Config::default().with_capacity(1)).unwrap();
    let mut reader = engine.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();
    for payload in ["m0", "m1", "m2"] {
        assert_eq!(broadcast(&engine, "room", payload).await.0, 1);
    }
    assert_eq!(drain(&mut reader), [("m2".to_string(), 2)]);
}

#[tokio::test]
async fn max_capacity_holds_that_many_messages() {
    let config = Config::default()
        .with_capacity(MAX_CAPACITY)
        .with_policy(OverflowPolicy::DropNewest);
    let engine = Engine::new(config).unwrap();
    let reader = engine.open_session("reader").unwrap();
    reader.subscribe("t").await.unwrap();
    assert_eq!(reader.queued(), 0);
    for _ in 0..MAX_CAPACITY {
        engine.broadcast("t", Bytes::from_static(b"x")).await.unwrap();
    }
    assert_eq!(reader.queued(), MAX_CAPACITY);
    assert_eq!(broadcast(&engine, "t", "over").await, (0, 1));
}

#[tokio::test]
async fn max_queued_one_admits_only_into_an_empty_mailbox() {
    let presence = TopicOverride::new("presence:")
        .with_policy(OverflowPolicy::DropNewest)
        .with_max_queued(1);
    let engine = Engine::new(Config::default().with_capacity(4).with_topic_override(presence)).unwrap();
    let mut reader = engine.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();
    reader.subscribe("presence:1").await.unwrap();

    assert_eq!(broadcast(&engine, "presence:1", "p0").await, (1, 0));
    assert_eq!(broadcast(&engine, "presence:1", "p1").await, (0, 1));
    assert_eq!(
        broadcast(&engine, "room", "r0").await,
        (1, 0),
        "other topics fill on"
    );
    assert_eq!(broadcast(&engine, "room", "r1").await, (1, 0));
    assert_eq!(
        drain(&mut reader),
        [("p0".into(), 0), ("r0".into(), 0), ("r1".into(), 0)]
    );

    assert_eq!(broadcast(&engine, "room", "r2").await, (1, 0));
    assert_eq!(
        broadcast(&engine, "presence:1", "p2").await,
        (0, 1),
        "one queued, of another topic"
    );
    assert_eq!(drain(&mut reader), [("r2".to_string(), 0)]);
    assert_eq!(broadcast(&engine, "presence:1", "p3").await, (1, 0));
}

#[tokio::test]
async fn max_queued_one_under_drop_oldest_evicts_every_topic() {
    let latest = TopicOverride::new("latest:")
        .with_policy(OverflowPolicy::DropOldest)
        .with_max_queued(1);
    let config = Config::default()
        .with_capacity(4)
        .with_policy(OverflowPolicy::DropNewest)
        .with_topic_override(latest);
    let engine = Engine::new(config).unwrap();
    let mut reader = engine.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();
    reader.subscribe("latest:1").await.unwrap();
    for payload in ["r0", "r1", "r2"] {
        broadcast(&engine, "room", payload).await;
    }

    assert_eq!(broadcast(&engine, "latest:1", "l0").await, (1, 3));
    assert_eq!(drain(&mut reader), [("l0".to_string(), 3)]);
}

#[tokio::test]
async fn max_queued_at_the_capacity_admits_as_without_an_override() {
    let without = Config::default()
        .with_capacity(2)
        .with_policy(OverflowPolicy::DropNewest);
    let with = without
        .clone()
        .with_topic_override(TopicOverride::new("p:").with_max_queued(2));
    let mut outcomes = Vec::new();
    for config in [without, with] {
        let engine = Engine::new(config).unwrap();
        let reader = engine.open_session("reader").unwrap();
        reader.subscribe("p:1").await.unwrap();
        let mut outcome = Vec::new();
        for payload in ["m0", "m1", "m2"] {
            outcome.push(broadcast(&engine, "p:1", payload).await);
        }
        outcomes.push(outcome);
    }
    assert_eq!(outcomes[0], [(1, 0), (1, 0), (0, 1)]);
    assert_eq!(outcomes[1], outcomes[0]);
}

/// Both waiting policies at both bounds of their timeout: a broadcast that finds a stalled
/// session's mailbox full waits the whole timeout (to the timer's millisecond), then falls back.
#[tokio::test(start_paused = true)]
async fn block_waits_its_whole_timeout_at_each_bound() {
    for timeout in [ms(1), MAX_BLOCK_TIMEOUT] {
        for policy in [
            block(timeout, Fallback::DropNewest),
            block_once(timeout, Fallback::DropNewest),
        ] {
            let config = Config::default().with_capacity(1).with_policy(policy);
            let engine = Engine::new(config).unwrap();
            let stalled = engine.open_session("stalled").unwrap();
            stalled.subscribe("room").await.unwrap();
            assert_eq!(broadcast(&engine, "room", "m0").await, (1, 0));

            let began = tokio::time::Instant::now();
            assert_eq!(broadcast(&engine, "room", "m1").await, (0, 1));
            let waited = began.elapsed();
            assert!(
                waited >= timeout && waited <= timeout + ms(1),
                "{policy:?} waited {waited:?}"
            );
            let stats = engine.stats();
            assert_eq!((stats.block_timeouts, stats.dropped.drop_newest), (1, 1));
        }
    }
}

/// Sets its flag when dropped: shows that a handler's future was torn down.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Starts a handler that naps for `nap` in its future, stops the provider during the nap, and
/// returns how long `stop()` took and whether the handler woke to finish. Either way its
/// future is gone and no task is left.
async fn stop_during_a_nap(stop_grace: Duration, nap: Duration) -> (Duration, bool) {
    let pubsub = started(Config::default().with_stop_grace(stop_grace)).await;
    let [entered, finished, dropped] = [(); 3].map(|()| Arc::new(AtomicBool::new(false)));
    let handler = {
        let (entered, finished, dropped) = (entered.clone(), finished.clone(), dropped.clone());
        Handler::new(move |_topic, _message| {
            let (entered, finished) = (entered.clone(), finished.clone());
            let guard = SetOnDrop(dropped.clone());
            async move {
                let _guard = guard;
                entered.store(true, Ordering::SeqCst);
                tokio::time::sleep(nap).await;
                finished.store(true, Ordering::SeqCst);
            }
        })
    };
    pubsub.subscribe_topic("s", "room", handler).await.unwrap();
    pubsub.broadcast("room", "m0".into()).await.unwrap();
    wait_until("the handler to start its nap", || entered.load(Ordering::SeqCst)).await;

    let began = tokio::time::Instant::now();
    pubsub.stop().await.unwrap();
    let waited = began.elapsed();

    assert!(dropped.load(Ordering::SeqCst), "the handler's future is gone");
    assert_eq!(pubsub.running_tasks(), 0);
    let finished = finished.load(Ordering::SeqCst);
    // A future stop() aborts unfinished is counted as cancelled.
    assert_eq!(pubsub.stats().handlers_cancelled, u64::from(!finished));
    (waited, finished)
}

#[tokio::test(start_paused = true)]
async fn stop_grace_zero_cancels_a_waiting_handler_at_the_next_tick() {
    let (waited, finished) = stop_during_a_nap(Duration::ZERO, ms(2)).await;
    assert!(!finished, "cancelled in its nap");
    assert!(waited <= ms(1), "stop waited {waited:?}");

    let (_, finished) = stop_during_a_nap(ms(3), ms(2)).await;
    assert!(finished, "a grace longer than the nap lets it finish");
}

#[tokio::test(start_paused = true)]
async fn stop_grace_at_its_maximum_holds_stop_that_long() {
    let (waited, finished) = stop_during_a_nap(MAX_STOP_GRACE, Duration::MAX).await;
    assert!(!finished, "cancelled in its nap");
    assert!(
        waited >= MAX_STOP_GRACE && waited <= MAX_STOP_GRACE + ms(1),
        "stop waited {waited:?}"
    );
}

#[tokio::test]
async fn limits_of_one_byte_admit_one_byte() {
    let limits = Limits::default()
        .with_max_topic_bytes(1)
        .with_max_payload_bytes(1)
        .with_max_session_id_bytes(1);
    let engine = Engine::new(Config::default().with_limits(limits)).unwrap();
    let reader = engine.open_session("s").unwrap();
    reader.subscribe("t").await.unwrap();

    assert!(matches!(
        engine.open_session("s2"),
        Err(PubSubError::SessionIdTooLong { len: 2, limit: 1 })
    ));
    assert!(matches!(
        reader.subscribe("tt").await,
        Err(PubSubError::TopicTooLong { len: 2, limit: 1 })
    ));
    assert_eq!(broadcast(&engine, "t", "x").await, (1, 0));
    assert_eq!(
        broadcast(&engine, "t", "").await,
        (1, 0),
        "an empty payload is never refused"
    );
    assert!(matches!(
        engine.broadcast("t", "xy".into()).await,
        Err(PubSubError::PayloadTooLarge { len: 2, limit: 1 })
    ));
}

#[tokio::test]
async fn limits_at_their_maximum_admit_what_the_defaults_refuse() {
    let limits = Limits::default()
        .with_max_topic_bytes(MAX_LENGTH_LIMIT)
        .with_max_payload_bytes(MAX_LENGTH_LIMIT)
        .with_max_session_id_bytes(65_535);
    let engine = Engine::new(Config::default().with_limits(limits)).unwrap();
    let defaults = Limits::default();

    let reader = engine.open_session(&"s".repeat(65_535)).unwrap();
    reader
        .subscribe(&"t".repeat(defaults.max_topic_bytes + 1))
        .await
        .unwrap();
    let payload = Bytes::from(vec![0; defaults.max_payload_bytes + 1]);
    let fanout = engine
        .broadcast(&"t".repeat(defaults.max_topic_bytes + 1), payload)
        .await
        .unwrap();
    assert_eq!(fanout.queued, 1);
}

// ----- providers refuse an invalid config -----

#[test]
fn with_config_rejects_an_invalid_config() {
    let error = InMemoryPubSub::with_config(Config::default().with_capacity(0)).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("capacity"));

    let error = Engine::new(Config::default().with_override("", OverflowPolicy::Disconnect)).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("override[0].prefix"));
}

#[tokio::test]
async fn loaded_config_drives_the_provider() {
    let config = Config::from_toml_str("capacity = 2\npolicy = \"drop_newest\"\n").unwrap();
    let pubsub = InMemoryPubSub::with_config(config.clone()).unwrap();
    assert_eq!(*pubsub.engine().config(), config);

    let reader = pubsub.open_session("reader").unwrap();
    reader.subscribe("room").await.unwrap();
    for i in 0..3 {
        pubsub
            .engine()
            .broadcast("room", format!("m{i}").into())
            .await
            .unwrap();
    }
    assert_eq!(pubsub.session_stats("reader").unwrap().capacity, 2);
    assert_eq!(reader.queued(), 2);
    assert_eq!(pubsub.stats().dropped.drop_newest, 1);
}
