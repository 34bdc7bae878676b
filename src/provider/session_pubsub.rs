//! `SessionPubSub`: a provider bound to one session id.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::handler::Handler;
use crate::provider::PubSubProvider;

/// A provider and a session id: the same operations without the session id argument, for a
/// LiveView socket to hold.
#[derive(Clone)]
pub struct SessionPubSub {
    provider: Arc<dyn PubSubProvider>,
    session_id: Arc<str>,
}

impl SessionPubSub {
    /// Binds `provider` to `session_id`.
    pub fn new(provider: Arc<dyn PubSubProvider>, session_id: impl Into<Arc<str>>) -> Self {
        Self {
            provider,
            session_id: session_id.into(),
        }
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn PubSubProvider> {
        &self.provider
    }

    /// Subscribes this session to `topic`.
    pub async fn subscribe(&self, topic: &str, handler: Handler) -> Result<()> {
        self.provider
            .subscribe_topic(&self.session_id, topic, handler)
            .await
    }

    /// Unsubscribes this session from `topic`.
    pub async fn unsubscribe(&self, topic: &str) -> Result<()> {
        self.provider.unsubscribe_topic(&self.session_id, topic).await
    }

    /// Unsubscribes this session from everything (its disconnect).
    pub async fn unsubscribe_all(&self) -> Result<()> {
        self.provider.unsubscribe_all(&self.session_id).await
    }

    /// Broadcasts to every subscriber of `topic`, this session included.
    pub async fn broadcast(&self, topic: &str, message: Bytes) -> Result<()> {
        self.provider.broadcast(topic, message).await
    }

    /// Broadcasts to every subscriber of `topic` but this session.
    pub async fn broadcast_from(&self, topic: &str, message: Bytes) -> Result<()> {
        self.provider
            .broadcast_from(&self.session_id, topic, message)
            .await
    }

    /// [`broadcast`](Self::broadcast), acknowledged as
    /// [`PubSubProvider::broadcast_acknowledged`] is: for a distributed provider, `Ok` once the
    /// broker's reply to the publish was read.
    pub async fn broadcast_acknowledged(&self, topic: &str, message: Bytes) -> Result<()> {
        self.provider.broadcast_acknowledged(topic, message).await
    }

    /// [`broadcast_from`](Self::broadcast_from), acknowledged as
    /// [`PubSubProvider::broadcast_acknowledged`] is.
    pub async fn broadcast_from_acknowledged(&self, topic: &str, message: Bytes) -> Result<()> {
        self.provider
            .broadcast_from_acknowledged(&self.session_id, topic, message)
            .await
    }
}

impl std::fmt::Debug for SessionPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPubSub")
            .field("session_id", &self.session_id)
            .finish()
    }
}
