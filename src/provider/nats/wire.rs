//! The NATS client protocol, as far as the provider speaks it
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>): an incremental parser
//! of what the server sends, and the commands the client writes.
//!
//! The parser takes complete frames off the front of a [`BytesMut`] the connection reads
//! into, and leaves a partial one there until the rest arrives. A message's subject and
//! payload are copied out into one allocation of their own, so the read buffer is reused. It never panics: any input is a
//! frame, "not yet complete", or a [`WireError`]. Memory is bounded by the caller's
//! [`WireLimits`]: a control line longer than `line`, or a message payload larger than
//! `payload`, is an error as soon as it is announced, before it is buffered.
//!
//! An error means the byte stream can no longer be trusted to be in step with the protocol (a
//! message's length is unreadable, a payload is not followed by CRLF): the connection that read
//! it is closed, and the bridge reconnects.

use bytes::{Buf, Bytes, BytesMut};

use crate::provider::bridge::pipeline::decimal;

/// What the parser accepts from the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireLimits {
    /// The longest control line (the line before a payload, or a whole `INFO`), CRLF included.
    pub(crate) line: usize,
    /// The largest message payload (headers included for `HMSG`).
    pub(crate) payload: usize,
}

/// One complete frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `INFO {json}`: the JSON text.
    Info(Bytes),
    /// `MSG` or `HMSG`: a message on a subscribed subject.
    Msg(Message),
    /// `PING`: answered with `PONG` at once.
    Ping,
    /// `PONG`: the answer to our `PING`.
    Pong,
    /// `+OK` (sent only in verbose mode, which we do not ask for).
    Ok,
    /// `-ERR '<text>'`: the text, without the quotes.
    Err(String),
}

/// A message the server delivered on one of our subscriptions.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message {
    /// The subject it was published on, as the server wrote it.
    subject: Bytes,
    /// The subscription it came on.
    pub(crate) sid: u64,
    /// `HMSG`: the payload starts with NATS headers. No instance publishes with headers, so
    /// such a message is not ours.
    pub(crate) headers: bool,
    /// The payload (for `HMSG`, headers and payload).
    pub(crate) payload: Bytes,
}

impl Message {
    /// The subject, or `"\u{FFFD}"` if it is not UTF-8 (no subject of ours is).
    pub(crate) fn subject(&self) -> &str {
        std::str::from_utf8(&self.subject).unwrap_or("\u{FFFD}")
    }

    /// The subject as the server wrote it.
    pub(crate) fn subject_bytes(&self) -> &[u8] {
        &self.subject
    }

    /// The bytes it holds: subject and payload.
    pub(crate) fn len(&self) -> usize {
        self.subject.len() + self.payload.len()
    }
}

/// Why the server's byte stream cannot be read on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WireError {
    /// A control line longer than the limit (or no CRLF within it).
    #[error("a control line from the server is over {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// A message announcing a payload larger than the limit.
    #[error("a message from the server announces {len} bytes; the limit is {limit}")]
    PayloadTooLarge {
        /// The announced size.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// A payload not followed by CRLF: the announced length was wrong.
    #[error("a message payload from the server is not followed by CRLF")]
    MissingTerminator,
    /// A control line that is not a NATS operation with valid arguments.
    #[error("malformed control line from the server: {0}")]
    Malformed(String),
}

const CRLF: &[u8] = b"\r\n";

/// Takes the next complete frame off the front of `buffer`: `Ok(None)` if more bytes are
/// needed, and then `buffer` is left as it was.
pub(crate) fn parse(buffer: &mut BytesMut, limits: &WireLimits) -> Result<Option<Frame>, WireError> {
    let Some(line_end) = find_crlf(&buffer[..buffer.len().min(limits.line)]) else {
        if buffer.len() >= limits.line {
            return Err(WireError::LineTooLong { limit: limits.line });
        }
        return Ok(None);
    };
    let line = &buffer[..line_end];
    let (verb, rest) = split_verb(line);
    let frame = if verb.eq_ignore_ascii_case(b"MSG") || verb.eq_ignore_ascii_case(b"HMSG") {
        let headers = verb.len() == 4;
        let offset = rest.as_ptr() as usize - buffer.as_ptr() as usize;
        let header = message_header(rest, offset, headers, limits)?;
        let start = line_end + CRLF.len();
        // Checked: a limit raised by a hostile `INFO` must not make this wrap.
        let end = usize::try_from(header.len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|end| end.checked_add(CRLF.len()).is_some())
            .ok_or(WireError::PayloadTooLarge {
                len: header.len,
                limit: limits.payload,
            })?;
        if buffer.len() < end + CRLF.len() {
            return Ok(None);
        }
        if &buffer[end..end + CRLF.len()] != CRLF {
            return Err(WireError::MissingTerminator);
        }
        // Subject and payload copied into one allocation of their own, so that a message
        // waiting for the listener holds its own bytes only, never the read buffer around it.
        let subject_len = header.subject.len();
        let mut owned = Vec::with_capacity(subject_len + (end - start));
        owned.extend_from_slice(&buffer[header.subject]);
        owned.extend_from_slice(&buffer[start..end]);
        buffer.advance(end + CRLF.len());
        let owned = Bytes::from(owned);
        return Ok(Some(Frame::Msg(Message {
            subject: owned.slice(..subject_len),
            sid: header.sid,
            headers,
            payload: owned.slice(subject_len..),
        })));
    } else if verb.eq_ignore_ascii_case(b"PING") && rest.is_empty() {
        Frame::Ping
    } else if verb.eq_ignore_ascii_case(b"PONG") && rest.is_empty() {
        Frame::Pong
    } else if verb.eq_ignore_ascii_case(b"+OK") && rest.is_empty() {
        Frame::Ok
    } else if verb.eq_ignore_ascii_case(b"-ERR") {
        let text = String::from_utf8_lossy(rest);
        let text = text.trim();
        let text = text
            .strip_prefix('\'')
            .and_then(|text| text.strip_suffix('\''))
            .unwrap_or(text);
        Frame::Err(text.to_string())
    } else if verb.eq_ignore_ascii_case(b"INFO") {
        let json = Bytes::copy_from_slice(rest);
        buffer.advance(line_end + CRLF.len());
        return Ok(Some(Frame::Info(json)));
    } else {
        return Err(WireError::Malformed(shown(line)));
    };
    buffer.advance(line_end + CRLF.len());
    Ok(Some(frame))
}

/// Where the first CRLF in `bytes` starts.
fn find_crlf(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = memchr::memchr(b'\n', &bytes[from..]) {
        let newline = from + found;
        if newline > 0 && bytes[newline - 1] == b'\r' {
            return Some(newline - 1);
        }
        from = newline + 1;
    }
    None
}

/// The operation name and the arguments after it (leading whitespace removed).
fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    let end = line.iter().position(|&byte| is_blank(byte)).unwrap_or(line.len());
    let rest = &line[end..];
    let start = rest
        .iter()
        .position(|&byte| !is_blank(byte))
        .unwrap_or(rest.len());
    (&line[..end], &rest[start..])
}

struct MessageHeader {
    /// Where the subject stands in the buffer.
    subject: std::ops::Range<usize>,
    sid: u64,
    /// The bytes after the control line, before the closing CRLF.
    len: u64,
}

/// `MSG <subject> <sid> [reply-to] <len>` or `HMSG <subject> <sid> [reply-to] <hdr-len>
/// <total-len>`, the verb removed; `args` starts `offset` bytes into the buffer.
fn message_header(
    args: &[u8],
    offset: usize,
    headers: bool,
    limits: &WireLimits,
) -> Result<MessageHeader, WireError> {
    let mut found: [&[u8]; 5] = [&[]; 5];
    let mut count = 0;
    let mut rest = args;
    loop {
        let start = rest
            .iter()
            .position(|&byte| !is_blank(byte))
            .unwrap_or(rest.len());
        rest = &rest[start..];
        if rest.is_empty() {
            break;
        }
        let end = rest.iter().position(|&byte| is_blank(byte)).unwrap_or(rest.len());
        let Some(slot) = found.get_mut(count) else {
            return Err(WireError::Malformed(shown(args)));
        };
        *slot = &rest[..end];
        count += 1;
        rest = &rest[end..];
    }
    let fields = &found[..count];
    let lengths = if headers { 2 } else { 1 };
    if fields.len() != 2 + lengths && fields.len() != 3 + lengths {
        return Err(WireError::Malformed(shown(args)));
    }
    let number = |field: &[u8]| -> Result<u64, WireError> {
        decimal(field).ok_or_else(|| WireError::Malformed(shown(args)))
    };
    let sid = number(fields[1])?;
    let len = number(fields[fields.len() - 1])?;
    if headers && number(fields[fields.len() - 2])? > len {
        return Err(WireError::Malformed(shown(args)));
    }
    if len > limits.payload as u64 {
        return Err(WireError::PayloadTooLarge {
            len,
            limit: limits.payload,
        });
    }
    // Both point into the same line: the difference of their addresses is the offset.
    let start = offset + (fields[0].as_ptr() as usize - args.as_ptr() as usize);
    Ok(MessageHeader {
        subject: start..start + fields[0].len(),
        sid,
        len,
    })
}

/// A field of a control line separates from the next by spaces or tabs.
fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t')
}

/// A control line for an error message: lossy UTF-8, at most 128 bytes of it.
fn shown(line: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(&line[..line.len().min(128)]).into_owned();
    if line.len() > 128 {
        text.push('…');
    }
    text
}

/// Appends `PUB <subject> <len>\r\n<payload>\r\n`, the subject written by `subject`.
pub(crate) fn put_pub(out: &mut Vec<u8>, subject: impl FnOnce(&mut Vec<u8>), payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    subject(out);
    put_number(out, payload.len() as u64);
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// Appends `SUB <subject> <sid>\r\n`.
pub(crate) fn put_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    put_number(out, sid);
}

/// Appends `UNSUB <sid>\r\n`.
pub(crate) fn put_unsub(out: &mut Vec<u8>, sid: u64) {
    out.extend_from_slice(b"UNSUB");
    put_number(out, sid);
}

/// Appends a space, `number` in decimal and CRLF, with no allocation.
fn put_number(out: &mut Vec<u8>, number: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = number;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push(b' ');
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(CRLF);
}

/// `PING\r\n`.
pub(crate) const PING: &[u8] = b"PING\r\n";

/// `PONG\r\n`.
pub(crate) const PONG: &[u8] = b"PONG\r\n";

/// The longest control line the client writes besides the subject: the verb and a space
/// (`PUB `, `SUB `), a space and a number of at most 20 digits (a length or a sid), CRLF.
pub(crate) const COMMAND_OVERHEAD: usize = 4 + 1 + 20 + 2;

/// The fields of the server's `INFO` the client reads; the others are ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct ServerInfo {
    /// The largest payload the server accepts in a `PUB`.
    pub(crate) max_payload: Option<u64>,
    /// The protocol level (1 for every server since 2.2).
    pub(crate) proto: Option<i64>,
    /// Whether the server supports headers.
    pub(crate) headers: bool,
    /// Whether the server requires credentials in `CONNECT`.
    pub(crate) auth_required: bool,
    /// Whether the server requires TLS, which this client does not speak.
    pub(crate) tls_required: bool,
    /// The server's version.
    pub(crate) version: String,
}

impl ServerInfo {
    /// Reads the JSON of an `INFO` line.
    pub(crate) fn parse(json: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(json).map_err(|error| format!("unreadable INFO from the server: {error}"))
    }
}

/// The `CONNECT` options the client sends.
#[derive(serde::Serialize)]
pub(crate) struct ConnectOptions<'a> {
    pub(crate) verbose: bool,
    pub(crate) pedantic: bool,
    pub(crate) tls_required: bool,
    pub(crate) lang: &'a str,
    pub(crate) version: &'a str,
    pub(crate) protocol: u8,
    pub(crate) echo: bool,
    pub(crate) name: &'a str,
    pub(crate) headers: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) auth_token: Option<&'a str>,
}

/// Appends `CONNECT {json}\r\n`.
pub(crate) fn put_connect(out: &mut Vec<u8>, options: &ConnectOptions<'_>) {
    out.extend_from_slice(b"CONNECT ");
    // Serialising a struct of strings, booleans and integers into a Vec cannot fail.
    if let Err(error) = serde_json::to_writer(&mut *out, options) {
        tracing::error!(%error, "serialising CONNECT failed");
    }
    out.extend_from_slice(CRLF);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WireLimits = WireLimits {
        line: 4096,
        payload: 1 << 20,
    };

    /// A stream with one of every frame, a reply-to, an empty payload and a payload holding
    /// CRLF.
    const STREAM: &[u8] = b"INFO {\"max_payload\":1048576,\"proto\":1}\r\n\
        PING\r\npong\r\n+OK\r\n-ERR 'Permissions Violation for Publish to \"a\"'\r\n\
        MSG fanout.a 1 5\r\nhello\r\n\
        MSG  fanout.b\t2 reply.x 0\r\n\r\n\
        HMSG fanout.c 3 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
        msg fanout.d 4 4\r\n\r\n\r\n\r\n";

    fn all(mut buffer: BytesMut) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = parse(&mut buffer, &LIMITS).expect("valid stream") {
            frames.push(frame);
        }
        assert!(buffer.is_empty(), "left over: {buffer:?}");
        frames
    }

    #[test]
    fn parses_every_frame() {
        let frames = all(BytesMut::from(STREAM));
        assert_eq!(frames.len(), 9);
        assert_eq!(
            frames[0],
            Frame::Info(Bytes::from_static(b"{\"max_payload\":1048576,\"proto\":1}"))
        );
        assert_eq!(frames[1..4], [Frame::Ping, Frame::Pong, Frame::Ok]);
        assert_eq!(
            frames[4],
            Frame::Err("Permissions Violation for Publish to \"a\"".into())
        );
        let message = |subject: &str, sid, headers, payload: &'static [u8]| {
            Frame::Msg(Message {
                subject: Bytes::copy_from_slice(subject.as_bytes()),
                sid,
                headers,
                payload: Bytes::from_static(payload),
            })
        };
        assert_eq!(frames[5], message("fanout.a", 1, false, b"hello"));
        assert_eq!(frames[6], message("fanout.b", 2, false, b""));
        assert_eq!(frames[7], message("fanout.c", 3, true, b"NATS/1.0\r\n\r\nhi"));
        assert_eq!(frames[8], message("fanout.d", 4, false, b"\r\n\r\n"));
    }

    #[test]
    fn split_reads_at_every_boundary_yield_the_same_frames() {
        let whole = all(BytesMut::from(STREAM));
        for split in 0..=STREAM.len() {
            let mut buffer = BytesMut::from(&STREAM[..split]);
            let mut frames = Vec::new();
            while let Some(frame) = parse(&mut buffer, &LIMITS).unwrap() {
                frames.push(frame);
            }
            buffer.extend_from_slice(&STREAM[split..]);
            while let Some(frame) = parse(&mut buffer, &LIMITS).unwrap() {
                frames.push(frame);
            }
            assert_eq!(frames, whole, "split at {split}");
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn one_byte_at_a_time_yields_the_same_frames() {
        let whole = all(BytesMut::from(STREAM));
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for &byte in STREAM {
            buffer.extend_from_slice(&[byte]);
            while let Some(frame) = parse(&mut buffer, &LIMITS).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames, whole);
    }

    #[test]
    fn limits_are_enforced_before_buffering() {
        let limits = WireLimits { line: 16, payload: 8 };
        let mut long = BytesMut::from(&b"INFO {\"aaaaaaaaaaaaaaaaaaaaaaa"[..]);
        assert_eq!(
            parse(&mut long, &limits),
            Err(WireError::LineTooLong { limit: 16 })
        );
        let mut large = BytesMut::from(&b"MSG a 1 9\r\n"[..]);
        assert_eq!(
            parse(&mut large, &limits),
            Err(WireError::PayloadTooLarge { len: 9, limit: 8 })
        );
        let mut huge = BytesMut::from(&b"MSG a 1 99999999999999999999999\r\n"[..]);
        assert!(matches!(parse(&mut huge, &LIMITS), Err(WireError::Malformed(_))));
    }

    #[test]
    fn malformed_lines_are_errors() {
        for line in [
            &b"MSG a 1\r\n"[..],
            b"MSG a b 3\r\nabc\r\n",
            b"MSG a 1 -3\r\n",
            b"MSG a 1 x y 3\r\nabc\r\n",
            b"HMSG a 1 5 3\r\nabc\r\n",
            b"WHAT\r\n",
            b"PING extra\r\n",
            b"\r\n",
        ] {
            let result = parse(&mut BytesMut::from(line), &LIMITS);
            assert!(
                matches!(result, Err(WireError::Malformed(_))),
                "{line:?}: {result:?}"
            );
        }
        let mut short = BytesMut::from(&b"MSG a 1 2\r\nabc\r\n"[..]);
        assert_eq!(parse(&mut short, &LIMITS), Err(WireError::MissingTerminator));
    }

    /// Arbitrary bytes, and arbitrary splices of a valid stream, end in frames, a wait for
    /// more, or an error: never a panic, and the buffer only shrinks.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let limits = WireLimits {
            line: 64,
            payload: 64,
        };
        for _ in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut input = Vec::with_capacity(len);
            for _ in 0..len {
                let byte = match next() % 4 {
                    0 => STREAM[(next() as usize) % STREAM.len()],
                    1 => b"\r\n MSG1 "[(next() % 8) as usize],
                    _ => next() as u8,
                };
                input.push(byte);
            }
            let mut buffer = BytesMut::from(&input[..]);
            loop {
                let before = buffer.len();
                match parse(&mut buffer, &limits) {
                    Ok(Some(_)) => assert!(buffer.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    /// With the payload limit at its widest (as a server's `INFO` once could raise it), a
    /// length near `u64::MAX` is an error, not an overflow.
    #[test]
    fn a_huge_announced_length_is_an_error_whatever_the_limit() {
        let limits = WireLimits {
            line: 4096,
            payload: usize::MAX,
        };
        for len in [
            u64::MAX,
            u64::MAX - 1,
            usize::MAX as u64 - 1,
            usize::MAX as u64 - 20,
        ] {
            let mut buffer = BytesMut::from(format!("MSG fanout.t 1 {len}\r\nxy\r\n").as_bytes());
            assert!(matches!(parse(&mut buffer, &limits), Err(_) | Ok(None)), "{len}");
        }
    }

    #[test]
    fn commands_are_written_as_the_protocol_says() {
        let mut out = Vec::new();
        put_pub(&mut out, |out| out.extend_from_slice(b"fanout.a"), b"xy");
        put_sub(&mut out, "fanout.a", 7);
        put_unsub(&mut out, 0);
        put_sub(&mut out, "b", u64::MAX);
        assert_eq!(
            out,
            b"PUB fanout.a 2\r\nxy\r\nSUB fanout.a 7\r\nUNSUB 0\r\nSUB b 18446744073709551615\r\n"
        );
    }

    #[test]
    fn info_is_read_and_unknown_fields_are_ignored() {
        let info =
            ServerInfo::parse(br#"{"max_payload":1048576,"proto":1,"headers":true,"extra":[1]}"#).unwrap();
        assert_eq!(info.max_payload, Some(1_048_576));
        assert!(info.headers && !info.auth_required);
        assert!(ServerInfo::parse(b"{not json").is_err());
    }
}
