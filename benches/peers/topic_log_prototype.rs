//! A measurement prototype, not a peer and not the engine: the per-topic log with per-session
//! cursors proposed in `docs/design-topic-log.md`, reduced to what the `end_to_end` and
//! `liveview` scenarios exercise, to learn the design's ceiling on this machine before the
//! engine is rebuilt on it. Runs only with `FANOUT_BENCH_PROTOTYPE=1`.
//!
//! What it has: a broadcast appends once to its topic's ring under the topic's append lock and
//! takes a global sequence number; each session reads its topics' rings at its own cursors
//! and, on several topics, delivers the ready head with the smallest global sequence (G4's
//! merge); a session with nothing to read lists itself on each of its topics' waiter lists,
//! which the next append empties and wakes. Each delivery hands the consumer an owned
//! message (one reference-count increment and decrement, as the engine's `recv` does) or,
//! with `FANOUT_PROTOTYPE_LEND=1`, a borrow for the duration of the read (an `arc-swap`
//! guard: an uncontended locked write to the reading thread's own debt slot, and no write to
//! the message), which is what a lending receive or a handler taking `&Message` could do; with
//! `FANOUT_PROTOTYPE_LEND=stamp`, no reference at all (the ceiling of free reclamation).
//! `FANOUT_PROTOTYPE_WAKE=yield` makes a reader that finds nothing yield once before it parks
//! (fewer wakes per burst, at one extra poll per park).
//!
//! What it leaves out (so its numbers are a ceiling, not a prediction): overflow policies
//! (a lapped reader skips ahead, i.e. `drop_oldest` without the count), unsubscribe,
//! statistics, the per-session bound across topics, and any loom model.
//!
//! Slots are seqlocks: for the message at position `p`, a slot's stamp is `2p + 1` while it
//! is written and `2p + 2` once it is readable. A reader accepts the value only if the stamp is
//! `2p + 2` before and after it loaded the value.

use std::future::poll_fn;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use arc_swap::ArcSwapOption;
use atomic_waker::AtomicWaker;
use bytes::Bytes;

use super::{topic_name, Layout, Peer, Sink};

struct Entry {
    seq: u64,
    #[allow(dead_code)] // read by nobody: the scenarios count messages, as every peer's do
    payload: Bytes,
}

struct Slot {
    stamp: AtomicU64,
    value: ArcSwapOption<Entry>,
    /// The entry's sequence, for `Reads::StampOnly`.
    seq: AtomicU64,
}

/// How a reader takes a message (`FANOUT_PROTOTYPE_LEND`: unset, `1`, or `stamp`).
#[derive(Clone, Copy, PartialEq)]
enum Reads {
    /// An owned reference: a count increment, and a decrement when the consumer is done.
    Owned,
    /// A borrow for the duration of the read: an `arc-swap` guard.
    Borrowed,
    /// No reference at all, only the slot's stamp and sequence: the cost of a borrowed read
    /// whose reclamation is free (an epoch pinned once per batch comes close). A ceiling, not
    /// something a real reader could do with the payload.
    StampOnly,
}

/// A parked session, as listed on its topics' waiter lists.
struct Wake {
    waker: AtomicWaker,
    /// One flag per topic of the session: listed on that topic's waiter list.
    listed: Box<[AtomicBool]>,
}

struct TopicLog {
    slots: Box<[Slot]>,
    mask: u64,
    /// Next position to write; under the append lock.
    append: Mutex<u64>,
    waiters: Mutex<Vec<(Arc<Wake>, usize)>>,
    has_waiters: AtomicBool,
    subscribers: AtomicU64,
    reads: Reads,
}

enum Read {
    Ready(u64),
    NotYet,
    Lapped,
}

impl TopicLog {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.next_power_of_two();
        Self {
            slots: (0..capacity)
                .map(|_| Slot {
                    stamp: AtomicU64::new(0),
                    value: ArcSwapOption::empty(),
                    seq: AtomicU64::new(0),
                })
                .collect(),
            mask: capacity as u64 - 1,
            append: Mutex::new(0),
            waiters: Mutex::new(Vec::new()),
            has_waiters: AtomicBool::new(false),
            subscribers: AtomicU64::new(0),
            reads: match std::env::var("FANOUT_PROTOTYPE_LEND").as_deref() {
                Err(_) => Reads::Owned,
                Ok("stamp") => Reads::StampOnly,
                Ok(_) => Reads::Borrowed,
            },
        }
    }

    /// Appends `payload` with the next global sequence number, taken under the append lock so
    /// that each log is sorted by sequence.
    fn append(&self, sequence: &AtomicU64, payload: Bytes) {
        {
            let mut next = self.append.lock().unwrap();
            let entry = Arc::new(Entry {
                seq: sequence.fetch_add(1, Ordering::Relaxed),
                payload,
            });
            let p = *next;
            let slot = &self.slots[(p & self.mask) as usize];
            slot.stamp.store(2 * p + 1, Ordering::Relaxed);
            fence(Ordering::Release);
            slot.seq.store(entry.seq, Ordering::Relaxed);
            slot.value.store(Some(entry));
            slot.stamp.store(2 * p + 2, Ordering::Release);
            *next = p + 1;
        }
        // Pairs with the fence in `park`: a reader either sees this slot or is listed here.
        fence(Ordering::SeqCst);
        if self.has_waiters.load(Ordering::Relaxed) {
            let woken = {
                let mut waiters = self.waiters.lock().unwrap();
                self.has_waiters.store(false, Ordering::Relaxed);
                std::mem::take(&mut *waiters)
            };
            for (wake, topic) in woken {
                wake.listed[topic].store(false, Ordering::Relaxed);
                wake.waker.wake();
            }
        }
    }

    fn read(&self, p: u64) -> Read {
        let slot = &self.slots[(p & self.mask) as usize];
        let before = slot.stamp.load(Ordering::Acquire);
        if before < 2 * p + 2 {
            return Read::NotYet;
        }
        if before > 2 * p + 2 {
            return Read::Lapped;
        }
        let seq = match self.reads {
            Reads::Borrowed => slot.value.load().as_ref().map(|entry| entry.seq),
            Reads::Owned => {
                let owned = slot.value.load_full();
                owned.map(|entry| std::hint::black_box(entry).seq)
            }
            Reads::StampOnly => Some(slot.seq.load(Ordering::Relaxed)),
        };
        fence(Ordering::Acquire);
        match seq {
            Some(seq) if slot.stamp.load(Ordering::Relaxed) == before => Read::Ready(seq),
            _ => Read::Lapped,
        }
    }

    /// The oldest position still readable once a reader has been lapped.
    fn oldest(&self) -> u64 {
        let next = *self.append.lock().unwrap();
        next.saturating_sub(self.mask + 1)
    }

    fn park(&self, wake: &Arc<Wake>, topic: usize) {
        if !wake.listed[topic].swap(true, Ordering::Relaxed) {
            let mut waiters = self.waiters.lock().unwrap();
            waiters.push((Arc::clone(wake), topic));
            self.has_waiters.store(true, Ordering::Relaxed);
        }
    }

    fn wake_all(&self) {
        for (wake, _) in std::mem::take(&mut *self.waiters.lock().unwrap()) {
            wake.waker.wake();
        }
    }
}

/// One session's view: its topics' logs and a cursor in each.
struct Reader {
    logs: Vec<Arc<TopicLog>>,
    cursors: Vec<u64>,
    wake: Arc<Wake>,
}

impl Reader {
    /// The ready head with the smallest global sequence, advancing that cursor.
    ///
    /// G4 for one publisher across topics: a scan can find topic `a` empty, then the publisher
    /// appends A to `a` and B to `b`, then the scan finds B. Having loaded B (`Acquire` on its
    /// stamp), A's slot is visible, so scanning again finds A with a smaller sequence; each
    /// re-pick lowers the candidate, so the loop ends. One log needs no second scan.
    fn next(&mut self) -> Option<u64> {
        let mut best = self.smallest_head()?;
        if self.logs.len() > 1 {
            while let Some(again) = self.smallest_head() {
                if again.1 >= best.1 {
                    break;
                }
                best = again;
            }
        }
        let (i, entry) = best;
        self.cursors[i] += 1;
        Some(entry)
    }

    /// Reads every message ready now; returns how many.
    fn drain(&mut self) -> u64 {
        let mut n = 0;
        while self.next().is_some() {
            n += 1;
        }
        n
    }

    /// The ready head with the smallest global sequence: (log index, sequence).
    fn smallest_head(&mut self) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for (i, log) in self.logs.iter().enumerate() {
            let entry = loop {
                match log.read(self.cursors[i]) {
                    Read::Ready(entry) => break Some(entry),
                    Read::NotYet => break None,
                    Read::Lapped => self.cursors[i] = log.oldest().max(self.cursors[i] + 1),
                }
            };
            if let Some(entry) = entry {
                if best.is_none_or(|(_, b)| entry < b) {
                    best = Some((i, entry));
                }
            }
        }
        best
    }
}

pub struct TopicLogPrototype {
    logs: Vec<Arc<TopicLog>>,
    sequence: AtomicU64,
    closed: Arc<AtomicBool>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    names: std::collections::HashMap<String, usize>,
}

impl Peer for TopicLogPrototype {
    const NAME: &'static str = "prototype-topic-log";

    async fn build(layout: &Layout, sink: Arc<Sink>) -> Self {
        let logs: Vec<Arc<TopicLog>> = (0..layout.topics)
            .map(|_| Arc::new(TopicLog::new(layout.capacity)))
            .collect();
        let closed = Arc::new(AtomicBool::new(false));
        let yield_first = std::env::var("FANOUT_PROTOTYPE_WAKE").as_deref() == Ok("yield");
        let mut consumers = Vec::with_capacity(layout.sessions);
        for s in 0..layout.sessions {
            let topics = layout.topics_of(s);
            let mut reader = Reader {
                logs: topics.iter().map(|&t| Arc::clone(&logs[t])).collect(),
                cursors: vec![0; topics.len()],
                wake: Arc::new(Wake {
                    waker: AtomicWaker::new(),
                    listed: topics.iter().map(|_| AtomicBool::new(false)).collect(),
                }),
            };
            for log in &reader.logs {
                log.subscribers.fetch_add(1, Ordering::Relaxed);
            }
            let (sink, closed) = (Arc::clone(&sink), Arc::clone(&closed));
            consumers.push(tokio::spawn(async move {
                let mut yielded = false;
                loop {
                    let n = poll_fn(|cx| {
                        let mut n = reader.drain();
                        if n > 0 {
                            yielded = false;
                            return Poll::Ready(Some(n));
                        }
                        if closed.load(Ordering::Relaxed) {
                            return Poll::Ready(None);
                        }
                        // `FANOUT_PROTOTYPE_WAKE=yield`: a reader that finds nothing goes to
                        // the back of the run queue once before it parks, so a burst of appends
                        // finds it not parked (no wake) and it reads more per poll.
                        if yield_first && !yielded {
                            yielded = true;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        yielded = false;
                        reader.wake.waker.register(cx.waker());
                        for (t, log) in reader.logs.iter().enumerate() {
                            log.park(&reader.wake, t);
                        }
                        // Pairs with the fence in `append`.
                        fence(Ordering::SeqCst);
                        n += reader.drain();
                        if n > 0 {
                            Poll::Ready(Some(n))
                        } else if closed.load(Ordering::SeqCst) {
                            Poll::Ready(None)
                        } else {
                            Poll::Pending
                        }
                    })
                    .await;
                    match n {
                        Some(n) => sink.add(s, n),
                        None => return,
                    }
                }
            }));
        }
        Self {
            names: (0..logs.len()).map(|t| (topic_name(t), t)).collect(),
            logs,
            sequence: AtomicU64::new(0),
            closed,
            consumers,
        }
    }

    async fn publish(&self, topic: usize, payload: Bytes) {
        self.logs[topic].append(&self.sequence, payload);
    }

    async fn subscriber_count(&self, name: &str) -> usize {
        self.names
            .get(name)
            .map_or(0, |&t| self.logs[t].subscribers.load(Ordering::Relaxed) as usize)
    }

    async fn churn(&self, topic: usize, _id: usize) {
        // Subscribing is taking a cursor at the log's head; unsubscribing is dropping it.
        let log = &self.logs[topic];
        log.subscribers.fetch_add(1, Ordering::Relaxed);
        let _cursor = *log.append.lock().unwrap();
        log.subscribers.fetch_sub(1, Ordering::Relaxed);
    }

    async fn shutdown(self) {
        self.closed.store(true, Ordering::SeqCst);
        for log in &self.logs {
            log.wake_all();
        }
        for c in self.consumers {
            let _ = c.await;
        }
    }
}
