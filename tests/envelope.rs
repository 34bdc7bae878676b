//! The wire envelope: round trips, every rejection, and a seeded fuzz of the decoder (it
//! never panics, and whatever it accepts re-encodes to the same bytes).

use fanout::envelope::{Envelope, EnvelopeError, EnvelopeLimits, InstanceId, HEADER_BYTES, MAGIC, VERSION};

fn limits() -> EnvelopeLimits {
    EnvelopeLimits {
        max_envelope_bytes: 4096,
        max_topic_bytes: 64,
        max_session_id_bytes: 32,
        max_payload_bytes: 1024,
    }
}

fn sample() -> Vec<u8> {
    Envelope {
        origin: InstanceId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        topic: "room:ünï*[?]",
        sender: Some("tab-1"),
        payload: b"{\"hello\":1}",
    }
    .encode()
}

#[test]
fn round_trip_with_and_without_sender() {
    let origin = InstanceId::random();
    for sender in [None, Some("session-9")] {
        let envelope = Envelope {
            origin,
            topic: "a b\nc",
            sender,
            payload: &[0, 1, 2, 255],
        };
        let bytes = envelope.encode();
        assert_eq!(bytes.len(), envelope.encoded_len());
        assert_eq!(&bytes[..4], &MAGIC);
        assert_eq!(bytes[4], VERSION);
        assert_eq!(Envelope::decode(&bytes, &limits()), Ok(envelope));
    }
}

#[test]
fn empty_payload_round_trips() {
    let envelope = Envelope {
        origin: InstanceId(1),
        topic: "t",
        sender: None,
        payload: b"",
    };
    let bytes = envelope.encode();
    assert_eq!(bytes.len(), HEADER_BYTES + 1);
    assert_eq!(Envelope::decode(&bytes, &limits()), Ok(envelope));
}

#[test]
fn instance_ids_differ() {
    assert_ne!(InstanceId::random(), InstanceId::random());
}

#[test]
fn every_rejection_names_what_is_wrong() {
    let good = sample();
    let decode = |bytes: &[u8]| Envelope::decode(bytes, &limits()).unwrap_err();
    assert_eq!(decode(b""), EnvelopeError::Foreign);
    assert_eq!(decode(b"{\"json\":true}"), EnvelopeError::Foreign);
    let mut v = good.clone();
    v[4] = 2;
    assert_eq!(decode(&v), EnvelopeError::UnsupportedVersion(2));
    let mut v = good.clone();
    v[5] = 0b11;
    assert_eq!(decode(&v), EnvelopeError::UnknownFlags(0b11));
    assert!(matches!(
        decode(&good[..good.len() - 1]),
        EnvelopeError::Truncated { field: "payload", .. }
    ));
    assert!(matches!(
        decode(&good[..12]),
        EnvelopeError::Truncated { field: "origin", .. }
    ));
    assert_eq!(
        decode(&[good.clone(), vec![0]].concat()),
        EnvelopeError::TrailingBytes(1)
    );
    let big = vec![0u8; 4097];
    assert_eq!(
        decode(&big),
        EnvelopeError::TooLarge {
            len: 4097,
            limit: 4096
        }
    );
    let long_topic = "t".repeat(65);
    let e = Envelope {
        origin: InstanceId(1),
        topic: &long_topic,
        sender: None,
        payload: b"",
    }
    .encode();
    assert_eq!(decode(&e), EnvelopeError::TopicTooLong { len: 65, limit: 64 });
    assert_eq!(
        decode(&e).to_string(),
        "envelope topic is 65 bytes; the limit is 64"
    );
    let long_sender = "s".repeat(33);
    let e = Envelope {
        origin: InstanceId(1),
        topic: "t",
        sender: Some(&long_sender),
        payload: b"",
    }
    .encode();
    assert_eq!(decode(&e), EnvelopeError::SenderTooLong { len: 33, limit: 32 });
    let payload = vec![1u8; 1025];
    let e = Envelope {
        origin: InstanceId(1),
        topic: "t",
        sender: None,
        payload: &payload,
    }
    .encode();
    assert_eq!(
        decode(&e),
        EnvelopeError::PayloadTooLarge {
            len: 1025,
            limit: 1024
        }
    );
    let e = Envelope {
        origin: InstanceId(1),
        topic: "",
        sender: None,
        payload: b"",
    }
    .encode();
    assert_eq!(decode(&e), EnvelopeError::EmptyTopic);
    let e = Envelope {
        origin: InstanceId(1),
        topic: "t",
        sender: Some(""),
        payload: b"",
    }
    .encode();
    assert_eq!(decode(&e), EnvelopeError::EmptySender);
    let mut e = Envelope {
        origin: InstanceId(1),
        topic: "t",
        sender: None,
        payload: b"",
    }
    .encode();
    e[HEADER_BYTES] = 0xFF;
    assert_eq!(decode(&e), EnvelopeError::InvalidUtf8("topic"));
    // A length field claiming 4 GiB is caught against what is left, without allocating.
    let mut v = good.clone();
    v[30..34].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode(&v), EnvelopeError::PayloadTooLarge { .. }));
}

/// xorshift64*: a fixed seed, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn seeded_fuzz_never_panics_and_accepted_input_re_encodes_identically() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let good = sample();
    let mut accepted = 0;
    for round in 0..200_000 {
        let mut bytes = if round % 4 == 0 {
            // Pure noise, sometimes starting with the magic and version.
            let len = rng.below(96);
            let mut noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.below(2) == 0 && noise.len() >= 5 {
                noise[..4].copy_from_slice(&MAGIC);
                noise[4] = VERSION;
            }
            noise
        } else {
            good.clone()
        };
        for _ in 0..rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes[at] ^= 1 << rng.below(8),
                2 => bytes.truncate(at),
                _ => bytes.insert(at, rng.next() as u8),
            }
        }
        if let Ok(envelope) = Envelope::decode(&bytes, &limits()) {
            accepted += 1;
            assert_eq!(
                envelope.encode(),
                bytes,
                "round {round}: decode/encode is not the identity"
            );
        }
    }
    assert!(
        accepted > 0,
        "the fuzz never produced a valid envelope: it tests nothing"
    );
}
