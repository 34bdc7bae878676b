//! A session's bounded mailbox: many broadcasters push, one consumer pops.
//!
//! # Invariants
//!
//! - `queue` never holds more than its capacity ([G7]). Producers and the consumer use it without
//!   locks (`crate::concurrent::BoundedQueue`: a segmented lock-free queue bounded by its positions,
//!   whose memory follows its largest backlog, so a keeping-up session cycles through two small
//!   blocks, not a buffer of `capacity` slots). Its pop may answer "empty" while a push that
//!   claimed an earlier place is still writing it, or after reading a head another pop has
//!   since moved. Every protocol below rests on this: whatever place a pop finds unwritten, the
//!   push that writes it (now or later) issues its own `SeqCst` fence after writing and then
//!   checks `parked` and the session's state. Keep that on every push path, including a
//!   broadcast's claimed chunk (`engine::claimed`), whose one fence follows all its writes.
//!   (`try_recv` uses `pop_settled`, which waits for such a write instead of answering
//!   "empty".)
//! - `parked` is `true` only while the consumer is about to sleep or sleeping. Producers wake the
//!   consumer only if they see it set, so a busy consumer costs a producer one load, and a batch of
//!   pushes to a sleeping consumer costs one wake.
//! - What a push reads besides its claim lives on the queue's producers' line, where it claims
//!   ([`PushLine`]): `parked`, the waker and the session's state. So a push touches two lines,
//!   that one and its slot's. The consumer writes the line only when it runs dry (`parked`,
//!   the waker), and the state is written by the close (and rewritten unchanged by
//!   a retire's wait for an invocation's start); the consumer's reads of the
//!   state miss on it, as they did on the state's own line, which broadcasters fetched for
//!   writing. (A consumer going to sleep takes the line from the producers, who would have
//!   missed on `parked` anyway.)
//!   What the consumer reads or writes on every delivery besides the head lives on the
//!   queue's consumers' line ([`PopLine`]): `missed`, `stalled`, `blocked` and the handler
//!   form's start gate, so a delivery touches that line and its slot's.
//! - No lost wake-up. The consumer writes `parked = true`, issues a `SeqCst` fence, then looks at
//!   the queue again; a producer pushes, issues a `SeqCst` fence, then reads `parked`. The two
//!   fences order the pairs (store parked → load queue) and (store queue → load parked), so at
//!   least one side sees the other's write: either the consumer finds the message, or the
//!   producer sees `parked` and wakes it.
//! - `blocked` counts broadcasters waiting for room (`block` policy). The consumer, after a pop,
//!   fences and reads it; a waiter increments it, issues a `SeqCst` fence, then retries its push
//!   before sleeping on `room`. Same argument: the waiter either finds the room or is
//!   notified. The waiter starts listening on `room` before the retry, so a notification between
//!   the retry and the sleep is not lost. (The fence is needed: a `SeqCst` increment orders
//!   nothing for the retry's loads of the queue, which a full queue answers without a `SeqCst`
//!   operation of its own. The loom model `blocked_broadcast_released_by_pop` found the missing
//!   fence.)
//! - `stalled` is advisory: set by a broadcaster whose `block_once` wait for this mailbox timed
//!   out, cleared by the consumer's next pop. While it is set, broadcasts under `block_once`
//!   apply the fallback at once instead of waiting again (the policy's definition). A race
//!   costs one extra wait or one fallback without a wait, both within `block_once`'s
//!   definition of a session that has "taken nothing since its wait timed out", up to the pop
//!   in flight.
//! - Nothing is left behind in a closed mailbox once the closer and every broadcaster racing
//!   it have returned: the closer (an unsubscribe, a retire, or the broadcaster that
//!   disconnects the session) drains after its close; every push path ends in a `SeqCst`
//!   fence, after which the broadcaster checks the session's state and drains a mailbox it
//!   finds closed (the pairing is spelled out at `Session::discard_if_closed`).
//! - `missed` counts evictions (`drop_oldest`) not yet reported to the consumer; the consumer takes
//!   the count with its next pop. An evicting producer adds to it before it pushes the message
//!   that replaces the evicted one, so that message carries the count.
//!
//! [G7]: crate::docs::contract#g7-bounded-memory

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::concurrent::{BoundedQueue, Claimed, Shared, StartGate, WaitList};
use crate::message::Broadcast;
use crate::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use crate::sync::{AtomicWaker, SpinThenYield};

pub(crate) struct Mailbox {
    /// Queued broadcasts. Pushed by broadcasters (and by the `drop_oldest` eviction, which also
    /// pops), popped by the consumer.
    queue: BoundedQueue<Shared<Broadcast>, PushLine, PopLine>,
    /// Notified by the consumer after a pop while `blocked > 0`, and on close.
    room: WaitList,
}

/// What every push reads besides its claim, kept on the queue's producers' line (its
/// companion), so that a push touches that line and its slot's, and no other: the consumer's
/// sleep, and the session's state. The consumer writes the line only when it runs out of
/// messages (`parked`, the waker); the state is written by the close (and rewritten unchanged
/// by a retire's wait at the start gate, see `Session::wait_for_invocation_start`).
pub(crate) struct PushLine {
    /// Set by the consumer before it sleeps; cleared by the producer that wakes it.
    parked: AtomicBool,
    /// `Session::state`: see there. Here because a broadcast reads it before each push.
    session_state: AtomicU8,
    /// The sleeping consumer's waker. Registered before `parked` is set.
    waker: AtomicWaker,
}

/// What the consumer reads or writes on every delivery besides the head, kept on the queue's
/// consumers' line (its consumer companion), so that a delivery touches that line and its
/// slot's, and no other (on a 10,000-session workload, where each wake finds its session's
/// lines cold, a line fewer per wake). A push that finds room does not touch the line. A
/// broadcaster does when the mailbox is full: it loads the head, then writes `missed` to evict
/// (popping on this line), marks `stalled` once a `block_once` wait times out, or counts
/// itself in `blocked` on each turn of a `block` wait. So while `block` waiters queue for a
/// full mailbox, their counts contend with its consumer's pops, on the one line: the price of
/// the policy that makes broadcasters wait for a slow consumer. The producer that takes a
/// recycled block for its queue (one push in eight) reads the free list here too, and a closer
/// reads the start gate once.
pub(crate) struct PopLine {
    /// Evictions since the consumer's last pop. Incremented by evicting producers, taken by the
    /// consumer.
    missed: AtomicU64,
    /// Broadcasters currently waiting for room (`block` policy).
    blocked: AtomicUsize,
    /// See "stalled" in the module docs. `Relaxed`: it orders nothing.
    stalled: AtomicBool,
    /// Whether any topic may use the `block` policy; if not, pops skip the fence and the check
    /// of `blocked`.
    signals_room: bool,
    /// Handler form: the session's task announces each invocation's start here
    /// (`Session::begin_invocation`); its two writes per delivery stay on the line its pops
    /// already own.
    invocations: StartGate,
}

#[cfg(not(fanout_loom))]
const _: () = assert!(
    crate::concurrent::companions_fit::<PushLine, PopLine>(),
    "what a push reads shares the producers' line, and what a delivery reads the consumers'"
);

/// Why a push did not queue the message; the message is handed back.
pub(crate) struct Full(pub(crate) Shared<Broadcast>);

impl Mailbox {
    pub(crate) fn new(capacity: usize, signals_room: bool, session_state: u8) -> Self {
        Self {
            queue: BoundedQueue::with_companions(
                capacity,
                PushLine {
                    parked: AtomicBool::new(false),
                    session_state: AtomicU8::new(session_state),
                    waker: AtomicWaker::new(),
                },
                PopLine {
                    missed: AtomicU64::new(0),
                    blocked: AtomicUsize::new(0),
                    stalled: AtomicBool::new(false),
                    signals_room,
                    invocations: StartGate::new(),
                },
            ),
            room: WaitList::new(),
        }
    }

    /// The consumer's sleep and the session's state, kept on the queue's producers' line.
    #[inline(always)]
    fn push_line(&self) -> &PushLine {
        self.queue.companion()
    }

    /// What the consumer reads or writes on every delivery besides the head, kept on the
    /// queue's consumers' line.
    #[inline(always)]
    fn pop_line(&self) -> &PopLine {
        self.queue.consumer_companion()
    }

    /// The handler form's start gate (`Session::begin_invocation`).
    #[inline(always)]
    pub(crate) fn invocations(&self) -> &StartGate {
        &self.pop_line().invocations
    }

    /// The session's state word (`Session::state`), kept on the queue's producers' line.
    #[inline(always)]
    pub(crate) fn session_state(&self) -> &AtomicU8 {
        &self.push_line().session_state
    }

    pub(crate) fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Messages held, counting a push or pop in progress (see `BoundedQueue::len`).
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues `message` if the mailbox holds fewer than `limit` messages (and is not full).
    /// A successful push is followed by a `SeqCst` fence before this returns (in
    /// `wake_consumer`), as [`push_evicting`](Self::push_evicting)'s; the session's
    /// `discard_if_closed` relies on it.
    #[inline]
    pub(crate) fn try_push(&self, message: Shared<Broadcast>, limit: usize) -> Result<(), Full> {
        self.queue.push_within(message, limit).map_err(Full)?;
        self.wake_consumer();
        Ok(())
    }

    /// Queues `message`, evicting the oldest queued messages while the mailbox holds `limit` or
    /// more. Returns how many were evicted (the caller counts them as `drop_oldest`).
    ///
    /// Each eviction is added to `missed` before the message is pushed: the push releases it to
    /// the consumer's pop, so the consumer learns of the evictions with the message that
    /// follows them, never after it.
    pub(crate) fn push_evicting(&self, message: Shared<Broadcast>, limit: usize) -> u64 {
        let mut message = message;
        let mut evicted = 0;
        let mut backoff = SpinThenYield::new();
        loop {
            match self.queue.push_within(message, limit) {
                Ok(()) => break,
                Err(back) => message = back,
            }
            if self.queue.pop().is_some() {
                evicted += 1;
                self.pop_line().missed.fetch_add(1, Ordering::Relaxed);
                backoff = SpinThenYield::new();
            } else {
                // Full, yet nothing to evict: a push is between claiming the head's place and
                // writing it, or this thread's load of the head does not show a finished pop
                // yet (see `BoundedQueue`). Wait for it; yield if the other thread was
                // preempted.
                backoff.wait();
            }
        }
        self.wake_consumer();
        if evicted > 0 {
            // A topic whose limit is below the capacity evicts down to its limit, which may be
            // room for a `block` topic's broadcaster waiting at a higher one.
            self.signal_room();
        }
        evicted
    }

    /// The first half of [`try_push`](Self::try_push), for a broadcast that claims places in
    /// several mailboxes before it writes them (`engine::fan_out`): claims a place for
    /// `message` if the mailbox holds fewer than `limit` messages. The caller publishes the
    /// claim, issues a `SeqCst` fence, then calls [`wake_if_parked`](Self::wake_if_parked) and
    /// checks the session's state, as `try_push` does; and waits for nothing while it holds
    /// the claim ("Claims" in `BoundedQueue`'s docs).
    #[inline]
    pub(crate) fn try_claim(&self, message: Shared<Broadcast>, limit: usize) -> Result<Claimed<'_>, Full> {
        self.queue.claim_within(message, limit).map_err(Full)
    }

    /// Starts loading what [`try_claim`](Self::try_claim) writes; a hint, see
    /// `crate::sync::prefetch_for_write`.
    #[inline(always)]
    pub(crate) fn prefetch_claim(&self) {
        self.queue.prefetch_claim();
    }

    /// Starts loading what the consumer's next pop reads and writes first; a hint, see
    /// `crate::sync::prefetch_for_write`.
    #[inline(always)]
    pub(crate) fn prefetch_pop(&self) {
        self.queue.prefetch_pop();
    }

    #[inline]
    fn wake_consumer(&self) {
        // Pairs with the fence in `poll_pop` ("No lost wake-up" above), and with the one in
        // `Session::discard_queued` ("Nothing is left behind in a closed mailbox"): the
        // caller's `discard_if_closed` relies on it. Keep it on every push path.
        fence(Ordering::SeqCst);
        self.wake_if_parked();
    }

    /// Wakes the consumer if it is parked. Only after a push and a `SeqCst` fence that follows
    /// it ("No lost wake-up" above).
    #[inline]
    pub(crate) fn wake_if_parked(&self) {
        let line = self.push_line();
        if line.parked.load(Ordering::Relaxed) && line.parked.swap(false, Ordering::AcqRel) {
            line.waker.wake();
        }
    }

    /// Pops the oldest message, with the evictions that preceded it.
    #[inline]
    pub(crate) fn pop(&self) -> Option<(Shared<Broadcast>, u64)> {
        self.queue.pop().map(|message| self.took(message))
    }

    /// [`pop`](Self::pop) that answers "empty" only if no broadcaster is still writing a
    /// message into the mailbox (it waits for that write instead): what `try_recv` promises,
    /// so a caller told that a broadcast was queued finds it.
    pub(crate) fn pop_settled(&self) -> Option<(Shared<Broadcast>, u64)> {
        self.queue.pop_settled().map(|message| self.took(message))
    }

    /// The consumer's side of a pop that took `message`.
    #[inline]
    fn took(&self, message: Shared<Broadcast>) -> (Shared<Broadcast>, u64) {
        let line = self.pop_line();
        let missed = if line.missed.load(Ordering::Relaxed) != 0 {
            line.missed.swap(0, Ordering::Relaxed)
        } else {
            0
        };
        if line.stalled.load(Ordering::Relaxed) {
            line.stalled.store(false, Ordering::Relaxed);
        }
        self.signal_room();
        (message, missed)
    }

    /// Tells broadcasters waiting for room (`block`) that a pop made some.
    #[inline]
    fn signal_room(&self) {
        let line = self.pop_line();
        if line.signals_room {
            // Pairs with the fence in `BlockedWaiter::register`.
            fence(Ordering::SeqCst);
            if line.blocked.load(Ordering::Relaxed) > 0 {
                self.room.notify_all();
            }
        }
    }

    /// Pops a message, or registers the consumer's waker and returns `Pending`. `is_closed` is
    /// checked after registering, so a close that races the sleep still wakes it.
    pub(crate) fn poll_pop(
        &self,
        cx: &mut Context<'_>,
        is_closed: impl Fn() -> bool,
    ) -> Poll<Option<(Shared<Broadcast>, u64)>> {
        if let Some(popped) = self.pop() {
            return Poll::Ready(Some(popped));
        }
        let line = self.push_line();
        line.waker.register(cx.waker());
        line.parked.store(true, Ordering::Relaxed);
        // Pairs with the fence in `wake_consumer`.
        fence(Ordering::SeqCst);
        if let Some(popped) = self.pop() {
            line.parked.store(false, Ordering::Relaxed);
            return Poll::Ready(Some(popped));
        }
        if is_closed() {
            line.parked.store(false, Ordering::Relaxed);
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// [`poll_pop`](Self::poll_pop) inside tokio's cooperative budget, as tokio's own channels
    /// receive: each message taken spends one unit of the task's budget, and a task that has
    /// spent it gets `Pending` (and is woken at once) so that a consumer whose mailbox never
    /// empties still lets the other tasks on its worker run. Outside a tokio runtime the budget
    /// is unlimited.
    pub(crate) fn poll_pop_cooperative(
        &self,
        cx: &mut Context<'_>,
        is_closed: impl Fn() -> bool,
    ) -> Poll<Option<(Shared<Broadcast>, u64)>> {
        let budget = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let popped = self.poll_pop(cx, is_closed);
        if popped.is_ready() {
            budget.made_progress();
        }
        popped
    }

    /// Records that a `block_once` wait for this mailbox timed out (see "stalled" above).
    pub(crate) fn mark_stalled(&self) {
        self.pop_line().stalled.store(true, Ordering::Relaxed);
    }

    /// Whether a `block_once` wait timed out and the consumer has taken nothing since.
    #[inline]
    pub(crate) fn is_stalled(&self) -> bool {
        self.pop_line().stalled.load(Ordering::Relaxed)
    }

    /// Wakes the consumer and every waiting broadcaster; called once the session is closed.
    pub(crate) fn wake_all(&self) {
        let line = self.push_line();
        line.parked.store(false, Ordering::Relaxed);
        line.waker.wake();
        self.room.notify_all();
    }

    /// Waits until a pop may have made room, or the session closes (the caller re-checks both).
    /// `give_up` bounds the wait.
    pub(crate) async fn wait_for_room<F: Future>(
        &self,
        message: Shared<Broadcast>,
        limit: usize,
        is_closed: impl Fn() -> bool,
        give_up: Pin<&mut F>,
    ) -> RoomOutcome {
        let mut message = message;
        let mut give_up = give_up;
        loop {
            let mut room = self.room.listen();
            // Registered until the end of this iteration, or until the broadcast is cancelled.
            let _waiting = BlockedWaiter::register(&self.pop_line().blocked);
            if is_closed() {
                return RoomOutcome::Closed;
            }
            match self.try_push(message, limit) {
                Ok(()) => return RoomOutcome::Queued,
                Err(Full(_)) if is_closed() => return RoomOutcome::Closed,
                Err(Full(back)) => message = back,
            }
            let timed_out = poll_fn(|cx| {
                if Pin::new(&mut room).poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                give_up.as_mut().poll(cx).map(|_| true)
            })
            .await;
            if timed_out {
                return RoomOutcome::TimedOut(message);
            }
        }
    }

    /// Takes every queued message (the session is closing); returns how many.
    pub(crate) fn drain(&self) -> u64 {
        let mut n = 0;
        while self.queue.pop().is_some() {
            n += 1;
        }
        n
    }
}

/// One broadcaster counted in `PopLine::blocked`; uncounted on drop, so a cancelled broadcast
/// leaves no stale count behind.
struct BlockedWaiter<'a>(&'a AtomicUsize);

impl<'a> BlockedWaiter<'a> {
    fn register(blocked: &'a AtomicUsize) -> Self {
        blocked.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence after the consumer's pop (see the module docs).
        fence(Ordering::SeqCst);
        BlockedWaiter(blocked)
    }
}

impl Drop for BlockedWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a wait for room ended.
pub(crate) enum RoomOutcome {
    Queued,
    Closed,
    TimedOut(Shared<Broadcast>),
}

/// Future returned by [`Mailbox::poll_pop`] adapters; kept here so the receiver and the handler
/// task share it.
pub(crate) struct Pop<'a, C: Fn() -> bool> {
    pub(crate) mailbox: &'a Mailbox,
    pub(crate) is_closed: C,
}

impl<C: Fn() -> bool> Future for Pop<'_, C> {
    type Output = Option<(Shared<Broadcast>, u64)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.mailbox.poll_pop_cooperative(cx, &self.is_closed)
    }
}
