//! The TOML config loader never panics, and either loads a valid config or names the bad key
//! (or its position). The check is `tests/reference_model/config_check.rs`, shared with
//! `tests/model.rs`, which replays this target's corpus.

#![no_main]

#[path = "../../tests/reference_model/mod.rs"]
mod reference_model;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        if let Err(broken) = reference_model::config_check::check(source) {
            panic!("{broken}\n--- source ---\n{source}");
        }
    }
});
