//! `Config`: loading from TOML (defaults, every key, errors that name the key and position),
//! validation of code-built configs, and providers refusing an invalid one.

use std::path::PathBuf;
use std::time::Duration;

use fanout::{
    Config, ConfigError, Engine, Fallback, InMemoryPubSub, Limits, OverflowPolicy, PubSubProvider,
    TopicOverride, MAX_BLOCK_TIMEOUT, MAX_CAPACITY,
};

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
    reader.subscribe("room").unwrap();
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
