//! Source-level tests against a real Postgres (see `testkit`): one test
//! binary, so one shared cluster serves every test; each test makes its own
//! database and origin.

mod common;

mod chunks;
mod feed;
mod identifiers;
mod prepare;
mod slot;
mod snapshot;
mod tls;
mod types;
