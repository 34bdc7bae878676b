//! The RESP parser's properties, checked on any bytes: what the `fuzz_redis_wire` target runs,
//! and its stable twin replays (`tests/redis_wire.rs`).
//!
//! The input's first two bytes choose the limits (a line of 16 to 271 bytes, a bulk string of
//! up to 1,020 bytes, 1 to 16 elements a frame), the third how the rest is cut into reads (1 to
//! 32 bytes at a time); the rest is what the server sends. Checked:
//!
//! - **No panic**, whatever the bytes.
//! - **Reads do not matter.** Fed in one piece or read by read, the parser gives the same
//!   frames and ends in the same state (the same error, or the same bytes left waiting).
//! - **Bounded buffering.** While it waits for the rest of a frame, the buffer holds at most
//!   what a frame at the limits can be: a longer line, a longer bulk string, more elements or
//!   deeper nesting is an error as soon as it is announced.
//! - **Messages round-trip.** A pub/sub message written back as a `message` (or `smessage`)
//!   push and parsed again is the same message, within the limit; one past the limit is
//!   announced as oversized, and its payload discarded as it arrives, never held.

use bytes::{Buf, BytesMut};

use super::wire::{parse, Frame, WireError, WireLimits, MAX_DEPTH};

/// How a run of the parser ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Error(WireError),
    /// Waiting for more bytes, holding these, with this many still to discard (the rest of
    /// an oversized message).
    Waiting(Vec<u8>, usize),
}

/// Checks the parser's properties on `data` (see the module docs); panics on a violation.
#[doc(hidden)]
pub fn check_parser(data: &[u8]) {
    let [line, sizes, reads, stream @ ..] = data else {
        return;
    };
    let limits = WireLimits {
        line: 16 + usize::from(*line),
        bulk: usize::from(sizes >> 4) * 68,
        elements: 1 + usize::from(sizes & 0x0f),
    };
    let read_size = 1 + usize::from(*reads) % 32;

    let mut whole = BytesMut::from(stream);
    let (whole_frames, whole_end) = drain(&mut whole, &limits, &mut 0);

    // A frame at the limits: each of its elements a line and a bulk string, every array's
    // header a line.
    let largest = (limits.elements + MAX_DEPTH + 1) * (limits.line + limits.bulk + 2);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    let mut end = End::Waiting(Vec::new(), 0);
    let mut skipping = 0;
    for read in stream.chunks(read_size) {
        buffer.extend_from_slice(read);
        let (more, ended) = drain(&mut buffer, &limits, &mut skipping);
        frames.extend(more);
        end = ended;
        match &end {
            End::Error(_) => break,
            End::Waiting(held, _) => assert!(
                held.len() < largest,
                "{} bytes held waiting, past a frame at the limits ({largest})",
                held.len(),
            ),
        }
    }
    assert_eq!(
        frames, whole_frames,
        "the frames depend on how the bytes were read"
    );
    assert_eq!(end, whole_end, "the end depends on how the bytes were read");

    for frame in &frames {
        if let Frame::Oversized { skip, .. } = frame {
            assert!(
                *skip > limits.bulk + 2,
                "a payload within the limit announced as oversized"
            );
        }
        if let Frame::Message(message) = frame {
            assert!(message.payload.len() <= limits.bulk, "a payload past the limit");
            let kind: &[u8] = if message.sharded { b"smessage" } else { b"message" };
            let mut written = Vec::new();
            super::wire::put_command(&mut written, &[kind, message.channel_bytes(), &message.payload]);
            let mut written = BytesMut::from(&written[..]);
            match parse(&mut written, &limits) {
                Ok(Some(Frame::Message(again))) => {
                    assert_eq!(&again, message, "a message does not round-trip")
                }
                other => panic!("a message written back parses as {other:?}"),
            }
            assert!(written.is_empty(), "a message written back leaves bytes");
        }
    }
}

/// Takes every complete frame off `buffer`, discarding oversized payloads as the connection's
/// reader does (`skipping` carries what is left to discard from one read to the next); then
/// how it stopped.
fn drain(buffer: &mut BytesMut, limits: &WireLimits, skipping: &mut usize) -> (Vec<Frame>, End) {
    let mut frames = Vec::new();
    loop {
        let discard = (*skipping).min(buffer.len());
        buffer.advance(discard);
        *skipping -= discard;
        if *skipping > 0 {
            return (frames, End::Waiting(buffer.to_vec(), *skipping));
        }
        match parse(buffer, limits) {
            Ok(Some(frame)) => {
                if let Frame::Oversized { skip, .. } = &frame {
                    *skipping = *skip;
                }
                frames.push(frame);
            }
            Ok(None) => return (frames, End::Waiting(buffer.to_vec(), *skipping)),
            Err(error) => return (frames, End::Error(error)),
        }
    }
}
