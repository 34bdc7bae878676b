//! The crate's errors as the package's Python exceptions (`pyview_fanout._errors`).

use fanout::bridge::BrokerError;
use fanout::{ConfigError, PubSubError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// An instance of the exception class `name` of `pyview_fanout._errors`, with `message` and
/// the keyword arguments `kwargs`.
fn raise<'py>(py: Python<'py>, name: &str, message: String, kwargs: Option<&Bound<'py, PyDict>>) -> PyErr {
    let made = py
        .import("pyview_fanout._errors")
        .and_then(|module| module.getattr(name))
        .and_then(|class| class.call((message,), kwargs));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(error) => error,
    }
}

/// A provider error as the exception for its kind; the message is the crate's.
pub(crate) fn pubsub(py: Python<'_>, error: PubSubError) -> PyErr {
    let name = match &error {
        PubSubError::EmptyTopic | PubSubError::TopicTooLong { .. } => "InvalidTopicError",
        PubSubError::EmptySessionId | PubSubError::SessionIdTooLong { .. } => "InvalidSessionIdError",
        PubSubError::PayloadTooLarge { .. } => "PayloadTooLargeError",
        PubSubError::Stopped => "StoppedError",
        PubSubError::SessionClosed { .. } => "SessionClosedError",
        _ => match error.broker() {
            Some(BrokerError::EnvelopeTooLarge { .. } | BrokerError::NotificationTooLarge { .. }) => {
                "PayloadTooLargeError"
            }
            Some(BrokerError::NotStarted) => "NotStartedError",
            Some(_) => "BrokerError",
            None => "FanoutError",
        },
    };
    // A broker's error reads as its own message, without the `Backend` wrapper's prefix.
    let message = error
        .broker()
        .map_or_else(|| error.to_string(), ToString::to_string);
    raise(py, name, message, None)
}

/// Where a config came from: the names its errors use for keys and places.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigSource {
    /// A TOML file: keys as the file writes them, with its name, line and column.
    File,
    /// Keyword arguments: keys as the arguments spell them (`overrides[0].max_queued`).
    Arguments,
}

/// A config error as `ConfigError`, with its key (and, from a file, the file and position).
pub(crate) fn config(py: Python<'_>, error: &ConfigError, source: ConfigSource) -> PyErr {
    let key = error.key.as_deref().map(|key| match source {
        ConfigSource::File => key.to_string(),
        ConfigSource::Arguments => argument_key(key),
    });
    let kwargs = PyDict::new(py);
    let filled = (|| {
        kwargs.set_item("key", key.as_deref())?;
        if source == ConfigSource::File {
            kwargs.set_item("file", error.file.as_deref())?;
            kwargs.set_item("line", error.position.map(|(line, _)| line))?;
            kwargs.set_item("column", error.position.map(|(_, column)| column))?;
        }
        PyResult::Ok(())
    })();
    if let Err(error) = filled {
        return error;
    }
    let message = match (source, &key) {
        (ConfigSource::File, _) => error.to_string(),
        (ConfigSource::Arguments, Some(key)) => format!("`{key}`: {}", error.message),
        (ConfigSource::Arguments, None) => error.message.clone(),
    };
    raise(py, "ConfigError", message, Some(&kwargs))
}

/// A config error built here, for a keyword argument the file format cannot hold.
pub(crate) fn config_argument(py: Python<'_>, key: &str, message: &str) -> PyErr {
    let kwargs = PyDict::new(py);
    if let Err(error) = kwargs.set_item("key", key) {
        return error;
    }
    raise(py, "ConfigError", format!("`{key}`: {message}"), Some(&kwargs))
}

/// A file key as the keyword arguments spell it: the file's `[[override]]` tables are the
/// `overrides` list.
pub(crate) fn argument_key(key: &str) -> String {
    match key.strip_prefix("override") {
        Some(rest) => format!("overrides{rest}"),
        None => key.to_string(),
    }
}
