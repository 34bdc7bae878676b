//! `RecordingPubSub`: a provider that records every call and still delivers, for tests of
//! code that uses a provider.

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::error::Result;
use crate::handler::Handler;
use crate::provider::memory::InMemoryPubSub;
use crate::provider::PubSubProvider;
use crate::stats::StatsSnapshot;
use crate::topic::Topic;

/// One recorded call. Calls are recorded whether or not they succeed; `ok` says which.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `start()`.
    Started {
        /// Whether it succeeded.
        ok: bool,
    },
    /// `stop()`.
    Stopped {
        /// Whether it succeeded.
        ok: bool,
    },
    /// `subscribe_topic`.
    Subscribed {
        /// The session.
        session_id: String,
        /// The topic.
        topic: Topic,
        /// Whether it succeeded.
        ok: bool,
    },
    /// `unsubscribe_topic`.
    Unsubscribed {
        /// The session.
        session_id: String,
        /// The topic.
        topic: Topic,
        /// Whether it succeeded.
        ok: bool,
    },
    /// `unsubscribe_all`.
    UnsubscribedAll {
        /// The session.
        session_id: String,
        /// Whether it succeeded.
        ok: bool,
    },
    /// `broadcast` or `broadcast_from`.
    Broadcast {
        /// The topic.
        topic: Topic,
        /// The payload.
        message: Bytes,
        /// The excluded sender, for `broadcast_from`.
        from: Option<String>,
        /// Whether the call waited for the broker's acknowledgement
        /// (`broadcast_acknowledged`, `broadcast_from_acknowledged`).
        acknowledged: bool,
        /// Whether it succeeded.
        ok: bool,
    },
}

/// A provider that records every call and delivers like [`InMemoryPubSub`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fanout::PubSubError> {
/// use fanout::{PubSubProvider, RecordingPubSub};
///
/// let pubsub = RecordingPubSub::new();
/// pubsub.broadcast("room:1", "hi".into()).await?;
/// assert_eq!(pubsub.broadcasts(), vec![("room:1".into(), "hi".into())]);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct RecordingPubSub {
    inner: InMemoryPubSub,
    calls: Mutex<Vec<Call>>,
}

impl RecordingPubSub {
    /// A recorder over an [`InMemoryPubSub`] with the default config.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder over an [`InMemoryPubSub`] with `config`.
    pub fn with_config(config: Config) -> std::result::Result<Self, ConfigError> {
        Ok(Self {
            inner: InMemoryPubSub::with_config(config)?,
            calls: Mutex::new(Vec::new()),
        })
    }

    /// The provider that delivers.
    pub fn inner(&self) -> &InMemoryPubSub {
        &self.inner
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().clone()
    }

    /// Successful `subscribe_topic` calls, as (session, topic).
    pub fn subscriptions(&self) -> Vec<(String, Topic)> {
        self.lock()
            .iter()
            .filter_map(|call| match call {
                Call::Subscribed {
                    session_id,
                    topic,
                    ok: true,
                } => Some((session_id.clone(), topic.clone())),
                _ => None,
            })
            .collect()
    }

    /// Successful `unsubscribe_topic` calls, as (session, topic).
    pub fn unsubscriptions(&self) -> Vec<(String, Topic)> {
        self.lock()
            .iter()
            .filter_map(|call| match call {
                Call::Unsubscribed {
                    session_id,
                    topic,
                    ok: true,
                } => Some((session_id.clone(), topic.clone())),
                _ => None,
            })
            .collect()
    }

    /// Successful broadcasts (both kinds), as (topic, message).
    pub fn broadcasts(&self) -> Vec<(Topic, Bytes)> {
        self.lock()
            .iter()
            .filter_map(|call| match call {
                Call::Broadcast {
                    topic,
                    message,
                    ok: true,
                    ..
                } => Some((topic.clone(), message.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether `start()` has succeeded.
    pub fn started(&self) -> bool {
        self.lock()
            .iter()
            .any(|c| matches!(c, Call::Started { ok: true }))
    }

    /// Whether `stop()` has succeeded.
    pub fn stopped(&self) -> bool {
        self.lock()
            .iter()
            .any(|c| matches!(c, Call::Stopped { ok: true }))
    }

    /// Forgets every recorded call (subscriptions and deliveries are untouched).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record<T>(&self, result: Result<T>, call: impl FnOnce(bool) -> Call) -> Result<T> {
        self.lock().push(call(result.is_ok()));
        result
    }

    /// Every kind of broadcast: delivers through the inner provider, then records.
    async fn record_broadcast(
        &self,
        from: Option<&str>,
        topic: &str,
        message: Bytes,
        acknowledged: bool,
    ) -> Result<()> {
        let inner = &self.inner;
        let result = match (from, acknowledged) {
            (None, false) => inner.broadcast(topic, message.clone()).await,
            (None, true) => inner.broadcast_acknowledged(topic, message.clone()).await,
            (Some(from), false) => inner.broadcast_from(from, topic, message.clone()).await,
            (Some(from), true) => {
                inner
                    .broadcast_from_acknowledged(from, topic, message.clone())
                    .await
            }
        };
        self.record(result, |ok| Call::Broadcast {
            topic: topic.into(),
            message,
            from: from.map(Into::into),
            acknowledged,
            ok,
        })
    }
}

#[async_trait]
impl PubSubProvider for RecordingPubSub {
    async fn subscribe_topic(&self, session_id: &str, topic: &str, handler: Handler) -> Result<()> {
        let result = self.inner.subscribe_topic(session_id, topic, handler).await;
        self.record(result, |ok| Call::Subscribed {
            session_id: session_id.into(),
            topic: topic.into(),
            ok,
        })
    }

    async fn unsubscribe_topic(&self, session_id: &str, topic: &str) -> Result<()> {
        let result = self.inner.unsubscribe_topic(session_id, topic).await;
        self.record(result, |ok| Call::Unsubscribed {
            session_id: session_id.into(),
            topic: topic.into(),
            ok,
        })
    }

    async fn unsubscribe_all(&self, session_id: &str) -> Result<()> {
        let result = self.inner.unsubscribe_all(session_id).await;
        self.record(result, |ok| Call::UnsubscribedAll {
            session_id: session_id.into(),
            ok,
        })
    }

    async fn broadcast(&self, topic: &str, message: Bytes) -> Result<()> {
        self.record_broadcast(None, topic, message, false).await
    }

    async fn broadcast_from(&self, session_id: &str, topic: &str, message: Bytes) -> Result<()> {
        self.record_broadcast(Some(session_id), topic, message, false)
            .await
    }

    async fn broadcast_acknowledged(&self, topic: &str, message: Bytes) -> Result<()> {
        self.record_broadcast(None, topic, message, true).await
    }

    async fn broadcast_from_acknowledged(&self, session_id: &str, topic: &str, message: Bytes) -> Result<()> {
        self.record_broadcast(Some(session_id), topic, message, true)
            .await
    }

    async fn start(&self) -> Result<()> {
        let result = self.inner.start().await;
        self.record(result, |ok| Call::Started { ok })
    }

    async fn stop(&self) -> Result<()> {
        let result = self.inner.stop().await;
        self.record(result, |ok| Call::Stopped { ok })
    }

    fn stats(&self) -> StatsSnapshot {
        self.inner.stats()
    }
}
