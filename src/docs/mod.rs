//! Long-form documentation: the behaviour contract, the design, and a performance guide.
//!
//! These modules hold no code, only pages; their examples are compiled and run as doctests.
//!
//! - [`contract`]: what every provider promises, guarantee by guarantee (G1–G9), with the
//!   overflow policies, the stats and what distributed providers add. Tests and module docs
//!   link here by number.
//! - [`performance`]: for users. Which workloads fanout is fast at and which it is not, the
//!   handler form against the pull form, what to tune and how to size a deployment.
//! - [`design`]: internals. How the engine is built, who writes which shared structure, the
//!   mailbox's layout, what a broadcast costs per recipient, and the alternative that was
//!   measured and not taken. Not part of the stable API: any of it may change in any release.

pub mod contract;
pub mod design;
pub mod performance;
