//! Loading a [`PostgresConfig`] from the `[postgres]` table of a TOML document. Unknown keys
//! and bad values are errors that name the key and its line and column, as for the engine's
//! [`Config`](crate::Config); nothing is silently ignored.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{LargePayloads, PostgresConfig};
use crate::config::file::{parse_error, provider_table, read_file, ProviderTable};
use crate::config::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    postgres: Option<Spanned<RawPostgres>>,
}

provider_table! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, expecting = "a table of postgres settings")]
    struct RawPostgres for PostgresConfig {
        url: String,
        channel_prefix: String,
        large_payloads: RawLargePayloads,
        payload_table: String,
        payload_ttl_ms: u64,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawLargePayloads {
    Refuse,
    Table,
}

/// The table's own fields a file gives in milliseconds, under the key `<field>_ms`.
const MILLISECOND_FIELDS: [&str; 1] = ["payload_ttl"];

impl RawLargePayloads {
    fn into_mode(self) -> LargePayloads {
        match self {
            RawLargePayloads::Refuse => LargePayloads::Refuse,
            RawLargePayloads::Table => LargePayloads::Table,
        }
    }
}

impl PostgresConfig {
    /// Parses the `[postgres]` table of a TOML document; the document holds nothing else.
    /// Keys left out keep their [`PostgresConfig::default`] values (the `DATABASE_URL`
    /// environment variable is not read); an unknown key, a value of the wrong type or out of
    /// range is an error naming the key and position. Durations are in milliseconds, under
    /// keys ending in `_ms`.
    ///
    /// ```
    /// use fanout::postgres::{LargePayloads, PostgresConfig};
    ///
    /// let config = PostgresConfig::from_toml_str(r#"
    ///     [postgres]
    ///     url = "postgres://app@db.internal/app"
    ///     channel_prefix = "myapp:"
    ///     large_payloads = "table"
    ///     payload_ttl_ms = 30000
    /// "#)?;
    /// assert_eq!(config.large_payloads, LargePayloads::Table);
    /// # Ok::<(), fanout::ConfigError>(())
    /// ```
    pub fn from_toml_str(source: &str) -> Result<PostgresConfig, ConfigError> {
        let raw: RawDocument = toml::from_str(source).map_err(|e| parse_error(source, &e))?;
        let mut config = PostgresConfig::default();
        let mut spans = ProviderTable::absent("postgres", &MILLISECOND_FIELDS);
        if let Some(table) = raw.postgres {
            spans = ProviderTable::new("postgres", &MILLISECOND_FIELDS, table.span());
            let mut raw = table.into_inner();
            raw.take_shared(&mut spans, &mut config);
            let c = &mut config;
            spans.take("url", raw.url, &mut c.url);
            spans.take("channel_prefix", raw.channel_prefix, &mut c.channel_prefix);
            let mode = RawLargePayloads::into_mode;
            spans.take_as("large_payloads", raw.large_payloads, &mut c.large_payloads, mode);
            spans.take("payload_table", raw.payload_table, &mut c.payload_table);
            spans.take_ms("payload_ttl", raw.payload_ttl_ms, &mut c.payload_ttl);
        }
        config.validate().map_err(|e| spans.locate(e, source))?;
        Ok(config)
    }

    /// Reads and parses a TOML file as [`from_toml_str`](Self::from_toml_str) does; errors
    /// carry the file name.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<PostgresConfig, ConfigError> {
        read_file(path.as_ref(), PostgresConfig::from_toml_str)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::file::assert_error_at;

    /// Parses `source`, expecting an error naming `key` at `position` and mentioning `mentions`.
    #[track_caller]
    fn parse_error_at(source: &str, key: &str, position: (usize, usize), mentions: &str) {
        assert_error_at(PostgresConfig::from_toml_str(source), key, position, mentions);
    }

    #[test]
    fn an_empty_document_or_table_gives_the_defaults() {
        for source in ["", "# nothing\n", "[postgres]\n"] {
            assert_eq!(
                PostgresConfig::from_toml_str(source).unwrap(),
                PostgresConfig::default()
            );
        }
    }

    #[test]
    fn every_key_sets_its_field() {
        fn ms(millis: u64) -> Duration {
            Duration::from_millis(millis)
        }
        /// Whether a config holds the value a line of the file set.
        type IsSet = fn(&PostgresConfig) -> bool;
        let cases: [(&str, IsSet); 13] = [
            ("url = \"postgres://u@h/d\"", |c| c.url == "postgres://u@h/d"),
            ("channel_prefix = \"app:\"", |c| c.channel_prefix == "app:"),
            ("large_payloads = \"table\"", |c| {
                c.large_payloads == LargePayloads::Table
            }),
            ("payload_table = \"Big \\\"One\\\"\"", |c| {
                c.payload_table == "Big \"One\""
            }),
            ("payload_ttl_ms = 1500", |c| c.payload_ttl == ms(1500)),
            ("max_envelope_bytes = 65536", |c| c.max_envelope_bytes == 65536),
            ("publish_queue = 7", |c| c.publish_queue == 7),
            ("max_pipeline = 3", |c| c.max_pipeline == 3),
            ("connect_timeout_ms = 300", |c| c.connect_timeout == ms(300)),
            ("response_timeout_ms = 400", |c| c.response_timeout == ms(400)),
            ("health_check_interval_ms = 50", |c| {
                c.health_check_interval == ms(50)
            }),
            ("reconnect_backoff_min_ms = 5", |c| {
                c.reconnect_backoff_min == ms(5)
            }),
            ("reconnect_backoff_max_ms = 900", |c| {
                c.reconnect_backoff_max == ms(900)
            }),
        ];
        for (line, is_set) in cases {
            let config = PostgresConfig::from_toml_str(&format!("[postgres]\n{line}\n"))
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(is_set(&config), "{line}: {config:?}");
            assert_ne!(config, PostgresConfig::default(), "{line}");
        }
        let refuse = PostgresConfig::from_toml_str("[postgres]\nlarge_payloads = \"refuse\"\n");
        assert_eq!(refuse.unwrap().large_payloads, LargePayloads::Refuse);
    }

    #[test]
    fn wrong_types_are_errors_naming_the_key() {
        for (key, value) in [
            ("url", "5"),
            ("channel_prefix", "true"),
            ("large_payloads", "1"),
            ("payload_table", "[]"),
            ("payload_ttl_ms", "\"60s\""),
            ("max_envelope_bytes", "-1"),
            ("publish_queue", "1.5"),
            ("max_pipeline", "\"8\""),
            ("connect_timeout_ms", "-2"),
            ("response_timeout_ms", "{}"),
            ("health_check_interval_ms", "false"),
            ("reconnect_backoff_min_ms", "\"x\""),
            ("reconnect_backoff_max_ms", "2.0"),
        ] {
            let source = format!("[postgres]\n{key} = {value}\n");
            let column = key.len() + 4;
            parse_error_at(&source, &format!("postgres.{key}"), (2, column), "");
        }
    }

    #[test]
    fn unknown_keys_and_modes_are_errors() {
        parse_error_at(
            "[postgres]\nurll = \"x\"\n",
            "postgres.urll",
            (2, 1),
            "unknown field `urll`",
        );
        parse_error_at("capacity = 8\n", "capacity", (1, 1), "unknown field `capacity`");
        parse_error_at(
            "[postgre]\nurl = \"x\"\n",
            "postgre",
            (1, 2),
            "unknown field `postgre`",
        );
        parse_error_at(
            "[postgres]\nlarge_payloads = \"Table\"\n",
            "postgres.large_payloads",
            (2, 18),
            "unknown variant `Table`, expected `refuse` or `table`",
        );
        parse_error_at(
            "postgres = 5\n",
            "postgres",
            (1, 12),
            "a table of postgres settings",
        );
    }

    #[test]
    fn validation_errors_name_the_key_as_the_file_spells_it() {
        // Each line's value is out of range; the error points at it, third line.
        for (line, mentions) in [
            ("url = \"mysql://h\"", "postgres://"),
            ("channel_prefix = \"\"", "is empty"),
            ("payload_table = \"\"", "is empty"),
            ("payload_ttl_ms = 0", "positive"),
            ("max_envelope_bytes = 2000000000", "1073741823"),
            ("publish_queue = 0", "is 0"),
            ("max_pipeline = 65537", "65536"),
            ("connect_timeout_ms = 0", "positive"),
            ("response_timeout_ms = 0", "positive"),
            ("health_check_interval_ms = 0", "positive"),
            ("reconnect_backoff_max_ms = 0", "positive"),
        ] {
            let (key, _) = line.split_once(" = ").unwrap();
            let source = format!("[postgres]\n\n{line}\n");
            let value_column = key.len() + 4;
            parse_error_at(&source, &format!("postgres.{key}"), (3, value_column), mentions);
        }
        parse_error_at(
            "[postgres]\nreconnect_backoff_min_ms = 900\nreconnect_backoff_max_ms = 100\n",
            "postgres.reconnect_backoff_min_ms",
            (2, 28),
            "at most reconnect_backoff_max",
        );
    }

    #[test]
    fn a_validation_error_on_a_default_points_at_the_table() {
        // The file sets the backoff cap below the default minimum (20 ms), which it leaves out.
        let source = "# settings\n[postgres]\nreconnect_backoff_max_ms = 10\n";
        parse_error_at(source, "postgres.reconnect_backoff_min_ms", (2, 1), "at most");
    }

    #[test]
    fn files_are_read_and_their_errors_name_the_file() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("fanout-postgres-config-{}.toml", std::process::id()));
        std::fs::write(&path, "[postgres]\npublish_queue = 0\n").unwrap();
        let error = PostgresConfig::from_toml_file(&path).unwrap_err();
        std::fs::write(&path, "[postgres]\npublish_queue = 9\n").unwrap();
        let config = PostgresConfig::from_toml_file(&path);
        std::fs::remove_file(&path).unwrap();

        let name = path.display().to_string();
        assert_eq!(error.file.as_deref(), Some(name.as_str()));
        assert_eq!(error.position, Some((2, 17)));
        assert_eq!(config.unwrap().publish_queue, 9);

        let missing = dir.join("fanout-postgres-config-does-not-exist.toml");
        let error = PostgresConfig::from_toml_file(&missing).unwrap_err();
        assert!(
            error.message.starts_with("cannot read the file"),
            "{}",
            error.message
        );
    }
}
