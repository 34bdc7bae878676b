//! The engine against the reference model (`tests/reference_model/`): random operation
//! sequences from a seeded generator, and every input of the fuzz targets' committed regression
//! sets (`fuzz/regressions/`, see `fuzz/README.md`), must give the same deliveries, drop counts
//! and registry contents as the model after every step, under each overflow policy (G1, G2, G3,
//! G7). The `fuzz_ops` target runs the same harness on fuzzer input; this is its stable twin,
//! run by `cargo test`.

mod reference_model;
mod support;

use reference_model as model;

use std::path::Path;

use model::harness::{Op, Scenario};
use model::reference::Stats;
use support::Rng;

/// Sequences per run. Each decodes 16 to 400 random bytes into a config and up to ~200 ops.
const SEQUENCES: u64 = 4_000;

fn check(name: &str, data: &[u8]) -> Stats {
    let scenario = Scenario::decode(data);
    match model::harness::run(&scenario) {
        Ok(stats) => stats,
        Err(difference) => panic!("{name}: the engine and the reference model differ\n{difference}"),
    }
}

#[test]
fn random_sequences_match_the_reference_model() {
    let seed = std::env::var("FANOUT_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    let mut policies = [0usize; 4];
    let mut total = Stats::default();
    for i in 0..SEQUENCES {
        let mut rng = Rng(seed ^ (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let len = 16 + (rng.next() % 385) as usize;
        let data = rng.bytes(len);
        policies[data[1] as usize % 4] += 1;
        let stats = check(&format!("seed {seed:#x}, sequence {i}"), &data);
        total.delivered += stats.delivered;
        for (sum, n) in total.dropped.iter_mut().zip(stats.dropped) {
            *sum += n;
        }
        total.disconnects += stats.disconnects;
        total.block_timeouts += stats.block_timeouts;
    }
    // Every policy ran, and every kind of delivery and drop happened.
    assert!(
        policies.iter().all(|&n| n > SEQUENCES as usize / 8),
        "{policies:?}"
    );
    assert!(
        total.delivered > 0 && total.dropped.iter().all(|&n| n > 0),
        "{total:?}"
    );
    assert!(total.disconnects > 0 && total.block_timeouts > 0, "{total:?}");
}

/// Every input of `target`'s regression set, sorted by path.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn fuzz_ops_corpus_matches_the_reference_model() {
    let inputs = corpus("fuzz_ops");
    assert!(!inputs.is_empty());
    for (name, data) in inputs {
        check(&name, &data);
    }
}

#[test]
fn fuzz_config_corpus_loads_or_names_the_problem() {
    let inputs = corpus("fuzz_config");
    assert!(!inputs.is_empty());
    for (name, data) in inputs {
        if let Ok(source) = std::str::from_utf8(&data) {
            if let Err(broken) = model::config_check::check(source) {
                panic!("{name}: {broken}");
            }
        }
    }
}

/// The decoder reaches every operation, so the random sequences exercise all of them.
#[test]
fn decoder_reaches_every_operation() {
    let data: Vec<u8> = [0u8, 1, 0]
        .into_iter()
        .chain((0..30).flat_map(|k| [k, 1, 2]))
        .collect();
    let ops = Scenario::decode(&data).ops;
    for expected in [
        Op::Subscribe(1, 2),
        Op::Unsubscribe(1, 2),
        Op::UnsubscribeAll(1),
        Op::Broadcast(1),
        Op::BroadcastFrom(1, 2),
        Op::Pop(1),
        Op::DropReceiver(1),
    ] {
        assert!(
            ops.iter()
                .any(|op| std::mem::discriminant(op) == std::mem::discriminant(&expected)),
            "{expected:?} never decoded"
        );
    }
}

/// A file ending in a bare `[` (an input `fuzz_config` found) is an error that names no key,
/// not the empty key ``, and points at the header (G9).
#[test]
fn empty_table_header_is_an_error_at_its_position() {
    let error = fanout::Config::from_toml_str("capacity = 256\n[").unwrap_err();
    assert_eq!(error.key, None, "{error}");
    assert_eq!(error.position, Some((2, 2)), "{error}");
    assert!(model::config_check::check("capacity = 256\n[").is_ok());
    assert!(model::config_check::check("[]\ncapacity = 1").is_ok());
}
