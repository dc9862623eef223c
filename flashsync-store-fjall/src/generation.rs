//! Materializing a view: rows go into a new generation (a fresh prefix of the
//! rows keyspace that nothing points at), in bounded batches that are not
//! synced one by one. `publish` then switches the view's pointer, schema and
//! job record in one fsynced batch — which also makes every row before it
//! durable, the journal being sequential — and marks the old generation
//! garbage.
//!
//! A generation that is discarded, dropped without publishing, or left behind
//! by a crash becomes garbage too; garbage rows are deleted a bounded step at
//! a time by later `persist` calls.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fjall::PersistMode;
use flashsync_core::codec::{decode_stored_row, encode_key, encode_stored_row};
use flashsync_core::{
    Generation, Identity, JobRecord, RelationId, RelationSchema, Row, RowSink, StoreError, StoreErrorKind,
};

use crate::error::{corrupt, engine};
use crate::layout::{self, CopyRecord, GenKey};
use crate::shared::{Copy, Shared};
use crate::worker::Worker;

/// The store's [`Generation`].
pub(crate) struct FjallGeneration {
    pub(crate) inner: Arc<crate::Inner>,
    pub(crate) gen: GenKey,
    pub(crate) schema: RelationSchema,
    /// Cleared once published or discarded.
    pub(crate) live: bool,
}

impl FjallGeneration {
    fn op(&self, what: &str) -> String {
        format!("{what} generation {} of view {}", self.gen.generation, self.gen.view)
    }

    fn check_live(&self, op: &str) -> Result<(), StoreError> {
        if self.live {
            Ok(())
        } else {
            Err(StoreError::new(StoreErrorKind::Closed, op, "generation already finished"))
        }
    }

    fn worker(&self) -> &Worker {
        &self.inner.worker
    }
}

#[async_trait]
impl RowSink for FjallGeneration {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        let op = self.op("write to");
        self.check_live(&op)?;
        // Encode (and check) on the caller's thread: it is CPU work, and a bad
        // row must fail the whole call before anything is written.
        let mut encoded = Vec::with_capacity(rows.len());
        for row in rows {
            let key = self
                .schema
                .key_of(&row)
                .map_err(|e| StoreError::new(StoreErrorKind::Invalid, op.as_str(), e.to_string()))?;
            encoded.push((self.gen.row_key(&encode_key(&key)), row));
        }
        let shared = Arc::clone(&self.inner.shared);
        let identity = self.schema.identity;
        let worker_op = op.clone();
        self.worker().run(op, move || write_rows(&shared, identity, encoded, &worker_op)).await
    }
}

/// Writes snapshot rows in batches of at most `generation_batch_bytes`.
/// Full-row views count duplicate rows (a multiset); keyed views keep the
/// last row per key, as an upsert would.
fn write_rows(shared: &Shared, identity: Identity, rows: Vec<(Vec<u8>, Row)>, op: &str) -> Result<(), StoreError> {
    // Refuse to write once poisoned.
    drop(shared.read(op)?);
    let rows_ks = &shared.ks.rows;
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
                    None => match rows_ks.get(&key).map_err(|e| engine(op, e))? {
                        Some(bytes) => decode_stored_row(&bytes).map_err(|e| corrupt(op, e))?.1,
                        None => 0,
                    },
                };
                pending.insert(key.clone(), before + 1);
                encode_stored_row(&row, before + 1)
            }
        };
        bytes += key.len() + value.len();
        batch.insert(rows_ks, key, value);
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
        self.check_live(&op)?;
        if job.relation_id != self.gen.view {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                op,
                format!("job record is for view {}", job.relation_id),
            ));
        }
        // From here the writer thread owns the generation: it is either
        // published or abandoned.
        self.live = false;
        let shared = Arc::clone(&self.inner.shared);
        let (gen, schema, job) = (self.gen, self.schema.clone(), job.clone());
        let worker_op = op.clone();
        self.worker().run(op, move || publish(&shared, gen, schema, &job, &worker_op)).await
    }

    async fn discard(mut self: Box<Self>) -> Result<(), StoreError> {
        let op = self.op("discard");
        if !self.live {
            return Ok(());
        }
        self.live = false;
        let shared = Arc::clone(&self.inner.shared);
        let gen = self.gen;
        let worker_op = op.clone();
        self.worker()
            .run(op, move || {
                let mut state = shared.write(&worker_op)?;
                shared.abandon(&mut state, gen, &worker_op)
            })
            .await
    }
}

fn publish(shared: &Shared, gen: GenKey, schema: RelationSchema, job: &JobRecord, op: &str) -> Result<(), StoreError> {
    let mut state = shared.write(op)?;
    let view = gen.view;
    if !state.catalog.contains(&view) {
        shared.abandon(&mut state, gen, op)?;
        return Err(StoreError::no_view(op, view));
    }
    let ks = &shared.ks;
    let key = layout::view_key(view);
    let copy = CopyRecord { generation: gen.generation, schema: schema.clone() };
    let mut wb = shared.db.batch().durability(Some(PersistMode::SyncAll));
    wb.insert(&ks.copies, key, layout::encode_json("published copy", &copy)?);
    wb.insert(&ks.jobs, key, layout::encode_json("job record", job)?);
    // A freshly published copy is whole, whatever a crash left before.
    wb.remove(&ks.dirty, key);
    wb.remove(&ks.filling, gen.prefix());
    let old = state.copies.get(&view).map(|c| GenKey { view, generation: c.generation });
    if let Some(old) = old {
        wb.insert(&ks.garbage, old.prefix(), []);
    }
    shared.commit(&mut state, wb, op)?;
    state.dirty.remove(&view);
    state.filling.remove(&gen);
    state.copies.insert(view, Copy { generation: gen.generation, schema });
    // The switch is durable, and with it everything committed before it.
    state.synced();
    if let Some(old) = old {
        state.garbage.push_back(old);
    }
    Ok(())
}

/// Starts a generation of `view` (on the writer thread). The `filling`
/// marker needs no fsync of its own: every row of the generation is written
/// after it in the journal, so no crash can keep a row and lose the marker —
/// and the next open turns a marked generation into garbage.
pub(crate) fn begin(shared: &Shared, view: RelationId, op: &str) -> Result<GenKey, StoreError> {
    let mut state = shared.write(op)?;
    if !state.catalog.contains(&view) {
        return Err(StoreError::no_view(op, view));
    }
    let mut wb = shared.db.batch().durability(None);
    let generation = state.allocate_generation(&shared.ks, &mut wb);
    let gen = GenKey { view, generation };
    wb.insert(&shared.ks.filling, gen.prefix(), []);
    shared.commit(&mut state, wb, op)?;
    state.filling.insert(gen);
    Ok(gen)
}

impl Drop for FjallGeneration {
    fn drop(&mut self) {
        // Abandoned without publish or discard: turn it into garbage now
        // rather than at the next open.
        if self.live {
            let shared = Arc::clone(&self.inner.shared);
            let gen = self.gen;
            let _ = self.inner.worker.spawn("drop abandoned generation", move || {
                if let Ok(mut state) = shared.write("drop abandoned generation") {
                    let _ = shared.abandon(&mut state, gen, "drop abandoned generation");
                }
            });
        }
    }
}
