//! Regenerates the `core_machine` seed corpus:
//!
//! ```sh
//! cargo test -p flashsync-fuzz-targets --test select_machine_seeds -- --ignored
//! ```
//!
//! The target's input is an `arbitrary` byte stream, which cannot be written
//! by hand; instead this picks, for every milestone the machine can reach
//! (a realtime view running, a hand-off replay, a snapshot race, an ack, a
//! paused feed, a conflict, ... — see `flashsync_fuzz_targets::machine::milestones`),
//! the shortest input that reaches it. Candidates are the working corpus of
//! earlier fuzzing runs (`fuzz/work/core_machine/`, if present) and
//! pseudo-random inputs. The picks replace `fuzz/corpus/core_machine/`.
//! Ignored by default: it rewrites committed files.

use std::collections::BTreeMap;
use std::path::Path;

use flashsync_fuzz_targets::machine::milestones;

/// xorshift64*: deterministic candidates without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
#[ignore = "rewrites fuzz/corpus/core_machine; run by hand to regenerate the seeds"]
fn select_core_machine_seeds() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(fuzz.join("work/core_machine")) {
        candidates.extend(dir.flatten().filter_map(|e| std::fs::read(e.path()).ok()));
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        let len = 64 + (next(&mut state) % 1500) as usize;
        candidates.push((0..len).map(|_| next(&mut state) as u8).collect());
    }
    let mut best: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let failures = std::env::var_os("FUZZ_FAILURES").map(std::path::PathBuf::from);
    for (i, c) in candidates.iter().enumerate() {
        let reached = match std::panic::catch_unwind(|| milestones(c)) {
            Ok(r) => r,
            Err(_) => {
                if let Some(dir) = &failures {
                    std::fs::create_dir_all(dir).expect("failures dir");
                    std::fs::write(dir.join(format!("fail-{i}")), c).expect("write failure");
                }
                continue;
            }
        };
        for m in reached {
            if best.get(m).is_none_or(|b| c.len() < b.len()) {
                best.insert(m, c.clone());
            }
        }
    }
    let out = fuzz.join("corpus/core_machine");
    std::fs::create_dir_all(&out).expect("corpus dir");
    for old in std::fs::read_dir(&out).expect("list corpus").flatten() {
        std::fs::remove_file(old.path()).expect("remove old seed");
    }
    for (m, data) in &best {
        std::fs::write(out.join(m), data).expect("write seed");
        eprintln!("{m}: {} bytes", data.len());
    }
    assert!(best.len() >= 5, "only {} milestones reached: {:?}", best.len(), best.keys().collect::<Vec<_>>());
}

/// Replays one input with tracing: `FUZZ_INPUT=path FLASHSYNC_FUZZ_TRACE=1
/// cargo test -p flashsync-fuzz-targets --test select_machine_seeds -- --ignored --nocapture trace_one`.
#[test]
#[ignore = "debugging aid"]
fn trace_one() {
    let Some(path) = std::env::var_os("FUZZ_INPUT") else { return };
    let data = std::fs::read(&path).expect("read FUZZ_INPUT");
    flashsync_fuzz_targets::core_machine(&data);
}
