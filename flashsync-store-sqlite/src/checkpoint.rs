//! Resumable copies (the store contract's guarantee 8): an unpublished
//! generation that a [`checkpoint`](flashsync_core::Generation::checkpoint)
//! keeps across crashes and restarts, to be handed back by
//! [`resume_generation`](flashsync_core::Store::resume_generation).
//!
//! A checkpoint is one durable transaction holding the feed's changes to
//! the generation's table, the view's job record, and a row of
//! `_flashsync_checkpoints` naming the table (with its number and schema).
//! The rows written into the table before it are already there: each
//! `write` is its own (unsynced) commit of the writer thread, which runs
//! jobs in call order, and the checkpoint's synced commit makes every
//! earlier commit durable with it (the log is sequential). After a crash the
//! file holds the previous checkpoint and job record, or both new ones.
//!
//! Rows written after the last checkpoint are in the table too (their
//! commits may reach the disk), but all keyed above the checkpoint's last
//! key: resuming deletes every row keyed above it, a range delete on the
//! table's primary key (`_flashsync_key`, the `encode_key` bytes, which
//! SQLite compares as `memcmp` does — flashsync's key order).
//!
//! Opening the store keeps the tables checkpoint rows name and drops every
//! other generation table, as before. A checkpoint ends, with its row (in
//! the same transaction as the change that ends it) and its table, at the
//! generation's `publish` (the table becomes the view's copy) or `discard`,
//! at a `begin_generation` of the same view (a new copy replaces it) and at
//! `forget`. A generation dropped without either keeps its checkpoint.
//!
//! The writer tracks which generation tables have a live handle
//! ([`Writer::held`]): a table that a live handle fills is never dropped
//! under it (by a new copy's `begin_generation`, say); the handle drops it
//! when it ends, unless a checkpoint still names it.

use std::collections::HashMap;
use std::sync::Arc;

use flashsync_core::rowops::ApplyReport;
use flashsync_core::{JobRecord, RelationId, RelationSchema, StoreError, ViewOps};
use rusqlite::{params, Connection};

use crate::error::{corrupt, invalid, sql};
use crate::layout::{self, decode_json, encode_json, id_from_sql, id_sql, quote};
use crate::table::{Plan, COL_KEY};
use crate::writer::Writer;

/// A view's checkpointed generation, as the writer mirrors
/// `_flashsync_checkpoints`.
#[derive(Debug)]
pub(crate) struct Checkpointed {
    /// The generation's number (its table is
    /// [`generation_table`](layout::generation_table) of the view and it).
    pub number: u64,
    /// Its table and schema.
    pub plan: Arc<Plan>,
}

/// Whether `view`'s checkpoint is the generation in `table` (and not
/// another copy's: a newer one of the view may have checkpointed since).
pub(crate) fn names(w: &Writer, view: RelationId, table: &str) -> bool {
    w.checkpoints.get(&view).is_some_and(|c| c.plan.table == table)
}

/// The table of `view`'s checkpoint that ending it must drop: none when a
/// live handle fills that table (the handle drops it when it ends).
pub(crate) fn orphaned_table(w: &Writer, view: RelationId) -> Option<String> {
    w.checkpoints.get(&view).map(|c| c.plan.table.clone()).filter(|t| !w.held.contains(t))
}

/// Removes `view`'s checkpoint row inside an open transaction — only if it
/// names `table`, when given.
pub(crate) fn delete_row(conn: &Connection, view: RelationId, table: Option<&str>) -> rusqlite::Result<usize> {
    match table {
        Some(table) => conn.execute(
            "DELETE FROM _flashsync_checkpoints WHERE relation_id = ?1 AND table_name = ?2",
            params![id_sql(view), table],
        ),
        None => conn.execute("DELETE FROM _flashsync_checkpoints WHERE relation_id = ?1", [id_sql(view)]),
    }
}

/// `DROP TABLE IF EXISTS` inside an open transaction.
pub(crate) fn drop_in(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    conn.execute(&format!("DROP TABLE IF EXISTS {}", quote(table)), []).map(drop)
}

/// Amends generation `number` of `view` (in `plan`'s table) with `ops` and
/// records it as the view's checkpoint with `job`, in one durable
/// transaction (on the writer thread).
pub(crate) fn checkpoint(
    w: &mut Writer,
    view: RelationId,
    plan: &Arc<Plan>,
    number: u64,
    ops: &ViewOps,
    job: &JobRecord,
    op: &str,
) -> Result<ApplyReport, StoreError> {
    w.check(op)?;
    // Forgotten meanwhile: nothing of the view may be kept.
    if !w.catalog.contains_key(&view) {
        return Err(StoreError::no_view(op, view));
    }
    let schema = encode_json("checkpoint schema", &plan.schema)?;
    let record = encode_json("job record", job)?;
    let generation = i64::try_from(number).map_err(|_| invalid(op, format!("generation number {number} too large")))?;
    // The view's checkpoint of another generation (one a newer copy
    // replaced, whose handle went on) gives way to this one.
    let replaced = orphaned_table(w, view).filter(|t| *t != plan.table);
    let report = w.transaction(op, true, |conn| {
        let report = crate::apply::amend_in(conn, plan, ops, op)?;
        let e = |e| sql(op, e);
        conn.execute(
            "INSERT OR REPLACE INTO _flashsync_jobs (relation_id, record) VALUES (?1, ?2)",
            params![id_sql(view), record],
        )
        .map_err(e)?;
        if let Some(table) = &replaced {
            drop_in(conn, table).map_err(e)?;
        }
        conn.execute(
            "INSERT OR REPLACE INTO _flashsync_checkpoints (relation_id, table_name, generation, schema) \
             VALUES (?1, ?2, ?3, ?4)",
            params![id_sql(view), plan.table, generation, schema],
        )
        .map_err(e)?;
        Ok(report)
    })?;
    w.checkpoints.insert(view, Checkpointed { number, plan: Arc::clone(plan) });
    Ok(report)
}

/// Hands back `view`'s checkpointed generation if it was made with
/// `schema`, with its rows keyed above `after` (encoded) deleted; drops it
/// if it was made with another (on the writer thread). The answer is the
/// generation's table and number, now held by the caller's new handle.
pub(crate) fn resume(
    w: &mut Writer,
    view: RelationId,
    schema: &RelationSchema,
    after: &[u8],
    op: &str,
) -> Result<Option<(Arc<Plan>, u64)>, StoreError> {
    w.check(op)?;
    let Some(kept) = w.checkpoints.get(&view) else {
        return Ok(None);
    };
    let (plan, number) = (Arc::clone(&kept.plan), kept.number);
    // Two handles on one table would write over each other, and the first
    // to end would drop the table under the other.
    if w.held.contains(&plan.table) {
        return Err(invalid(
            op,
            format!("its copy {:?} is still open: publish, discard or drop that generation first", plan.table),
        ));
    }
    if !schema.fits(&plan.schema) {
        // Its rows cannot continue a copy with another shape: the copy
        // starts over, and this one's space is reclaimed now. Durable, so
        // it never comes back after a crash.
        w.transaction(op, true, |conn| {
            let e = |e| sql(op, e);
            delete_row(conn, view, None).map_err(e)?;
            drop_in(conn, &plan.table).map_err(e)
        })?;
        w.checkpoints.remove(&view);
        return Ok(None);
    }
    // Unsynced: if a crash undoes it, the rows are above the checkpoint's
    // key again, and the next resume deletes them again.
    let delete = format!("DELETE FROM {} WHERE {} > ?1", quote(&plan.table), quote(COL_KEY));
    w.transaction(op, false, |conn| conn.execute(&delete, [after]).map(drop).map_err(|e| sql(op, e)))?;
    w.held.insert(plan.table.clone());
    Ok(Some((plan, number)))
}

/// Ends generation `table` of `view` for good — discarded, or a publish
/// that cannot happen: drops its table and, if the view's checkpoint names
/// it, the checkpoint, then durably (a discarded copy never comes back).
pub(crate) fn end(w: &mut Writer, view: RelationId, table: &str, op: &str) -> Result<(), StoreError> {
    w.held.remove(table);
    let checkpointed = names(w, view, table);
    w.transaction(op, checkpointed, |conn| {
        let e = |e| sql(op, e);
        if checkpointed {
            delete_row(conn, view, Some(table)).map_err(e)?;
        }
        drop_in(conn, table).map_err(e)
    })?;
    if checkpointed {
        w.checkpoints.remove(&view);
    }
    Ok(())
}

/// A generation's handle was dropped without `publish` or `discard`: its
/// table stays if a checkpoint names it (to be resumed), and is dropped
/// otherwise — not durably: a crash brings it back, and the next open drops
/// it.
pub(crate) fn release(w: &mut Writer, view: RelationId, table: &str, op: &str) -> Result<(), StoreError> {
    w.held.remove(table);
    if names(w, view, table) {
        return Ok(());
    }
    w.transaction(op, false, |conn| drop_in(conn, table).map_err(|e| sql(op, e)))
}

/// Reads `_flashsync_checkpoints` at open into the writer's mirror (which
/// needs the catalog loaded), and numbers new generations after the kept
/// ones. `tables` are the tables in the file. Returns the views whose row
/// names a table that is gone or whose view is gone — harmless leftovers
/// (their copies start over), for the caller to delete.
///
/// A row that does not decode, or whose table is not the generation table
/// its view and number name, is damage: `Corrupt`, as the store drops that
/// table and must never drop another on the word of a damaged row.
pub(crate) fn recover(w: &mut Writer, tables: &[String], op: &str) -> Result<Vec<RelationId>, StoreError> {
    let rows: Vec<(RelationId, String, i64, String)> = {
        let e = |e| sql(op, e);
        let mut stmt = w
            .conn
            .prepare("SELECT relation_id, table_name, generation, schema FROM _flashsync_checkpoints")
            .map_err(e)?;
        let rows = stmt.query_map([], |r| Ok((id_from_sql(r.get(0)?), r.get(1)?, r.get(2)?, r.get(3)?))).map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)?
    };
    let mut kept = HashMap::new();
    let mut stale = Vec::new();
    let mut next = w.next_generation;
    for (view, table, number, schema) in rows {
        let number = u64::try_from(number)
            .map_err(|_| corrupt(op, format!("view {view}'s checkpoint has generation number {number}")))?;
        if table != layout::generation_table(view, number) {
            return Err(corrupt(
                op,
                format!("view {view}'s checkpoint of generation {number} names the table {table:?}"),
            ));
        }
        if !w.catalog.contains_key(&view) || !tables.contains(&table) {
            tracing::warn!("dropping view {view}'s checkpoint: its view or its table {table:?} is gone");
            stale.push(view);
            continue;
        }
        let schema: RelationSchema = decode_json("checkpoint schema", &schema)?;
        let plan = Plan::new(&table, &schema).map_err(|e| corrupt(op, e))?;
        next = next.max(
            number.checked_add(1).ok_or_else(|| corrupt(op, format!("view {view}'s generation number {number}")))?,
        );
        kept.insert(view, Checkpointed { number, plan: Arc::new(plan) });
    }
    // Numbers go on after the kept generations: a new one never takes the
    // name of a table a checkpoint keeps.
    w.next_generation = next;
    w.checkpoints = kept;
    Ok(stale)
}
