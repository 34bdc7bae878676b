//! Subscribe and unsubscribe racing broadcasts and each other (G1, G2, G7).

#![cfg(fanout_loom)]

mod common;

use common::*;
use fanout::{OverflowPolicy, TryRecvError};
use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// G1: a broadcast that starts after `subscribe` returned is delivered, exactly once.
#[test]
fn subscribe_racing_broadcast() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        let engine = engine(2, OverflowPolicy::DropNewest);
        let receiver = session(&engine, "s", &[]);
        let subscribed = Arc::new(AtomicBool::new(false));
        let subscriber = {
            let subscribed = Arc::clone(&subscribed);
            thread::spawn(move || {
                subscribe(&receiver, "t");
                subscribed.store(true, SeqCst);
                receiver
            })
        };
        let began_after = subscribed.load(SeqCst);
        let fanout = broadcast(&engine, "t", "m");
        let mut receiver = subscriber.join().unwrap();
        let got = drain(&mut receiver);
        assert_eq!(got.len(), fanout.queued, "delivered once if queued");
        if began_after {
            assert_eq!(
                got.len(),
                1,
                "G1: a broadcast after subscribe returned is delivered"
            );
        }
        assert!(got.iter().all(|m| text(m) == "m"));
        SEEN.saw(if got.is_empty() {
            "broadcast first"
        } else {
            "delivered"
        });
        assert_accounted_then_empty(&engine, receiver);
    });
    SEEN.assert_saw(&["broadcast first", "delivered"]);
}

/// G2: nothing is delivered for a broadcast that starts after `unsubscribe` returned.
#[test]
fn unsubscribe_racing_broadcast() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        let engine = engine(2, OverflowPolicy::DropNewest);
        let receiver = session(&engine, "s", &["t"]);
        let unsubscribed = Arc::new(AtomicBool::new(false));
        let unsubscriber = {
            let unsubscribed = Arc::clone(&unsubscribed);
            thread::spawn(move || {
                receiver.unsubscribe("t").unwrap();
                unsubscribed.store(true, SeqCst);
                receiver
            })
        };
        let began_after = unsubscribed.load(SeqCst);
        let fanout = broadcast(&engine, "t", "m");
        let mut receiver = unsubscriber.join().unwrap();
        let got = drain(&mut receiver);
        assert_eq!(got.len(), fanout.queued);
        if began_after {
            assert!(got.is_empty(), "G2: delivered after unsubscribe returned");
            assert_eq!(fanout.recipients, 0);
        }
        assert_eq!(
            engine.topic_count(),
            0,
            "the last unsubscribe removes the topic entry"
        );
        SEEN.saw(if got.is_empty() {
            "not delivered"
        } else {
            "delivered"
        });
        assert_accounted_then_empty(&engine, receiver);
    });
    SEEN.assert_saw(&["not delivered", "delivered"]);
}

/// The last unsubscribe retires the topic entry while a new subscriber arrives: the new
/// subscription survives, in the one live entry.
#[test]
fn last_unsubscribe_racing_subscribe() {
    loom::model(|| {
        let engine = engine(2, OverflowPolicy::DropNewest);
        let leaving = session(&engine, "old", &["t"]);
        let mut arriving = session(&engine, "new", &[]);
        let leaver = thread::spawn(move || {
            leaving.unsubscribe("t").unwrap();
            leaving
        });
        subscribe(&arriving, "t");
        let mut leaving = leaver.join().unwrap();

        assert_eq!(engine.topic_count(), 1);
        assert_eq!(engine.stats().subscriptions, 1);
        let fanout = broadcast(&engine, "t", "m");
        assert_eq!((fanout.recipients, fanout.queued), (1, 1));
        assert_eq!(
            text(&arriving.try_recv().unwrap()),
            "m",
            "the new subscription survives"
        );
        assert_eq!(leaving.try_recv().unwrap_err(), TryRecvError::Empty);

        arriving.unsubscribe("t").unwrap();
        assert_eq!(engine.topic_count(), 0);
        drop((leaving, arriving));
        assert_empty(&engine);
    });
}
