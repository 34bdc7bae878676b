//! What the Redis side of a provider operation can fail with. Carried inside
//! [`PubSubError::Backend`]; [`RedisPubSubError::of`] finds it again.

use std::time::Duration;

use crate::error::PubSubError;

/// A failure of the Redis side of a [`RedisPubSub`](super::RedisPubSub) operation.
///
/// The provider returns it as [`PubSubError::Backend`]:
///
/// ```
/// use fanout::redis::RedisPubSubError;
///
/// # fn handle(error: fanout::PubSubError) {
/// match RedisPubSubError::of(&error) {
///     Some(RedisPubSubError::PublishUnavailable { .. }) => { /* local sessions got it; others did not */ }
///     _ => { /* … */ }
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisPubSubError {
    /// `start()` could not connect (or the first commands failed).
    #[error("cannot connect to redis at {target}: {source}")]
    Connect {
        /// The server address (never the password).
        target: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An operation before `start()`.
    #[error("the redis provider is not started: call start() first")]
    NotStarted,
    /// The broadcast reached this instance's sessions, but the publishing connection is down,
    /// so other instances were not reached (the message is not queued for later).
    #[error(
        "redis is unreachable (the publishing connection has been down for {} ms): the broadcast reached local sessions only",
        .down_for.as_millis()
    )]
    PublishUnavailable {
        /// How long the connection has been down.
        down_for: Duration,
    },
    /// The session is subscribed on this instance, but Redis has not confirmed the channel
    /// subscription (the connection is down or was lost while subscribing). The provider
    /// subscribes the channel as soon as the connection is back; until then broadcasts from
    /// other instances do not reach the session.
    #[error(
        "redis is unreachable: the session is subscribed on this instance only until the subscription connection is back"
    )]
    SubscribeUnconfirmed,
    /// The encoded envelope would be larger than
    /// [`RedisConfig::max_envelope_bytes`](super::RedisConfig::max_envelope_bytes). Nothing
    /// was delivered.
    #[error("envelope is {len} bytes; the limit is {limit} (max_envelope_bytes)")]
    EnvelopeTooLarge {
        /// Size the envelope would have.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

impl RedisPubSubError {
    /// The Redis error inside `error`, if it is one.
    pub fn of(error: &PubSubError) -> Option<&RedisPubSubError> {
        match error {
            PubSubError::Backend(inner) => inner.downcast_ref(),
            _ => None,
        }
    }
}

impl From<RedisPubSubError> for PubSubError {
    fn from(error: RedisPubSubError) -> Self {
        PubSubError::Backend(Box::new(error))
    }
}
