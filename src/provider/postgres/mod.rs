//! The parts of the PostgreSQL provider (cargo feature `postgres`): the naming of a topic's
//! channel.

#[cfg_attr(not(test), expect(dead_code, reason = "building blocks of PostgresPubSub"))]
mod channel;

pub use self::channel::{MAX_CHANNEL_PREFIX_BYTES, MAX_IDENTIFIER_BYTES};
