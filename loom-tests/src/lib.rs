//! Loom models of fanout's concurrent core live in `tests/`; this library is empty.
//!
//! Run them with
//! `RUSTFLAGS="--cfg fanout_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p fanout-loom-tests --release`.
