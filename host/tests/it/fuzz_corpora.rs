//! Every committed fuzz corpus (`fuzz/corpus/<target>/`) replayed through
//! its target in `sluice::fuzzing` on stable: an input that once found a
//! panic, or that coverage-guided fuzzing kept for reaching new code,
//! keeps being checked by every test run.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no inputs", dir.display());
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect()
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, data) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", path.display());
    }
}

#[test]
fn request_corpus() {
    replay("request", sluice::fuzzing::request);
}

#[test]
fn sse_corpus() {
    replay("sse", sluice::fuzzing::sse);
}

#[test]
fn convert_corpus() {
    replay("convert", sluice::fuzzing::convert);
}

#[test]
fn canonical_corpus() {
    replay("canonical", sluice::fuzzing::canonical);
}

#[test]
fn config_corpus() {
    replay("config", sluice::fuzzing::config);
}
