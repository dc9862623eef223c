//! Materializing a view: rows go into a new generation (a fresh prefix of the
//! rows keyspace that nothing points at), written by the generation's own
//! [loader thread](crate::loader) — as sorted tables while keys ascend, in
//! bounded batches that are not synced one by one otherwise. `publish` then
//! registers the tables and switches the view's pointer, schema and job
//! record in one fsynced batch — which also makes every batched row before it
//! durable, the journal being sequential — and marks the old generation
//! garbage.
//!
//! A generation that is discarded, dropped without publishing, or left behind
//! by a crash becomes garbage too; garbage rows are deleted a bounded step at
//! a time by later `persist` calls.
//!
//! A copy made in chunks is amended between them
//! ([`Generation::amend`]): the feed's changes to the rows written so far.
//! The loader is finished first — an ingestion still open would register
//! its rows *after* the amendment, with newer sequence numbers, and an
//! ingested row would shadow the amendment's change to it — and the
//! changes then go in as one ordinary (unsynced) batch on the writer
//! thread, reading the ingested rows back. The next write starts a new
//! loader above them. The driver usually settles the rows before asking
//! for the amendment ([`Generation::settle`], in the copy's own task: the
//! loader's last batch written, its tables synced, its ingestion
//! finished), so the amendment's store step finds the loader finished
//! already. A truncate switches the generation to a fresh prefix, as
//! `apply` does for a published copy. The amendment itself runs in
//! [`crate::amend`].
//!
//! A [checkpoint](Generation::checkpoint) is an amendment written together
//! with the job record and the generation's checkpoint marker, synced
//! ([`crate::checkpoint`]). A checkpointed generation whose handle is
//! dropped without publish or discard is kept for
//! [`resume_generation`](flashsync_core::Store::resume_generation), which
//! makes a new handle on the same prefix; publish, discard, a new copy of
//! the view and forget end the checkpoint.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fjall::{PersistMode, Slice};
use flashsync_core::codec::{decode_stored_row, encode_row, restore_copies};
use flashsync_core::rowops::ApplyReport;
use flashsync_core::{
    EncodedRows, Generation, Identity, JobRecord, RelationId, RelationSchema, Row, RowSink, StoreError, StoreErrorKind,
    ViewOps,
};

use crate::amend::{amend, Checkpoint};
use crate::checkpoint;
use crate::error::{corrupt, engine, invalid};
use crate::layout::{self, CopyRecord, GenKey};
use crate::loader::{Batch, KeyedRows, Loader, Reply};
use crate::shared::{Copy, Shared};
use crate::worker::Worker;

/// The store's [`Generation`].
pub(crate) struct FjallGeneration {
    pub(crate) inner: Arc<crate::Inner>,
    pub(crate) gen: GenKey,
    pub(crate) schema: RelationSchema,
    /// Cleared once published or discarded.
    pub(crate) live: bool,
    /// Started by the first write.
    pub(crate) loader: Option<Loader>,
    /// The reply for the batch the loader is writing: awaited by the next
    /// write or by publish, so decoding the next batch overlaps writing this
    /// one.
    pub(crate) in_flight: Option<Reply>,
    /// Why the generation can take no more rows: its loader failed to
    /// finish before an amendment, so rows it held may be missing.
    pub(crate) failed: Option<StoreError>,
}

impl FjallGeneration {
    fn op(&self, what: &str) -> String {
        format!("{what} generation {} of view {}", self.gen.generation, self.gen.view)
    }

    fn check_live(&self, op: &str) -> Result<(), StoreError> {
        if !self.live {
            return Err(StoreError::new(StoreErrorKind::Closed, op, "generation already finished"));
        }
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn worker(&self) -> &Worker {
        &self.inner.worker
    }

    /// Waits for the batch in flight, reporting its failure.
    async fn wait_in_flight(&mut self, op: &str) -> Result<(), StoreError> {
        match self.in_flight.take() {
            Some(reply) => reply.await.map_err(|_| {
                StoreError::new(StoreErrorKind::Closed, op, "the generation's loader thread has stopped")
            })?,
            None => Ok(()),
        }
    }

    /// Hands the loader (if any) and the generation to the writer thread,
    /// which waits for the loader to stop and then abandons the generation:
    /// its prefix is deleted only after the last row written to it.
    ///
    /// With `keep_checkpoint` (a handle dropped, not discarded), a
    /// checkpointed generation is kept instead, for `resume_generation`:
    /// only the handle ends. Rows it took after its checkpoint stay until
    /// the resume deletes them; an ingestion the loader had not finished
    /// never reaches the database.
    fn abandon_job(&mut self, keep_checkpoint: bool) -> impl FnOnce() -> Result<(), StoreError> + Send + 'static {
        let shared = Arc::clone(&self.inner.shared);
        let gen = self.gen;
        let loader = self.loader.take();
        let op = self.op("abandon");
        move || {
            drop(loader);
            let mut state = shared.write(&op)?;
            if keep_checkpoint && state.is_checkpoint(gen) {
                state.filling.remove(&gen);
                return Ok(());
            }
            shared.abandon(&mut state, gen, &op)
        }
    }

    /// Finishes the loader (its ingestion registered), then applies `ops`
    /// on the writer thread as one batch, with `checkpoint`'s writes if
    /// given: see the module docs for why in that order.
    async fn amend_with(
        &mut self,
        ops: ViewOps,
        checkpoint: Option<Checkpoint>,
        op: String,
    ) -> Result<ApplyReport, StoreError> {
        self.check_live(&op)?;
        if ops.relation_id != self.gen.view {
            return Err(invalid(&op, format!("operations of view {} given for this copy", ops.relation_id)));
        }
        // For a checkpoint this also makes the ingested rows durable: fjall
        // fsyncs an ingestion's tables and the tree version listing them
        // before `finish` returns, so they are on disk before the checkpoint
        // marker claims them. Short when the driver settled the rows first.
        self.finish_loader(&op).await?;
        let shared = Arc::clone(&self.inner.shared);
        let gen = self.gen;
        let worker_op = op.clone();
        let (report, gen) = self.worker().run(op, move || amend(&shared, gen, &ops, checkpoint, &worker_op)).await?;
        self.gen = gen;
        Ok(report)
    }

    /// Waits for the rows handed over so far and finishes the loader, so
    /// its ingested tables are registered: readable by an amendment, and
    /// below every later write in fjall's sequence order (see the module
    /// docs).
    async fn finish_loader(&mut self, op: &str) -> Result<(), StoreError> {
        self.wait_in_flight(op).await?;
        if let Some(loader) = self.loader.take() {
            if let Err(e) = loader.finish().await {
                // The loader is gone with rows it may not have written: no
                // later write may pretend the copy is whole.
                self.failed = Some(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Hands encoded rows to the loader (starting it on the first batch)
    /// once the batch before has been written.
    async fn send(&mut self, rows: Batch, op: &str) -> Result<(), StoreError> {
        self.wait_in_flight(op).await?;
        let loader = match self.loader.take() {
            Some(loader) => loader,
            None => {
                Loader::start(Arc::clone(&self.inner.shared), self.gen.prefix(), self.schema.identity, op.to_owned())?
            }
        };
        let sent = loader.write(rows);
        self.loader = Some(loader);
        self.in_flight = Some(sent?);
        Ok(())
    }
}

/// Both write paths hand the rows to the loader and return without waiting
/// for them to be written: a failure surfaces at the next write or at
/// publish.
#[async_trait]
impl RowSink for FjallGeneration {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        let op = self.op("write to");
        self.check_live(&op)?;
        // Encode (and check) on the caller's thread: it is CPU work, and a bad
        // row must fail the whole call before anything is written.
        let mut encoded: KeyedRows = Vec::with_capacity(rows.len());
        let prefix = self.gen.prefix();
        for row in rows {
            let mut key = Vec::with_capacity(prefix.len() + 16);
            key.extend_from_slice(&prefix);
            self.schema.encode_key_of(&row, &mut key).map_err(|e| invalid(&op, e))?;
            encoded.push((Slice::from(key), Slice::from(encode_row(&row))));
        }
        self.send(Batch::Keyed(encoded), &op).await
    }

    /// The bytes are stored as they are: the rows keyspace holds exactly the
    /// [`codec`](flashsync_core::codec) encodings the batch carries.
    async fn write_encoded(&mut self, rows: EncodedRows) -> Result<(), StoreError> {
        let op = self.op("write to");
        self.check_live(&op)?;
        if !rows.fits(&self.schema) {
            let (width, key) = rows.shape();
            return Err(invalid(
                &op,
                format!(
                    "rows encoded for {width} columns keyed by {key:?}; the schema has {} keyed by {:?}",
                    self.schema.columns.len(),
                    self.schema.key
                ),
            ));
        }
        self.send(Batch::Encoded(rows), &op).await
    }
}

/// Writes snapshot rows in batches of at most `generation_batch_bytes`.
/// Rows come encoded as single copies. Full-row views count duplicate rows
/// (a multiset); keyed views keep the last row per key, as an upsert would.
pub(crate) fn write_rows(shared: &Shared, identity: Identity, rows: KeyedRows, op: &str) -> Result<(), StoreError> {
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
            Identity::Key => row,
            Identity::FullRow => {
                let before = match pending.get(key.as_ref()) {
                    Some(&copies) => copies,
                    None => match rows_ks.get(&key).map_err(|e| engine(op, e))? {
                        Some(bytes) => decode_stored_row(&bytes).map_err(|e| corrupt(op, e))?.1,
                        None => 0,
                    },
                };
                pending.insert(key.to_vec(), before + 1);
                Slice::from(restore_copies(&row, before + 1).map_err(|e| invalid(op, e))?)
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
        // Every row must be in before the switch. On failure the generation
        // is still live, and dropping it abandons it.
        self.finish_loader(&op).await?;
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
        self.in_flight = None;
        let job = self.abandon_job(false);
        self.worker().run(op, job).await
    }

    /// Waits for the loader's last batch, has it sync the tables written
    /// so far and flush the memtable in the background
    /// ([`presync`](crate::presync)), then finishes the ingestion — all
    /// in the copy's own task, outside the store's step queue. fjall holds
    /// its journal lock while an ingestion finishes, so other views'
    /// batches wait for that part anyway; but inside the amendment's step
    /// they waited for all of it, the table syncs included, and for
    /// everything queued behind the step. The commit gate keeps a finish
    /// here safe while those batches are applied (`loader::register`).
    /// The amendment, checkpoint or publish that follows finds the loader
    /// finished.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let op = self.op("settle");
        self.check_live(&op)?;
        self.wait_in_flight(&op).await?;
        if let Some(loader) = &self.loader {
            loader.prepare().await?;
        }
        self.finish_loader(&op).await
    }

    /// One ordinary batch, unsynced unless it moves the generation to a
    /// fresh prefix or ends its checkpoint (see [`crate::amend`]).
    async fn amend(&mut self, ops: ViewOps) -> Result<ApplyReport, StoreError> {
        let op = self.op("amend");
        self.amend_with(ops, None, op).await
    }

    /// The amendment, the job record and the checkpoint marker in one
    /// synced batch (see [`crate::checkpoint`]).
    async fn checkpoint(&mut self, ops: ViewOps, job: &JobRecord) -> Result<ApplyReport, StoreError> {
        let op = self.op("checkpoint");
        if job.relation_id != self.gen.view {
            return Err(invalid(&op, format!("job record of view {} given for this copy", job.relation_id)));
        }
        let checkpoint = Checkpoint {
            job: layout::encode_json("job record", job)?,
            marker: checkpoint::encode_marker(&self.schema)?,
            schema: self.schema.clone(),
        };
        self.amend_with(ops, Some(checkpoint), op).await
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
    // The published copy supersedes any unfinished one: this generation's
    // checkpoint went with its marker above; another's ends here.
    let ended = checkpoint::end(ks, &state, view, Some(gen), &mut wb);
    shared.commit(&mut state, wb, op)?;
    state.dirty.remove(&view);
    state.diverged.remove(&view);
    state.filling.remove(&gen);
    if state.is_checkpoint(gen) {
        state.checkpoints.remove(&view);
    }
    if let Some(ended) = ended {
        ended.finish(&mut state);
    }
    state.copies.insert(view, Copy { generation: gen.generation, schema });
    // The switch is durable, and with it everything committed before it.
    state.synced();
    if let Some(old) = old {
        state.garbage.push_back(old);
    }
    Ok(())
}

/// Starts a generation of `view` (on the writer thread). The `filling`
/// marker and the generation number's allocation are made durable here:
/// ingested rows bypass the journal, so without the fsync a crash could keep
/// rows and lose the marker (leaking them), or hand the same number out again
/// (mixing them into a later generation). The next open turns a marked
/// generation into garbage. A new copy replaces the view's checkpointed one,
/// in the same batch.
pub(crate) fn begin(shared: &Shared, view: RelationId, op: &str) -> Result<GenKey, StoreError> {
    let mut state = shared.write(op)?;
    if !state.catalog.contains(&view) {
        return Err(StoreError::no_view(op, view));
    }
    let mut wb = shared.db.batch().durability(Some(PersistMode::SyncAll));
    let generation = state.allocate_generation(&shared.ks, &mut wb);
    let gen = GenKey { view, generation };
    wb.insert(&shared.ks.filling, gen.prefix(), []);
    let ended = checkpoint::end(&shared.ks, &state, view, None, &mut wb);
    shared.commit(&mut state, wb, op)?;
    state.filling.insert(gen);
    if let Some(ended) = ended {
        ended.finish(&mut state);
    }
    Ok(gen)
}

impl Drop for FjallGeneration {
    fn drop(&mut self) {
        // Abandoned without publish or discard: turn it into garbage now
        // rather than at the next open — unless a checkpoint keeps it.
        if self.live {
            self.in_flight = None;
            let job = self.abandon_job(true);
            let _ = self.inner.worker.spawn("drop abandoned generation", move || {
                let _ = job();
            });
        }
    }
}
