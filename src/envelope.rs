//! The wire envelope distributed providers put on their broker: one broadcast, with the
//! instance it came from, its topic, the session it excludes and its payload.
//!
//! Backend-neutral: Redis carries it today, NATS and PostgreSQL will carry the same bytes
//! (PostgreSQL base64-encodes them, since `NOTIFY` payloads are text).
//!
//! # Format, version 1
//!
//! All integers are big-endian. Lengths are exact: the decoder checks every one against what
//! is left, and rejects trailing bytes.
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic, `FNOT` ([`MAGIC`]) |
//! | 1 | version, `1` ([`VERSION`]) |
//! | 1 | flags: bit 0 set when a sender session follows; the other bits must be zero |
//! | 16 | origin instance id ([`InstanceId`]) |
//! | 4 | topic length `t` |
//! | 4 | sender length `s` (zero when there is no sender) |
//! | 4 | payload length `p` |
//! | `t` | topic, UTF-8, not empty |
//! | `s` | sender session id, UTF-8 |
//! | `p` | payload |
//!
//! # Defensive decoding
//!
//! [`Envelope::decode`] never panics and never allocates: it checks the overall size first,
//! then the magic (anything else is [`EnvelopeError::Foreign`]), the version and flags, every
//! length against the bytes left and against [`EnvelopeLimits`], and UTF-8. A provider counts
//! and logs a message that fails, and skips it (G9).
//!
//! ```
//! use fanout::envelope::{Envelope, EnvelopeLimits, InstanceId};
//!
//! let origin = InstanceId::random();
//! let bytes = Envelope { origin, topic: "room:1", sender: Some("tab-7"), payload: b"hi" }.encode();
//! let decoded = Envelope::decode(&bytes, &EnvelopeLimits::default()).unwrap();
//! assert_eq!(decoded.origin, origin);
//! assert_eq!((decoded.topic, decoded.sender, decoded.payload), ("room:1", Some("tab-7"), &b"hi"[..]));
//! ```

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use crate::config::Limits;

/// The first four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"FNOT";

/// The envelope version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Bytes before the topic: magic, version, flags, origin, three lengths.
pub const HEADER_BYTES: usize = 4 + 1 + 1 + 16 + 4 + 4 + 4;

const FLAG_SENDER: u8 = 0b0000_0001;

/// Names one provider instance (one server process) on a broker, so it can skip its own
/// messages when the broker echoes them back.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u128);

impl InstanceId {
    /// A fresh random id (seeded from the operating system through the standard library's
    /// hasher keys; collisions between live instances are negligible at 128 bits).
    pub fn random() -> InstanceId {
        let half = || {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            hasher.write_u32(std::process::id());
            hasher.finish()
        };
        InstanceId((u128::from(half()) << 64) | u128::from(half()))
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

/// The bounds a decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeLimits {
    /// Largest whole envelope, in bytes.
    pub max_envelope_bytes: usize,
    /// Longest topic.
    pub max_topic_bytes: usize,
    /// Longest sender session id.
    pub max_session_id_bytes: usize,
    /// Largest payload.
    pub max_payload_bytes: usize,
}

impl EnvelopeLimits {
    /// The limits for a provider whose local engine runs with `limits`, with the whole
    /// envelope capped at `max_envelope_bytes`.
    pub fn new(limits: &Limits, max_envelope_bytes: usize) -> Self {
        Self {
            max_envelope_bytes,
            max_topic_bytes: limits.max_topic_bytes,
            max_session_id_bytes: limits.max_session_id_bytes,
            max_payload_bytes: limits.max_payload_bytes,
        }
    }
}

impl Default for EnvelopeLimits {
    /// The default [`Limits`], and an envelope big enough for the largest message they allow.
    fn default() -> Self {
        let limits = Limits::default();
        let max =
            HEADER_BYTES + limits.max_topic_bytes + limits.max_session_id_bytes + limits.max_payload_bytes;
        Self::new(&limits, max)
    }
}

/// One broadcast on the wire. Decoding borrows from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The instance that published it.
    pub origin: InstanceId,
    /// The topic, literal.
    pub topic: &'a str,
    /// The session `broadcast_from` excludes, on every instance.
    pub sender: Option<&'a str>,
    /// The message.
    pub payload: &'a [u8],
}

/// Why bytes are not a valid envelope. Each variant names the field or limit at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Larger than [`EnvelopeLimits::max_envelope_bytes`].
    #[error("envelope is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// Size of the message.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Does not start with [`MAGIC`]: not ours (another application on the channel).
    #[error("not a fanout envelope: the magic bytes are missing")]
    Foreign,
    /// A version this build does not read.
    #[error("envelope version {0} is not supported; this build reads version {VERSION}")]
    UnsupportedVersion(u8),
    /// Flag bits this version does not define.
    #[error("envelope flags {0:#04x} set bits this version does not define")]
    UnknownFlags(u8),
    /// Ends before a field does.
    #[error("envelope is truncated: {field} needs {needed} bytes, {left} are left")]
    Truncated {
        /// The field cut short.
        field: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// Bytes after the payload.
    #[error("envelope has {0} bytes after the payload")]
    TrailingBytes(usize),
    /// A text field is not UTF-8.
    #[error("envelope {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// The topic is empty.
    #[error("envelope topic is empty")]
    EmptyTopic,
    /// The sender flag is set but the sender is empty.
    #[error("envelope sender session id is empty")]
    EmptySender,
    /// Topic over [`EnvelopeLimits::max_topic_bytes`].
    #[error("envelope topic is {len} bytes; the limit is {limit}")]
    TopicTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Sender over [`EnvelopeLimits::max_session_id_bytes`].
    #[error("envelope sender session id is {len} bytes; the limit is {limit}")]
    SenderTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Payload over [`EnvelopeLimits::max_payload_bytes`].
    #[error("envelope payload is {len} bytes; the limit is {limit}")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

impl<'a> Envelope<'a> {
    /// The encoded size, without encoding.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.topic.len() + self.sender.map_or(0, str::len) + self.payload.len()
    }

    /// Appends the encoding to `out`.
    ///
    /// # Panics
    ///
    /// If a field is longer than `u32::MAX` bytes (providers check limits far below that first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len32 = |n: usize| u32::try_from(n).expect("envelope fields are checked against limits first");
        let sender = self.sender.unwrap_or("");
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(if self.sender.is_some() { FLAG_SENDER } else { 0 });
        out.extend_from_slice(&self.origin.0.to_be_bytes());
        out.extend_from_slice(&len32(self.topic.len()).to_be_bytes());
        out.extend_from_slice(&len32(sender.len()).to_be_bytes());
        out.extend_from_slice(&len32(self.payload.len()).to_be_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(sender.as_bytes());
        out.extend_from_slice(self.payload);
    }

    /// The encoding, in a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes `bytes`, checking every field (see the module docs). Never panics.
    pub fn decode(bytes: &'a [u8], limits: &EnvelopeLimits) -> Result<Envelope<'a>, EnvelopeError> {
        if bytes.len() > limits.max_envelope_bytes {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                limit: limits.max_envelope_bytes,
            });
        }
        let mut reader = Reader { rest: bytes };
        if reader.rest.len() < MAGIC.len() || reader.rest[..MAGIC.len()] != MAGIC {
            return Err(EnvelopeError::Foreign);
        }
        reader.take("magic", MAGIC.len())?;
        let version = reader.take("version", 1)?[0];
        if version != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let flags = reader.take("flags", 1)?[0];
        if flags & !FLAG_SENDER != 0 {
            return Err(EnvelopeError::UnknownFlags(flags));
        }
        let origin = InstanceId(u128::from_be_bytes(
            reader.take("origin", 16)?.try_into().expect("took 16 bytes"),
        ));
        let topic_len = reader.length("topic length")?;
        let sender_len = reader.length("sender length")?;
        let payload_len = reader.length("payload length")?;
        if topic_len == 0 {
            return Err(EnvelopeError::EmptyTopic);
        }
        if topic_len > limits.max_topic_bytes {
            return Err(EnvelopeError::TopicTooLong {
                len: topic_len,
                limit: limits.max_topic_bytes,
            });
        }
        let has_sender = flags & FLAG_SENDER != 0;
        if has_sender && sender_len == 0 {
            return Err(EnvelopeError::EmptySender);
        }
        if !has_sender && sender_len != 0 {
            return Err(EnvelopeError::UnknownFlags(flags));
        }
        if sender_len > limits.max_session_id_bytes {
            return Err(EnvelopeError::SenderTooLong {
                len: sender_len,
                limit: limits.max_session_id_bytes,
            });
        }
        if payload_len > limits.max_payload_bytes {
            return Err(EnvelopeError::PayloadTooLarge {
                len: payload_len,
                limit: limits.max_payload_bytes,
            });
        }
        let topic = std::str::from_utf8(reader.take("topic", topic_len)?)
            .map_err(|_| EnvelopeError::InvalidUtf8("topic"))?;
        let sender = std::str::from_utf8(reader.take("sender", sender_len)?)
            .map_err(|_| EnvelopeError::InvalidUtf8("sender session id"))?;
        let payload = reader.take("payload", payload_len)?;
        if !reader.rest.is_empty() {
            return Err(EnvelopeError::TrailingBytes(reader.rest.len()));
        }
        Ok(Envelope {
            origin,
            topic,
            sender: has_sender.then_some(sender),
            payload,
        })
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, needed: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.rest.len() < needed {
            return Err(EnvelopeError::Truncated {
                field,
                needed,
                left: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(needed);
        self.rest = tail;
        Ok(head)
    }

    fn length(&mut self, field: &'static str) -> Result<usize, EnvelopeError> {
        let bytes = self.take(field, 4)?;
        let n = u32::from_be_bytes(bytes.try_into().expect("took 4 bytes"));
        // A u32 always fits in usize on the 32- and 64-bit targets tokio supports.
        Ok(n as usize)
    }
}
