//! libFuzzer entry point for `selector_parse`; the body (and its documentation) is
//! `flashsync_fuzz_targets::selector_parse`, which `cargo test` also replays over
//! `fuzz/corpus/selector_parse/` and `fuzz/regressions/selector_parse/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flashsync_fuzz_targets::selector_parse(data);
});
