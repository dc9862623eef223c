//! Replays every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through its target, on stable Rust: the seed
//! corpus and every crash ever found keep passing under `cargo test`.

use std::path::{Path, PathBuf};

use flashsync_fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

/// The files of `dir`, sorted (a missing directory has none).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

/// Runs `target` over `files`, reporting every failing file by name.
fn replay(name: &str, target: fn(&[u8]), files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{name}: {}: {msg}", path.display()));
        }
    }
    failures
}

fn run(name: &str) {
    let target = TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).expect("known target");
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(!corpus.is_empty(), "the seed corpus of {name} is empty");
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    let mut failures = replay(name, target, &corpus);
    failures.extend(replay(name, target, &regressions));
    assert!(failures.is_empty(), "{} input(s) failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{name}: {} corpus and {} regression inputs pass", corpus.len(), regressions.len());
}

#[test]
fn pgoutput_decode_corpus() {
    run("pgoutput_decode");
}

#[test]
fn core_machine_corpus() {
    run("core_machine");
}

#[test]
fn core_executor_corpus() {
    run("core_executor");
}

#[test]
fn selector_parse_corpus() {
    run("selector_parse");
}

#[test]
fn row_codec_corpus() {
    run("row_codec");
}

#[test]
fn predicate_corpus() {
    run("predicate");
}

#[test]
fn every_target_has_a_libfuzzer_entry_point() {
    for (name, _) in TARGETS {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains(&format!("flashsync_fuzz_targets::{name}(")), "{} does not call {name}", path.display());
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] {name}");
    }
}
