//! The provider trait every pub/sub backend implements, and the providers.
//!
//! - `memory`: [`InMemoryPubSub`](crate::InMemoryPubSub), the in-process provider.
//! - `bridge`: what every distributed provider shares, over a small broker trait (public as
//!   `fanout::bridge` with any of the features below).
//! - `redis`: `RedisPubSub`, instances joined by Redis pub/sub (public as `fanout::redis`,
//!   feature `redis`).
//! - `postgres`: `PostgresPubSub`, instances joined by PostgreSQL `LISTEN` / `NOTIFY` (public
//!   as `fanout::postgres`, feature `postgres`).
//! - `nats`: `NatsPubSub`, instances joined by core NATS publish/subscribe (public as
//!   `fanout::nats`, feature `nats`).
//! - `recording`: [`RecordingPubSub`](crate::RecordingPubSub), which records every call, for
//!   users testing their own code.
//! - `session_pubsub`: [`SessionPubSub`](crate::SessionPubSub), a provider bound to one session.

#[cfg(any(feature = "redis", feature = "postgres", feature = "nats"))]
pub mod bridge;
pub(crate) mod memory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod recording;
#[cfg(feature = "redis")]
pub mod redis;
pub(crate) mod session_pubsub;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::handler::Handler;
use crate::stats::StatsSnapshot;

/// A pub/sub provider: the operations of PyView's pluggable design, with the guarantees of
/// the crate's contract (G1–G9, see the crate docs).
///
/// Dyn-compatible: hold it as `Arc<dyn PubSubProvider>`.
///
/// ```
/// # async fn demo() -> Result<(), fanout::PubSubError> {
/// use std::sync::Arc;
/// use fanout::{Handler, InMemoryPubSub, PubSubProvider};
///
/// let pubsub: Arc<dyn PubSubProvider> = Arc::new(InMemoryPubSub::new());
/// pubsub.start().await?;
/// pubsub
///     .subscribe_topic("session-1", "room:lobby", Handler::new(|_topic, _msg| async {}))
///     .await?;
/// pubsub.broadcast("room:lobby", "hello".into()).await?;
/// pubsub.stop().await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait PubSubProvider: Send + Sync {
    /// Subscribes `session_id` to `topic` with `handler` ([G1]). Subscribing again replaces the
    /// handler; it is still one subscription ([G3]).
    ///
    /// [G1]: crate::docs::contract#g1-delivery
    /// [G3]: crate::docs::contract#g3-idempotence
    async fn subscribe_topic(&self, session_id: &str, topic: &str, handler: Handler) -> Result<()>;

    /// Removes one subscription ([G2]). Not subscribed: succeeds, does nothing ([G3]).
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    /// [G3]: crate::docs::contract#g3-idempotence
    async fn unsubscribe_topic(&self, session_id: &str, topic: &str) -> Result<()>;

    /// Removes every subscription of the session, as on its disconnect ([G2]): once this returns,
    /// none of its handlers starts again and its queued messages are discarded and counted.
    ///
    /// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
    async fn unsubscribe_all(&self, session_id: &str) -> Result<()>;

    /// Delivers `message` to every subscriber of `topic` ([G1]).
    ///
    /// `Ok` means every local recipient's mailbox has taken the message or its overflow policy
    /// has decided, and, for a distributed provider, that the message is queued for the broker;
    /// it does not mean the broker has it (a message queued when the connection breaks is lost
    /// and counted). [`broadcast_acknowledged`](Self::broadcast_acknowledged) waits for that.
    ///
    /// [G1]: crate::docs::contract#g1-delivery
    async fn broadcast(&self, topic: &str, message: Bytes) -> Result<()>;

    /// Delivers `message` to every subscriber of `topic` except `session_id`, with `Ok` meaning
    /// what it means for [`broadcast`](Self::broadcast).
    async fn broadcast_from(&self, session_id: &str, topic: &str, message: Bytes) -> Result<()>;

    /// As [`broadcast`](Self::broadcast), but for a distributed provider `Ok` means the
    /// broker's reply to this message's publish was read (Redis: the `PUBLISH` reply;
    /// PostgreSQL: the statement's completion); a publish that fails, is refused or goes
    /// unanswered is a `BrokerError::Unacknowledged` (`PubSubError::broker` finds it) naming
    /// what happened (local sessions have the message either way). In one process (the default) it is `broadcast`:
    /// `Ok` once every local recipient's mailbox has taken the message or its policy decided.
    async fn broadcast_acknowledged(&self, topic: &str, message: Bytes) -> Result<()> {
        self.broadcast(topic, message).await
    }

    /// As [`broadcast_from`](Self::broadcast_from), acknowledged as
    /// [`broadcast_acknowledged`](Self::broadcast_acknowledged) is.
    async fn broadcast_from_acknowledged(&self, session_id: &str, topic: &str, message: Bytes) -> Result<()> {
        self.broadcast_from(session_id, topic, message).await
    }

    /// Called by the host application at start-up ([G8]).
    ///
    /// [G8]: crate::docs::contract#g8-lifecycle
    async fn start(&self) -> Result<()>;

    /// Called at shut-down: ends every background task the provider started. Idempotent;
    /// afterwards operations fail with [`PubSubError::Stopped`](crate::PubSubError::Stopped).
    async fn stop(&self) -> Result<()>;

    /// A snapshot of the provider's counters.
    fn stats(&self) -> StatsSnapshot;
}

/// JSON helpers for every provider.
#[cfg(feature = "json")]
#[async_trait]
pub trait PubSubJsonExt: PubSubProvider {
    /// Encodes `value` as JSON and broadcasts it.
    async fn broadcast_json<T: serde::Serialize + Sync + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = Bytes::from(serde_json::to_vec(value)?);
        self.broadcast(topic, bytes).await
    }

    /// Encodes `value` as JSON and broadcasts it to everyone but `session_id`.
    async fn broadcast_from_json<T: serde::Serialize + Sync + ?Sized>(
        &self,
        session_id: &str,
        topic: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = Bytes::from(serde_json::to_vec(value)?);
        self.broadcast_from(session_id, topic, bytes).await
    }
}

#[cfg(feature = "json")]
impl<P: PubSubProvider + ?Sized> PubSubJsonExt for P {}
