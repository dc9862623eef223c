//! libFuzzer entry point for `row_codec`; the body (and its documentation) is
//! `flashsync_fuzz_targets::row_codec`, which `cargo test` also replays over
//! `fuzz/corpus/row_codec/` and `fuzz/regressions/row_codec/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flashsync_fuzz_targets::row_codec(data);
});
