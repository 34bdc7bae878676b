//! The two forms a session takes.

use std::fmt;

/// The two forms a session takes: run by handlers, or read by a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionForm {
    /// Created by `subscribe_topic`: a task runs its handlers.
    Handler,
    /// Created by `open_session`: read with `recv()` or as a `Stream`.
    Receiver,
}

impl fmt::Display for SessionForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionForm::Handler => "handler",
            SessionForm::Receiver => "receiver",
        })
    }
}
