//! A broadcast claims a place in each mailbox of a subscriber chunk before it writes any of
//! them (`engine::claimed`; a chunk is two sessions under loom). These models race that window:
//! against a pop of the same queue, a consumer parking, a close, and another broadcaster's
//! eviction.

#![cfg(fanout_loom)]

mod common;

use common::*;
use fanout::loom_internals::BoundedQueue;
use fanout::OverflowPolicy;
use loom::sync::Arc;
use loom::thread;

/// A claim on the last place of a block, held while another producer pushes behind it (into
/// the next block, which the claim put in place) and a consumer pops: the consumer never takes
/// the later item past the unwritten place, and once the claim is published both arrive, in
/// claim order, exactly once.
#[test]
fn claim_held_while_a_push_behind_it_and_a_pop_race() {
    loom::model(|| {
        let queue = Arc::new(BoundedQueue::<Box<u64>>::new(4));
        queue.push_within(Box::new(0), usize::MAX).expect("room");
        let claim = queue.claim_within(Box::new(1), usize::MAX).expect("room");
        let pusher = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.push_within(Box::new(2), usize::MAX).expect("room"))
        };
        let popper = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || std::iter::from_fn(|| queue.pop().map(|item| *item)).collect::<Vec<_>>())
        };
        claim.publish();
        pusher.join().unwrap();
        let mut popped = popper.join().unwrap();
        assert!(
            popped.iter().copied().eq(0..popped.len() as u64),
            "popped past an unwritten place: {popped:?}"
        );
        popped.extend(std::iter::from_fn(|| queue.pop().map(|item| *item)));
        assert_eq!(popped, [0, 1, 2]);
    });
}

/// One broadcast to a chunk of two sessions: one consumer parks in `recv`, the other session
/// is closed by `unsubscribe_all`, while the broadcast claims both places, writes them and
/// fences once. The parked consumer is woken (else loom reports a deadlock) and the closed
/// session's message is counted, not left behind.
#[test]
fn chunk_broadcast_racing_a_parking_consumer_and_a_close() {
    loom::model(|| {
        let engine = engine(1, OverflowPolicy::DropNewest);
        let mut parked = session(&engine, "a", &["t"]);
        let closed = session(&engine, "b", &["t"]);
        let consumer = thread::spawn(move || {
            let message = loom::future::block_on(parked.recv()).unwrap();
            assert_eq!(text(&message), "m");
            parked
        });
        let closer = {
            let engine = engine.clone();
            thread::spawn(move || loom::future::block_on(engine.unsubscribe_all("b")).unwrap())
        };
        let fanout = broadcast(&engine, "t", "m");
        closer.join().unwrap();
        let parked = consumer.join().unwrap();
        assert!(fanout.recipients >= 1, "{fanout:?}");
        assert_eq!(closed.queued(), 0, "nothing left behind in a closed mailbox");
        let stats = engine.stats();
        assert_eq!(stats.delivered, 1, "{stats:?}");
        assert_eq!(stats.recipients, 1 + stats.dropped.total(), "{stats:?}");
        drop(closed);
        assert_accounted_then_empty(&engine, parked);
    });
}

/// Two broadcasters meet the same two full `drop_oldest` mailboxes in opposite orders (topic
/// `ab` lists session a first, `ba` session b). Each may claim a place in its first session
/// that the other's eviction there must wait for; had a broadcaster kept its claim while
/// evicting in its second session, each would wait for the other forever (loom reports the
/// endless spin). Publishing before any policy runs keeps them apart; every message is then
/// delivered or dropped once.
#[test]
fn broadcasts_over_opposite_orders_never_wait_on_each_others_claims() {
    loom::model(|| {
        let engine = engine(1, OverflowPolicy::DropOldest);
        let a = engine.open_session("a").unwrap();
        let b = engine.open_session("b").unwrap();
        subscribe(&a, "ab");
        subscribe(&b, "ab");
        subscribe(&b, "ba");
        subscribe(&a, "ba");
        let other = broadcast_in_thread(&engine, "ba", "2");
        broadcast(&engine, "ab", "1");
        other.join().unwrap();
        assert_accounted(&engine, &[&a, &b]);
        assert_eq!((a.queued(), b.queued()), (1, 1), "each mailbox full, holding one");
        drop((a, b));
        assert_empty(&engine);
    });
}
