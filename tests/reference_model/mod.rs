//! The op-sequence harness, written once and used twice: by `tests/model.rs` (seeded random
//! sequences and the fuzz regression sets, under `cargo test` on stable) and by the
//! `fuzz_ops` and `fuzz_config` targets in `fuzz/` (which include this directory by path).
//!
//! - `reference`: the reference model, maps and queues with no concurrency.
//! - `harness`: bytes → scenario (config + operations), run on the engine and the model,
//!   compared after every step.
//! - `config_check`: what the TOML loader must do with any input.

#![allow(dead_code)]

pub mod config_check;
pub mod harness;
pub mod reference;
