//! The core stays sans-IO: no clock, no OS randomness, no async runtime, no
//! file or network access. If the simulator cannot replay a bug from its seed,
//! the core has a leak; this test keeps the obvious ones out.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "UNIX_EPOCH",
    "thread_rng",
    "rand::",
    "OsRng",
    "getrandom",
    "tokio",
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::thread::sleep",
];

fn scan(dir: &Path, hits: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            scan(&path, hits);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for f in FORBIDDEN {
                    if mentions(code, f) {
                        hits.push(format!("{}:{}: {f}", path.display(), n + 1));
                    }
                }
            }
        }
    }
}

/// Whether `code` names `item` as a path of its own: `rand::` is the crate,
/// `Operand::` is not.
fn mentions(code: &str, item: &str) -> bool {
    code.match_indices(item).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn the_scan_matches_whole_paths_only() {
    assert!(mentions("let x = rand::random();", "rand::"));
    assert!(mentions("use std::fs;", "std::fs"));
    assert!(!mentions("Operand::Column(i)", "rand::"));
    assert!(!mentions("my_tokio_like", "tokio"));
}

#[test]
fn core_sources_do_no_io_and_read_no_clock() {
    let mut hits = Vec::new();
    scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut hits);
    assert!(hits.is_empty(), "flashsync-core must stay sans-IO:\n{}", hits.join("\n"));
}

#[test]
fn core_depends_on_no_runtime_or_randomness() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap_or_default();
    let deps = manifest.split("[dependencies]").nth(1).unwrap_or("").split("\n[").next().unwrap_or("");
    for bad in ["tokio", "rand", "getrandom", "async-std", "smol"] {
        assert!(!deps.lines().any(|l| l.trim_start().starts_with(bad)), "flashsync-core must not depend on {bad}");
    }
}
