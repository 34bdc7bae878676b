//! The NATS protocol parser never panics on any bytes, parses the same whatever the reads,
//! buffers at most a control line and a payload at their limits, and round-trips messages
//! (`fanout::nats::check_parser`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fanout::nats::check_parser(data));
