//! The store conformance suite: one set of checks every [`Store`] must pass.
//!
//! The [`Store`] contract (see [`store`](crate::store)) is what the machine and
//! the driver rely on; this suite pins it down executably. It checks, against
//! any implementation:
//!
//! - the catalog, jobs, origin progress and published schemas round-trip
//!   through [`Store::load`];
//! - [`Store::apply`] with every [`RowOp`] kind — upserts, updates that keep
//!   [`Cell::Unchanged`] values, key moves, deletes, full-row multisets with
//!   copy counts, a truncate followed by inserts in the same batch, the same
//!   view twice in one batch — and that conflicts are reported;
//! - a batch that asks for it reports exactly what it did to each view's
//!   rows (inserts and updates told apart, nothing for evictions of rows a
//!   view never held);
//! - batches are atomic (a failing batch changes nothing), sequence
//!   numbers must increase, and `apply_many` stops at the first failure;
//! - `Stage` batches are invisible until the origin's `Commit` applies the
//!   parts of the views it names (dropping the rest), a first part drops an
//!   unfinished attempt, and `Replay` never moves an origin's progress;
//! - generations are invisible until published, publish switches rows,
//!   schema and job together, and discarded or abandoned generations leave no
//!   trace; rows written pre-encoded read back as the same rows written
//!   plainly, and a batch encoded for another width is refused;
//! - for stores that amend generations ([`Store::amends_generations`]): the
//!   feed's changes applied to a copy being made in chunks reach the rows
//!   written so far (keyed and full-row, plain and pre-encoded), stay
//!   invisible until publish, report conflicts rather than fail, and leave
//!   no trace when the copy is discarded;
//! - scans come out in key order for integer (negative too), text, float and
//!   composite keys, honouring ranges and limits, and `count` counts copies;
//! - `forget` removes everything, and unknown views are `NotFound` errors;
//! - with a crash hook ([`run_all_with_crash`]): persisted batches and every
//!   other mutation survive a crash, a crash loses at most a whole suffix
//!   of unpersisted batches, and staged parts never survive one.
//!
//! The checks are plain async functions with no runtime of their own: drive
//! them with any executor. Each takes a fresh, empty store.
//!
//! ```
//! use flashsync_core::conformance;
//! use flashsync_core::memory::MemoryStore;
//!
//! futures::executor::block_on(async {
//!     // Every check, each on a fresh store from the factory:
//!     conformance::run_all(MemoryStore::new).await?;
//!     // The same plus the crash checks. The hook takes the store, "crashes"
//!     // it (losing whatever was not persisted) and returns the store as it
//!     // is after a restart; a disk-backed store would drop itself and reopen
//!     // its directory here.
//!     conformance::run_all_with_crash(MemoryStore::new, |store: MemoryStore| {
//!         store.crash();
//!         store
//!     })
//!     .await
//! })?;
//! # Ok::<(), conformance::Failures>(())
//! ```
//!
//! A library author adds one test like the above for their own store; a
//! failure lists every failing check with what it expected and what it got.
//! Individual checks are public too, for running one while debugging.
//!
//! [`RowOp`]: crate::change::RowOp
//! [`Cell::Unchanged`]: crate::change::Cell::Unchanged

mod amend;
mod batches;
mod capture;
mod catalog;
mod durability;
mod fixtures;
mod generations;
mod rows;
mod scans;

use std::fmt;

use crate::store::Store;

pub use amend::{checkpoints_survive_a_crash, generation_amend_conflicts, generation_amends};
pub use batches::{
    apply_many_stops_at_a_failure, batches_are_atomic, replay_keeps_progress, sequence_numbers_increase,
    staged_transactions,
};
pub use capture::captured_changes;
pub use catalog::{catalog_round_trip, forget_removes_everything, unknown_views_are_errors};
pub use durability::{crash_keeps_durable_mutations, crash_keeps_persisted_batches, persist_reports_last_batch};
pub use generations::{
    generation_discard_and_abandon, generation_encoded_rows, generation_errors, generation_publish_is_atomic,
};
pub use rows::{
    conflicts_are_reported, filtered_updates, full_row_multisets, keyed_row_ops, same_view_twice_in_a_batch,
    truncate_then_insert, unchanged_cells,
};
pub use scans::{count_rows, scan_order_and_ranges};

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check's name (the name of its function in this module).
    pub check: &'static str,
    /// What was expected and what happened.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

impl std::error::Error for Failure {}

/// Every failed check of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failures(pub Vec<Failure>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} store conformance check(s) failed", self.0.len())?;
        for failure in &self.0 {
            write!(f, "\n  - {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failures {}

/// Runs every check that needs no crash hook, each on a fresh store from
/// `make`, and reports every failure.
pub async fn run_all<S: Store>(mut make: impl FnMut() -> S) -> Result<(), Failures> {
    let mut failures = Vec::new();
    macro_rules! run {
        ($($check:ident),* $(,)?) => {
            $(
                if let Err(failure) = $check(&make()).await {
                    failures.push(failure);
                }
            )*
        };
    }
    run!(
        catalog_round_trip,
        keyed_row_ops,
        unchanged_cells,
        full_row_multisets,
        truncate_then_insert,
        same_view_twice_in_a_batch,
        conflicts_are_reported,
        filtered_updates,
        captured_changes,
        batches_are_atomic,
        sequence_numbers_increase,
        staged_transactions,
        replay_keeps_progress,
        generation_publish_is_atomic,
        generation_discard_and_abandon,
        generation_errors,
        generation_encoded_rows,
        generation_amends,
        generation_amend_conflicts,
        scan_order_and_ranges,
        count_rows,
        forget_removes_everything,
        unknown_views_are_errors,
        persist_reports_last_batch,
        apply_many_stops_at_a_failure,
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}

/// Runs [`run_all`] plus the crash checks. `crash` takes a store, simulates a
/// crash (every batch applied since the last [`Store::persist`] may be lost;
/// nothing else may) and returns the store as a restarted process would see
/// it.
pub async fn run_all_with_crash<S: Store>(
    mut make: impl FnMut() -> S,
    mut crash: impl FnMut(S) -> S,
) -> Result<(), Failures> {
    let mut failures = match run_all(&mut make).await {
        Ok(()) => Vec::new(),
        Err(Failures(failures)) => failures,
    };
    if let Err(failure) = crash_keeps_persisted_batches(make(), &mut crash).await {
        failures.push(failure);
    }
    if let Err(failure) = crash_keeps_durable_mutations(make(), &mut crash).await {
        failures.push(failure);
    }
    if let Err(failure) = checkpoints_survive_a_crash(make(), &mut crash).await {
        failures.push(failure);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}
