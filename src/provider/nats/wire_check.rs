//! The NATS protocol parser's properties, checked on any bytes: what the `fuzz_nats_wire`
//! target runs, and its stable twin replays (`tests/nats_wire.rs`).
//!
//! The input's first two bytes choose the limits (a control line of 16 to 271 bytes, a
//! payload of up to 1,020), the third how the rest is cut into reads (1 to 32 bytes at a
//! time); the rest is what the server sends. Checked:
//!
//! - **No panic**, whatever the bytes.
//! - **Reads do not matter.** Fed in one piece or read by read, the parser gives the same
//!   frames and ends in the same state (the same error, or the same bytes left waiting).
//! - **Bounded buffering.** While it waits for the rest of a frame, the buffer holds less
//!   than a control line and a payload at their limits: a longer line or a larger payload is
//!   an error as soon as it is announced.
//! - **Messages round-trip.** A message written back as `MSG` (or `HMSG`) and parsed again is
//!   the same message, and its payload is within the limit.

use bytes::BytesMut;

use super::wire::{parse, Frame, WireError, WireLimits};

/// How a run of the parser ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Error(WireError),
    /// Waiting for more bytes, holding these.
    Waiting(Vec<u8>),
}

/// Checks the parser's properties on `data` (see the module docs); panics on a violation.
#[doc(hidden)]
pub fn check_parser(data: &[u8]) {
    let [line, payload, reads, stream @ ..] = data else {
        return;
    };
    let limits = WireLimits {
        line: 16 + usize::from(*line),
        payload: usize::from(*payload) * 4,
    };
    let read_size = 1 + usize::from(*reads) % 32;

    let mut whole = BytesMut::from(stream);
    let (whole_frames, whole_end) = drain(&mut whole, &limits);

    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    let mut end = End::Waiting(Vec::new());
    for read in stream.chunks(read_size) {
        buffer.extend_from_slice(read);
        let (more, ended) = drain(&mut buffer, &limits);
        frames.extend(more);
        end = ended;
        match &end {
            End::Error(_) => break,
            End::Waiting(held) => assert!(
                held.len() < limits.line + limits.payload + 4,
                "{} bytes held waiting, past a line of {} and a payload of {}",
                held.len(),
                limits.line,
                limits.payload
            ),
        }
    }
    assert_eq!(
        frames, whole_frames,
        "the frames depend on how the bytes were read"
    );
    assert_eq!(end, whole_end, "the end depends on how the bytes were read");

    for frame in &frames {
        if let Frame::Msg(message) = frame {
            assert!(
                message.payload.len() <= limits.payload,
                "a payload past the limit"
            );
            let mut written = BytesMut::new();
            let verb = if message.headers { "HMSG" } else { "MSG" };
            written.extend_from_slice(format!("{verb} ").as_bytes());
            written.extend_from_slice(message.subject_bytes());
            let lengths = if message.headers {
                format!(" {} 0 {}\r\n", message.sid, message.payload.len())
            } else {
                format!(" {} {}\r\n", message.sid, message.payload.len())
            };
            written.extend_from_slice(lengths.as_bytes());
            written.extend_from_slice(&message.payload);
            written.extend_from_slice(b"\r\n");
            let roomy = WireLimits {
                line: written.len() + 2,
                payload: limits.payload,
            };
            match parse(&mut written, &roomy) {
                Ok(Some(Frame::Msg(again))) => assert_eq!(&again, message, "a message does not round-trip"),
                other => panic!("a message written back parses as {other:?}"),
            }
            assert!(written.is_empty(), "a message written back leaves bytes");
        }
    }
}

/// Takes every complete frame off `buffer`; then how it stopped.
fn drain(buffer: &mut BytesMut, limits: &WireLimits) -> (Vec<Frame>, End) {
    let mut frames = Vec::new();
    loop {
        match parse(buffer, limits) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, End::Waiting(buffer.to_vec())),
            Err(error) => return (frames, End::Error(error)),
        }
    }
}
