//! Replays the fuzz corpus (`fuzz/corpus/`): every input the fuzzers kept still holds the
//! invariants, so a regression shows up here without running a fuzzer.

use std::path::Path;

use sealsync_contact::check::{csv_round_trip, vcard_round_trip};

fn replay(target: &str, check: fn(&[u8]) -> Result<usize, String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(e) = check(&data) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 3, "corpus for {target} is missing ({n} inputs)");
}

#[test]
fn vcard_corpus_holds_invariants() {
    replay("vcard", vcard_round_trip);
}

#[test]
fn csv_corpus_holds_invariants() {
    replay("csv", csv_round_trip);
}
