//! # flashsync-fuzz-targets
//!
//! The bodies of flashsync's fuzz targets, one function per target, each
//! taking the fuzzer's raw bytes:
//!
//! | target | function | what it checks |
//! |---|---|---|
//! | `pgoutput_decode` | [`pgoutput_decode`] | the `pgoutput` decoder, the replication frame parser, the COPY text and value parsers never panic; decoded messages and frames re-encode to bytes that decode to the same thing |
//! | `core_machine` | [`core_machine`] | the sync [`Machine`](flashsync_core::Machine) under arbitrary input sequences: no panic, bounded output, legal and fully reported state changes, acks never ahead of durability, one pass at a time, no busy timer loop, one reply per request |
//! | `core_executor` | [`core_executor`] | the production [`Executor`](flashsync_core::exec::Executor) over the memory store and upstream under an arbitrary (correct) schedule: store steps one at a time in emission order, acks never ahead of durability, running realtime views exactly their tables once at rest |
//! | `selector_parse` | [`selector_parse`] | selector parsing never panics; `Display` of a selector re-parses to an equal selector; wildcard matching agrees with a reference matcher |
//! | `predicate` | [`predicate()`] | row-filter parsing never panics; a filter's SQL parses back, binds the same and evaluates identically on generated rows; binding and evaluating arbitrary schemas and rows never panic |
//! | `row_codec` | [`row_codec`] | the key encoding preserves order and round-trips (and is canonical); row and stored-row encodings round-trip; decoding arbitrary bytes never panics |
//!
//! Two callers share these functions:
//!
//! - the libFuzzer targets in `fuzz/fuzz_targets/*.rs` (run with
//!   `fuzz/run.sh TARGET SECONDS`), which pass every generated input here;
//! - this crate's `tests/corpus.rs`, which replays every file of
//!   `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` on stable
//!   Rust, so `cargo test --workspace` exercises every target and every crash
//!   ever found.
//!
//! A property violation panics (that is how libFuzzer learns of it); a clean
//! return means the input passed:
//!
//! ```
//! // Any bytes: a clean return means every property held for this input.
//! flashsync_fuzz_targets::selector_parse(b"public.users_*,\"odd name\".x");
//! flashsync_fuzz_targets::row_codec(&[0x03, 0x80, 0, 0, 0, 0, 0, 0, 1]);
//! flashsync_fuzz_targets::pgoutput_decode(b"B\0\0\0\0");
//! ```

#![forbid(unsafe_code)]

pub mod codec;
pub mod executor;
pub mod machine;
pub mod pgoutput;
pub mod predicate;
pub mod selector;

pub use codec::row_codec;
pub use executor::core_executor;
pub use machine::core_machine;
pub use pgoutput::pgoutput_decode;
pub use predicate::predicate;
pub use selector::selector_parse;

/// A fuzz target body: takes the raw input, panics on a violated property.
pub type Target = fn(&[u8]);

/// Every target by its cargo-fuzz name.
pub const TARGETS: [(&str, Target); 6] = [
    ("pgoutput_decode", pgoutput_decode),
    ("core_machine", core_machine),
    ("core_executor", core_executor),
    ("selector_parse", selector_parse),
    ("row_codec", row_codec),
    ("predicate", predicate),
];
