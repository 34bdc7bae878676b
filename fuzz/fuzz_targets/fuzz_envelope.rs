//! The broker envelope decoder never panics on any bytes, and what it accepts round-trips:
//! re-encoding the decoded origin, topic and records gives back exactly the input.

#![no_main]

use fanout::envelope::{Envelope, EnvelopeLimits, EnvelopeWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::decode(data, &EnvelopeLimits::default()) else {
        return;
    };
    assert!(envelope.record_count() >= 1, "an accepted envelope holds at least one record");
    let mut writer = EnvelopeWriter::new(envelope.origin, envelope.topic);
    for record in envelope.records() {
        writer.push(record.sender, record.payload);
    }
    assert_eq!(writer.record_count(), envelope.record_count());
    assert_eq!(writer.finish(), data, "accepted envelope does not re-encode to its input");
});
