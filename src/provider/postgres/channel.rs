//! The PostgreSQL channel of a topic, and the quoting of identifiers in SQL text.
//!
//! # Channels
//!
//! A channel is a PostgreSQL identifier: at most [`MAX_IDENTIFIER_BYTES`] (63) bytes, never
//! NUL. The server truncates a longer quoted identifier in `LISTEN` without an error, and
//! `pg_notify` refuses a channel of 64 bytes or more, so a topic cannot always be its own
//! channel. The channel of a topic is:
//!
//! - **plain**, the prefix followed by the topic, when that is at most 63 bytes and every byte
//!   of the topic is printable ASCII (`0x20..=0x7E`);
//! - **hashed** otherwise: the prefix, `#`, and the 32 lowercase hex digits of the 128-bit
//!   FNV-1a hash of the topic's bytes ([`fnv1a_128`]).
//!
//! With a prefix that is non-empty printable ASCII of at most [`MAX_CHANNEL_PREFIX_BYTES`]
//! bytes (63 − 33, checked by [`validate_prefix`]), every channel is printable ASCII within
//! 63 bytes, valid in any server encoding.
//!
//! Every instance of an application must compute the same channel for a topic, so the hash is
//! fixed (not the standard library's randomly keyed hasher) and pinned by tests. Two topics
//! may share a channel: two hashed topics whose hashes collide (FNV-1a is not cryptographic,
//! so collisions can be crafted), or a plain topic spelt like a hashed suffix (`#` and 32 hex
//! digits). Sharing costs traffic, never correctness: the envelope carries the full topic, and
//! [`ChannelNames::carries`] tells whether a channel is the one of an envelope's topic.
//!
//! `LISTEN` and `UNLISTEN` take the channel as an identifier, which must be quoted with
//! [`quote_identifier`] (unquoted, PostgreSQL folds it to lower case); `pg_notify` takes it as
//! a text parameter, exactly as [`ChannelNames::channel`] returns it.

use std::fmt;

use crate::config::ConfigError;

/// The longest identifier PostgreSQL keeps whole (`NAMEDATALEN - 1`), in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Bytes the hashed form adds after the prefix: `#` and 32 hex digits.
const HASHED_SUFFIX_BYTES: usize = 1 + 32;

/// The longest channel prefix, in bytes: what the hashed form leaves of
/// [`MAX_IDENTIFIER_BYTES`].
pub const MAX_CHANNEL_PREFIX_BYTES: usize = MAX_IDENTIFIER_BYTES - HASHED_SUFFIX_BYTES;

/// FNV-1a's 128-bit offset basis.
const FNV128_OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;

/// FNV-1a's 128-bit prime, 2^88 + 2^8 + 0x3B.
const FNV128_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

/// The 128-bit FNV-1a hash of `bytes` (Fowler, Noll and Vo): from the offset basis, each byte
/// is XORed into the state, which is then multiplied by the prime, modulo 2^128. The same on
/// every platform, process and version, which is what channel names need.
pub(crate) fn fnv1a_128(bytes: &[u8]) -> u128 {
    bytes.iter().fold(FNV128_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u128::from(byte)).wrapping_mul(FNV128_PRIME)
    })
}

fn is_printable_ascii(byte: u8) -> bool {
    (0x20..=0x7e).contains(&byte)
}

/// Checks a channel prefix: non-empty printable ASCII of at most [`MAX_CHANNEL_PREFIX_BYTES`]
/// bytes. The error names `key`.
pub(crate) fn validate_prefix(key: &str, prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() {
        return Err(ConfigError::at_key(key, "is empty; it must hold at least 1 byte"));
    }
    if prefix.len() > MAX_CHANNEL_PREFIX_BYTES {
        return Err(ConfigError::at_key(
            key,
            format!(
                "is {} bytes; the limit is {MAX_CHANNEL_PREFIX_BYTES}, so that a hashed channel \
                 fits PostgreSQL's {MAX_IDENTIFIER_BYTES}",
                prefix.len()
            ),
        ));
    }
    if let Some(offset) = prefix.bytes().position(|b| !is_printable_ascii(b)) {
        return Err(ConfigError::at_key(
            key,
            format!(
                "holds byte {:#04x} at offset {offset}; only printable ASCII (0x20 to 0x7e) is allowed",
                prefix.as_bytes()[offset]
            ),
        ));
    }
    Ok(())
}

/// Names the channel of each topic under one prefix (see the module docs).
///
/// The prefix must have passed [`validate_prefix`]; the hash is [`fnv1a_128`] except in tests
/// that force two topics onto one channel.
#[derive(Clone)]
pub(crate) struct ChannelNames {
    prefix: String,
    hash: fn(&[u8]) -> u128,
}

impl fmt::Debug for ChannelNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelNames")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ChannelNames {
    /// Channels under `prefix`, hashed with `hash` where the plain form does not apply.
    pub(crate) fn new(prefix: impl Into<String>, hash: fn(&[u8]) -> u128) -> Self {
        Self {
            prefix: prefix.into(),
            hash,
        }
    }

    /// Whether `topic`'s channel is the plain form, `prefix + topic`.
    fn is_plain(&self, topic: &str) -> bool {
        self.prefix.len() + topic.len() <= MAX_IDENTIFIER_BYTES && topic.bytes().all(is_printable_ascii)
    }

    /// The channel of `topic`.
    pub(crate) fn channel(&self, topic: &str) -> String {
        let mut channel = String::with_capacity(MAX_IDENTIFIER_BYTES);
        channel.push_str(&self.prefix);
        if self.is_plain(topic) {
            channel.push_str(topic);
        } else {
            channel.push('#');
            let digits = hex_digits((self.hash)(topic.as_bytes()));
            channel.extend(digits.iter().map(|&d| char::from(d)));
        }
        channel
    }

    /// Whether `channel` is the channel of `topic`; allocates nothing.
    pub(crate) fn carries(&self, channel: &str, topic: &str) -> bool {
        let Some(rest) = channel.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        if self.is_plain(topic) {
            return rest == topic;
        }
        rest.strip_prefix('#')
            .is_some_and(|digits| digits.as_bytes() == hex_digits((self.hash)(topic.as_bytes())))
    }
}

/// `hash` as 32 lowercase hex digits, most significant first.
fn hex_digits(hash: u128) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, digit) in out.iter_mut().enumerate() {
        let shift = 4 * (31 - i);
        // The mask keeps 4 bits, so the index is below 16.
        *digit = DIGITS[((hash >> shift) & 0xf) as usize];
    }
    out
}

/// Why a name cannot be a PostgreSQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdentifierError {
    /// PostgreSQL has no empty identifier (`""` is a syntax error).
    #[error("identifier is empty; it must hold at least 1 byte")]
    Empty,
    /// Longer than [`MAX_IDENTIFIER_BYTES`]: the server would cut it silently.
    #[error("identifier is {len} bytes; the limit is {MAX_IDENTIFIER_BYTES}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A NUL byte, which no PostgreSQL string can hold.
    #[error("identifier holds a NUL byte at offset {offset}; PostgreSQL identifiers cannot")]
    Nul {
        /// Where the first NUL is.
        offset: usize,
    },
}

/// `name` as a quoted identifier for SQL text: wrapped in double quotes, each `"` inside
/// doubled. The one way a name enters SQL text: `LISTEN`, `UNLISTEN` and table names take no
/// bind parameters. Inside a quoted identifier every other character, `'`, `;`, `\` and line
/// breaks included, is literal.
///
/// Refuses what PostgreSQL could not keep as given: an empty name, a NUL, more than
/// [`MAX_IDENTIFIER_BYTES`] bytes.
pub(crate) fn quote_identifier(name: &str) -> Result<String, IdentifierError> {
    if name.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if let Some(offset) = name.bytes().position(|b| b == 0) {
        return Err(IdentifierError::Nul { offset });
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(IdentifierError::TooLong { len: name.len() });
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ChannelNames {
        ChannelNames::new("fanout:", fnv1a_128)
    }

    /// A hash that sends every topic to the same channel.
    fn constant_hash(_: &[u8]) -> u128 {
        0x0123_4567_89ab_cdef_0123_4567_89ab_cdef
    }

    #[test]
    fn fnv1a_128_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_128(b""), FNV128_OFFSET_BASIS);
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
        assert_eq!(fnv1a_128(b"foobar"), 0x343e1662793c64bf6f0d3597ba446f18);
    }

    #[test]
    fn hashed_channels_are_pinned() {
        // Instances of every version must agree: these values never change.
        let topic = "room:é";
        assert_eq!(names().channel(topic), "fanout:#c6c0ace5074ff78df9e80c4b5df8b450");
        let long = "x".repeat(57);
        assert_eq!(names().channel(&long), "fanout:#72cc74a6b6e2da5bb50225e182bb1bd7");
    }

    #[test]
    fn short_printable_topics_are_plain() {
        assert_eq!(names().channel("room:1"), "fanout:room:1");
        assert_eq!(
            names().channel("a \"quoted\" ~topic"),
            "fanout:a \"quoted\" ~topic"
        );
        let longest = "t".repeat(MAX_IDENTIFIER_BYTES - "fanout:".len());
        assert_eq!(names().channel(&longest), format!("fanout:{longest}"));
    }

    #[test]
    fn long_or_unprintable_topics_are_hashed() {
        let one_too_many = "t".repeat(MAX_IDENTIFIER_BYTES - "fanout:".len() + 1);
        for topic in [
            one_too_many.as_str(),
            "room:é",
            "tab\there",
            "line\nbreak",
            "nul\0byte",
            "del\x7f",
            "😀",
        ] {
            let channel = names().channel(topic);
            assert_eq!(channel.len(), "fanout:".len() + HASHED_SUFFIX_BYTES, "{topic:?}");
            let digits = channel.strip_prefix("fanout:#").expect("hashed form");
            assert!(digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(u128::from_str_radix(digits, 16), Ok(fnv1a_128(topic.as_bytes())));
        }
    }

    #[test]
    fn every_channel_is_printable_ascii_within_the_limit() {
        let prefix = "p".repeat(MAX_CHANNEL_PREFIX_BYTES);
        validate_prefix("k", &prefix).unwrap();
        let names = ChannelNames::new(prefix, fnv1a_128);
        let topics = [
            "",
            "a",
            "\0",
            "é",
            &"x".repeat(33),
            &"x".repeat(34),
            &"y".repeat(70_000),
        ];
        for topic in topics {
            let channel = names.channel(topic);
            assert!(channel.len() <= MAX_IDENTIFIER_BYTES, "{} bytes", channel.len());
            assert!(channel.bytes().all(is_printable_ascii));
            assert!(quote_identifier(&channel).is_ok());
        }
    }

    #[test]
    fn hex_digits_match_the_formatter() {
        for hash in [0, 1, u128::MAX, 0xabc << 100, fnv1a_128(b"room:1")] {
            assert_eq!(hex_digits(hash).as_slice(), format!("{hash:032x}").as_bytes());
        }
    }

    #[test]
    fn carries_recognises_the_topics_own_channel() {
        let names = names();
        for topic in [
            "room:1",
            "room:é",
            &"z".repeat(100),
            "#0123456789abcdef0123456789abcdef",
        ] {
            let channel = names.channel(topic);
            assert!(names.carries(&channel, topic), "{topic:?}");
        }
        assert!(!names.carries("fanout:room:2", "room:1"));
        assert!(!names.carries("other:room:1", "room:1"));
        assert!(!names.carries("fanout:room:1x", "room:1"));
        let hashed = names.channel("room:é");
        assert!(!names.carries(&hashed, "room:e"));
        assert!(!names.carries(&hashed.to_uppercase(), "room:é"));
        assert!(!names.carries(&hashed[..hashed.len() - 1], "room:é"));
        assert!(!names.carries(&format!("{hashed}0"), "room:é"));
    }

    #[test]
    fn colliding_topics_share_a_channel_but_each_carries_only_its_own_check() {
        let names = ChannelNames::new("fanout:", constant_hash);
        let (a, b) = ("room:é", "room:ü");
        assert_eq!(names.channel(a), names.channel(b));
        assert_eq!(names.channel(a), "fanout:#0123456789abcdef0123456789abcdef");
        // The channel carries both; the envelope's full topic tells them apart.
        assert!(names.carries(&names.channel(a), a));
        assert!(names.carries(&names.channel(a), b));
        // A plain topic spelt like the hashed suffix lands on the same channel too.
        let lookalike = "#0123456789abcdef0123456789abcdef";
        assert_eq!(names.channel(lookalike), names.channel(a));
        assert!(!names.carries(&names.channel(a), "room:1"));
    }

    #[test]
    fn prefixes_are_validated() {
        validate_prefix("postgres.channel_prefix", "fanout:").unwrap();
        validate_prefix("k", " ~").unwrap();
        let cases = [
            ("", "is empty"),
            (
                &*"p".repeat(MAX_CHANNEL_PREFIX_BYTES + 1),
                "is 31 bytes; the limit is 30",
            ),
            ("app\0", "0x00 at offset 3"),
            ("caf\u{e9}:", "0xc3 at offset 3"),
            ("tab\t", "0x09 at offset 3"),
        ];
        for (prefix, mentions) in cases {
            let error = validate_prefix("postgres.channel_prefix", prefix).unwrap_err();
            assert_eq!(error.key.as_deref(), Some("postgres.channel_prefix"));
            assert!(error.message.contains(mentions), "{prefix:?}: {}", error.message);
        }
    }

    #[test]
    fn quoting_doubles_double_quotes_and_keeps_everything_else_literal() {
        let cases = [
            ("fanout_payloads", r#""fanout_payloads""#),
            ("'", r#""'""#),
            ("\"", r#""""""#),
            (";", r#"";""#),
            ("--", r#""--""#),
            ("\\", r#""\""#),
            ("$1", r#""$1""#),
            ("'); DROP TABLE canary; --", r#""'); DROP TABLE canary; --""#),
            ("a\"; DROP TABLE canary; --", r#""a""; DROP TABLE canary; --""#),
            ("line\nbreak\r", "\"line\nbreak\r\""),
            ("tãblé 😀", "\"tãblé 😀\""),
            ("Mixed Case", r#""Mixed Case""#),
        ];
        for (name, quoted) in cases {
            assert_eq!(quote_identifier(name).as_deref(), Ok(quoted), "{name:?}");
        }
    }

    #[test]
    fn quoted_identifiers_read_back_as_the_name() {
        // The inverse of quoting, as PostgreSQL's scanner reads a delimited identifier: between
        // the outer quotes, `""` is one `"`, and a lone `"` would end the identifier early.
        fn unquote(quoted: &str) -> Option<String> {
            let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
            let mut name = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '"' && chars.next() != Some('"') {
                    return None;
                }
                name.push(c);
            }
            Some(name)
        }
        for name in ["\"", "\"\"", "a\"b", "\"); DROP TABLE canary; --", "é\"é"] {
            assert_eq!(unquote(&quote_identifier(name).unwrap()).as_deref(), Some(name));
        }
    }

    #[test]
    fn quoting_refuses_what_postgres_cannot_keep() {
        assert_eq!(quote_identifier(""), Err(IdentifierError::Empty));
        assert_eq!(quote_identifier("ab\0c"), Err(IdentifierError::Nul { offset: 2 }));
        assert_eq!(quote_identifier("\0"), Err(IdentifierError::Nul { offset: 0 }));
        let longest = "n".repeat(MAX_IDENTIFIER_BYTES);
        assert!(quote_identifier(&longest).is_ok());
        let error = quote_identifier(&format!("{longest}n")).unwrap_err();
        assert_eq!(error, IdentifierError::TooLong { len: 64 });
        assert_eq!(error.to_string(), "identifier is 64 bytes; the limit is 63");
        // 21 three-byte characters are 63 bytes; one more is over, though only 22 characters.
        assert!(quote_identifier(&"€".repeat(21)).is_ok());
        assert_eq!(
            quote_identifier(&"€".repeat(22)),
            Err(IdentifierError::TooLong { len: 66 })
        );
    }
}
