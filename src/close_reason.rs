//! Why a session was closed: part of the error and notice types, and of the drop accounting.

use std::fmt;

use crate::stats::DropReason;

/// Why a session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// `unsubscribe_all`, its last `unsubscribe_topic` (handler form), or its receiver was
    /// closed or dropped.
    Unsubscribed,
    /// Its mailbox was full under the `disconnect` policy.
    SlowConsumer,
    /// The provider was stopped.
    Stopped,
}

impl CloseReason {
    /// The drop reason of messages still queued when a session closes for this reason.
    pub(crate) fn drop_reason(self) -> DropReason {
        match self {
            CloseReason::Unsubscribed => DropReason::Unsubscribed,
            CloseReason::SlowConsumer => DropReason::SlowConsumer,
            CloseReason::Stopped => DropReason::Stopped,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Unsubscribed => "unsubscribed",
            CloseReason::SlowConsumer => "disconnected as a slow consumer (its mailbox was full)",
            CloseReason::Stopped => "the provider was stopped",
        })
    }
}
