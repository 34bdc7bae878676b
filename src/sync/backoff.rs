//! The wait of a thread for another's short step: spin, then yield.

use super::{spin_loop, yield_now};

/// Waits for another thread to finish a step of a few instructions: spins briefly, then
/// yields the thread, so a waiter on a thread that was preempted mid-step gives its core back
/// instead of spinning out its time slice. Under loom both are scheduling points.
pub(crate) struct SpinThenYield {
    spins: u32,
}

impl SpinThenYield {
    const SPINS: u32 = 64;

    pub(crate) fn new() -> Self {
        Self { spins: 0 }
    }

    pub(crate) fn wait(&mut self) {
        if self.spins < Self::SPINS {
            spin_loop();
            self.spins += 1;
        } else {
            yield_now();
        }
    }
}
