//! libFuzzer entry point for `core_executor`; the body (and its documentation)
//! is `flashsync_fuzz_targets::core_executor`, which `cargo test` also replays
//! over `fuzz/corpus/core_executor/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flashsync_fuzz_targets::core_executor(data);
});
