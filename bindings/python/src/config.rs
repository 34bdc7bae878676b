//! A `fanout::Config` from a TOML file or from keyword arguments.
//!
//! Keyword arguments take the file's shape (`policy="drop_newest"`,
//! `policy={"block": {"timeout_ms": 50, "then": "disconnect"}}`, `overrides=[{...}]`,
//! `limits={...}`) and go through the same parser and checks as a file, so both accept the
//! same values and their errors name the same keys.

use std::time::Duration;

use fanout::postgres::PostgresConfig;
use fanout::redis::RedisConfig;
use fanout::Config;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{self, ConfigSource};

/// Loads and checks a TOML file.
pub(crate) fn from_file(py: Python<'_>, path: &str) -> PyResult<Config> {
    Config::from_toml_file(path).map_err(|error| errors::config(py, &error, ConfigSource::File))
}

/// Checks keyword arguments, given with the file's key names; `None` values are left out.
pub(crate) fn from_settings(settings: &Bound<'_, PyDict>) -> PyResult<Config> {
    let py = settings.py();
    let table = table(settings, "")?;
    let source = toml::to_string(&table)
        .map_err(|error| errors::config_argument(py, "(settings)", &error.to_string()))?;
    Config::from_toml_str(&source).map_err(|error| errors::config(py, &error, ConfigSource::Arguments))
}

fn table(dict: &Bound<'_, PyDict>, path: &str) -> PyResult<toml::Table> {
    let mut table = toml::Table::new();
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            let key = key.repr().map_or_else(|_| "?".to_string(), |r| r.to_string());
            return Err(errors::config_argument(
                dict.py(),
                path,
                &format!("key {key} is not a string"),
            ));
        };
        let key = key.to_str()?;
        let key_path = if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        };
        if let Some(value) = toml_value(&value, &key_path)? {
            table.insert(key.to_string(), value);
        }
    }
    Ok(table)
}

/// A Python value as a TOML value; `None` is left out (the key keeps its default).
fn toml_value(value: &Bound<'_, PyAny>, path: &str) -> PyResult<Option<toml::Value>> {
    let py = value.py();
    if value.is_none() {
        return Ok(None);
    }
    let converted = if let Ok(flag) = value.cast::<PyBool>() {
        toml::Value::Boolean(flag.is_true())
    } else if let Ok(int) = value.cast::<PyInt>() {
        let int: i64 = int
            .extract()
            .map_err(|_| errors::config_argument(py, &errors::argument_key(path), "is out of range"))?;
        toml::Value::Integer(int)
    } else if let Ok(float) = value.cast::<PyFloat>() {
        toml::Value::Float(float.value())
    } else if let Ok(text) = value.cast::<PyString>() {
        toml::Value::String(text.to_str()?.to_string())
    } else if let Ok(dict) = value.cast::<PyDict>() {
        toml::Value::Table(table(dict, path)?)
    } else if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in value.try_iter()?.enumerate() {
            let item_path = format!("{path}[{i}]");
            if let Some(item) = toml_value(&item?, &item_path)? {
                items.push(item);
            }
        }
        toml::Value::Array(items)
    } else {
        let type_name = value.get_type().name()?;
        return Err(errors::config_argument(
            py,
            &errors::argument_key(path),
            &format!("a {type_name} is not a config value (numbers, strings, lists and dicts are)"),
        ));
    };
    Ok(Some(converted))
}

/// A `PostgresConfig` from keyword arguments, which take the names and shapes of its TOML
/// file's `[postgres]` table (`url`, `channel_prefix`, `large_payloads`, `payload_ttl_ms` …)
/// and go through its parser; `None` values keep the default. Errors name the key as given.
pub(crate) fn postgres_from_settings(settings: &Bound<'_, PyDict>) -> PyResult<PostgresConfig> {
    let py = settings.py();
    let mut document = toml::Table::new();
    document.insert("postgres".to_string(), toml::Value::Table(table(settings, "")?));
    let source = toml::to_string(&document)
        .map_err(|error| errors::config_argument(py, "(settings)", &error.to_string()))?;
    PostgresConfig::from_toml_str(&source).map_err(|error| {
        let key = error.key.as_deref().unwrap_or("(settings)");
        errors::config_argument(py, key.trim_start_matches("postgres."), &error.message)
    })
}

/// The keys of `RedisConfig` given in milliseconds, as keyword arguments name them.
const REDIS_MILLISECOND_KEYS: [&str; 5] = [
    "connect_timeout",
    "response_timeout",
    "health_check_interval",
    "reconnect_backoff_min",
    "reconnect_backoff_max",
];

/// A `RedisConfig` from keyword arguments (`url`, `channel_prefix`, `max_envelope_bytes`,
/// `publish_queue`, `max_pipeline`, and the timings as `connect_timeout_ms` …); `None`
/// values keep the default. Errors name the key as the arguments spell it.
pub(crate) fn redis_from_settings(settings: &Bound<'_, PyDict>) -> PyResult<RedisConfig> {
    let py = settings.py();
    let mut redis = RedisConfig::default();
    for (key, value) in settings.iter() {
        if value.is_none() {
            continue;
        }
        let key: String = key.extract()?;
        match key.as_str() {
            "url" => redis.url = text(&value, &key)?,
            "channel_prefix" => redis.channel_prefix = text(&value, &key)?,
            "max_envelope_bytes" => redis.max_envelope_bytes = count(&value, &key)?,
            "publish_queue" => redis.publish_queue = count(&value, &key)?,
            "max_pipeline" => redis.max_pipeline = count(&value, &key)?,
            _ => {
                let duration = Duration::from_millis(count(&value, &key)? as u64);
                match key.strip_suffix("_ms") {
                    Some("connect_timeout") => redis.connect_timeout = duration,
                    Some("response_timeout") => redis.response_timeout = duration,
                    Some("health_check_interval") => redis.health_check_interval = duration,
                    Some("reconnect_backoff_min") => redis.reconnect_backoff_min = duration,
                    Some("reconnect_backoff_max") => redis.reconnect_backoff_max = duration,
                    _ => return Err(errors::config_argument(py, &key, "is not a Redis setting")),
                }
            }
        }
    }
    redis.validate().map_err(|error| {
        let key = error.key.as_deref().map(redis_argument_key);
        match key {
            Some(key) => errors::config_argument(py, &key, &error.message),
            None => errors::config(py, &error, ConfigSource::Arguments),
        }
    })?;
    Ok(redis)
}

/// A `RedisConfig` key (`redis.connect_timeout`) as the keyword argument that sets it
/// (`connect_timeout_ms`).
fn redis_argument_key(key: &str) -> String {
    let field = key.strip_prefix("redis.").unwrap_or(key);
    if REDIS_MILLISECOND_KEYS.contains(&field) {
        format!("{field}_ms")
    } else {
        field.to_string()
    }
}

fn text(value: &Bound<'_, PyAny>, key: &str) -> PyResult<String> {
    match value.cast::<PyString>() {
        Ok(text) => Ok(text.to_str()?.to_string()),
        Err(_) => Err(wrong_type(value, key, "a string")),
    }
}

fn count(value: &Bound<'_, PyAny>, key: &str) -> PyResult<usize> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(wrong_type(value, key, "an integer"));
    }
    value.extract::<usize>().map_err(|_| {
        errors::config_argument(
            value.py(),
            key,
            "must be a non-negative integer that fits in 64 bits",
        )
    })
}

fn wrong_type(value: &Bound<'_, PyAny>, key: &str, wanted: &str) -> PyErr {
    let type_name = value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |name| name.to_string());
    errors::config_argument(value.py(), key, &format!("is a {type_name}; it must be {wanted}"))
}
