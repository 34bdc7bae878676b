//! What the broker side of a distributed provider's operation can fail with. Carried inside
//! [`PubSubError::Backend`]; [`BrokerError::of`] finds it again.

use std::time::Duration;

use crate::error::PubSubError;

/// A failure of the broker side of a distributed provider's operation
/// (`RedisPubSub`, `PostgresPubSub`, `NatsPubSub`).
///
/// The provider returns it as [`PubSubError::Backend`]:
///
/// ```
/// use fanout::bridge::BrokerError;
///
/// # fn handle(error: fanout::PubSubError) {
/// match BrokerError::of(&error) {
///     Some(BrokerError::PublishUnavailable { .. }) => { /* local sessions got it; others did not */ }
///     _ => { /* … */ }
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// `start()` could not connect (or the first commands failed).
    #[error("cannot connect to {broker} at {target}: {source}")]
    Connect {
        /// The broker's kind: `redis`, `postgres`, `nats`.
        broker: &'static str,
        /// The server address (never the password).
        target: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An operation before `start()`.
    #[error("the provider is not started: call start() first")]
    NotStarted,
    /// The broadcast reached this instance's sessions, but the publishing connection is down,
    /// so other instances were not reached (the message is not queued for later).
    #[error(
        "the broker is unreachable (the publishing connection has been down for {} ms): the broadcast reached local sessions only",
        .down_for.as_millis()
    )]
    PublishUnavailable {
        /// How long the connection has been down.
        down_for: Duration,
    },
    /// The session is subscribed on this instance, but the broker has not confirmed the
    /// topic's subscription (the connection is down or was lost while subscribing). The
    /// provider subscribes as soon as the connection is back; until then broadcasts from other
    /// instances do not reach the session.
    #[error(
        "the broker is unreachable: the session is subscribed on this instance only until the subscription connection is back"
    )]
    SubscribeUnconfirmed,
    /// The session is subscribed on this instance, but the broker refused the topic's
    /// subscription on a working connection (a permissions violation, a subscription limit):
    /// broadcasts from other instances do not reach it. The provider tries again when the
    /// topic's subscribers change or the connection is replaced.
    #[error("the broker refused the topic's subscription ({reason}): the session is subscribed on this instance only")]
    SubscribeRefused {
        /// What the broker said.
        reason: String,
    },
    /// An acknowledged broadcast (`broadcast_acknowledged`) whose publish the broker did not
    /// acknowledge: it refused it, did not answer within the response timeout, the
    /// connection failed, or the provider stopped first. Local sessions have the message; other instances may or may not.
    #[error("the broker did not acknowledge the message: {why}; it reached local sessions")]
    Unacknowledged {
        /// What happened.
        why: Unacknowledged,
    },
    /// The encoded envelope would be larger than the provider's `max_envelope_bytes`. Nothing
    /// was delivered.
    #[error("envelope is {len} bytes; the limit is {limit} (max_envelope_bytes)")]
    EnvelopeTooLarge {
        /// Size the envelope would have.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The notification that would carry the message is longer than PostgreSQL accepts
    /// (`NOTIFY` payloads are under 8000 bytes), and the provider is not configured to store
    /// large payloads in a table. Nothing was delivered.
    #[error(
        "the notification would be {len} bytes; PostgreSQL's limit is {limit} (set large_payloads = \"table\" to carry larger messages)"
    )]
    NotificationTooLarge {
        /// Size the notification's payload would have (the envelope, base64-encoded).
        len: usize,
        /// The limit, 7999.
        limit: usize,
    },
}

/// Why an acknowledged broadcast was not acknowledged
/// ([`BrokerError::Unacknowledged`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unacknowledged {
    /// The broker answered its publish with an error, on a connection that still works.
    #[error("the broker refused it: {0}")]
    Refused(String),
    /// No answer within the response timeout; the connection is taken as lost, and the
    /// message may or may not have reached the broker.
    #[error("no answer within {} ms", .after.as_millis())]
    TimedOut {
        /// The response timeout.
        after: std::time::Duration,
    },
    /// The publishing connection failed while the message was in flight or queued.
    #[error("the publishing connection was lost: {0}")]
    Lost(String),
    /// The provider stopped before the broker answered: the message was not sent, or was
    /// sent and its answer did not come before the stop grace ran out.
    #[error("the provider stopped before the broker answered")]
    Stopped,
}

impl BrokerError {
    /// [`EnvelopeTooLarge`](Self::EnvelopeTooLarge) if an envelope of `len` bytes exceeds
    /// `limit` (a provider's `max_envelope_bytes`).
    pub(crate) fn check_envelope_len(len: usize, limit: usize) -> Result<(), BrokerError> {
        if len > limit {
            return Err(BrokerError::EnvelopeTooLarge { len, limit });
        }
        Ok(())
    }

    /// The broker error inside `error`, if it is one (also [`PubSubError::broker`]).
    pub fn of(error: &PubSubError) -> Option<&BrokerError> {
        match error {
            PubSubError::Backend(inner) => inner.downcast_ref(),
            _ => None,
        }
    }
}

impl PubSubError {
    /// The [`BrokerError`] this is, if a distributed provider's broker side failed: match it
    /// without downcasting.
    ///
    /// ```
    /// use fanout::bridge::BrokerError;
    ///
    /// # fn handle(error: fanout::PubSubError) {
    /// if let Some(BrokerError::PublishUnavailable { down_for }) = error.broker() {
    ///     eprintln!("other instances missed it; the broker has been down {down_for:?}");
    /// }
    /// # }
    /// ```
    pub fn broker(&self) -> Option<&BrokerError> {
        BrokerError::of(self)
    }
}

impl From<BrokerError> for PubSubError {
    fn from(error: BrokerError) -> Self {
        PubSubError::Backend(Box::new(error))
    }
}
