//! The bounded hand-off from a subscription connection's reader task to the listener, for the
//! brokers whose client is the provider's own (NATS, Redis).
//!
//! The reader [`hold`](Handoff::hold)s each inbound message as it parses it, and hands what it
//! holds on at once when it has [`DELIVERED_MESSAGES`] or [`DELIVERED_BYTES`] of them, and
//! otherwise when it is about to wait for more bytes or to handle a frame that must come after
//! them: one channel send and one wakeup for everything one read brought. The listener
//! [`take`](Taker::take)s them one by one, in arrival order.
//!
//! At most [`INBOUND_BACKLOG`] messages (in batches, the one being taken included) and
//! [`INBOUND_BYTES`] of them (a larger batch alone) are ahead of the listener. When either
//! bound is reached the reader waits, so it stops reading the socket and the server holds the
//! backlog, up to its own per-client limit, past which it closes the connection: an outage
//! the bridge counts and reconnects.
//!
//! Each such wait is a *stall*, counted in the broker's [`Pressure`], which outlives the
//! connections: the bridge reports the stalls, and takes a connection lost during a stall,
//! or within [`STALL_MEMORY`] of one, for one the server closed because this instance was a
//! slow consumer (servers close those without saying so).

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use crate::sync::{lock, Arc, Mutex};

/// Most messages handed to the listener at once.
pub(crate) const DELIVERED_MESSAGES: usize = 256;

/// Bytes of messages after which the reader hands on what it holds, however many.
pub(crate) const DELIVERED_BYTES: usize = 1 << 20;

/// Messages ahead of the listener, in batches of at most [`DELIVERED_MESSAGES`], the one it is
/// taking from included.
pub(crate) const INBOUND_BACKLOG: usize = 4096;

/// Bytes of messages ahead of the listener; a single larger batch goes alone.
pub(crate) const INBOUND_BYTES: usize = 64 << 20;

/// How long after a stall a lost connection is still put down to it.
pub(crate) const STALL_MEMORY: Duration = Duration::from_secs(1);

/// Stalls of a broker's subscription connections: how many, and whether one is under way or
/// recent. Shared by the reader tasks (which write it) and the bridge (which reads it).
#[derive(Default)]
pub(crate) struct Pressure {
    stalls: AtomicU64,
    stalled: AtomicBool,
    /// When the last stall ended.
    last_ended: Mutex<Option<Instant>>,
}

impl Pressure {
    /// Stalls so far.
    pub(crate) fn stalls(&self) -> u64 {
        self.stalls.load(Relaxed)
    }

    /// Whether a reader is stalled now, or was within [`STALL_MEMORY`].
    pub(crate) fn stalled_recently(&self) -> bool {
        self.stalled.load(Relaxed)
            || lock(&self.last_ended).is_some_and(|ended| ended.elapsed() < STALL_MEMORY)
    }

    fn begin(&self) {
        self.stalls.fetch_add(1, Relaxed);
        self.stalled.store(true, Relaxed);
    }

    fn end(&self) {
        *lock(&self.last_ended) = Some(Instant::now());
        self.stalled.store(false, Relaxed);
    }
}

/// A stall under way, until dropped: the wait it covers may be cut short (a closed
/// connection aborts its reader task), and the stall still ends.
struct Stall<'a>(&'a Pressure);

impl Stall<'_> {
    fn begin(pressure: &Pressure) -> Stall<'_> {
        pressure.begin();
        Stall(pressure)
    }
}

impl Drop for Stall<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Messages handed on at once, in arrival order, holding their share of the byte budget until
/// the listener has taken the last of them.
struct Delivered<T> {
    items: std::vec::IntoIter<T>,
    budget: OwnedSemaphorePermit,
}

/// A connected hand-off: the reader's end and the listener's. Stalls are counted in
/// `pressure`.
pub(crate) fn handoff<T>(pressure: Arc<Pressure>) -> (Handoff<T>, Taker<T>) {
    let (sender, receiver) = mpsc::channel(INBOUND_BACKLOG / DELIVERED_MESSAGES - 1);
    let backlog = Arc::new(Semaphore::new(INBOUND_BYTES));
    let taker = Taker {
        receiver,
        backlog: Arc::clone(&backlog),
        taking: None,
    };
    let handoff = Handoff {
        sender,
        held: Vec::new(),
        held_bytes: 0,
        backlog,
        pressure,
    };
    (handoff, taker)
}

/// The reader's end.
pub(crate) struct Handoff<T> {
    sender: mpsc::Sender<Delivered<T>>,
    /// Messages parsed and not yet handed on, in arrival order, and their bytes.
    held: Vec<T>,
    held_bytes: usize,
    /// Bytes handed on and not yet taken, at most [`INBOUND_BYTES`].
    backlog: Arc<Semaphore>,
    pressure: Arc<Pressure>,
}

/// Another reader's end into the same listener (a connection per cluster node): its own
/// held messages, the same channel and budget.
impl<T> Clone for Handoff<T> {
    fn clone(&self) -> Self {
        Handoff {
            sender: self.sender.clone(),
            held: Vec::new(),
            held_bytes: 0,
            backlog: Arc::clone(&self.backlog),
            pressure: Arc::clone(&self.pressure),
        }
    }
}

impl<T> Handoff<T> {
    /// Keeps `item`, of `bytes`, and hands on what is held once that reaches
    /// [`DELIVERED_MESSAGES`] or [`DELIVERED_BYTES`]. Fails once the listener has gone.
    pub(crate) async fn hold(&mut self, item: T, bytes: usize) -> Result<(), String> {
        self.held_bytes += bytes;
        self.held.push(item);
        if self.held.len() >= DELIVERED_MESSAGES || self.held_bytes >= DELIVERED_BYTES {
            self.hand_on().await?;
        }
        Ok(())
    }

    /// Hands on what is held, once its bytes fit the budget (a batch larger than all of it
    /// waits for all of it). Fails once the listener has gone.
    pub(crate) async fn hand_on(&mut self) -> Result<(), String> {
        if self.held.is_empty() {
            return Ok(());
        }
        let bytes =
            u32::try_from(std::mem::take(&mut self.held_bytes).min(INBOUND_BYTES)).unwrap_or(u32::MAX);
        let gone = || "the listener has gone".to_string();
        let (budget, slot) = match (
            Arc::clone(&self.backlog).try_acquire_many_owned(bytes),
            self.sender.try_reserve(),
        ) {
            (Ok(budget), Ok(slot)) => (budget, slot),
            (_, Err(mpsc::error::TrySendError::Closed(()))) => return Err(gone()),
            (budget, _) => {
                // The listener is a backlog behind: wait for it, not reading meanwhile.
                let stall = Stall::begin(&self.pressure);
                let waited = async {
                    let budget = match budget {
                        Ok(budget) => budget,
                        // Never closed: the semaphore lives as long as this end.
                        Err(_) => Arc::clone(&self.backlog)
                            .acquire_many_owned(bytes)
                            .await
                            .map_err(|_| "the backlog budget closed".to_string())?,
                    };
                    let slot = self.sender.reserve().await.map_err(|_| gone())?;
                    Ok::<_, String>((budget, slot))
                }
                .await;
                drop(stall);
                waited?
            }
        };
        // The next batch is likely the size of this one.
        let next = Vec::with_capacity(self.held.len());
        slot.send(Delivered {
            items: std::mem::replace(&mut self.held, next).into_iter(),
            budget,
        });
        Ok(())
    }
}

/// The listener's end.
pub(crate) struct Taker<T> {
    receiver: mpsc::Receiver<Delivered<T>>,
    /// The reader's budget of bytes ahead of the listener, read to tell how far behind it is.
    backlog: Arc<Semaphore>,
    /// The batch being taken from; dropped, and its budget given back, once the one after its
    /// last is asked for.
    taking: Option<Delivered<T>>,
}

impl<T> Taker<T> {
    /// Bytes of the messages handed on after the batch being taken from: how far the listener
    /// is behind the readers.
    pub(crate) fn behind(&self) -> usize {
        let taking = self.taking.as_ref().map_or(0, |batch| batch.budget.num_permits());
        INBOUND_BYTES
            .saturating_sub(self.backlog.available_permits())
            .saturating_sub(taking)
    }

    /// The next message; `None` once the reader has ended and everything is taken.
    /// Cancel-safe: nothing is taken before the one wait, on the channel.
    pub(crate) async fn take(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.taking.as_mut().and_then(|batch| batch.items.next()) {
                return Some(item);
            }
            // The batch is taken: its budget goes back before the wait for the next.
            self.taking = None;
            self.taking = Some(self.receiver.recv().await?);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_stall_cut_short_still_ends() {
        let pressure = Arc::new(Pressure::default());
        let (mut handoff, _taker) = handoff::<u32>(Arc::clone(&pressure));
        // The whole byte budget, handed on at once and never taken.
        handoff.hold(1, INBOUND_BYTES).await.unwrap();
        handoff.hold(2, 1).await.unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(50), handoff.hand_on()).await;
        assert!(cut.is_err(), "the hand-off did not wait: {cut:?}");
        assert_eq!(pressure.stalls(), 1);
        assert!(!pressure.stalled.load(Relaxed), "the stall outlived its wait");
    }
}
