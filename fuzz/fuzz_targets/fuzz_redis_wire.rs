//! The RESP parser never panics on any bytes, parses the same whatever the reads,
//! buffers at most a frame at its limits, and round-trips messages
//! (`fanout::redis::check_parser`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fanout::redis::check_parser(data));
