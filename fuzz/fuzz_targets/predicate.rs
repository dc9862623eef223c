//! libFuzzer entry point for `predicate`; the body (and its documentation) is
//! `flashsync_fuzz_targets::predicate`, which `cargo test` also replays over
//! `fuzz/corpus/predicate/` and `fuzz/regressions/predicate/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flashsync_fuzz_targets::predicate(data);
});
