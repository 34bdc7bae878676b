//! `_core.Provider`: the in-memory provider under the Python `InMemoryPubSub`.

use std::sync::Arc;

use fanout::{Config, InMemoryPubSub, PubSubProvider, StatsSnapshot};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::call::{self, detached};
use crate::config;
use crate::errors;
use crate::payload;
use crate::session::Session;

/// The engine and its provider; `InMemoryPubSub` (Python) runs the sessions' pumps on top.
#[pyclass(frozen, module = "pyview_fanout._core")]
pub(crate) struct Provider {
    pubsub: Arc<InMemoryPubSub>,
}

impl Provider {
    fn new(py: Python<'_>, config: Config) -> PyResult<Self> {
        let pubsub = InMemoryPubSub::with_config(config)
            .map_err(|error| errors::config(py, &error, errors::ConfigSource::Arguments))?;
        Ok(Self {
            pubsub: Arc::new(pubsub),
        })
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

    /// Opens the pull-form session `session_id`, whose pump runs on `event_loop` (on this
    /// thread).
    fn open_session(&self, py: Python<'_>, session_id: &str, event_loop: Py<PyAny>) -> PyResult<Session> {
        let receiver = detached(py, || self.pubsub.open_session(session_id))
            .map_err(|error| errors::pubsub(py, error))?;
        Ok(Session::new(receiver, event_loop))
    }

    /// Delivers `message` to every subscriber of `topic`.
    fn broadcast<'py>(
        &self,
        py: Python<'py>,
        topic: Bound<'py, PyString>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.publish(py, None, topic, message)
    }

    /// Delivers `message` to every subscriber of `topic` but `session_id`.
    fn broadcast_from<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
        topic: Bound<'py, PyString>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.publish(py, Some(session_id), topic, message)
    }

    /// Removes one subscription; unknown sessions and topics do nothing.
    fn unsubscribe_topic<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
        topic: String,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let pubsub = Arc::clone(&self.pubsub);
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
        let pubsub = Arc::clone(&self.pubsub);
        call::run(py, async move { pubsub.unsubscribe_all(&session_id).await })
    }

    /// Starts the provider's background task (the reaper of disconnected sessions).
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let pubsub = Arc::clone(&self.pubsub);
        call::run(py, async move { pubsub.start().await })
    }

    /// Closes every session and ends the provider's tasks.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let pubsub = Arc::clone(&self.pubsub);
        call::run(py, async move { pubsub.stop().await })
    }

    /// Whether `stop` has been called.
    #[getter]
    fn stopped(&self) -> bool {
        self.pubsub.engine().is_stopped()
    }

    /// `Config::stop_grace`, in seconds.
    #[getter]
    fn stop_grace(&self) -> f64 {
        self.pubsub.engine().config().stop_grace.as_secs_f64()
    }

    /// `Config::close_grace`, in seconds.
    #[getter]
    fn close_grace(&self) -> f64 {
        self.pubsub.engine().config().close_grace.as_secs_f64()
    }

    /// The engine's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.pubsub.stats())
    }

    /// Figures for one live session, or `None`.
    fn session_stats<'py>(&self, py: Python<'py>, session_id: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(stats) = self.pubsub.session_stats(session_id) else {
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
    fn publish<'py>(
        &self,
        py: Python<'py>,
        sender: Option<String>,
        topic: Bound<'py, PyString>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let limits = &self.pubsub.engine().config().limits;
        payload::check_size(&message, limits).map_err(|error| errors::pubsub(py, error))?;
        let name = topic.to_str()?.to_string();
        let payload = payload::wrap(topic, message)?;
        let pubsub = Arc::clone(&self.pubsub);
        call::run(py, async move {
            match sender {
                Some(sender) => pubsub.broadcast_from(&sender, &name, payload).await,
                None => pubsub.broadcast(&name, payload).await,
            }
        })
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
