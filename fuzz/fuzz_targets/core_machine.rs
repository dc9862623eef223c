//! libFuzzer entry point for `core_machine`; the body (and its documentation) is
//! `flashsync_fuzz_targets::core_machine`, which `cargo test` also replays over
//! `fuzz/corpus/core_machine/` and `fuzz/regressions/core_machine/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flashsync_fuzz_targets::core_machine(data);
});
