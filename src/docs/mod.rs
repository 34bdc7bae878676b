//! Long-form documentation: the behaviour contract.
//!
//! These modules hold no code, only pages; their examples are compiled and run as doctests.
//!
//! - [`contract`]: what every provider promises, guarantee by guarantee (G1–G9), with the
//!   overflow policies, the stats and what distributed providers add. Tests and module docs
//!   link here by number.

pub mod contract;
