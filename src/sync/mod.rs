//! The one switch between real and `loom` synchronisation primitives.
//!
//! Library code takes atomics, `Arc`, `Mutex`, the copy-on-write snapshot cell, the lock-free
//! queues, the concurrent map, wakers and thread-locals from here and never from `std::sync`,
//! `crossbeam`, `papaya`, `arc_swap` or `atomic_waker` directly, so the concurrent core can be
//! model-checked: under `--cfg fanout_loom` these names resolve to loom's types and to
//! loom-visible stand-ins with the same internal API (`mocked.rs`). In the normal build they are
//! the real types (`std.rs`), re-exported or wrapped in `#[inline]` forwarding methods, so the
//! switch costs nothing.
//!
//! The stand-ins are coarser than the real structures (a loom `Mutex` around a `VecDeque` or a
//! `HashMap`): each operation is one atomic step, which is the linearisable behaviour the real
//! lock-free types promise. What loom checks is the engine's use of them: the orderings, fences
//! and wake-ups of the code built on top. The real `ArcSwap`, `SegQueue` and `papaya` map stay
//! covered by the stress tests.
//!
//! [`WaitList`] (the `block` policy's room signal), [`BoundedQueue`] (a mailbox's queue),
//! [`StartGate`] (a handler invocation's start against a close), [`Shared`] / [`Prepaid`] (a
//! broadcast's message, its references paid for in bulk) and the pieces beside them (a wait
//! that spins then yields, a prefetch for writing, a lock that tolerates poisoning) are built
//! from these primitives in both builds, so the code loom checks is the code that runs.

#[cfg(not(fanout_loom))]
mod std;
#[cfg(not(fanout_loom))]
pub(crate) use self::std::*;

#[cfg(fanout_loom)]
mod mocked;
#[cfg(fanout_loom)]
pub(crate) use self::mocked::*;

mod backoff;
mod bounded_queue;
mod lock;
mod prefetch;
mod shared;
mod start_gate;
mod wait_list;

pub(crate) use backoff::SpinThenYield;
pub(crate) use lock::lock;
pub(crate) use prefetch::prefetch_for_write;

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
