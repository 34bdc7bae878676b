//! G2 for handlers written `|topic, message| async move { .. }`, whose body begins in the first
//! poll of the future they return: the real session task (`Engine::loom_subscribe_handler`
//! hands it to the model) races `unsubscribe_all`. The invocation's start covers the handler's
//! call and its future's first poll, so once `unsubscribe_all` has returned no body begins.
//! With the start ending at the call's return, as it once did, the model finds the schedule in
//! which the body begins after `unsubscribe_all` returned.

#![cfg(fanout_loom)]

mod common;

use common::payload;
use fanout::{Config, Engine, Handler};
use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

#[test]
fn no_handler_body_begins_after_unsubscribe_all_returns() {
    loom::model(|| {
        let engine = Engine::new(Config::default()).unwrap();
        let bodies = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&bodies);
        let handler = Handler::new(move |_topic, _message| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let task = block_on(engine.loom_subscribe_handler("s", "t", handler))
            .unwrap()
            .expect("the subscribe created the session");
        block_on(engine.broadcast("t", payload("m"))).unwrap();

        let runner = thread::spawn(move || block_on(task));
        let closer = {
            let (engine, bodies) = (engine.clone(), Arc::clone(&bodies));
            thread::spawn(move || {
                block_on(engine.unsubscribe_all("s")).unwrap();
                bodies.load(Ordering::SeqCst)
            })
        };
        let seen = closer.join().unwrap();
        runner.join().unwrap();
        assert_eq!(
            bodies.load(Ordering::SeqCst),
            seen,
            "G2: a handler body began after unsubscribe_all returned"
        );
    });
}
