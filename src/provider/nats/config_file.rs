//! Loading a [`NatsConfig`] from the `[nats]` table of a TOML document. Unknown keys and bad
//! values are errors that name the key and its line and column, as for the engine's
//! [`Config`](crate::Config); nothing is silently ignored.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::NatsConfig;
use crate::config::file::{parse_error, provider_table, read_file, ProviderTable};
use crate::config::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    nats: Option<Spanned<RawNats>>,
}

provider_table! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, expecting = "a table of nats settings")]
    struct RawNats for NatsConfig {
        url: String,
        subject_prefix: String,
        max_control_line: usize,
    }
}

impl NatsConfig {
    /// Parses the `[nats]` table of a TOML document; the document holds nothing else. Keys
    /// left out keep their [`NatsConfig::default`] values (the `NATS_URL` environment variable
    /// is not read); an unknown key, a value of the wrong type or out of range is an error
    /// naming the key and position. Durations are in milliseconds, under keys ending in `_ms`.
    ///
    /// ```
    /// use fanout::nats::NatsConfig;
    ///
    /// let config = NatsConfig::from_toml_str(r#"
    ///     [nats]
    ///     url = "nats://app:secret@nats.internal:4222"
    ///     subject_prefix = "myapp.pubsub"
    ///     max_control_line = 8192
    ///     response_timeout_ms = 1500
    /// "#)?;
    /// assert_eq!(config.subject_prefix, "myapp.pubsub");
    /// # Ok::<(), fanout::ConfigError>(())
    /// ```
    pub fn from_toml_str(source: &str) -> Result<NatsConfig, ConfigError> {
        let raw: RawDocument = toml::from_str(source).map_err(|e| parse_error(source, &e))?;
        let mut config = NatsConfig::default();
        let mut table = ProviderTable::absent("nats", &[]);
        if let Some(spanned) = raw.nats {
            table = ProviderTable::new("nats", &[], spanned.span());
            let mut raw = spanned.into_inner();
            raw.take_shared(&mut table, &mut config);
            let c = &mut config;
            table.take("url", raw.url, &mut c.url);
            table.take("subject_prefix", raw.subject_prefix, &mut c.subject_prefix);
            table.take("max_control_line", raw.max_control_line, &mut c.max_control_line);
        }
        config.validate().map_err(|e| table.locate(e, source))?;
        Ok(config)
    }

    /// Reads and parses a TOML file as [`from_toml_str`](Self::from_toml_str) does; errors
    /// carry the file name.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<NatsConfig, ConfigError> {
        read_file(path.as_ref(), NatsConfig::from_toml_str)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::file::assert_error_at;

    /// Parses `source`, expecting an error naming `key` at `position` and mentioning `mentions`.
    #[track_caller]
    fn error_at(source: &str, key: &str, position: (usize, usize), mentions: &str) {
        assert_error_at(NatsConfig::from_toml_str(source), key, position, mentions);
    }

    #[test]
    fn an_empty_document_or_table_gives_the_defaults() {
        for source in ["", "# nothing\n", "[nats]\n"] {
            assert_eq!(NatsConfig::from_toml_str(source).unwrap(), NatsConfig::default());
        }
    }

    #[test]
    fn every_key_sets_its_field() {
        type IsSet = fn(&NatsConfig) -> bool;
        let cases: [(&str, IsSet); 11] = [
            ("url = \"nats://h:1\"", |c| c.url == "nats://h:1"),
            ("subject_prefix = \"a.b\"", |c| c.subject_prefix == "a.b"),
            ("max_control_line = 8192", |c| c.max_control_line == 8192),
            ("max_envelope_bytes = 65536", |c| c.max_envelope_bytes == 65536),
            ("publish_queue = 7", |c| c.publish_queue == 7),
            ("max_pipeline = 3", |c| c.max_pipeline == 3),
            ("connect_timeout_ms = 300", |c| {
                c.connect_timeout == Duration::from_millis(300)
            }),
            ("response_timeout_ms = 400", |c| {
                c.response_timeout == Duration::from_millis(400)
            }),
            ("health_check_interval_ms = 50", |c| {
                c.health_check_interval == Duration::from_millis(50)
            }),
            ("reconnect_backoff_min_ms = 5", |c| {
                c.reconnect_backoff_min == Duration::from_millis(5)
            }),
            ("reconnect_backoff_max_ms = 900", |c| {
                c.reconnect_backoff_max == Duration::from_millis(900)
            }),
        ];
        for (line, is_set) in cases {
            let config = NatsConfig::from_toml_str(&format!("[nats]\n{line}\n"))
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(is_set(&config), "{line}: {config:?}");
            assert_ne!(config, NatsConfig::default(), "{line}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors_naming_the_key() {
        error_at(
            "[nats]\nurll = \"x\"\n",
            "nats.urll",
            (2, 1),
            "unknown field `urll`",
        );
        error_at("[nat]\nurl = \"x\"\n", "nat", (1, 2), "unknown field `nat`");
        error_at("nats = 5\n", "nats", (1, 8), "a table of nats settings");
        error_at(
            "[nats]\nmax_control_line = \"4k\"\n",
            "nats.max_control_line",
            (2, 20),
            "",
        );
        error_at(
            "[nats]\nresponse_timeout_ms = -1\n",
            "nats.response_timeout_ms",
            (2, 23),
            "",
        );
    }

    #[test]
    fn validation_errors_name_the_key_as_the_file_spells_it() {
        for (line, mentions) in [
            ("url = \"redis://h\"", "nats://"),
            ("subject_prefix = \"a.*\"", "tokens"),
            ("max_envelope_bytes = 100000000", "67108864"),
            ("publish_queue = 0", "is 0"),
            ("response_timeout_ms = 0", "positive"),
        ] {
            let (key, _) = line.split_once(" = ").unwrap();
            let source = format!("[nats]\n\n{line}\n");
            error_at(&source, &format!("nats.{key}"), (3, key.len() + 4), mentions);
        }
        // A default the file's value conflicts with: the error points at the table.
        error_at(
            "[nats]\nreconnect_backoff_max_ms = 10\n",
            "nats.reconnect_backoff_min_ms",
            (1, 1),
            "at most",
        );
    }

    #[test]
    fn files_are_read_and_their_errors_name_the_file() {
        let path = std::env::temp_dir().join(format!("fanout-nats-config-{}.toml", std::process::id()));
        std::fs::write(&path, "[nats]\npublish_queue = 0\n").unwrap();
        let error = NatsConfig::from_toml_file(&path).unwrap_err();
        std::fs::write(&path, "[nats]\npublish_queue = 9\n").unwrap();
        let config = NatsConfig::from_toml_file(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(error.file.as_deref(), Some(path.display().to_string().as_str()));
        assert_eq!(error.position, Some((2, 17)));
        assert_eq!(config.unwrap().publish_queue, 9);
    }
}
