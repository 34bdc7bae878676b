//! The gate that orders a handler invocation's start against the session's close (G2 for the
//! handler form; `StartGate`, used by `Session::begin_invocation` and
//! `Session::wait_for_invocation_start`). The models hold the engine's protocol around it: the
//! starter is the session's task, announcing each invocation and checking the state; the
//! closer closes the state with a `SeqCst` compare-and-swap, writes it once more
//! (`wait_for_invocation_start`'s read-modify-write), then waits at the gate. Once the closer
//! returns, no invocation starts.
//!
//! The last model adds the session map: a session closed by someone else (a broadcast
//! disconnecting it, or its last topic unsubscribed) is retired, and `retire` waits at the gate
//! before it removes the session from the map, so an `unsubscribe_all` that no longer finds the
//! session has no start to wait for.

#![cfg(fanout_loom)]

mod common;

use common::Seen;
use fanout::loom_internals::StartGate;
use loom::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

const OPEN: u8 = 0;
const CLOSED: u8 = 1;

struct Session {
    state: AtomicU8,
    gate: StartGate,
    /// Invocations started; written by the starter between `begin` and `end`.
    started: AtomicUsize,
}

impl Session {
    fn new() -> Arc<Self> {
        Arc::new(Session {
            state: AtomicU8::new(OPEN),
            gate: StartGate::new(),
            started: AtomicUsize::new(0),
        })
    }

    /// The session's task: up to `deliveries` invocations, stopping at the first closed check.
    fn run(&self, deliveries: usize) {
        for _ in 0..deliveries {
            if !self.gate.begin(|| self.state.load(Ordering::SeqCst) == OPEN) {
                return;
            }
            self.started.fetch_add(1, Ordering::Relaxed);
            self.gate.end();
        }
    }

    fn close(&self) {
        let _ = self
            .state
            .compare_exchange(OPEN, CLOSED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// `unsubscribe_all`'s part: close, then wait for a start in progress; returns the
    /// invocations started by then.
    fn close_and_wait(&self) -> usize {
        self.close();
        self.wait();
        self.started.load(Ordering::Relaxed)
    }

    /// `Session::wait_for_invocation_start`, after a close by this thread or another.
    fn wait(&self) {
        self.state.fetch_or(0, Ordering::SeqCst);
        self.gate.wait_for_starts();
    }

    /// `Session::invocation_start_pending`: the wait's one non-blocking step.
    fn start_pending(&self) -> bool {
        self.state.fetch_or(0, Ordering::SeqCst);
        self.gate.start_in_progress()
    }

    /// Once every thread has been joined: nothing started after the closer returned, having
    /// seen `seen` invocations started. Records how many started.
    fn assert_none_started_after(&self, seen: usize, outcomes: &Seen) {
        let total = self.started.load(Ordering::Relaxed);
        assert_eq!(total, seen, "G2: an invocation started after the closer returned");
        outcomes.saw(["none started", "one started", "two started"][total]);
    }
}

/// Runs `session`'s task on a new loom thread, for up to `deliveries` invocations.
fn spawn_task(session: &Arc<Session>, deliveries: usize) -> thread::JoinHandle<()> {
    let session = Arc::clone(session);
    thread::spawn(move || session.run(deliveries))
}

/// The closer races a task delivering twice: nothing starts after the closer returns.
#[test]
fn no_invocation_starts_after_the_closer_returns() {
    static OUTCOMES: Seen = Seen::new();
    loom::model(|| {
        let session = Session::new();
        let task = spawn_task(&session, 2);
        let seen = session.close_and_wait();
        task.join().unwrap();
        session.assert_none_started_after(seen, &OUTCOMES);
    });
    OUTCOMES.assert_saw(&["none started", "one started", "two started"]);
}

/// Another thread closes the session first (a broadcast disconnecting it as a slow consumer),
/// and `unsubscribe_all`'s close finds it closed: its own write before the gate's fence is the
/// read-modify-write that changes nothing. (Without that write this model passes too: loom
/// orders the other thread's close before the fence by happens-before.)
#[test]
fn no_invocation_starts_after_a_closer_that_found_it_closed_returns() {
    static OUTCOMES: Seen = Seen::new();
    loom::model(|| {
        let session = Session::new();
        let task = spawn_task(&session, 1);
        let other = {
            let session = Arc::clone(&session);
            thread::spawn(move || session.close())
        };
        // Wait for the other thread's close, as `unsubscribe_all` would find it done.
        while session.state.load(Ordering::SeqCst) == OPEN {
            thread::yield_now();
        }
        let seen = session.close_and_wait();
        task.join().unwrap();
        other.join().unwrap();
        session.assert_none_started_after(seen, &OUTCOMES);
    });
    OUTCOMES.assert_saw(&["none started", "one started"]);
}

/// A broadcast disconnects the session (closes it) and the reaper retires it (one thread
/// here), racing the task and `unsubscribe_all`. The reaper asks the gate until no start is
/// in progress (yielding between asks; the reaper task yields, then pauses), then removes the session from
/// the map (a lock, as the map's removal is under the session's writer lock).
/// `unsubscribe_all` closes and waits only if it finds the session; if it finds none, the wait
/// was the reaper's. (Without the reaper's wait this model fails: the task checks the state
/// before the close, the reaper removes the session, `unsubscribe_all` finds nothing and
/// returns, and then the handler is called.)
///
/// When `unsubscribe_all` finds the session, it lets the reaper finish before its own close
/// and wait: two threads spinning on the one flag send loom's scheduler back and forth between
/// them without end. That branch's own wait is what the models above check.
#[test]
fn no_invocation_starts_after_unsubscribe_all_of_a_retired_session_returns() {
    static OUTCOMES: Seen = Seen::new();
    loom::model(|| {
        let session = Session::new();
        let in_map = Arc::new(Mutex::new(true));
        let task = spawn_task(&session, 1);
        let reaper = {
            let (session, in_map) = (Arc::clone(&session), Arc::clone(&in_map));
            thread::spawn(move || {
                session.close();
                while session.start_pending() {
                    thread::yield_now();
                }
                *in_map.lock().unwrap() = false;
            })
        };
        let found = *in_map.lock().unwrap();
        let seen = if found {
            reaper.join().unwrap();
            session.close_and_wait()
        } else {
            let seen = session.started.load(Ordering::Relaxed);
            reaper.join().unwrap();
            seen
        };
        task.join().unwrap();
        session.assert_none_started_after(seen, &OUTCOMES);
        OUTCOMES.saw(if found { "found in the map" } else { "not found" });
    });
    OUTCOMES.assert_saw(&["none started", "one started", "found in the map", "not found"]);
}
