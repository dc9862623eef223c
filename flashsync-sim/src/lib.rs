//! # flashsync-sim
//!
//! A deterministic simulator for flashsync, in the spirit of TigerBeetle's
//! VOPR, madsim and turmoil: it drives the **production** sync machine
//! ([`flashsync_core::Machine`], not a copy of its logic) with a
//! single-threaded, virtual-time driver, against a simulated Postgres
//! ([`flashsync_core::memory::MemoryUpstream`]) and a real store (the
//! in-memory reference store, fjall in a temporary directory or SQLite in a
//! temporary file), injects
//! faults, and checks the system's invariants after every step.
//!
//! **One `u64` seed fixes everything**: the workload, which faults are on and
//! how often (swarm testing), every delay and reordering, and the machine's
//! own seed. The same seed gives the same [`Report::trace_hash`] — a hash of
//! every input, output, event and action processed, in order — in one
//! process or two, so any failure replays exactly from the command it
//! prints.
//!
//! A run has two phases:
//!
//! 1. **Chaos** ([`SimOptions::steps`] events): upstream writes (inserts,
//!    updates incl. key changes, deletes, truncates, on keyed, composite-key,
//!    TOASTed and keyless `REPLICA IDENTITY FULL` tables; transactions open
//!    across snapshots; commits in the log before they are visible; xids
//!    crossing a 2^32 boundary), callers' `sync()`/`stop`/`resume`/`forget`/
//!    `define`, and faults ([`faults::Fault`]): cut feeds, reconnect storms,
//!    lost or delayed keepalives and acks, slow snapshots, dropped or
//!    invalidated slots, an unreachable origin, failing source calls, local
//!    crashes (losing exactly what was not durable) and clean restarts, store
//!    errors, upstream `ALTER TABLE`s (columns added, and dropped so that
//!    the columns after them move). The [`checkers`] run after every step.
//! 2. **Liveness**: every fault heals, every upstream transaction finishes,
//!    callers `sync()` (forced for materialized views), and within a bounded
//!    number of steps every enabled view must equal its upstream table (or,
//!    when it keeps a column that was dropped, have failed saying so).
//!
//! Modules: [`driver`] (the virtual-time driver), [`upstream`] (the upstream
//! workload and its truth), [`faults`] (the fault plan), [`checkers`]
//! (invariants), [`scenario`] (storm, commits, churn, all), [`store`] (the
//! store under test, with crash semantics), [`sweep`] (many seeds on
//! several threads, failures grouped by invariant), [`report`] and [`cli`].
//!
//! ```
//! use flashsync_sim::{run, Scenario, SimOptions};
//!
//! let mut opts = SimOptions::new(42, Scenario::Storm);
//! opts.steps = 300;
//! let report = run(&opts)?;
//! assert_eq!(report.violations, 0, "{:?}", report.violation);
//! assert!(report.converged);
//! // The same seed replays exactly.
//! assert_eq!(run(&opts)?.trace_hash, report.trace_hash);
//! # Ok::<(), flashsync_sim::SimError>(())
//! ```

#![forbid(unsafe_code)]

pub mod checkers;
pub mod cli;
pub mod driver;
pub mod faults;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod store;
pub mod sweep;
pub mod trace;
pub mod upstream;
mod workload;

pub use report::{Failure, Report};
pub use scenario::Scenario;
pub use sim::{run, SimError, SimOptions};
pub use store::StoreKind;

/// The one origin every simulated view reads from.
pub const ORIGIN: &str = "postgres:main";
