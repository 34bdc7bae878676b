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
//! Beside the switch, three small pieces built on it in both builds: a wait that spins then
//! yields (`backoff.rs`), a prefetch for writing (`prefetch.rs`) and a lock that tolerates
//! poisoning (`lock.rs`). The structures built from these primitives are in `crate::concurrent`.

#[cfg(not(fanout_loom))]
mod std;
#[cfg(not(fanout_loom))]
pub(crate) use self::std::*;

#[cfg(fanout_loom)]
mod mocked;
#[cfg(fanout_loom)]
pub(crate) use self::mocked::*;

mod backoff;
mod lock;
mod prefetch;

pub(crate) use backoff::SpinThenYield;
pub(crate) use lock::lock;
pub(crate) use prefetch::prefetch_for_write;
