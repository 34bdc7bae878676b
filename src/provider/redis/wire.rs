//! RESP2, as far as the provider speaks it (<https://redis.io/docs/latest/develop/reference/protocol-spec/>):
//! an incremental parser of what the server sends, and the commands the client writes.
//!
//! The parser takes complete frames off the front of a [`BytesMut`] the connection reads into,
//! and leaves a partial one there until the rest arrives. A pub/sub message (`message` or
//! `smessage`, the frame the subscription connection mostly reads) is recognised by its first
//! bytes and its channel and payload are copied out into one allocation of their own, so the
//! read buffer is reused; an integer reply (the answer to each `PUBLISH`) allocates nothing.
//! Other frames become a [`Value`].
//!
//! It never panics: any input is a frame, "not yet complete", or a [`WireError`]. Memory is
//! bounded by the caller's [`WireLimits`]: a line longer than `line`, a bulk string longer
//! than `bulk`, an array of more than `elements` (counted over all its levels) or nested
//! deeper than [`MAX_DEPTH`] is an error as soon as it is announced, before it is buffered;
//! except a pub/sub message's payload, which is announced as [`Frame::Oversized`] for the
//! caller to discard as it arrives, so that another client's large message on one of our
//! channels is skipped, not taken for a broken stream.
//!
//! An error means the byte stream can no longer be trusted to be in step with the protocol: the
//! connection that read it is closed, and the bridge reconnects.

use bytes::{Buf, Bytes, BytesMut};

use crate::provider::bridge::pipeline::decimal;

/// The deepest nesting of arrays accepted (`CLUSTER SLOTS` needs three).
pub(crate) const MAX_DEPTH: usize = 8;

/// What the parser accepts from the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireLimits {
    /// The longest line (a simple string, an error, a length), CRLF included.
    pub(crate) line: usize,
    /// The longest bulk string.
    pub(crate) bulk: usize,
    /// The most elements in one frame, counted over all its levels.
    pub(crate) elements: usize,
}

/// A pub/sub message: the channel it came on and its payload.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) struct Message {
    /// `smessage`: delivered by sharded pub/sub.
    pub(crate) sharded: bool,
    channel: Bytes,
    /// The payload, in the same allocation as the channel; empty for an oversized message.
    pub(crate) payload: Bytes,
    /// For a message whose payload was past the limit and discarded: its length.
    pub(crate) oversized: Option<usize>,
}

impl Message {
    /// A message whose `len`-byte payload was past the limit and discarded.
    pub(crate) fn oversized(channel: Bytes, sharded: bool, len: usize) -> Message {
        Message {
            sharded,
            channel,
            payload: Bytes::new(),
            oversized: Some(len),
        }
    }

    /// The channel, or `"\u{FFFD}"` if it is not UTF-8 (no channel of ours is).
    pub(crate) fn channel(&self) -> &str {
        std::str::from_utf8(&self.channel).unwrap_or("\u{FFFD}")
    }

    /// The channel's bytes, as the server wrote them.
    pub(crate) fn channel_bytes(&self) -> &[u8] {
        &self.channel
    }

    /// The bytes it holds, for the reader's backlog budget.
    pub(crate) fn len(&self) -> usize {
        self.channel.len() + self.payload.len()
    }
}

/// A RESP2 value other than a pub/sub message.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) enum Value {
    /// `+text`.
    Simple(Bytes),
    /// `-text`: an error reply, as text (lossy if not UTF-8).
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` and its bytes; `None` for `$-1`.
    Bulk(Option<Bytes>),
    /// `*n` and its elements; `None` for `*-1`.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// A bulk or simple string's bytes.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(Some(bytes)) | Value::Simple(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// An array's elements (a null array has none).
    pub(crate) fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(elements)) => Some(elements),
            Value::Array(None) => Some(&[]),
            _ => None,
        }
    }
}

/// One complete frame from the server.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) enum Frame {
    /// `message` or `smessage`: a message on a subscribed channel.
    Message(Message),
    /// The start of a `message` or `smessage` whose payload is longer than the limit: its
    /// channel, and the bytes that follow (the payload and its CRLF), which the caller
    /// discards as they arrive rather than buffering them.
    Oversized {
        channel: Bytes,
        sharded: bool,
        skip: usize,
    },
    /// Anything else: a reply, or a push such as a subscription's confirmation.
    Value(Value),
}

/// Why the byte stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RESP protocol error: {}", self.0)
    }
}

impl std::error::Error for WireError {}

fn error(why: impl Into<String>) -> WireError {
    WireError(why.into())
}

/// The prefixes of the two pub/sub message pushes.
const MESSAGE: &[u8] = b"*3\r\n$7\r\nmessage\r\n";
const SMESSAGE: &[u8] = b"*3\r\n$8\r\nsmessage\r\n";

/// Takes the next complete frame off the front of `buffer`: `Ok(None)` (and `buffer`
/// untouched) if it is not complete yet.
pub(crate) fn parse(buffer: &mut BytesMut, limits: &WireLimits) -> Result<Option<Frame>, WireError> {
    for (prefix, sharded) in [(MESSAGE, false), (SMESSAGE, true)] {
        if buffer.starts_with(prefix) {
            return parse_message(buffer, prefix.len(), sharded, limits);
        }
    }
    if buffer.first() == Some(&b':') {
        return parse_integer(buffer, limits);
    }
    let mut elements = 0;
    let Some(end) = scan(buffer, 0, limits, 0, &mut elements)? else {
        return Ok(None);
    };
    let mut frame = buffer.split_to(end);
    let value = read(&mut frame);
    Ok(Some(Frame::Value(value)))
}

/// An integer reply (the answer to each `PUBLISH`), read in place: no split of `buffer`.
fn parse_integer(buffer: &mut BytesMut, limits: &WireLimits) -> Result<Option<Frame>, WireError> {
    let Some((line, after)) = line_at(buffer, 0, limits)? else {
        return Ok(None);
    };
    let value = integer(&line[1..]).ok_or_else(|| error("an unreadable integer"))?;
    buffer.advance(after);
    Ok(Some(Frame::Value(Value::Integer(value))))
}

/// A `message` / `smessage` push whose first `start` bytes have been recognised.
fn parse_message(
    buffer: &mut BytesMut,
    start: usize,
    sharded: bool,
    limits: &WireLimits,
) -> Result<Option<Frame>, WireError> {
    // What `scan` checks of the array and its first element, with the same errors.
    length(b"3", limits.elements, "array")?;
    length(if sharded { b"8" } else { b"7" }, limits.bulk, "bulk string")?;
    let Some((channel, after_channel)) = bulk_at(buffer, start, limits)? else {
        return Ok(None);
    };
    let Some((line, after_header)) = line_at(buffer, after_channel, limits)? else {
        return Ok(None);
    };
    if line.first() != Some(&b'$') {
        return Err(error("a pub/sub message's element is not a bulk string"));
    }
    let len = length(&line[1..], usize::MAX >> 1, "bulk string")?
        .ok_or_else(|| error("a pub/sub message's element is null"))?;
    if len > limits.bulk {
        let channel = Bytes::copy_from_slice(&buffer[channel]);
        buffer.advance(after_header);
        return Ok(Some(Frame::Oversized {
            channel,
            sharded,
            skip: len + 2,
        }));
    }
    let Some((payload, end)) = complete_bulk(buffer, after_header, len)? else {
        return Ok(None);
    };
    let mut data = Vec::with_capacity(channel.len() + payload.len());
    data.extend_from_slice(&buffer[channel.clone()]);
    data.extend_from_slice(&buffer[payload.clone()]);
    let data = Bytes::from(data);
    let split = channel.len();
    buffer.advance(end);
    Ok(Some(Frame::Message(Message {
        sharded,
        channel: data.slice(..split),
        payload: data.slice(split..),
        oversized: None,
    })))
}

/// A non-null bulk string starting at `at`: where its bytes are and where it ends.
fn bulk_at(
    buffer: &[u8],
    at: usize,
    limits: &WireLimits,
) -> Result<Option<(std::ops::Range<usize>, usize)>, WireError> {
    let Some((line, after)) = line_at(buffer, at, limits)? else {
        return Ok(None);
    };
    if line.first() != Some(&b'$') {
        return Err(error("a pub/sub message's element is not a bulk string"));
    }
    let len = length(&line[1..], limits.bulk, "bulk string")?
        .ok_or_else(|| error("a pub/sub message's element is null"))?;
    complete_bulk(buffer, after, len)
}

/// The bulk string of `len` bytes starting at `at`, if its bytes and CRLF are all there.
fn complete_bulk(
    buffer: &[u8],
    at: usize,
    len: usize,
) -> Result<Option<(std::ops::Range<usize>, usize)>, WireError> {
    let end = at + len + 2;
    if buffer.len() < end {
        return Ok(None);
    }
    if &buffer[at + len..end] != b"\r\n" {
        return Err(error("a bulk string is not followed by CRLF"));
    }
    Ok(Some((at..at + len, end)))
}

/// The line starting at `at`, without its CRLF, and where the next one starts.
fn line_at<'a>(
    buffer: &'a [u8],
    at: usize,
    limits: &WireLimits,
) -> Result<Option<(&'a [u8], usize)>, WireError> {
    let rest = &buffer[at.min(buffer.len())..];
    let window = &rest[..rest.len().min(limits.line)];
    match window.iter().position(|&byte| byte == b'\n') {
        Some(newline) => {
            if newline == 0 || window[newline - 1] != b'\r' {
                return Err(error("a line does not end in CRLF"));
            }
            Ok(Some((&window[..newline - 1], at + newline + 1)))
        }
        None if rest.len() >= limits.line => Err(error(format!("a line longer than {} bytes", limits.line))),
        None => Ok(None),
    }
}

/// A length: `None` for `-1` (null), else at most `max`.
fn length(digits: &[u8], max: usize, what: &str) -> Result<Option<usize>, WireError> {
    if digits == b"-1" {
        return Ok(None);
    }
    let len = decimal(digits).ok_or_else(|| error(format!("an unreadable {what} length")))?;
    if len > max as u64 {
        return Err(error(format!("a {what} of {len}, past the limit of {max}")));
    }
    Ok(Some(len as usize))
}

/// A signed integer reply.
fn integer(digits: &[u8]) -> Option<i64> {
    match digits.split_first() {
        Some((b'-', rest)) => decimal(rest).and_then(|n| i64::try_from(n).ok()).map(|n| -n),
        _ => decimal(digits).and_then(|n| i64::try_from(n).ok()),
    }
}

/// Where the value starting at `at` ends, if it is complete; checks everything `read` relies
/// on.
fn scan(
    buffer: &[u8],
    at: usize,
    limits: &WireLimits,
    depth: usize,
    elements: &mut usize,
) -> Result<Option<usize>, WireError> {
    let Some((line, after)) = line_at(buffer, at, limits)? else {
        return Ok(None);
    };
    let Some((&kind, body)) = line.split_first() else {
        return Err(error("an empty line"));
    };
    match kind {
        b'+' | b'-' => Ok(Some(after)),
        b':' => match integer(body) {
            Some(_) => Ok(Some(after)),
            None => Err(error("an unreadable integer")),
        },
        b'$' => match length(body, limits.bulk, "bulk string")? {
            None => Ok(Some(after)),
            Some(len) => Ok(complete_bulk(buffer, after, len)?.map(|(_, end)| end)),
        },
        b'*' => {
            if depth >= MAX_DEPTH {
                return Err(error(format!("arrays nested deeper than {MAX_DEPTH}")));
            }
            let Some(count) = length(body, limits.elements, "array")? else {
                return Ok(Some(after));
            };
            *elements += count;
            if *elements > limits.elements {
                return Err(error(format!(
                    "a frame of more than {} elements",
                    limits.elements
                )));
            }
            let mut next = after;
            for _ in 0..count {
                match scan(buffer, next, limits, depth + 1, elements)? {
                    Some(end) => next = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(next))
        }
        other => Err(error(format!("an unknown frame type {:?}", char::from(other)))),
    }
}

/// Reads the value `scan` found complete and well-formed at the front of `frame`.
fn read(frame: &mut BytesMut) -> Value {
    let newline = frame
        .iter()
        .position(|&byte| byte == b'\n')
        .unwrap_or(frame.len() - 1);
    let line = frame.split_to(newline + 1);
    let body = &line[1..line.len() - 2];
    match line[0] {
        b'+' => Value::Simple(Bytes::copy_from_slice(body)),
        b'-' => Value::Error(String::from_utf8_lossy(body).into_owned()),
        b':' => Value::Integer(integer(body).unwrap_or_default()),
        b'$' => match decimal(body) {
            None => Value::Bulk(None),
            Some(len) => {
                let bytes = Bytes::copy_from_slice(&frame[..len as usize]);
                frame.advance(len as usize + 2);
                Value::Bulk(Some(bytes))
            }
        },
        _ => match decimal(body) {
            None => Value::Array(None),
            Some(count) => Value::Array(Some((0..count).map(|_| read(frame)).collect())),
        },
    }
}

/// Appends a command of `args` as a RESP array of bulk strings.
pub(crate) fn put_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    put_header(out, b'*', args.len());
    for arg in args {
        put_bulk(out, &[arg]);
    }
}

/// Appends `verb` (`PUBLISH` or `SPUBLISH`) of `envelope` to the channel `prefix` + `topic`,
/// without building the channel's name.
pub(crate) fn put_publish(out: &mut Vec<u8>, verb: &[u8], prefix: &[u8], topic: &[u8], envelope: &[u8]) {
    out.extend_from_slice(b"*3\r\n");
    put_bulk(out, &[verb]);
    put_bulk(out, &[prefix, topic]);
    put_bulk(out, &[envelope]);
}

/// A bulk string of `parts` one after another.
fn put_bulk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    put_header(out, b'$', parts.iter().map(|part| part.len()).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WireLimits = WireLimits {
        line: 1024,
        bulk: 1 << 20,
        elements: 1024,
    };

    fn all(bytes: &[u8]) -> (Vec<Frame>, BytesMut) {
        let mut buffer = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = parse(&mut buffer, &LIMITS).unwrap() {
            frames.push(frame);
        }
        (frames, buffer)
    }

    #[test]
    fn messages_take_channel_and_payload_whatever_their_bytes() {
        let (frames, rest) = all(b"*3\r\n$7\r\nmessage\r\n$4\r\nch:1\r\n$4\r\n\r\n\0\xff\r\n*3\r\n$8\r\nsmessage\r\n$1\r\nx\r\n$0\r\n\r\n");
        assert!(rest.is_empty());
        let [Frame::Message(first), Frame::Message(second)] = &frames[..] else {
            panic!("{frames:?}");
        };
        assert_eq!(
            (first.channel(), &first.payload[..], first.sharded),
            ("ch:1", &b"\r\n\0\xff"[..], false)
        );
        assert_eq!(
            (second.channel(), &second.payload[..], second.sharded),
            ("x", &b""[..], true)
        );
    }

    #[test]
    fn replies_become_values() {
        let (frames, rest) = all(b":42\r\n:-1\r\n+PONG\r\n-NOPERM no\r\n$-1\r\n*-1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n");
        assert!(rest.is_empty());
        let values: Vec<_> = frames
            .into_iter()
            .map(|frame| match frame {
                Frame::Value(value) => value,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            values,
            vec![
                Value::Integer(42),
                Value::Integer(-1),
                Value::Simple(Bytes::from_static(b"PONG")),
                Value::Error("NOPERM no".into()),
                Value::Bulk(None),
                Value::Array(None),
                Value::Array(Some(vec![
                    Value::Bulk(Some(Bytes::from_static(b"subscribe"))),
                    Value::Bulk(Some(Bytes::from_static(b"a"))),
                    Value::Integer(1),
                ])),
                Value::Array(Some(vec![
                    Value::Array(Some(vec![Value::Integer(1)])),
                    Value::Bulk(Some(Bytes::new())),
                ])),
            ]
        );
    }

    #[test]
    fn a_partial_frame_waits_untouched() {
        let whole: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nab\r\n$3\r\nxyz\r\n";
        for cut in 0..whole.len() {
            let mut buffer = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut buffer, &LIMITS).unwrap(), None, "cut at {cut}");
            assert_eq!(&buffer[..], &whole[..cut]);
        }
    }

    #[test]
    fn limits_and_damage_are_errors() {
        let small = WireLimits {
            line: 8,
            bulk: 4,
            elements: 3,
        };
        for bad in [
            &b"$5\r\n"[..],
            b"+123456789",
            b"*4\r\n",
            b"*2\r\n*2\r\n",
            b"$2\r\nabcd",
            b"?\r\n",
            b":x\r\n",
            b"+a\n",
            b"*3\r\n$7\r\nmessage\r\n:1\r\n",
        ] {
            let mut buffer = BytesMut::from(bad);
            assert!(parse(&mut buffer, &small).is_err(), "{bad:?}");
        }
        let mut deep = BytesMut::from(&b"*1\r\n".repeat(MAX_DEPTH + 1)[..]);
        assert!(parse(&mut deep, &LIMITS).is_err());
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        put_command(&mut out, &[b"SUBSCRIBE", b"a b"]);
        put_publish(&mut out, b"PUBLISH", b"p:", b"t", b"\r\n");
        assert_eq!(
            &out[..],
            &b"*2\r\n$9\r\nSUBSCRIBE\r\n$3\r\na b\r\n*3\r\n$7\r\nPUBLISH\r\n$3\r\np:t\r\n$2\r\n\r\n\r\n"[..]
        );
    }
}
