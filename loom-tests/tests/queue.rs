//! A session's queue on its own (`BoundedQueue`, two slots per block under loom): pushes and
//! pops racing across block boundaries, two pops racing for one item, a pop whose block is
//! recycled under it, producers racing to put a block in place, a block recycled by one thread
//! and reused by another, the bound under racing producers, a queue dropped with items in it,
//! and the settled pop `try_recv` uses. Every pushed item is popped exactly once, each thread sees items in queue order, and
//! nothing is lost: each block and each item holds a loom `Arc`, so a block or an item never
//! freed fails the model as a leak.

#![cfg(fanout_loom)]

mod common;

use common::Seen;
use fanout::loom_internals::BoundedQueue;
use loom::sync::Arc;
use loom::thread;

/// An item that loom tracks: leaking it fails the model.
struct Item {
    value: u64,
    _alive: Arc<()>,
}

type Queue = BoundedQueue<Box<Item>>;

fn queue_holding(capacity: usize, items: &[u64]) -> Arc<Queue> {
    let queue = Arc::new(Queue::new(capacity));
    for &item in items {
        push(&queue, item).expect("room for the prefill");
    }
    queue
}

fn push(queue: &Queue, item: u64) -> Result<(), u64> {
    push_within(queue, item, usize::MAX)
}

fn push_within(queue: &Queue, item: u64, limit: usize) -> Result<(), u64> {
    let item = Box::new(Item {
        value: item,
        _alive: Arc::new(()),
    });
    queue.push_within(item, limit).map_err(|back| back.value)
}

fn pop(queue: &Queue) -> Option<u64> {
    queue.pop().map(|item| item.value)
}

/// Runs `f` on a new loom thread with its own handle to `queue`.
fn on_thread<R: Send + 'static>(
    queue: &Arc<Queue>,
    f: impl FnOnce(&Queue) -> R + Send + 'static,
) -> thread::JoinHandle<R> {
    let queue = Arc::clone(queue);
    thread::spawn(move || f(&queue))
}

fn pop_all(queue: &Queue) -> Vec<u64> {
    std::iter::from_fn(|| pop(queue)).collect()
}

/// Items popped by one thread come in queue order: increasing, as every model pushes them.
fn assert_in_order(popped: &[u64]) {
    assert!(popped.windows(2).all(|w| w[0] < w[1]), "out of order: {popped:?}");
}

/// Every item in `expected` exactly once across `popped`.
fn assert_each_once(popped: &[&[u64]], expected: &[u64]) {
    let mut all: Vec<u64> = popped.iter().flat_map(|p| p.iter().copied()).collect();
    all.sort_unstable();
    assert_eq!(all, expected, "each item popped exactly once");
}

/// A producer pushes the last item of the first block (and so puts the second in place) and
/// the first of the second while the consumer pops: the consumer never skips an item or sees
/// one twice, whichever side of the boundary it reaches first.
#[test]
fn pop_racing_push_across_a_block_boundary() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        let queue = queue_holding(3, &[0]);
        let producer = on_thread(&queue, |queue| {
            push(queue, 1).expect("room");
            push(queue, 2).expect("room");
        });
        let mut popped: Vec<u64> = (0..3).filter_map(|_| pop(&queue)).collect();
        let during = popped.len();
        producer.join().unwrap();
        popped.extend(pop_all(&queue));
        assert_eq!(popped, [0, 1, 2]);
        SEEN.saw(if during == 3 {
            "all during the race"
        } else {
            "some after"
        });
    });
    SEEN.assert_saw(&["all during the race", "some after"]);
}

/// Two pops race for the two items of a full block while a producer starts the next block;
/// then more pushes reuse the recycled first block. Each item is taken by one pop only.
#[test]
fn two_pops_race_for_a_blocks_items() {
    loom::model(|| {
        let queue = queue_holding(4, &[0, 1]);
        let other = on_thread(&queue, |queue| pop(queue).into_iter().collect::<Vec<_>>());
        let producer = on_thread(&queue, |queue| push(queue, 2).expect("room"));
        let mine: Vec<u64> = pop(&queue).into_iter().collect();
        let theirs = other.join().unwrap();
        producer.join().unwrap();
        // Indices 3 and 4: the second block's last slot, then the recycled first block.
        push(&queue, 3).expect("room");
        push(&queue, 4).expect("room");
        let rest = pop_all(&queue);
        assert_in_order(&mine);
        assert_in_order(&rest);
        assert_each_once(&[&mine, &theirs, &rest], &[0, 1, 2, 3, 4]);
    });
}

/// A pop reads the head slot, and before its compare-and-swap the other thread pops past the
/// whole block, and pushes until the block is recycled and written again. The stale pop must
/// neither take the new item as the old one (its CAS fails on the moved head) nor report the
/// queue empty: items pushed before the race are still there, and no push is left in flight
/// before them.
#[test]
fn stale_pop_while_its_block_is_recycled() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        // Indices 0..=3 fill the first two blocks; 4 and 5 the third; 6 the first block again.
        let queue = queue_holding(8, &[0, 1, 2, 3]);
        let stale = on_thread(&queue, pop);
        let mut mine: Vec<u64> = (0..2).filter_map(|_| pop(&queue)).collect();
        for item in 4..7 {
            push(&queue, item).expect("room");
        }
        let theirs = stale.join().unwrap().expect("items 2 and 3 were there all along");
        mine.extend(pop_all(&queue));
        assert_in_order(&mine);
        assert_each_once(&[&mine, &[theirs]], &[0, 1, 2, 3, 4, 5, 6]);
        SEEN.saw(if theirs < 2 {
            "from the first block"
        } else {
            "after it was recycled"
        });
    });
    SEEN.assert_saw(&["from the first block", "after it was recycled"]);
}

/// Two producers race for the first block's last index (whose claimer puts the next block in
/// place while the other waits) and the next one, while the consumer pops.
#[test]
fn two_producers_race_at_a_block_boundary() {
    loom::model(|| {
        let popped = popped_while_two_push(queue_holding(3, &[0]), [10, 20]);
        assert_eq!(popped.first(), Some(&0), "{popped:?}");
        assert_each_once(&[&popped], &[0, 10, 20]);
    });
}

/// The first two pushes into a new queue race to put its first block in place (the loser
/// frees its own) while the consumer pops.
#[test]
fn first_pushes_race_to_allocate_the_first_block() {
    loom::model(|| {
        let mut popped = popped_while_two_push(Arc::new(Queue::new(2)), [1, 2]);
        popped.sort_unstable();
        assert_eq!(popped, [1, 2]);
    });
}

/// Two threads push one item each while this one pops once; then everything left is popped.
/// Returns what was popped, in the order it was.
fn popped_while_two_push(queue: Arc<Queue>, items: [u64; 2]) -> Vec<u64> {
    let producers: Vec<_> = items
        .into_iter()
        .map(|item| on_thread(&queue, move |queue| push(queue, item).expect("room")))
        .collect();
    let mut popped: Vec<u64> = pop(&queue).into_iter().collect();
    for producer in producers {
        producer.join().unwrap();
    }
    popped.extend(pop_all(&queue));
    popped
}

/// A one-item queue, full; a push races the pop that empties it: the push gets in only if the
/// pop came first, so the queue never holds two (G7), and nothing is lost.
#[test]
fn push_at_capacity_racing_pop() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        let queue = queue_holding(1, &[0]);
        let producer = on_thread(&queue, |queue| push(queue, 1));
        let popped = pop(&queue);
        let pushed = producer.join().unwrap();
        let rest = pop_all(&queue);
        assert!(rest.len() <= 1, "never more than capacity: {rest:?}");
        assert_eq!(popped, Some(0));
        match pushed {
            Ok(()) => assert_eq!(rest, [1]),
            Err(back) => {
                assert_eq!(back, 1, "handed back");
                assert!(rest.is_empty());
            }
        }
        SEEN.saw(if pushed.is_ok() {
            "pushed after the pop"
        } else {
            "full"
        });
    });
    SEEN.assert_saw(&["pushed after the pop", "full"]);
}

/// One thread pops a block's items, so it recycles the block, while another pushes until it
/// takes that block off the free list and writes it again, and a third pops: the reuse on one
/// thread is ordered after the reads on the others (each item arrives intact, once, in order).
#[test]
fn block_recycled_on_one_thread_reused_on_another() {
    loom::model(|| {
        let queue = queue_holding(6, &[0, 1, 2]);
        let popper = on_thread(&queue, |queue| {
            (0..2).filter_map(|_| pop(queue)).collect::<Vec<_>>()
        });
        let producer = on_thread(&queue, |queue| {
            for item in 3..6 {
                push(queue, item).expect("room");
            }
        });
        let mut mine: Vec<u64> = pop(&queue).into_iter().collect();
        let theirs = popper.join().unwrap();
        producer.join().unwrap();
        mine.extend(pop_all(&queue));
        assert_in_order(&theirs);
        assert_in_order(&mine);
        assert_each_once(&[&mine, &theirs], &[0, 1, 2, 3, 4, 5]);
    });
}

/// Two producers push at a limit below the capacity while a pop makes room: the producers'
/// lagging copy of the head never lets the queue hold more than the limit, and a push is
/// refused only when the limit was reached.
#[test]
fn two_producers_at_a_limit_racing_pop() {
    static SEEN: Seen = Seen::new();
    loom::model(|| {
        let queue = queue_holding(4, &[0, 1]);
        let producers: Vec<_> = [2, 3]
            .into_iter()
            .map(|item| on_thread(&queue, move |queue| push_within(queue, item, 2).is_ok()))
            .collect();
        let popped = pop(&queue);
        let accepted = producers
            .into_iter()
            .map(|producer| producer.join().unwrap())
            .filter(|&accepted| accepted)
            .count();
        let rest = pop_all(&queue);
        assert_eq!(popped, Some(0));
        assert!(rest.len() <= 2, "never more than the limit: {rest:?}");
        assert_eq!(rest.len(), 1 + accepted, "each accepted item is there: {rest:?}");
        SEEN.saw(if accepted == 1 {
            "one got the freed place"
        } else {
            "both refused"
        });
    });
    SEEN.assert_saw(&["one got the freed place", "both refused"]);
}

/// A queue dropped with items in two blocks and a recycled block on its free list, after racing
/// pushes and pops: every item and block is freed (loom reports a leak otherwise).
#[test]
fn dropped_with_items_left() {
    loom::model(|| {
        let queue = queue_holding(5, &[0, 1, 2]);
        let popper = on_thread(&queue, pop);
        push(&queue, 3).expect("room");
        let first = pop(&queue);
        let theirs = popper.join().unwrap();
        assert!(first.is_some() && theirs.is_some());
        drop(queue);
    });
}

/// `pop_settled` (what `try_recv` uses): once a push has returned, it is found, even while a
/// push that claimed an earlier place is still writing it; the plain `pop` may answer
/// "empty" then.
#[test]
fn settled_pop_finds_a_finished_push_behind_an_unfinished_one() {
    use loom::sync::atomic::{AtomicBool, Ordering};
    loom::model(|| {
        let queue = Arc::new(Queue::new(4));
        let second_returned = Arc::new(AtomicBool::new(false));
        let first = on_thread(&queue, |queue| push(queue, 1).expect("room"));
        let returned = Arc::clone(&second_returned);
        let second = on_thread(&queue, move |queue| {
            push(queue, 2).expect("room");
            returned.store(true, Ordering::Release);
        });
        while !second_returned.load(Ordering::Acquire) {
            thread::yield_now();
        }
        let got = queue.pop_settled().map(|item| item.value);
        first.join().unwrap();
        second.join().unwrap();
        let mut popped: Vec<u64> = got.into_iter().collect();
        assert_eq!(popped.len(), 1, "a push had returned");
        popped.extend(pop_all(&queue));
        popped.sort_unstable();
        assert_eq!(popped, [1, 2]);
    });
}
