//! libFuzzer entry point for `pgoutput_decode`; the body (and its documentation) is
//! `flashsync_fuzz_targets::pgoutput_decode`, which `cargo test` also replays over
//! `fuzz/corpus/pgoutput_decode/` and `fuzz/regressions/pgoutput_decode/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flashsync_fuzz_targets::pgoutput_decode(data);
});
