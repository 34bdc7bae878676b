//! Errors of the provider layer ([G9]: errors are values that name the limit they broke).
//!
//! [G9]: crate::docs::contract#g9-errors-are-values

use crate::close_reason::CloseReason;
use crate::session_form::SessionForm;

/// What a [`PubSubProvider`](crate::PubSubProvider) operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// The topic is the empty string.
    #[error("topic is empty")]
    EmptyTopic,
    /// The topic is longer than [`Limits::max_topic_bytes`](crate::Limits::max_topic_bytes).
    #[error("topic is {len} bytes; the limit is {limit}")]
    TopicTooLong {
        /// Length of the rejected topic in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The payload is larger than [`Limits::max_payload_bytes`](crate::Limits::max_payload_bytes).
    #[error("payload is {len} bytes; the limit is {limit}")]
    PayloadTooLarge {
        /// Length of the rejected payload in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The session id is the empty string.
    #[error("session id is empty")]
    EmptySessionId,
    /// The session id is longer than
    /// [`Limits::max_session_id_bytes`](crate::Limits::max_session_id_bytes).
    #[error("session id is {len} bytes; the limit is {limit}")]
    SessionIdTooLong {
        /// Length of the rejected session id in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The provider has been stopped ([G8]); it accepts no more operations.
    ///
    /// [G8]: crate::docs::contract#g8-lifecycle
    #[error("the provider is stopped")]
    Stopped,
    /// The pull-form session was closed and takes no more subscriptions.
    #[error("session `{session_id}` is closed: {reason}")]
    SessionClosed {
        /// The session's id.
        session_id: String,
        /// Why it was closed.
        reason: CloseReason,
    },
    /// A session with this id already exists in the other form (handler vs. pull), or a
    /// second pull receiver was requested for a live id.
    #[error("session id `{session_id}` is already in use by a {existing} session")]
    SessionIdInUse {
        /// The contested id.
        session_id: String,
        /// The form of the session holding the id.
        existing: SessionForm,
    },
    /// Handler sessions run on a tokio runtime; none was found in the calling context.
    #[error("no tokio runtime is running: handler sessions need one for their task")]
    NoRuntime,
    /// A JSON helper could not encode the value.
    #[cfg(feature = "json")]
    #[error("could not encode the message as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// A backend (broker) operation failed.
    #[error("backend error: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

/// Shorthand for results of provider operations.
pub type Result<T, E = PubSubError> = std::result::Result<T, E>;
