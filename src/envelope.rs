//! The wire envelope distributed providers put on their broker: one or more broadcasts on one
//! topic, with the instance they came from and, for each, the session it excludes and its
//! payload.
//!
//! Backend-neutral: Redis carries it today, NATS and PostgreSQL will carry the same bytes
//! (PostgreSQL base64-encodes them, since `NOTIFY` payloads are text).
//!
//! A provider's publisher coalesces a run of consecutive queued broadcasts on the same topic
//! into one envelope (one broker message), which is what lets a broker forward many small
//! messages at the rate it forwards one. Records keep their order, and only consecutive
//! broadcasts of one topic share an envelope, so the order of the queue is the order of
//! delivery ([G4]).
//!
//! # Format, version 2
//!
//! All integers are big-endian. Lengths are exact: the decoder checks every one against what
//! is left, and rejects trailing bytes.
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic, `FNOT` ([`MAGIC`]) |
//! | 1 | version, `2` ([`VERSION`]) |
//! | 1 | flags, reserved: must be zero |
//! | 16 | origin instance id ([`InstanceId`]) |
//! | 4 | topic length `t` |
//! | 4 | record count `n`, at least 1 |
//! | `t` | topic, UTF-8, not empty |
//! | … | `n` records, each: |
//! | 4 | sender length `s` (zero when there is no sender) |
//! | 4 | payload length `p` |
//! | `s` | sender session id, UTF-8 |
//! | `p` | payload |
//!
//! Version 1 (one message per envelope, written by development builds before batching) is
//! refused as [`EnvelopeError::UnsupportedVersion`]: instances of both kinds on one broker do
//! not hear each other, and count each other's messages as malformed.
//!
//! # Defensive decoding
//!
//! [`Envelope::decode`] never panics and never allocates. It checks the overall size first,
//! then the magic (anything else is [`EnvelopeError::Foreign`]), the version and flags, and
//! then **every** record — each length against the bytes left and against
//! [`EnvelopeLimits`], each sender's UTF-8 — before it returns, so an envelope is accepted or
//! refused whole: a provider never delivers the first half of a malformed batch. A provider
//! counts and logs an envelope that fails, and skips it ([G9]).
//!
//! ```
//! use fanout::envelope::{Envelope, EnvelopeLimits, EnvelopeWriter, InstanceId, Record};
//!
//! let origin = InstanceId::random();
//! let mut writer = EnvelopeWriter::new(origin, "room:1");
//! writer.push(None, b"hello");
//! writer.push(Some("tab-7"), b"hi");
//! let bytes = writer.finish();
//!
//! let envelope = Envelope::decode(&bytes, &EnvelopeLimits::default()).unwrap();
//! assert_eq!((envelope.origin, envelope.topic), (origin, "room:1"));
//! let records: Vec<Record<'_>> = envelope.records().collect();
//! assert_eq!(records, [
//!     Record { sender: None, payload: b"hello" },
//!     Record { sender: Some("tab-7"), payload: b"hi" },
//! ]);
//! ```
//!
//! [G4]: crate::docs::contract#g4-per-session-order-one-at-a-time
//! [G9]: crate::docs::contract#g9-errors-are-values

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use crate::config::Limits;

/// The first four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"FNOT";

/// The envelope version this crate writes and reads.
pub const VERSION: u8 = 2;

/// Bytes before the topic: magic, version, flags, origin, topic length, record count.
pub const HEADER_BYTES: usize = 4 + 1 + 1 + 16 + 4 + 4;

/// Bytes of each record before its sender and payload: the two lengths.
pub const RECORD_HEADER_BYTES: usize = 4 + 4;

/// Where the record count sits, patched by [`EnvelopeWriter::finish`].
const COUNT_AT: usize = HEADER_BYTES - 4;

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
        let max = HEADER_BYTES
            + limits.max_topic_bytes
            + RECORD_HEADER_BYTES
            + limits.max_session_id_bytes
            + limits.max_payload_bytes;
        Self::new(&limits, max)
    }
}

/// One broadcast inside an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The session `broadcast_from` excludes, on every instance; `None` for `broadcast`.
    pub sender: Option<&'a str>,
    /// The message.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// The bytes this record adds to an envelope.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_BYTES + self.sender.map_or(0, str::len) + self.payload.len()
    }
}

/// The encoded size of an envelope holding just `record` on `topic`: what a provider checks
/// against its envelope limit before accepting a broadcast.
pub fn single_encoded_len(topic: &str, record: &Record<'_>) -> usize {
    HEADER_BYTES + topic.len() + record.encoded_len()
}

/// Builds one envelope: a header for one origin and topic, then records appended in order.
///
/// The writer does not check limits: the provider checks each broadcast against them when it
/// is made, and bounds how many records it appends with [`encoded_len`](Self::encoded_len) and
/// [`Record::encoded_len`].
///
/// [`append_to`](Self::append_to) writes after what a buffer already holds, so that a batch of
/// envelopes can share one allocation:
///
/// ```
/// use fanout::envelope::{Envelope, EnvelopeLimits, EnvelopeWriter, InstanceId};
///
/// let mut writer = EnvelopeWriter::new(InstanceId(1), "a");
/// writer.push(None, b"1");
/// let first = writer.finish();
/// let mut writer = EnvelopeWriter::append_to(first, InstanceId(1), "b");
/// writer.push(None, b"2");
/// let (start, both) = (writer.start(), writer.finish());
/// let second = Envelope::decode(&both[start..], &EnvelopeLimits::default()).unwrap();
/// assert_eq!(second.topic, "b");
/// assert_eq!(Envelope::decode(&both[..start], &EnvelopeLimits::default()).unwrap().topic, "a");
/// ```
#[derive(Debug)]
pub struct EnvelopeWriter {
    bytes: Vec<u8>,
    /// Where this envelope begins in `bytes`.
    start: usize,
    count: u32,
}

impl EnvelopeWriter {
    /// An envelope from `origin` on `topic`, with no record yet.
    ///
    /// # Panics
    ///
    /// If `topic` is longer than `u32::MAX` bytes (providers check limits far below that first).
    pub fn new(origin: InstanceId, topic: &str) -> Self {
        let bytes = Vec::with_capacity(HEADER_BYTES + topic.len() + RECORD_HEADER_BYTES + 64);
        Self::append_to(bytes, origin, topic)
    }

    /// An envelope from `origin` on `topic`, with no record yet, written after what `buffer`
    /// already holds; [`finish`](Self::finish) returns the whole buffer.
    ///
    /// # Panics
    ///
    /// If `topic` is longer than `u32::MAX` bytes (providers check limits far below that first).
    pub fn append_to(mut buffer: Vec<u8>, origin: InstanceId, topic: &str) -> Self {
        let start = buffer.len();
        buffer.reserve(HEADER_BYTES + topic.len());
        buffer.extend_from_slice(&MAGIC);
        buffer.push(VERSION);
        buffer.push(0);
        buffer.extend_from_slice(&origin.0.to_be_bytes());
        buffer.extend_from_slice(&len32(topic.len()).to_be_bytes());
        buffer.extend_from_slice(&0u32.to_be_bytes());
        buffer.extend_from_slice(topic.as_bytes());
        Self {
            bytes: buffer,
            start,
            count: 0,
        }
    }

    /// Appends one record. A `Some("")` sender is written as no sender (session ids are never
    /// empty).
    ///
    /// # Panics
    ///
    /// If a field is longer than `u32::MAX` bytes, or after `u32::MAX` records.
    pub fn push(&mut self, sender: Option<&str>, payload: &[u8]) {
        let sender = sender.unwrap_or("");
        self.bytes
            .reserve(RECORD_HEADER_BYTES + sender.len() + payload.len());
        self.bytes.extend_from_slice(&len32(sender.len()).to_be_bytes());
        self.bytes.extend_from_slice(&len32(payload.len()).to_be_bytes());
        self.bytes.extend_from_slice(sender.as_bytes());
        self.bytes.extend_from_slice(payload);
        self.count = self.count.checked_add(1).expect("at most u32::MAX records");
    }

    /// Bytes of this envelope written so far (its size if finished now).
    pub fn encoded_len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Records appended so far.
    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// Where this envelope begins in the buffer [`finish`](Self::finish) returns: 0 unless it
    /// was [appended](Self::append_to) to a buffer that held something.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The buffer with the finished envelope at its end (from [`start`](Self::start)). One
    /// without records is not valid: decoders refuse it as [`EnvelopeError::Empty`].
    pub fn finish(mut self) -> Vec<u8> {
        let count_at = self.start + COUNT_AT;
        self.bytes[count_at..count_at + 4].copy_from_slice(&self.count.to_be_bytes());
        self.bytes
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("envelope fields are checked against limits first")
}

/// A decoded envelope: its origin and topic, and records already checked. Borrows from the
/// received bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The instance that published it.
    pub origin: InstanceId,
    /// The topic, literal.
    pub topic: &'a str,
    /// The records, every one checked by `decode`.
    records: &'a [u8],
    count: usize,
}

impl fmt::Debug for Envelope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("origin", &self.origin)
            .field("topic", &self.topic)
            .field("records", &self.records().collect::<Vec<_>>())
            .finish()
    }
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
    /// Bytes after the last record.
    #[error("envelope has {0} bytes after its last record")]
    TrailingBytes(usize),
    /// A text field is not UTF-8.
    #[error("envelope {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// The topic is empty.
    #[error("envelope topic is empty")]
    EmptyTopic,
    /// The record count is zero.
    #[error("envelope holds no records; the minimum is 1")]
    Empty,
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
    /// Records in the envelope (at least one).
    pub fn record_count(&self) -> usize {
        self.count
    }

    /// The records, in the order they were written.
    pub fn records(&self) -> Records<'a> {
        Records {
            reader: Reader { rest: self.records },
            left: self.count,
        }
    }

    /// Decodes `bytes`, checking every field of every record (see the module docs). Never
    /// panics.
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
        if flags != 0 {
            return Err(EnvelopeError::UnknownFlags(flags));
        }
        let origin = InstanceId(u128::from_be_bytes(
            reader.take("origin", 16)?.try_into().expect("took 16 bytes"),
        ));
        let topic_len = reader.length("topic length")?;
        let count = reader.length("record count")?;
        if topic_len == 0 {
            return Err(EnvelopeError::EmptyTopic);
        }
        if topic_len > limits.max_topic_bytes {
            return Err(EnvelopeError::TopicTooLong {
                len: topic_len,
                limit: limits.max_topic_bytes,
            });
        }
        if count == 0 {
            return Err(EnvelopeError::Empty);
        }
        let topic = std::str::from_utf8(reader.take("topic", topic_len)?)
            .map_err(|_| EnvelopeError::InvalidUtf8("topic"))?;
        let records = reader.rest;
        // Each record takes at least RECORD_HEADER_BYTES, so a lying count fails as truncated
        // after at most `bytes.len() / 8` steps.
        for _ in 0..count {
            read_record(&mut reader, limits)?;
        }
        if !reader.rest.is_empty() {
            return Err(EnvelopeError::TrailingBytes(reader.rest.len()));
        }
        Ok(Envelope {
            origin,
            topic,
            records,
            count,
        })
    }
}

/// Reads one record, checking it against `limits`.
fn read_record<'a>(reader: &mut Reader<'a>, limits: &EnvelopeLimits) -> Result<Record<'a>, EnvelopeError> {
    let sender_len = reader.length("sender length")?;
    let payload_len = reader.length("payload length")?;
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
    let sender = std::str::from_utf8(reader.take("sender", sender_len)?)
        .map_err(|_| EnvelopeError::InvalidUtf8("sender session id"))?;
    let payload = reader.take("payload", payload_len)?;
    Ok(Record {
        sender: (!sender.is_empty()).then_some(sender),
        payload,
    })
}

/// The records of a decoded [`Envelope`], in order.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    reader: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // `decode` checked these very bytes; limits cannot fail a second time.
        let unlimited = EnvelopeLimits {
            max_envelope_bytes: usize::MAX,
            max_topic_bytes: usize::MAX,
            max_session_id_bytes: usize::MAX,
            max_payload_bytes: usize::MAX,
        };
        match read_record(&mut self.reader, &unlimited) {
            Ok(record) => Some(record),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Records<'_> {}

#[derive(Debug, Clone)]
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
