//! Materializing a view: rows go into a new generation keyspace that nothing
//! points at, in bounded batches that are not synced one by one; `publish`
//! then switches the view's pointer, schema and job record in one fsynced
//! batch (which also makes every row before it durable, the journal being
//! sequential), and deletes the old generation.
//!
//! A generation that is discarded, dropped without publishing, or left behind
//! by a crash is deleted — right away, or when the store is next opened.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fjall::{Keyspace, PersistMode};
use flashsync_core::codec::{decode_stored_row, encode_key, encode_stored_row};
use flashsync_core::{
    Generation, Identity, JobRecord, RelationId, RelationSchema, Row, RowSink, StoreError, StoreErrorKind,
};

use crate::error::{corrupt, engine};
use crate::layout::{self, CopyRecord};
use crate::shared::{Copy, Shared};
use crate::worker::Worker;

/// The store's [`Generation`].
pub(crate) struct FjallGeneration {
    pub(crate) inner: Arc<crate::Inner>,
    pub(crate) view: RelationId,
    pub(crate) schema: RelationSchema,
    pub(crate) generation: u64,
    /// `None` once published or discarded.
    pub(crate) rows: Option<Keyspace>,
}

impl FjallGeneration {
    fn op(&self, what: &str) -> String {
        format!("{what} generation {} of view {}", self.generation, self.view)
    }

    fn rows(&self, op: &str) -> Result<Keyspace, StoreError> {
        self.rows.clone().ok_or_else(|| StoreError::new(StoreErrorKind::Closed, op, "generation already finished"))
    }

    fn worker(&self) -> &Worker {
        &self.inner.worker
    }
}

#[async_trait]
impl RowSink for FjallGeneration {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        let op = self.op("write to");
        let target = self.rows(&op)?;
        // Encode (and check) on the caller's thread: it is CPU work, and a bad
        // row must fail the whole call before anything is written.
        let mut encoded = Vec::with_capacity(rows.len());
        for row in rows {
            let key = self
                .schema
                .key_of(&row)
                .map_err(|e| StoreError::new(StoreErrorKind::Invalid, op.as_str(), e.to_string()))?;
            encoded.push((encode_key(&key), row));
        }
        let shared = Arc::clone(&self.inner.shared);
        let identity = self.schema.identity;
        let worker_op = op.clone();
        self.worker().run(op, move || write_rows(&shared, &target, identity, encoded, &worker_op)).await
    }
}

/// Writes snapshot rows in batches of at most `generation_batch_bytes`.
/// Full-row views count duplicate rows (a multiset); keyed views keep the
/// last row per key, as an upsert would.
fn write_rows(
    shared: &Shared,
    target: &Keyspace,
    identity: Identity,
    rows: Vec<(Vec<u8>, Row)>,
    op: &str,
) -> Result<(), StoreError> {
    // Refuse to write once poisoned.
    drop(shared.read(op)?);
    let limit = shared.options.generation_batch_bytes;
    let mut batch = shared.db.batch().durability(None);
    let mut bytes = 0usize;
    // Copy counts written by the current fjall batch, which reads cannot see yet.
    let mut pending: HashMap<Vec<u8>, u64> = HashMap::new();
    for (key, row) in rows {
        let value = match identity {
            Identity::Key => encode_stored_row(&row, 1),
            Identity::FullRow => {
                let before = match pending.get(&key) {
                    Some(&copies) => copies,
                    None => match target.get(&key).map_err(|e| engine(op, e))? {
                        Some(bytes) => decode_stored_row(&bytes).map_err(|e| corrupt(op, e))?.1,
                        None => 0,
                    },
                };
                pending.insert(key.clone(), before + 1);
                encode_stored_row(&row, before + 1)
            }
        };
        bytes += key.len() + value.len();
        batch.insert(target, key, value);
        if bytes >= limit {
            batch.commit().map_err(|e| engine(op, e))?;
            batch = shared.db.batch().durability(None);
            bytes = 0;
            pending.clear();
        }
    }
    batch.commit().map_err(|e| engine(op, e))
}

#[async_trait]
impl Generation for FjallGeneration {
    async fn publish(mut self: Box<Self>, job: &JobRecord) -> Result<(), StoreError> {
        let op = self.op("publish");
        let rows = self.rows(&op)?;
        if job.relation_id != self.view {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                op,
                format!("job record is for view {}", job.relation_id),
            ));
        }
        // From here the writer thread owns the keyspace: it either becomes
        // the published copy or is deleted.
        self.rows = None;
        let shared = Arc::clone(&self.inner.shared);
        let (view, generation, schema, job) = (self.view, self.generation, self.schema.clone(), job.clone());
        let worker_op = op.clone();
        self.worker().run(op, move || publish(&shared, view, generation, schema, rows, &job, &worker_op)).await
    }

    async fn discard(mut self: Box<Self>) -> Result<(), StoreError> {
        let op = self.op("discard");
        let Some(rows) = self.rows.take() else {
            return Ok(());
        };
        let shared = Arc::clone(&self.inner.shared);
        self.worker()
            .run(op, move || {
                shared.drop_generation(rows);
                Ok(())
            })
            .await
    }
}

fn publish(
    shared: &Shared,
    view: RelationId,
    generation: u64,
    schema: RelationSchema,
    rows: Keyspace,
    job: &JobRecord,
    op: &str,
) -> Result<(), StoreError> {
    let mut state = match shared.write(op) {
        Ok(state) => state,
        Err(e) => {
            shared.drop_generation(rows);
            return Err(e);
        }
    };
    if !state.catalog.contains(&view) {
        shared.drop_generation(rows);
        return Err(StoreError::no_view(op, view));
    }
    let ks = &shared.ks;
    let key = layout::view_key(view);
    let copy = layout::encode_json("published copy", &CopyRecord { generation, schema: schema.clone() })?;
    let mut wb = shared.db.batch().durability(Some(PersistMode::SyncAll));
    wb.insert(&ks.copies, key, copy);
    wb.insert(&ks.jobs, key, layout::encode_json("job record", job)?);
    // A freshly published copy is whole, whatever a crash left before.
    wb.remove(&ks.dirty, key);
    if let Err(e) = wb.commit() {
        let e = engine(op, e);
        state.poison(&e);
        // The switch may still be in the journal: keep the rows, and let the
        // next open decide (it keeps whichever generation the pointer names).
        return Err(e);
    }
    state.dirty.remove(&view);
    let old = state.copies.insert(view, Copy { generation, schema, rows });
    // The switch is durable, and with it everything committed before it.
    if let Some(old) = old {
        state.retired.push(old.rows);
    }
    shared.reclaim_retired(&mut state);
    Ok(())
}

impl Drop for FjallGeneration {
    fn drop(&mut self) {
        // Abandoned without publish or discard: reclaim its space now rather
        // than at the next open.
        if let Some(rows) = self.rows.take() {
            let shared = Arc::clone(&self.inner.shared);
            let _ = self.inner.worker.spawn("drop abandoned generation", move || shared.drop_generation(rows));
        }
    }
}
