//! The engine against a real Postgres, in one test binary: one build, one
//! link, and one shared throwaway cluster (`testkit::test_db`) for every test
//! that does not need a dedicated one. Each module covers one concern; shared
//! helpers (waiting, comparing mirrors with upstream, writers, a probing
//! source) are in `common`.

#![allow(clippy::unwrap_used)]

mod common;

mod atomic;
mod bigtxn;
mod changes;
mod chunks;
mod faults;
mod handoff;
mod instances;
mod lifecycle;
mod partial;
mod permanent;
mod predicate;
mod restart;
mod smoke;
mod views;
mod wraparound;
