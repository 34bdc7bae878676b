//! The wire envelope: round trips, every rejection, and a seeded fuzz of the decoder (it
//! never panics, accepts or refuses an envelope whole, and whatever it accepts re-encodes to
//! the same bytes).

mod support;

use fanout::envelope::{
    single_encoded_len, Envelope, EnvelopeError, EnvelopeLimits, EnvelopeWriter, InstanceId, Record,
    HEADER_BYTES, MAGIC, RECORD_HEADER_BYTES, VERSION,
};

use support::Rng;

fn limits() -> EnvelopeLimits {
    EnvelopeLimits {
        max_envelope_bytes: 4096,
        max_topic_bytes: 64,
        max_session_id_bytes: 32,
        max_payload_bytes: 1024,
    }
}

fn encode(origin: InstanceId, topic: &str, records: &[Record<'_>]) -> Vec<u8> {
    let mut writer = EnvelopeWriter::new(origin, topic);
    for record in records {
        writer.push(record.sender, record.payload);
    }
    writer.finish()
}

fn one(topic: &str, sender: Option<&str>, payload: &[u8]) -> Vec<u8> {
    encode(InstanceId(1), topic, &[Record { sender, payload }])
}

const SAMPLE_RECORDS: [Record<'static>; 3] = [
    Record {
        sender: Some("tab-1"),
        payload: b"{\"hello\":1}",
    },
    Record {
        sender: None,
        payload: b"",
    },
    Record {
        sender: Some("tab-2"),
        payload: b"third",
    },
];

fn sample() -> Vec<u8> {
    encode(
        InstanceId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        "room:ünï*[?]",
        &SAMPLE_RECORDS,
    )
}

#[test]
fn round_trip_keeps_records_senders_and_order() {
    let origin = InstanceId::random();
    let records = [
        Record {
            sender: None,
            payload: &[0, 1, 2, 255],
        },
        Record {
            sender: Some("session-9"),
            payload: b"second",
        },
        Record {
            sender: None,
            payload: b"third",
        },
    ];
    let mut writer = EnvelopeWriter::new(origin, "a b\nc");
    for (n, record) in records.iter().enumerate() {
        assert_eq!(writer.record_count(), n);
        let before = writer.encoded_len();
        writer.push(record.sender, record.payload);
        assert_eq!(writer.encoded_len(), before + record.encoded_len());
    }
    let expected_len = writer.encoded_len();
    let bytes = writer.finish();
    assert_eq!(bytes.len(), expected_len);
    assert_eq!(&bytes[..4], &MAGIC);
    assert_eq!(bytes[4], VERSION);
    let envelope = Envelope::decode(&bytes, &limits()).unwrap();
    assert_eq!((envelope.origin, envelope.topic), (origin, "a b\nc"));
    assert_eq!(envelope.record_count(), 3);
    assert_eq!(envelope.records().len(), 3);
    assert_eq!(envelope.records().collect::<Vec<_>>(), records);
}

#[test]
fn a_single_record_envelope_has_the_size_providers_check() {
    let record = Record {
        sender: Some("tab"),
        payload: b"payload",
    };
    let bytes = one("topic", record.sender, record.payload);
    assert_eq!(bytes.len(), single_encoded_len("topic", &record));
    assert_eq!(bytes.len(), HEADER_BYTES + 5 + RECORD_HEADER_BYTES + 3 + 7);
}

#[test]
fn empty_payload_round_trips() {
    let bytes = one("t", None, b"");
    assert_eq!(bytes.len(), HEADER_BYTES + 1 + RECORD_HEADER_BYTES);
    let envelope = Envelope::decode(&bytes, &limits()).unwrap();
    assert_eq!(
        envelope.records().collect::<Vec<_>>(),
        [Record {
            sender: None,
            payload: b""
        }]
    );
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
    v[4] = 1;
    assert_eq!(decode(&v), EnvelopeError::UnsupportedVersion(1));
    assert_eq!(
        decode(&v).to_string(),
        "envelope version 1 is not supported; this build reads version 2"
    );
    let mut v = good.clone();
    v[5] = 0b1;
    assert_eq!(decode(&v), EnvelopeError::UnknownFlags(0b1));
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
    let e = one(&long_topic, None, b"");
    assert_eq!(decode(&e), EnvelopeError::TopicTooLong { len: 65, limit: 64 });
    assert_eq!(
        decode(&e).to_string(),
        "envelope topic is 65 bytes; the limit is 64"
    );
    let long_sender = "s".repeat(33);
    let e = one("t", Some(&long_sender), b"");
    assert_eq!(decode(&e), EnvelopeError::SenderTooLong { len: 33, limit: 32 });
    let payload = vec![1u8; 1025];
    let e = one("t", None, &payload);
    assert_eq!(
        decode(&e),
        EnvelopeError::PayloadTooLarge {
            len: 1025,
            limit: 1024
        }
    );
    assert_eq!(decode(&one("", None, b"")), EnvelopeError::EmptyTopic);
    let empty = EnvelopeWriter::new(InstanceId(1), "t").finish();
    assert_eq!(decode(&empty), EnvelopeError::Empty);
    let mut e = one("t", None, b"");
    e[HEADER_BYTES] = 0xFF;
    assert_eq!(decode(&e), EnvelopeError::InvalidUtf8("topic"));
    let mut e = one("t", Some("s"), b"");
    e[HEADER_BYTES + 1 + RECORD_HEADER_BYTES] = 0xFF;
    assert_eq!(decode(&e), EnvelopeError::InvalidUtf8("sender session id"));
    // A payload length claiming 4 GiB is caught against the limit, without allocating.
    let payload_length_at = HEADER_BYTES + "room:ünï*[?]".len() + 4;
    let mut v = good.clone();
    v[payload_length_at..payload_length_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode(&v), EnvelopeError::PayloadTooLarge { .. }));
}

#[test]
fn record_count_must_match_the_records() {
    let good = sample();
    let count_at = HEADER_BYTES - 4;
    let with_count = |n: u32| {
        let mut v = good.clone();
        v[count_at..count_at + 4].copy_from_slice(&n.to_be_bytes());
        Envelope::decode(&v, &limits()).map(|envelope| envelope.record_count())
    };
    assert_eq!(with_count(0).unwrap_err(), EnvelopeError::Empty);
    // Fewer than written: the rest is trailing bytes. More: the fourth record is cut short.
    assert!(matches!(
        with_count(2).unwrap_err(),
        EnvelopeError::TrailingBytes(_)
    ));
    assert!(matches!(
        with_count(4).unwrap_err(),
        EnvelopeError::Truncated {
            field: "sender length",
            ..
        }
    ));
    // A count of four billion fails as soon as the bytes run out: no loop over the claim.
    assert!(matches!(
        with_count(u32::MAX).unwrap_err(),
        EnvelopeError::Truncated { .. }
    ));
    assert_eq!(with_count(3), Ok(3));
}

#[test]
fn a_bad_last_record_refuses_the_whole_envelope() {
    let mut writer = EnvelopeWriter::new(InstanceId(1), "t");
    writer.push(None, b"fine");
    writer.push(None, b"fine too");
    writer.push(Some(&"s".repeat(33)), b"sender too long");
    assert_eq!(
        Envelope::decode(&writer.finish(), &limits()).unwrap_err(),
        EnvelopeError::SenderTooLong { len: 33, limit: 32 }
    );
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
        if decodes_to_itself(&bytes, &format!("round {round}")) {
            accepted += 1;
        }
    }
    assert!(
        accepted > 0,
        "the fuzz never produced a valid envelope: it tests nothing"
    );
}

/// Decodes `bytes` (which must not panic); if accepted, checks that re-encoding gives `bytes`
/// back. Returns whether it was accepted.
fn decodes_to_itself(bytes: &[u8], what: &str) -> bool {
    let Ok(envelope) = Envelope::decode(bytes, &limits()) else {
        return false;
    };
    let records: Vec<Record<'_>> = envelope.records().collect();
    assert_eq!(records.len(), envelope.record_count(), "{what}");
    assert_eq!(
        encode(envelope.origin, envelope.topic, &records),
        bytes,
        "{what}: decode/encode is not the identity"
    );
    true
}

/// The `fuzz_envelope` target's regression set (`fuzz/regressions/`), replayed on stable: no
/// input panics, every accepted one re-encodes to itself, and the set holds valid envelopes as
/// well as invalid.
#[test]
fn fuzz_envelope_corpus_decodes_safely() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/fuzz_envelope");
    let mut accepted = 0;
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        total += 1;
        if decodes_to_itself(&bytes, &path.display().to_string()) {
            accepted += 1;
        }
    }
    assert!(total > 0, "no corpus under {}", dir.display());
    assert!(
        accepted > 0 && accepted < total,
        "{accepted} of {total} accepted: the corpus should hold both kinds"
    );
}
