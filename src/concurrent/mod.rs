//! The concurrent structures the engine is built from, made of [`crate::sync`]'s primitives in
//! both builds, so the code loom checks is the code that runs.
//!
//! - [`BoundedQueue`]: a mailbox's queue, bounded and lock-free, whose memory follows what it
//!   holds.
//! - [`Shared`] / [`Prepaid`]: a broadcast's message, its references paid for in bulk.
//! - [`StartGate`]: a handler invocation's start, ordered against a close.
//! - [`WaitList`]: the `block` policy's room signal.

mod bounded_queue;
mod shared;
mod start_gate;
mod wait_list;

#[cfg(not(fanout_loom))]
pub(crate) use bounded_queue::{companions_fit, BoundedQueue, Claimed};
/// Under loom the queue is public (through `fanout::loom_internals`) so that
/// `loom-tests/tests/queue.rs` can model it on its own.
#[cfg(fanout_loom)]
pub use bounded_queue::{BoundedQueue, Claimed, PointerItem};
pub(crate) use shared::{Prepaid, Shared};
/// Public under loom, as the queue, for `loom-tests/tests/start_gate.rs`.
#[cfg(fanout_loom)]
pub use start_gate::StartGate;
#[cfg(not(fanout_loom))]
pub(crate) use start_gate::StartGate;
pub(crate) use wait_list::WaitList;
