//! The text of a notification: what a `NOTIFY` payload carries.
//!
//! A `NOTIFY` payload is text: valid in the server encoding, without NUL, and shorter than
//! 8000 bytes ([`NOTIFY_PAYLOAD_LIMIT`]). The binary [envelope](crate::envelope) travels in one
//! of two forms, both ASCII and so valid in every server encoding:
//!
//! - **inline**: the envelope in base64 (standard alphabet, padded), 4 characters for every 3
//!   bytes begun ([`encoded_len`]). Envelopes up to
//!   [`max_inline_envelope`]`(NOTIFY_PAYLOAD_LIMIT)`, 5997 bytes, fit.
//! - **stored**: `@` and the decimal id of the row holding the envelope, for larger envelopes
//!   when large payloads go to a table ([`LargePayloads::Table`](super::LargePayloads::Table)).
//!   `@` is not in the base64 alphabet, so the first character tells the forms apart.
//!
//! Decoding accepts exactly what encoding writes (canonical base64 padding, no stray bits; a
//! reference without sign `+`, leading zeros or `-0`), refuses anything else with a
//! [`WireError`], and never panics.
//!
//! # The largest inline message
//!
//! An envelope of one record is [`HEADER_BYTES`](crate::envelope::HEADER_BYTES) (30), the
//! topic, [`RECORD_HEADER_BYTES`](crate::envelope::RECORD_HEADER_BYTES) (8) and the sender's
//! session id before the payload. On the topic `room:1` from `broadcast` (no sender), the
//! largest payload that travels inline is **5953 bytes** (5997 − 30 − 6 − 8); every byte of
//! topic or sender takes one byte from it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The largest `NOTIFY` payload, in bytes: PostgreSQL requires fewer than 8000.
pub const NOTIFY_PAYLOAD_LIMIT: usize = 7999;

/// The first character of a stored reference; not in the base64 alphabet.
pub(crate) const REFERENCE_MARK: char = '@';

/// Bytes of the base64 text of an envelope of `envelope_len` bytes: 4 for every 3 bytes begun.
pub const fn encoded_len(envelope_len: usize) -> usize {
    envelope_len.div_ceil(3).saturating_mul(4)
}

/// The largest envelope whose base64 text is at most `limit` bytes.
pub const fn max_inline_envelope(limit: usize) -> usize {
    limit / 4 * 3
}

/// The largest raw payload that travels inline, alone in its envelope, on a topic of
/// `topic_len` bytes from a sender id of `sender_len` bytes (0 for `broadcast`): 5953 bytes on
/// `room:1` with no sender. Saturates at zero.
pub const fn max_inline_payload(topic_len: usize, sender_len: usize) -> usize {
    max_inline_envelope(NOTIFY_PAYLOAD_LIMIT)
        .saturating_sub(crate::envelope::HEADER_BYTES + crate::envelope::RECORD_HEADER_BYTES)
        .saturating_sub(topic_len + sender_len)
}

/// The inline form of `envelope`: its base64 text.
pub(crate) fn encode_inline(envelope: &[u8]) -> String {
    STANDARD.encode(envelope)
}

/// The stored form: `@` and the row's id in decimal.
/// (The provider's SQL writes this form itself, `'@' || id`, in the statement that stores the
/// row; tests use this one.)
#[cfg(test)]
pub(crate) fn reference(id: i64) -> String {
    format!("{REFERENCE_MARK}{id}")
}

/// What a notification carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notification {
    /// The envelope itself.
    Inline(Vec<u8>),
    /// The id of the row holding the envelope.
    Stored(i64),
}

/// Why a notification's text is neither form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// No text at all.
    #[error("notification payload is empty; it must be base64 or a `@` reference")]
    Empty,
    /// Not a reference, and not canonical base64.
    #[error("notification payload is not base64 ({0})")]
    NotBase64(#[source] base64::DecodeError),
    /// Starts with `@` but no row id follows.
    #[error("notification payload is a `@` reference that {0}; it must be a decimal 64-bit id")]
    BadReference(&'static str),
}

/// Reads a notification's text. Never panics.
pub(crate) fn decode(text: &str) -> Result<Notification, WireError> {
    if text.is_empty() {
        return Err(WireError::Empty);
    }
    match text.strip_prefix(REFERENCE_MARK) {
        Some(id) => parse_id(id)
            .map(Notification::Stored)
            .map_err(WireError::BadReference),
        None => STANDARD
            .decode(text)
            .map(Notification::Inline)
            .map_err(WireError::NotBase64),
    }
}

/// The id written by [`reference`]: an optional `-`, then decimal digits without a leading
/// zero (except `0` itself). The error completes "a `@` reference that …".
fn parse_id(text: &str) -> Result<i64, &'static str> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() {
        return Err("holds no digits");
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("holds a character other than a decimal digit");
    }
    if (digits.len() > 1 && digits.starts_with('0')) || text == "-0" {
        return Err("has a leading zero");
    }
    text.parse().map_err(|_| "is out of the 64-bit range")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{
        single_encoded_len, EnvelopeWriter, InstanceId, Record, HEADER_BYTES, RECORD_HEADER_BYTES,
    };
    use crate::provider::postgres::channel::fnv1a_128;

    /// `len` pseudo-random bytes for `seed`: the FNV-1a hashes of a counter, 16 bytes each.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        (0u64..)
            .flat_map(|i| fnv1a_128(&[seed.to_le_bytes(), i.to_le_bytes()].concat()).to_le_bytes())
            .take(len)
            .collect()
    }

    /// What [`decode`] must do with any text: accept only what encoding writes, refuse the
    /// rest with a message, never panic.
    fn check_decode(text: &str) -> bool {
        match decode(text) {
            Ok(Notification::Inline(bytes)) => {
                assert_eq!(encode_inline(&bytes), text);
                true
            }
            Ok(Notification::Stored(id)) => {
                assert_eq!(reference(id), text);
                true
            }
            Err(error) => {
                assert!(!error.to_string().is_empty());
                false
            }
        }
    }

    #[test]
    fn encoded_len_is_four_per_three_bytes_begun() {
        for (len, text) in [(0, 0), (1, 4), (2, 4), (3, 4), (4, 8), (5997, 7996), (5998, 8000)] {
            assert_eq!(encoded_len(len), text, "{len}");
            assert_eq!(encode_inline(&vec![0xa5; len]).len(), text, "{len}");
        }
        assert_eq!(encoded_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn max_inline_envelope_is_the_largest_that_fits() {
        for limit in (0..200).chain([NOTIFY_PAYLOAD_LIMIT]) {
            let max = max_inline_envelope(limit);
            assert!(encoded_len(max) <= limit, "{limit}");
            assert!(encoded_len(max + 1) > limit, "{limit}");
        }
        assert_eq!(max_inline_envelope(NOTIFY_PAYLOAD_LIMIT), 5997);
    }

    #[test]
    fn largest_inline_payload_for_a_short_topic_is_5953_bytes() {
        let max = max_inline_envelope(NOTIFY_PAYLOAD_LIMIT);
        let payload = vec![b'x'; 5953];
        let fits = Record {
            sender: None,
            payload: &payload,
        };
        assert_eq!(single_encoded_len("room:1", &fits), max);
        assert_eq!(max - HEADER_BYTES - "room:1".len() - RECORD_HEADER_BYTES, 5953);
        assert_eq!(max_inline_payload("room:1".len(), 0), 5953);

        let mut writer = EnvelopeWriter::new(InstanceId(7), "room:1");
        writer.push(None, &payload);
        let text = encode_inline(&writer.finish());
        assert!(text.len() <= NOTIFY_PAYLOAD_LIMIT, "{}", text.len());

        let mut writer = EnvelopeWriter::new(InstanceId(7), "room:1");
        writer.push(None, &[b'x'; 5954]);
        assert!(encode_inline(&writer.finish()).len() > NOTIFY_PAYLOAD_LIMIT);
    }

    #[test]
    fn inline_round_trips_every_byte_value() {
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(
            decode(&encode_inline(&every_byte)),
            Ok(Notification::Inline(every_byte))
        );

        let max = max_inline_envelope(NOTIFY_PAYLOAD_LIMIT);
        let mut seen = [false; 256];
        for seed in 0..300 {
            let len = 1 + (seed as usize * 97) % max;
            let bytes = noise(seed, len);
            bytes.iter().for_each(|&b| seen[usize::from(b)] = true);
            let text = encode_inline(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert!(text.bytes().all(|b| b.is_ascii_graphic()));
            assert_eq!(decode(&text), Ok(Notification::Inline(bytes)));
        }
        assert!(seen.iter().all(|&s| s), "the inputs missed a byte value");
    }

    #[test]
    fn references_round_trip() {
        for id in [0, 1, 9, 10, 4242, i64::MAX, -1, i64::MIN] {
            assert_eq!(decode(&reference(id)), Ok(Notification::Stored(id)), "{id}");
        }
        assert_eq!(reference(17), "@17");
    }

    #[test]
    fn malformed_text_is_refused_with_the_reason() {
        assert_eq!(decode(""), Err(WireError::Empty));
        let bad_references = [
            ("@", "holds no digits"),
            ("@-", "holds no digits"),
            ("@+5", "other than a decimal digit"),
            ("@12a", "other than a decimal digit"),
            ("@ 12", "other than a decimal digit"),
            ("@--5", "other than a decimal digit"),
            ("@١٢", "other than a decimal digit"),
            ("@007", "leading zero"),
            ("@-0", "leading zero"),
            ("@9223372036854775808", "out of the 64-bit range"),
            ("@99999999999999999999999", "out of the 64-bit range"),
        ];
        for (text, mentions) in bad_references {
            match decode(text) {
                Err(WireError::BadReference(reason)) => {
                    assert!(reason.contains(mentions), "{text:?}: {reason}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        assert_eq!(
            decode("@x").unwrap_err().to_string(),
            "notification payload is a `@` reference that holds a character other than a \
             decimal digit; it must be a decimal 64-bit id"
        );
        for text in [
            "a", "aGk", "aGk=\n", " aGk=", "aGl=", "aGk==", "a@b=", "aG k=", "é",
        ] {
            let error = decode(text).unwrap_err();
            assert!(matches!(error, WireError::NotBase64(_)), "{text:?}: {error:?}");
            assert!(error
                .to_string()
                .starts_with("notification payload is not base64"));
        }
    }

    #[test]
    fn decode_never_panics_and_accepts_only_what_encoding_writes() {
        const PIECES: [&str; 14] = [
            "A", "z", "0", "9", "+", "/", "=", "==", "@", "-", "\0", "é", "😀", "\u{7f}",
        ];
        // Every text of up to 4 pieces.
        let mut texts = vec![String::new()];
        let mut accepted = 0;
        for _ in 0..4 {
            texts = texts
                .iter()
                .flat_map(|text| PIECES.iter().map(move |piece| format!("{text}{piece}")))
                .collect();
            accepted += texts.iter().filter(|text| check_decode(text)).count();
        }
        assert!(accepted > 0, "no text was valid");
        // Longer texts, pieces chosen by pseudo-random bytes.
        for seed in 0..2000 {
            let choices = noise(seed, (seed % 40) as usize);
            let text: String = choices
                .iter()
                .map(|&c| PIECES[usize::from(c) % PIECES.len()])
                .collect();
            check_decode(&text);
        }
    }
}
