//! G4: each publisher's messages reach every session in publish order.

#![cfg(fanout_loom)]

mod common;

use common::*;
use fanout::OverflowPolicy;
use loom::thread;

/// Two publishers on one topic, two sessions, one consumer popping while they publish: each
/// session sees each publisher's messages in order, each exactly once.
///
/// Explored with at most two preemptions, whatever `LOOM_MAX_PREEMPTIONS` says (set
/// `FANOUT_ORDERING_PREEMPTIONS` to explore more, by hand): the two sessions share a chunk, so
/// each broadcast holds two claims before it writes them, and the consumer's `try_recv` waits
/// out every claim it meets, so each further preemption multiplies the executions to explore
/// several times over.
#[test]
fn two_publishers_keep_their_order() {
    static SEEN: Seen = Seen::new();
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(
        std::env::var("FANOUT_ORDERING_PREEMPTIONS")
            .ok()
            .and_then(|bound| bound.parse().ok())
            .unwrap_or(2),
    );
    model.check(|| {
        let engine = engine(4, OverflowPolicy::DropNewest);
        let mut first = session(&engine, "s1", &["t"]);
        let mut second = session(&engine, "s2", &["t"]);
        let publishers: Vec<_> = [["a1", "a2"], ["b1", "b2"]]
            .into_iter()
            .map(|texts| {
                let engine = engine.clone();
                thread::spawn(move || {
                    for text in texts {
                        broadcast(&engine, "t", text);
                    }
                })
            })
            .collect();
        let mut seen = [drain(&mut first), Vec::new()];
        for publisher in publishers {
            publisher.join().unwrap();
        }
        seen[0].extend(drain(&mut first));
        seen[1] = drain(&mut second);
        for messages in &seen {
            let texts: Vec<&str> = messages.iter().map(text).collect();
            SEEN.saw(if texts.first() == Some(&"a1") {
                "a1 first"
            } else {
                "b1 first"
            });
            if texts[..2] == ["a1", "b1"] || texts[..2] == ["b1", "a1"] {
                SEEN.saw("interleaved");
            }
            assert_eq!(texts.len(), 4, "{texts:?}");
            for publisher in ["a", "b"] {
                let own: Vec<&&str> = texts.iter().filter(|t| t.starts_with(publisher)).collect();
                assert_eq!(
                    own,
                    [
                        &format!("{publisher}1").as_str(),
                        &format!("{publisher}2").as_str()
                    ]
                );
            }
        }
        assert_accounted(&engine, &[&first, &second]);
        drop((first, second));
        assert_empty(&engine);
    });
    SEEN.assert_saw(&["a1 first", "b1 first", "interleaved"]);
}
