//! `_core.Provider`: the provider under the Python `InMemoryPubSub` and `RedisPubSub`.

use std::sync::Arc;

use bytes::Bytes;
use fanout::bridge::BrokerStats;
use fanout::{Config, StatsSnapshot};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::backend::Backend;
use crate::call::{self, detached};
use crate::config;
use crate::errors;
use crate::payload;
use crate::pump::Pump;
use crate::session::Session;

/// A provider; the Python layer (`_provider`) runs the sessions' pumps on top.
#[pyclass(frozen, module = "pyview_fanout._core")]
pub(crate) struct Provider {
    backend: Backend,
}

impl Provider {
    fn new(py: Python<'_>, config: Config) -> PyResult<Self> {
        let backend = Backend::memory(config)
            .map_err(|error| errors::config(py, &error, errors::ConfigSource::Arguments))?;
        Ok(Self { backend })
    }
}

#[pymethods]
impl Provider {
    /// A provider configured by the TOML file at `path`.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: &str) -> PyResult<Self> {
        let config = config::from_file(py, path)?;
        Self::new(py, config)
    }

    /// A provider configured by keyword arguments, given with the file's key names.
    #[staticmethod]
    fn from_settings(settings: &Bound<'_, PyDict>) -> PyResult<Self> {
        let config = config::from_settings(settings)?;
        Self::new(settings.py(), config)
    }

    /// A Redis provider: `redis` holds `RedisConfig`'s settings as keyword arguments name
    /// them; the engine's config comes from the file at `path`, else from `settings`.
    #[staticmethod]
    #[pyo3(signature = (redis, settings, path=None))]
    fn redis(redis: &Bound<'_, PyDict>, settings: &Bound<'_, PyDict>, path: Option<&str>) -> PyResult<Self> {
        let redis = config::redis_from_settings(redis)?;
        let config = engine_config(settings, path)?;
        Self::distributed(settings.py(), Backend::redis(redis, config), "redis.")
    }

    /// A PostgreSQL provider: `postgres` holds `PostgresConfig`'s settings as its TOML
    /// table names them; the engine's config comes from the file at `path`, else from
    /// `settings`.
    #[staticmethod]
    #[pyo3(signature = (postgres, settings, path=None))]
    fn postgres(
        postgres: &Bound<'_, PyDict>,
        settings: &Bound<'_, PyDict>,
        path: Option<&str>,
    ) -> PyResult<Self> {
        let postgres = config::postgres_from_settings(postgres)?;
        let config = engine_config(settings, path)?;
        Self::distributed(settings.py(), Backend::postgres(postgres, config), "postgres.")
    }

    /// Whether messages travel as encoded bytes (a distributed provider) rather than as the
    /// Python objects themselves.
    #[getter]
    fn encoded(&self) -> bool {
        self.backend.encoded()
    }

    /// Opens the pull-form session `session_id`, whose handlers run on `pump`, in `context`
    /// (a `contextvars.Context`).
    fn open_session(
        &self,
        py: Python<'_>,
        session_id: &str,
        pump: &Pump,
        context: Py<PyAny>,
    ) -> PyResult<Session> {
        let receiver = detached(py, || self.backend.open_session(session_id))
            .map_err(|error| errors::pubsub(py, error))?;
        Ok(Session::new(
            receiver,
            Arc::clone(pump.queue()),
            context,
            self.backend.encoded(),
        ))
    }

    /// Delivers `message` to every subscriber of `topic`.
    fn broadcast<'py>(
        &self,
        py: Python<'py>,
        topic: Bound<'py, PyString>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.send(py, None, topic, message, false)
    }

    /// Delivers `message` to every subscriber of `topic` but `session_id`.
    fn broadcast_from<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
        topic: Bound<'py, PyString>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.send(py, Some(session_id), topic, message, false)
    }

    /// As `broadcast`, but on a distributed provider it returns once the broker answered the
    /// publish (raising `BrokerError` if it refused it, did not answer, or the connection was
    /// lost); in one process it is `broadcast`.
    fn broadcast_acknowledged<'py>(
        &self,
        py: Python<'py>,
        topic: Bound<'py, PyString>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.send(py, None, topic, message, true)
    }

    /// As `broadcast_from`, acknowledged as `broadcast_acknowledged` is.
    fn broadcast_from_acknowledged<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
        topic: Bound<'py, PyString>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.send(py, Some(session_id), topic, message, true)
    }

    /// Removes one subscription; unknown sessions and topics do nothing.
    fn unsubscribe_topic<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
        topic: String,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let pubsub = self.backend.provider();
        call::run(
            py,
            async move { pubsub.unsubscribe_topic(&session_id, &topic).await },
        )
    }

    /// Closes the session `session_id`; unknown sessions do nothing.
    fn unsubscribe_all<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let pubsub = self.backend.provider();
        call::run(py, async move { pubsub.unsubscribe_all(&session_id).await })
    }

    /// Starts the provider's background task (the reaper of disconnected sessions).
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let pubsub = self.backend.provider();
        call::run(py, async move { pubsub.start().await })
    }

    /// Closes every session and ends the provider's tasks.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let pubsub = self.backend.provider();
        call::run(py, async move { pubsub.stop().await })
    }

    /// Whether `stop` has been called.
    #[getter]
    fn stopped(&self) -> bool {
        self.backend.engine().is_stopped()
    }

    /// `Config::stop_grace`, in seconds.
    #[getter]
    fn stop_grace(&self) -> f64 {
        self.backend.engine().config().stop_grace.as_secs_f64()
    }

    /// `Config::close_grace`, in seconds.
    #[getter]
    fn close_grace(&self) -> f64 {
        self.backend.engine().config().close_grace.as_secs_f64()
    }

    /// The engine's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = stats_dict(py, &self.backend.engine().stats())?;
        if let Some(broker) = self.backend.broker_stats() {
            stats.set_item("broker", broker_stats_dict(py, &broker)?)?;
        }
        Ok(stats)
    }

    /// Figures for one live session, or `None`.
    fn session_stats<'py>(&self, py: Python<'py>, session_id: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(stats) = self.backend.session_stats(session_id) else {
            return Ok(None);
        };
        let dict = PyDict::new(py);
        dict.set_item("queued", stats.queued)?;
        dict.set_item("capacity", stats.capacity)?;
        dict.set_item("topics", stats.topics)?;
        Ok(Some(dict))
    }
}

impl Provider {
    /// A distributed provider as made, its config errors named by the keyword argument
    /// (the key without its `section`).
    fn distributed(
        py: Python<'_>,
        made: Result<Backend, fanout::ConfigError>,
        section: &str,
    ) -> PyResult<Self> {
        let backend = made.map_err(|error| {
            let key = error.key.as_deref().unwrap_or("(settings)");
            errors::config_argument(py, key.trim_start_matches(section), &error.message)
        })?;
        Ok(Self { backend })
    }

    /// A broadcast from `sender` (none: from no session), acknowledged if asked.
    fn send<'py>(
        &self,
        py: Python<'py>,
        sender: Option<String>,
        topic: Bound<'py, PyString>,
        message: Bound<'py, PyAny>,
        acknowledged: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let name = topic.to_str()?.to_string();
        let payload = if self.backend.encoded() {
            let Ok(encoded) = message.cast::<PyBytes>() else {
                return Err(PyTypeError::new_err(
                    "a distributed provider publishes bytes (encoded by _codec)",
                ));
            };
            Bytes::copy_from_slice(encoded.as_bytes())
        } else {
            let limits = &self.backend.engine().config().limits;
            payload::check_size(&message, limits).map_err(|error| errors::pubsub(py, error))?;
            payload::wrap(topic, message)?
        };
        let pubsub = self.backend.provider();
        call::run(py, async move {
            match (sender, acknowledged) {
                (Some(sender), false) => pubsub.broadcast_from(&sender, &name, payload).await,
                (None, false) => pubsub.broadcast(&name, payload).await,
                (Some(sender), true) => pubsub.broadcast_from_acknowledged(&sender, &name, payload).await,
                (None, true) => pubsub.broadcast_acknowledged(&name, payload).await,
            }
        })
    }
}

/// The engine's config: the TOML file at `path`, else the keyword `settings`.
fn engine_config(settings: &Bound<'_, PyDict>, path: Option<&str>) -> PyResult<Config> {
    match path {
        Some(path) => config::from_file(settings.py(), path),
        None => config::from_settings(settings),
    }
}

/// A stats snapshot as a dict; `dropped` is a dict by reason.
fn stats_dict<'py>(py: Python<'py>, stats: &StatsSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let dropped = PyDict::new(py);
    dropped.set_item("drop_newest", stats.dropped.drop_newest)?;
    dropped.set_item("drop_oldest", stats.dropped.drop_oldest)?;
    dropped.set_item("slow_consumer", stats.dropped.slow_consumer)?;
    dropped.set_item("unsubscribed", stats.dropped.unsubscribed)?;
    dropped.set_item("stopped", stats.dropped.stopped)?;
    let dict = PyDict::new(py);
    dict.set_item("published", stats.published)?;
    dict.set_item("recipients", stats.recipients)?;
    dict.set_item("delivered", stats.delivered)?;
    dict.set_item("dropped", dropped)?;
    dict.set_item("disconnects", stats.disconnects)?;
    dict.set_item("block_waits", stats.block_waits)?;
    dict.set_item("block_timeouts", stats.block_timeouts)?;
    dict.set_item("block_skips", stats.block_skips)?;
    dict.set_item("sessions", stats.sessions)?;
    dict.set_item("topics", stats.topics)?;
    dict.set_item("subscriptions", stats.subscriptions)?;
    Ok(dict)
}

/// A distributed provider's broker counters as a dict; `outage_time` in seconds.
fn broker_stats_dict<'py>(py: Python<'py>, stats: &BrokerStats) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("connected", stats.connected)?;
    dict.set_item("outages", stats.outages)?;
    dict.set_item("reconnects", stats.reconnects)?;
    dict.set_item("outage_time", stats.outage_time.as_secs_f64())?;
    dict.set_item("publisher_connected", stats.publisher_connected)?;
    dict.set_item("publisher_outages", stats.publisher_outages)?;
    dict.set_item("publisher_reconnects", stats.publisher_reconnects)?;
    dict.set_item("published", stats.published)?;
    dict.set_item("envelopes_published", stats.envelopes_published)?;
    dict.set_item("publish_errors", stats.publish_errors)?;
    dict.set_item("publish_refusals", stats.publish_refusals)?;
    dict.set_item("unavailable", stats.unavailable)?;
    dict.set_item("received", stats.received)?;
    dict.set_item("envelopes_received", stats.envelopes_received)?;
    dict.set_item("echoes_skipped", stats.echoes_skipped)?;
    dict.set_item("malformed", stats.malformed)?;
    dict.set_item("channels", stats.channels)?;
    Ok(dict)
}
