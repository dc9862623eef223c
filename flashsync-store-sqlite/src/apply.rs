//! `Store::apply`: one upstream batch as one SQLite transaction (a run of
//! them, `apply_many`, as one transaction with a savepoint per batch).
//!
//! Row operations are interpreted by the core's
//! [`apply_ops`](flashsync_core::rowops::apply_ops) through [`Access`],
//! whose writes go straight into the open transaction; rows, job records,
//! the origin's applied LSN and dirty markers all land in it, and it commits
//! once at the end — or rolls back whole if anything fails, so the batch is
//! all or nothing. SQLite's transaction is the buffer: `apply_ops` keeps the
//! batch's own writes in its overlay, so reads of keys the batch has not
//! touched see the state from before the batch, as `RowAccess` asks.
//!
//! A `Truncate` is `DELETE FROM` the view's table (SQLite's truncate
//! optimization drops the table's pages without visiting rows), inside the
//! same transaction.
//!
//! [`amend`] applies the feed's changes to an unpublished generation's
//! table the same way, through the same [`Access`] mapping the view to
//! that table instead of its published one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use flashsync_core::codec::{decode_stored_row, encode_stored_row};
use flashsync_core::rowops::{apply_ops, apply_staged, ApplyReport, RowAccess};
use flashsync_core::staging::Claimed;
use flashsync_core::{ApplyBatch, Progress, RelationId, StoreError, StoreErrorKind, ViewOps};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{corrupt, invalid, sql};
use crate::layout::{self, encode_json, id_sql};
use crate::table::Plan;
use crate::writer::Writer;

/// What a batch needs from the writer's state, checked before any write.
struct Prepared {
    plans: HashMap<RelationId, Arc<Plan>>,
    jobs: Vec<(i64, String)>,
}

/// Refuses a batch that cannot apply (an unknown view) before it writes
/// anything: the batch is all or nothing.
fn prepare(w: &Writer, batch: &ApplyBatch, op: &str) -> Result<Prepared, StoreError> {
    let mut plans = HashMap::new();
    for v in &batch.views {
        let plan = w.copies.get(&v.relation_id).ok_or_else(|| StoreError::no_view(op, v.relation_id))?;
        plans.insert(v.relation_id, Arc::clone(plan));
    }
    // Jobs of views no longer in the catalog (forgotten meanwhile) are
    // dropped, as the reference store does.
    let mut jobs = Vec::new();
    for job in batch.jobs.iter().filter(|j| w.catalog.contains_key(&j.relation_id)) {
        jobs.push((id_sql(job.relation_id), encode_json("job record", job)?));
    }
    Ok(Prepared { plans, jobs })
}

fn out_of_order(op: String) -> StoreError {
    StoreError::new(StoreErrorKind::Invalid, op, "batch sequence numbers must increase")
}

/// Applies `batch` (on the writer thread), as one transaction.
pub(crate) fn apply(w: &mut Writer, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
    let op = format!("apply batch {}", batch.seq.0);
    w.check(&op)?;
    if w.last_seq.is_some_and(|last| batch.seq <= last) {
        return Err(out_of_order(op));
    }
    // A staged part changes no row; a commit applies its views' parts.
    let (batch, claimed) = w.staging.absorb(batch)?;
    let prepared = prepare(w, &batch, &op)?;
    let report = w.transaction(&op, false, |conn| write(conn, &batch, claimed, &prepared, &op))?;
    w.last_seq = Some(batch.seq);
    Ok(report)
}

/// Applies a run of batches (on the writer thread) in one transaction, each
/// batch inside a savepoint: a batch that fails is rolled back alone, and
/// those after it are refused, as `Store::apply_many` asks. One commit per
/// run rather than per batch: a backlog of small upstream transactions
/// costs one write-ahead-log commit (and its share of checkpoints) for the
/// run, not one each. Readers still see whole upstream transactions — the
/// run's, together.
pub(crate) fn apply_run(w: &mut Writer, batches: Vec<ApplyBatch>) -> Vec<Result<ApplyReport, StoreError>> {
    let Some(last_seq) = batches.last().map(|b| b.seq) else { return Vec::new() };
    let op = format!("apply batches up to {}", last_seq.0);
    if let Err(e) = w.check(&op) {
        return batches.iter().map(|_| Err(e.clone())).collect();
    }
    // Checked against the writer before the transaction: the run's own
    // order is checked as it goes.
    let prepared: Vec<Result<Prepared, StoreError>> =
        batches.iter().map(|b| prepare(w, b, &format!("apply batch {}", b.seq.0))).collect();
    let mut last = w.last_seq;
    // Staging goes with the transaction, absorbing each batch just before
    // it is written: a commit's claimed parts are applied before a later
    // batch of the run may start a new transaction's staging.
    let mut staging = std::mem::take(&mut w.staging);
    let count = batches.len();
    let outcome = w.transaction(&op, false, |conn| {
        let mut out = Vec::with_capacity(count);
        let mut failed = false;
        for (batch, prepared) in batches.into_iter().zip(prepared) {
            let op = format!("apply batch {}", batch.seq.0);
            if failed {
                out.push(Err(StoreError::earlier_batch_failed(batch.seq)));
                continue;
            }
            let result = match prepared {
                Err(e) => Err(e),
                Ok(_) if last.is_some_and(|l| batch.seq <= l) => Err(out_of_order(op.clone())),
                Ok(prepared) => {
                    let seq = batch.seq;
                    let (batch, claimed) = staging.absorb(batch)?;
                    let batch = &batch;
                    conn.execute_batch("SAVEPOINT flashsync_batch").map_err(|e| sql(op.as_str(), e))?;
                    match write(conn, batch, claimed, &prepared, &op) {
                        Ok(report) => {
                            conn.execute_batch("RELEASE flashsync_batch").map_err(|e| sql(op.as_str(), e))?;
                            last = Some(seq);
                            Ok(report)
                        }
                        Err(e) => {
                            conn.execute_batch("ROLLBACK TO flashsync_batch; RELEASE flashsync_batch")
                                .map_err(|e| sql(op.as_str(), e))?;
                            Err(e)
                        }
                    }
                }
            };
            failed = result.is_err();
            out.push(result);
        }
        Ok(out)
    });
    w.staging = staging;
    match outcome {
        Ok(results) => {
            w.last_seq = last;
            results
        }
        // The transaction itself failed (nothing of it landed): every
        // batch fails with its error.
        Err(e) => (0..count).map(|_| Err(e.clone())).collect(),
    }
}

/// Applies `ops` to the rows of an unpublished generation, whose table
/// `plan` describes (on the writer thread), as one transaction: unsynced,
/// like the generation's writes, which publish makes durable.
pub(crate) fn amend(w: &mut Writer, plan: &Arc<Plan>, ops: &ViewOps, op: &str) -> Result<ApplyReport, StoreError> {
    w.transaction(op, false, |conn| amend_in(conn, plan, ops, op))
}

/// [`amend`]'s writes, into the open transaction (a checkpoint's too).
pub(crate) fn amend_in(
    conn: &Connection,
    plan: &Arc<Plan>,
    ops: &ViewOps,
    op: &str,
) -> Result<ApplyReport, StoreError> {
    let plans = HashMap::from([(ops.relation_id, Arc::clone(plan))]);
    // Conflicts are in the report, and the machine copies the view again:
    // nothing is marked diverged (the published copy is intact).
    let mut access = Access { conn, plans: &plans, diverged: BTreeSet::new(), op };
    apply_ops(std::slice::from_ref(ops), &mut access)
}

/// One batch's writes into the open transaction.
fn write(
    conn: &Connection,
    batch: &ApplyBatch,
    claimed: Claimed,
    prepared: &Prepared,
    op: &str,
) -> Result<ApplyReport, StoreError> {
    let mut access = Access { conn, plans: &prepared.plans, diverged: BTreeSet::new(), op };
    let report = apply_staged(batch, claimed, &mut access)?;
    let diverged = access.diverged;
    let e = |e| sql(op, e);
    for (id, record) in &prepared.jobs {
        conn.prepare_cached("INSERT OR REPLACE INTO _flashsync_jobs (relation_id, record) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![id, record]))
            .map_err(e)?;
    }
    let origin = batch.origin.as_str();
    match batch.progress {
        Progress::Commit { end_lsn } => {
            conn.prepare_cached("INSERT OR REPLACE INTO _flashsync_origins (origin, applied_lsn) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![origin, layout::lsn_sql(end_lsn)]))
                .map_err(e)?;
            // Markers an earlier version left for a transaction it applied
            // in parts: the commit completes it. Diverged markers (origin
            // NULL) stay.
            conn.prepare_cached("DELETE FROM _flashsync_dirty WHERE origin = ?1")
                .and_then(|mut s| s.execute([origin]))
                .map_err(e)?;
        }
        Progress::Stage { .. } | Progress::Replay => {}
    }
    // Last, so no marker above overwrites it: NULL says diverged.
    for view in &diverged {
        conn.prepare_cached("INSERT OR REPLACE INTO _flashsync_dirty (relation_id, origin) VALUES (?1, NULL)")
            .and_then(|mut s| s.execute([id_sql(*view)]))
            .map_err(e)?;
    }
    Ok(report)
}

/// [`RowAccess`] over the open transaction.
struct Access<'a> {
    conn: &'a Connection,
    plans: &'a HashMap<RelationId, Arc<Plan>>,
    /// Views the batch found diverged (see [`RowAccess::mark_diverged`]).
    diverged: BTreeSet<RelationId>,
    op: &'a str,
}

impl Access<'_> {
    fn plan(&self, view: RelationId) -> Result<&Plan, StoreError> {
        self.plans.get(&view).map(|p| p.as_ref()).ok_or_else(|| StoreError::no_view(self.op, view))
    }
}

impl RowAccess for Access<'_> {
    fn read(&mut self, view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let plan = self.plan(view)?;
        let op = self.op;
        let found = self
            .conn
            .prepare_cached(&plan.select_one)
            .and_then(|mut s| s.query_row([key], |r| Ok(plan.decode(r))).optional())
            .map_err(|e| sql(op, e))?;
        match found {
            None => Ok(None),
            Some(Ok((row, copies))) => Ok(Some(encode_stored_row(&row, copies))),
            Some(Err(e)) => Err(corrupt(op, format!("row of view {view} in table {:?}: {e}", plan.table))),
        }
    }

    fn write(&mut self, view: RelationId, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        let plan = self.plan(view)?;
        let op = self.op;
        match value {
            Some(bytes) => {
                let (row, copies) = decode_stored_row(&bytes).map_err(|e| corrupt(op, e))?;
                // `apply` trusts the machine with row widths, but a row that
                // does not fit the table fails the batch rather than landing.
                plan.check_width(&row).map_err(|e| invalid(op, format!("row for view {view}: {e}")))?;
                let copies = i64::try_from(copies).map_err(|_| invalid(op, "row copy count out of range"))?;
                let exact = plan.exact(&row);
                let params = plan.params(&key, &row, copies, exact.as_deref());
                self.conn
                    .prepare_cached(&plan.upsert)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
                    .map_err(|e| sql(op, e))?;
            }
            None => {
                self.conn
                    .prepare_cached(&plan.delete_one)
                    .and_then(|mut s| s.execute([key]))
                    .map_err(|e| sql(op, e))?;
            }
        }
        Ok(())
    }

    fn clear(&mut self, view: RelationId) -> Result<(), StoreError> {
        let plan = self.plan(view)?;
        self.conn.execute(&plan.clear, []).map_err(|e| sql(self.op, e))?;
        Ok(())
    }

    /// Writes go into the open transaction, where reads see them.
    fn reads_own_writes(&self) -> bool {
        true
    }

    fn mark_diverged(&mut self, view: RelationId) -> Result<(), StoreError> {
        self.diverged.insert(view);
        Ok(())
    }
}
