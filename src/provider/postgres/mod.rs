//! The parts of the PostgreSQL provider (cargo feature `postgres`): its settings
//! ([`PostgresConfig`]), the naming of a topic's channel, and the text of a notification.

#[cfg_attr(not(test), expect(dead_code, reason = "building blocks of PostgresPubSub"))]
mod channel;
#[cfg_attr(not(test), expect(dead_code, reason = "building blocks of PostgresPubSub"))]
mod config;
#[cfg(feature = "toml")]
mod config_file;
#[cfg_attr(not(test), expect(dead_code, reason = "building blocks of PostgresPubSub"))]
mod wire;

pub use self::channel::{MAX_CHANNEL_PREFIX_BYTES, MAX_IDENTIFIER_BYTES};
pub use self::config::{
    LargePayloads, PostgresConfig, DATABASE_URL_ENV, DEFAULT_DATABASE_URL, MAX_ENVELOPE_BYTES,
    MAX_PAYLOAD_TTL,
};
pub use self::wire::{encoded_len, max_inline_envelope, NOTIFY_PAYLOAD_LIMIT};
