//! The `fuzz_redis_wire` target's regression set (`fuzz/regressions/`), replayed on stable:
//! the RESP parser's properties (`fanout::redis::check_parser`) hold on every input,
//! cut into reads of every size.

#![cfg(feature = "redis")]

use fanout::redis::check_parser;

#[test]
fn fuzz_redis_wire_corpus_keeps_the_parsers_properties() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/fuzz_redis_wire");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let input = std::fs::read(entry.unwrap().path()).unwrap();
        total += 1;
        let Some((&[line, sizes, _], stream)) = input.split_first_chunk::<3>() else {
            check_parser(&input);
            continue;
        };
        // The set's inputs, read in each size from 1 to 32 bytes.
        for reads in 0..32 {
            let mut varied = vec![line, sizes, reads];
            varied.extend_from_slice(stream);
            check_parser(&varied);
        }
    }
    assert!(total > 0, "no corpus under {}", dir.display());
}
