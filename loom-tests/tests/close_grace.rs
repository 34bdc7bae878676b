//! The handler form's close grace: a session closed while its task waits for a handler's future
//! starts the grace at the close, not at the future's next wake-up. The real session task
//! (`Engine::loom_subscribe_handler` hands it to the model) waits for a future that never
//! finishes and never wakes its task, while `unsubscribe_all` closes the session. Before each
//! poll of the waiting future the task registers its waker on the session, then reads the
//! session's state; `close` writes the state, then wakes that waker. Either the read sees the
//! close or the wake finds the waker, so the task always learns of the close: if it did not,
//! nothing would wake it again, and loom reports the deadlock.
//!
//! The grace is 0, which drops the future as soon as the task sees the close. Loom has no
//! timers (under the cfg a grace's timer never fires), so with a nonzero grace the task would
//! wait for the future forever; the timer is checked by the crate's integration tests
//! (`tests/close_grace.rs`).
//!
//! Without the wake in `close`, the model finds the schedule in which the task registers, reads
//! the session still open and parks, and the close wakes nobody. With the state read before the
//! registration, it finds the schedule in which the close falls between the two.

#![cfg(fanout_loom)]

mod common;

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use common::{assert_accounted, assert_empty, payload, Seen};
use fanout::{Config, Engine, Handler};
use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

#[test]
fn unsubscribe_all_wakes_a_task_waiting_for_its_handler() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        let engine = Engine::new(Config::default().with_close_grace(Duration::ZERO)).unwrap();
        // Polls of the handler's future, which stays pending and never wakes its task.
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let handler = Handler::new(move |_topic, _message| {
            let polls = Arc::clone(&counted);
            poll_fn(move |_| {
                polls.fetch_add(1, Ordering::SeqCst);
                Poll::<()>::Pending
            })
        });
        let task = block_on(engine.loom_subscribe_handler("s", "t", handler))
            .unwrap()
            .expect("the subscribe created the session");
        block_on(engine.broadcast("t", payload("m"))).unwrap();

        let runner = thread::spawn(move || block_on(task));
        let closer = {
            let engine = engine.clone();
            thread::spawn(move || block_on(engine.unsubscribe_all("s")).unwrap())
        };
        closer.join().unwrap();
        runner.join().unwrap();

        let stats = engine.stats();
        // The first poll comes before the task waits. Each later one follows a registration
        // and a read that found the session open, and then a wake-up: the close's, or the one
        // spurious wake-up loom's `block_on` may make.
        match polls.load(Ordering::SeqCst) {
            0 => {
                assert_eq!(stats.handlers_cancelled, 0, "{stats:?}");
                SEEN.saw("closed before the handler was called");
            }
            1 => {
                assert_eq!(stats.handlers_cancelled, 1, "{stats:?}");
                SEEN.saw("the task's read after registering saw the close");
            }
            2 | 3 => {
                assert_eq!(stats.handlers_cancelled, 1, "{stats:?}");
                SEEN.saw("the task registered, read the session open and waited");
            }
            more => panic!("the waiting future was polled {more} times: {stats:?}"),
        }
        assert_accounted(&engine, &[]);
        assert_empty(&engine);
    });
    SEEN.assert_saw(&[
        "closed before the handler was called",
        "the task's read after registering saw the close",
        "the task registered, read the session open and waited",
    ]);
}
