//! Materializing a view: rows go into a new table, `_flashsync_gen_<view>_<n>`,
//! that nothing reads; `publish` then, in one durable transaction, drops the
//! view's old table, renames the new one to the view's name, and records the
//! copy's schema, its columns and the job. SQLite's DDL is transactional, so
//! readers — the store's own and other processes with the file open — see
//! the old table or the new one, never a mix, and a crash leaves one or the
//! other.
//!
//! Each `write` is one (unsynced) transaction of the writer thread; the
//! durable commit of `publish` makes them durable with it. A generation that
//! is discarded or dropped without publishing has its table dropped; one a
//! crash left behind is dropped when the store is next opened (every
//! `_flashsync_gen_*` table is unpublished by construction). Dropped pages go
//! to SQLite's free list and are reused by later writes.
//!
//! A copy made in chunks is amended between them ([`Generation::amend`]):
//! the feed's changes go into the generation's table in one transaction,
//! as `apply` writes them into a published one. Or it is checkpointed
//! ([`Generation::checkpoint`]): then its table outlives its handle and
//! restarts until it is published or discarded, or a new copy of the view
//! begins (see [`checkpoint`](crate::checkpoint)).

use std::sync::Arc;

use async_trait::async_trait;
use flashsync_core::codec::decode_row;
use flashsync_core::rowops::ApplyReport;
use flashsync_core::{
    EncodedRows, Generation, JobRecord, RelationId, RelationSchema, Row, RowSink, StoreError, StoreErrorKind, ViewOps,
};
use rusqlite::params;

use crate::catalog::check_table_free;
use crate::checkpoint;
use crate::error::{invalid, sql};
use crate::layout::{self, encode_json, id_sql, quote};
use crate::store::Inner;
use crate::table::Plan;
use crate::writer::Writer;

/// The store's [`Generation`].
pub(crate) struct SqliteGeneration {
    pub(crate) inner: Arc<Inner>,
    pub(crate) view: RelationId,
    /// The generation's table.
    pub(crate) plan: Arc<Plan>,
    /// Its number, which names its table (recorded by a checkpoint).
    pub(crate) number: u64,
    /// Cleared once published or discarded.
    pub(crate) live: bool,
}

/// Keyed rows ready for the writer thread.
type KeyedRows = Vec<(Vec<u8>, Row)>;

impl SqliteGeneration {
    fn op(&self, what: &str) -> String {
        format!("{what} generation {:?} of view {}", self.plan.table, self.view)
    }

    fn check_live(&self, op: &str) -> Result<(), StoreError> {
        if self.live {
            Ok(())
        } else {
            Err(StoreError::new(StoreErrorKind::Closed, op, "generation already finished"))
        }
    }

    async fn insert(&self, rows: KeyedRows, op: String) -> Result<(), StoreError> {
        let plan = Arc::clone(&self.plan);
        let worker_op = op.clone();
        self.inner.writer.run(op, move |w| insert_rows(w, &plan, rows, &worker_op)).await
    }
}

#[async_trait]
impl RowSink for SqliteGeneration {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        let op = self.op("write to");
        self.check_live(&op)?;
        // Keys are computed (and widths checked) on the caller's thread: it
        // is CPU work, and a bad row must fail the whole call before anything
        // is written.
        let mut keyed = Vec::with_capacity(rows.len());
        for row in rows {
            let mut key = Vec::with_capacity(16);
            self.plan.schema.encode_key_of(&row, &mut key).map_err(|e| invalid(&op, e))?;
            keyed.push((key, row));
        }
        self.insert(keyed, op).await
    }

    /// Keys are stored as the batch carries them; rows are decoded into the
    /// table's typed columns.
    async fn write_encoded(&mut self, rows: EncodedRows) -> Result<(), StoreError> {
        let op = self.op("write to");
        self.check_live(&op)?;
        if !rows.fits(&self.plan.schema) {
            let (width, key) = rows.shape();
            return Err(invalid(
                &op,
                format!(
                    "rows encoded for {width} columns keyed by {key:?}; the schema has {} keyed by {:?}",
                    self.plan.schema.columns.len(),
                    self.plan.schema.key
                ),
            ));
        }
        let mut keyed = Vec::with_capacity(rows.len());
        for (key, bytes) in rows.iter() {
            let row = decode_row(bytes).map_err(|e| invalid(&op, e))?;
            self.plan.check_width(&row).map_err(|e| invalid(&op, e))?;
            keyed.push((key.to_vec(), row));
        }
        self.insert(keyed, op).await
    }
}

#[async_trait]
impl Generation for SqliteGeneration {
    async fn publish(mut self: Box<Self>, job: &JobRecord) -> Result<(), StoreError> {
        let op = self.op("publish");
        self.check_live(&op)?;
        if job.relation_id != self.view {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                op,
                format!("job record is for view {}", job.relation_id),
            ));
        }
        // From here the writer thread owns the generation: it is either
        // published or dropped.
        self.live = false;
        let (view, plan, job) = (self.view, Arc::clone(&self.plan), job.clone());
        let worker_op = op.clone();
        self.inner.writer.run(op, move |w| publish(w, view, &plan, &job, &worker_op)).await
    }

    async fn discard(mut self: Box<Self>) -> Result<(), StoreError> {
        let op = self.op("discard");
        if !self.live {
            return Ok(());
        }
        self.live = false;
        let (view, table) = (self.view, self.plan.table.clone());
        let worker_op = op.clone();
        self.inner.writer.run(op, move |w| checkpoint::end(w, view, &table, &worker_op)).await
    }

    async fn amend(&mut self, ops: ViewOps) -> Result<ApplyReport, StoreError> {
        let op = self.op("amend");
        self.check_live(&op)?;
        if ops.relation_id != self.view {
            return Err(invalid(&op, format!("operations of view {} given for this copy", ops.relation_id)));
        }
        let plan = Arc::clone(&self.plan);
        let worker_op = op.clone();
        self.inner.writer.run(op, move |w| crate::apply::amend(w, &plan, &ops, &worker_op)).await
    }

    /// The amendment, the job record and the checkpoint row in one durable
    /// transaction (see [`checkpoint`](crate::checkpoint)).
    async fn checkpoint(&mut self, ops: ViewOps, job: &JobRecord) -> Result<ApplyReport, StoreError> {
        let op = self.op("checkpoint");
        self.check_live(&op)?;
        if ops.relation_id != self.view {
            return Err(invalid(&op, format!("operations of view {} given for this copy", ops.relation_id)));
        }
        if job.relation_id != self.view {
            return Err(invalid(&op, format!("job record is for view {}", job.relation_id)));
        }
        let (view, plan, number, job) = (self.view, Arc::clone(&self.plan), self.number, job.clone());
        let worker_op = op.clone();
        self.inner.writer.run(op, move |w| checkpoint::checkpoint(w, view, &plan, number, &ops, &job, &worker_op)).await
    }
}

impl Drop for SqliteGeneration {
    fn drop(&mut self) {
        // Abandoned without publish or discard: drop its table now rather
        // than at the next open — unless a checkpoint keeps it.
        if self.live {
            let (view, table) = (self.view, self.plan.table.clone());
            let op = self.op("abandon");
            let _ = self.inner.writer.spawn(&op.clone(), move |w| {
                let _ = checkpoint::release(w, view, &table, &op);
            });
        }
    }
}

/// Starts a generation of `view` (on the writer thread): creates its table.
/// A new copy replaces the view's checkpointed one: its checkpoint ends in
/// the same transaction (durable then), and its table is dropped unless a
/// live handle still fills it. Returns the table and the generation's
/// number.
pub(crate) fn begin(
    w: &mut Writer,
    view: RelationId,
    schema: &RelationSchema,
    op: &str,
) -> Result<(Plan, u64), StoreError> {
    let name = w.catalog.get(&view).ok_or_else(|| StoreError::no_view(op, view))?;
    // Refused now rather than at publish: the view could never get a table.
    let target = layout::view_table(op, name)?;
    check_table_free(w, op, view, &target)?;
    let number = w.next_generation;
    w.next_generation += 1;
    let plan = Plan::new(&layout::generation_table(view, number), schema).map_err(|e| invalid(op, e))?;
    let replaces = w.checkpoints.contains_key(&view);
    let orphaned = checkpoint::orphaned_table(w, view);
    w.transaction(op, replaces, |conn| {
        let e = |e| sql(op, e);
        if replaces {
            checkpoint::delete_row(conn, view, None).map_err(e)?;
        }
        if let Some(old) = &orphaned {
            checkpoint::drop_in(conn, old).map_err(e)?;
        }
        conn.execute_batch(&plan.create).map_err(e)
    })?;
    w.checkpoints.remove(&view);
    w.held.insert(plan.table.clone());
    Ok((plan, number))
}

/// Writes snapshot rows in one transaction. Keyed views keep the last row
/// per key, as an upsert would; full-row views count identical rows.
fn insert_rows(w: &mut Writer, plan: &Plan, rows: KeyedRows, op: &str) -> Result<(), StoreError> {
    w.transaction(op, false, |conn| {
        let mut stmt = conn.prepare_cached(&plan.add).map_err(|e| sql(op, e))?;
        for (key, row) in &rows {
            let exact = plan.exact(row);
            stmt.execute(rusqlite::params_from_iter(plan.params(key, row, 1, exact.as_deref())))
                .map_err(|e| sql(op, e))?;
        }
        Ok(())
    })
}

/// Switches `view` to the generation's table, durably.
fn publish(w: &mut Writer, view: RelationId, plan: &Plan, job: &JobRecord, op: &str) -> Result<(), StoreError> {
    w.check(op)?;
    let Some(name) = w.catalog.get(&view) else {
        // Forgotten meanwhile: nothing may be resurrected.
        let _ = checkpoint::end(w, view, &plan.table, op);
        return Err(StoreError::no_view(op, view));
    };
    let prepared = (|| {
        let target = layout::view_table(op, name)?;
        check_table_free(w, op, view, &target)?;
        let published = plan.renamed(&target).map_err(|e| invalid(op, e))?;
        Ok::<_, StoreError>(published)
    })();
    let published = match prepared {
        Ok(published) => published,
        Err(e) => {
            let _ = checkpoint::end(w, view, &plan.table, op);
            return Err(e);
        }
    };
    // The handle is gone whatever happens below (its table is renamed, or
    // dropped with any checkpoint of it).
    w.held.remove(&plan.table);
    let checkpointed = checkpoint::names(w, view, &plan.table);
    let old = w.copies.get(&view).map(|p| p.table.clone());
    let schema = encode_json("published schema", &plan.schema)?;
    let record = encode_json("job record", job)?;
    let result = w.transaction(op, true, |conn| {
        let e = |e| sql(op, e);
        if let Some(old) = &old {
            conn.execute(&format!("DROP TABLE IF EXISTS {}", quote(old)), []).map_err(e)?;
        }
        // Only a view's own table can carry its name (checked above); one
        // left over under that name would block the rename.
        conn.execute(&format!("DROP TABLE IF EXISTS {}", quote(&published.table)), []).map_err(e)?;
        conn.execute(&format!("ALTER TABLE {} RENAME TO {}", quote(&plan.table), quote(&published.table)), [])
            .map_err(e)?;
        // Added now, not while filling: see `table`.
        for add in &published.add_helpers {
            conn.execute(add, []).map_err(e)?;
        }
        conn.execute(
            "INSERT OR REPLACE INTO _flashsync_copies (relation_id, table_name, schema) VALUES (?1, ?2, ?3)",
            params![id_sql(view), published.table, schema],
        )
        .map_err(e)?;
        conn.execute("DELETE FROM _flashsync_columns WHERE relation_id = ?1", [id_sql(view)]).map_err(e)?;
        let mut insert = conn
            .prepare(
                "INSERT INTO _flashsync_columns \
                 (relation_id, position, name, sql_name, type_name, sql_type, helper, key_position) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(e)?;
        for (position, (column, sql_column)) in plan.schema.columns.iter().zip(&published.columns).enumerate() {
            let key_position = plan.schema.key.iter().position(|&k| k == position).map(|p| p as i64);
            insert
                .execute(params![
                    id_sql(view),
                    position as i64,
                    column.name,
                    sql_column.name,
                    column.type_name,
                    sql_column.kind.sql_type(),
                    sql_column.helper,
                    key_position,
                ])
                .map_err(e)?;
        }
        conn.execute(
            "INSERT OR REPLACE INTO _flashsync_jobs (relation_id, record) VALUES (?1, ?2)",
            params![id_sql(view), record],
        )
        .map_err(e)?;
        // A freshly published copy is whole, whatever happened before.
        conn.execute("DELETE FROM _flashsync_dirty WHERE relation_id = ?1", [id_sql(view)]).map_err(e)?;
        // The copy is finished: its checkpoint (not a newer copy's) ends.
        if checkpointed {
            checkpoint::delete_row(conn, view, Some(&plan.table)).map_err(e)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            w.copies.insert(view, Arc::new(published));
            if checkpointed {
                w.checkpoints.remove(&view);
            }
            Ok(())
        }
        Err(e) => {
            // The generation can never be published now.
            let _ = checkpoint::end(w, view, &plan.table, op);
            Err(e)
        }
    }
}
