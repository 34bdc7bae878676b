//! Loom models of fanout's concurrent core live in `tests/`; this library is empty.
//!
//! Run them with
//! `RUSTFLAGS="--cfg fanout_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom cargo test -p fanout-loom-tests --release`
//! (see `README.md` beside this crate for the models and their bounds).
