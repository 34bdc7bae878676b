//! The `block` policy: a broadcaster waiting for room is released by the consumer's pop and by
//! the session's disconnect. Under loom the wait has no timeout, so a broadcaster that is never
//! released deadlocks the model, and loom reports it.

#![cfg(fanout_loom)]

mod common;

use common::*;
use fanout::TryRecvError;

/// A pop makes room: the waiting broadcaster queues its message.
#[test]
fn blocked_broadcast_released_by_pop() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        let engine = engine(1, block());
        let (mut receiver, publisher) = blocked_broadcast_then_pop(&engine);
        let fanout = publisher.join().unwrap();
        assert_eq!((fanout.queued, fanout.dropped), (1, 0));
        assert_eq!(text(&receiver.try_recv().unwrap()), "2");
        let stats = engine.stats();
        SEEN.saw(match stats.block_waits {
            0 => "popped before the broadcast",
            1 => "waited",
            n => panic!("{n} waits"),
        });
        assert_eq!(stats.block_timeouts, 0);
        assert_accounted_then_empty(&engine, receiver);
    });
    SEEN.assert_saw(&["popped before the broadcast", "waited"]);
}

/// The session is unsubscribed from everything (its disconnect) while a broadcaster waits for
/// room in its mailbox: the broadcaster returns, and both messages are counted as dropped.
#[test]
fn blocked_broadcast_released_by_disconnect() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        let engine = engine(1, block());
        let mut receiver = session(&engine, "s", &["t"]);
        broadcast(&engine, "t", "1");
        let publisher = broadcast_in_thread(&engine, "t", "2");
        loom::future::block_on(engine.unsubscribe_all("s")).unwrap();
        let fanout = publisher.join().unwrap();
        assert!(fanout.queued <= 1);
        assert!(matches!(receiver.try_recv(), Err(TryRecvError::Closed(_))));
        drop(receiver);
        let stats = engine.stats();
        assert_eq!(stats.delivered, 0);
        assert_eq!(stats.recipients, stats.dropped.total(), "{stats:?}");
        SEEN.saw(if stats.block_waits == 1 {
            "waited"
        } else {
            "closed before the wait"
        });
        assert_empty(&engine);
    });
    SEEN.assert_saw(&["waited", "closed before the wait"]);
}
