//! [`FjallStore`] and its [`Store`] implementation: wiring calls to the
//! writer thread (mutations) or to inline reads.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use fjall::PersistMode;
use flashsync_core::codec::encode_key;
use flashsync_core::rowops::ApplyReport;
use flashsync_core::{
    ApplyBatch, BatchSeq, Generation, JobRecord, Key, KeyRange, OriginId, RelationId, RelationSchema, Row, Store,
    StoreError, StoreErrorKind, StoredState, ViewRecord,
};

use crate::checkpoint;
use crate::error::guard;
use crate::generation::{self, FjallGeneration};
use crate::journal::{self, JournalSync};
use crate::layout::{self, GenKey};
use crate::options::Options;
use crate::shared::{Shared, State, RECLAIM_STEP};
use crate::worker::Worker;
use crate::{apply, open, read};

/// A [`Store`] on a fjall database directory. See the [crate docs](crate).
///
/// Cheap to clone: clones share one database and one writer thread. The
/// database closes when the last clone (and the last [`Generation`] from it)
/// is dropped.
#[derive(Clone)]
pub struct FjallStore {
    pub(crate) inner: Arc<Inner>,
}

/// What clones share. `worker` is declared first so it drops (draining queued
/// writes) before the last reference to the database goes.
pub(crate) struct Inner {
    pub(crate) worker: Worker,
    /// Syncs the journal while the writer thread goes on (see `journal`).
    syncer: Worker,
    pub(crate) shared: Arc<Shared>,
    /// The highest batch whose `apply` has returned to its caller. `persist`
    /// reports no further than this as of its call, as the contract asks
    /// (a batch still queued when `persist` is called is not claimed).
    returned: std::sync::Mutex<Option<BatchSeq>>,
}

impl Inner {
    fn returned(&self) -> Option<BatchSeq> {
        *self.returned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_returned(&self, seq: BatchSeq) {
        let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        *returned = (*returned).max(Some(seq));
    }
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").field("path", &self.inner.shared.path).finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens the store in directory `path`, creating it if it does not exist.
    ///
    /// Fails with a [`StoreError`] whose kind says why:
    /// - [`Io`](StoreErrorKind::Io): `path` is a file, cannot be created or
    ///   written, or another I/O failure;
    /// - [`Locked`](StoreErrorKind::Locked): another process (or another
    ///   `FjallStore` in this one) has the store open;
    /// - [`Incompatible`](StoreErrorKind::Incompatible): the directory holds
    ///   something else (another application's files or fjall database), or a
    ///   store written in a format version this build does not read;
    /// - [`Corrupt`](StoreErrorKind::Corrupt): the files are damaged.
    ///
    /// A generation a crash left half-written becomes garbage on open; its
    /// rows, like those of replaced generations, are deleted by later
    /// [`persist`](Store::persist) calls (or at once by [`reclaim`](Self::reclaim)).
    /// A checkpointed one is kept for [`resume_generation`](Store::resume_generation).
    /// A directory left by a crash in the middle of creating the store is
    /// cleared and created afresh.
    ///
    /// Opening blocks (it reads and may replay the journal); async callers
    /// should run it where blocking is acceptable.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<FjallStore, StoreError> {
        let shared = open::open(path.as_ref(), options)?;
        Ok(FjallStore {
            inner: Arc::new(Inner {
                worker: Worker::start()?,
                syncer: Worker::named("flashsync-fjall-syncer")?,
                shared: Arc::new(shared),
                returned: Default::default(),
            }),
        })
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.shared.options
    }

    /// This store's identity: 12 hex digits created with the store and kept
    /// in it. Sources name their upstream resources after it (the Postgres
    /// source's slot and publication, see
    /// `flashsync_source_pg::PgSourceConfig::for_store`), so two stores
    /// syncing one database never share them by accident. `None` for a
    /// store created by an earlier version: it keeps the names it has.
    pub fn store_id(&self) -> Option<&str> {
        self.inner.shared.store_id.as_deref()
    }

    /// Number of row generations in the store: one per published copy, plus
    /// generations being filled, checkpointed ones kept for a resume, and
    /// replaced ones whose rows are not deleted yet. For monitoring and tests
    /// (a leak shows as a number that keeps growing).
    pub fn generation_count(&self) -> usize {
        match self.inner.shared.read("generation count") {
            Ok(state) => {
                // A checkpointed generation a live handle writes is in both.
                let kept = state.checkpoints.values().filter(|kept| !state.filling.contains(&kept.gen)).count();
                state.copies.len() + state.filling.len() + kept + state.garbage.len() + state.garbage_after_sync.len()
            }
            Err(_) => 0,
        }
    }

    /// Makes everything applied so far durable and deletes the rows of every
    /// replaced or abandoned generation now, however many there are.
    ///
    /// Normally unnecessary: each [`persist`](Store::persist) deletes a
    /// bounded number of garbage rows, so the space comes back gradually
    /// without stalling the batches behind it. For maintenance, tests and
    /// benchmarks.
    pub async fn reclaim(&self) -> Result<(), StoreError> {
        let shared = self.shared();
        self.inner
            .worker
            .run("reclaim".into(), move || {
                let mut state = shared.write("reclaim")?;
                shared.persist_journal(&mut state, PersistMode::SyncAll, "reclaim")?;
                state.synced();
                while shared.reclaim(&mut state, usize::MAX, "reclaim")? {}
                Ok(())
            })
            .await
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.inner.shared)
    }

    /// Runs a durable single-batch mutation on the writer thread: `fill`
    /// adds the writes, the batch commits with an fsync, then `after` updates
    /// the in-memory state, given what `fill` returned.
    async fn durable<T>(
        &self,
        op: String,
        fill: impl FnOnce(&Shared, &State, &mut fjall::OwnedWriteBatch) -> Result<T, StoreError> + Send + 'static,
        after: impl FnOnce(&Shared, &mut State, T) + Send + 'static,
    ) -> Result<(), StoreError> {
        let shared = self.shared();
        let worker_op = op.clone();
        self.inner
            .worker
            .run(op, move || {
                let op = worker_op;
                let mut state = shared.write(&op)?;
                let mut wb = shared.db.batch().durability(Some(PersistMode::SyncAll));
                let filled = fill(&shared, &state, &mut wb)?;
                shared.commit(&mut state, wb, &op)?;
                after(&shared, &mut state, filled);
                // The fsync made everything before it durable too.
                state.synced();
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl Store for FjallStore {
    async fn load(&self) -> Result<StoredState, StoreError> {
        let shared = self.shared();
        guard("load", || read::load(&shared))
    }

    async fn put_view(&self, view: &ViewRecord) -> Result<(), StoreError> {
        let id = view.relation_id;
        let record = layout::encode_json("catalog entry", view)?;
        self.durable(
            format!("put view {id}"),
            move |shared, _, wb| {
                wb.insert(&shared.ks.catalog, layout::view_key(id), record);
                Ok(())
            },
            move |_, state, ()| {
                state.catalog.insert(id);
            },
        )
        .await
    }

    async fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let id = job.relation_id;
        let record = layout::encode_json("job record", job)?;
        self.durable(
            format!("put job {id}"),
            move |shared, _, wb| {
                wb.insert(&shared.ks.jobs, layout::view_key(id), record);
                Ok(())
            },
            |_, _, ()| {},
        )
        .await
    }

    async fn forget(&self, id: RelationId) -> Result<(), StoreError> {
        self.durable(
            format!("forget view {id}"),
            move |shared, state, wb| {
                let ks = &shared.ks;
                let key = layout::view_key(id);
                for keyspace in [&ks.catalog, &ks.jobs, &ks.copies, &ks.dirty] {
                    wb.remove(keyspace, key);
                }
                if let Some(copy) = state.copies.get(&id) {
                    wb.insert(&ks.garbage, GenKey { view: id, generation: copy.generation }.prefix(), []);
                }
                // Every generation of rows goes: a checkpointed one too.
                Ok(checkpoint::end(ks, state, id, None, wb))
            },
            move |_, state, ended| {
                state.catalog.remove(&id);
                state.dirty.remove(&id);
                state.diverged.remove(&id);
                if let Some(copy) = state.copies.remove(&id) {
                    state.garbage.push_back(GenKey { view: id, generation: copy.generation });
                }
                if let Some(ended) = ended {
                    ended.finish(state);
                }
            },
        )
        .await?;
        // The forget is durable, so the copy's space can come back now
        // rather than at the next persist, which an idle engine may not
        // reach for a long time (one bounded step: a copy's own tables are
        // dropped whole, the rest follows with later persists).
        let shared = self.shared();
        self.inner
            .worker
            .run(format!("reclaim forgotten view {id}"), move || {
                let mut state = shared.write("reclaim")?;
                shared.reclaim(&mut state, RECLAIM_STEP, "reclaim after forget")?;
                Ok(())
            })
            .await
    }

    async fn forget_origin(&self, origin: &OriginId) -> Result<(), StoreError> {
        let origin = origin.clone();
        self.durable(
            format!("forget origin {origin}"),
            move |shared, _, wb| {
                wb.remove(&shared.ks.origins, origin.as_str());
                Ok(())
            },
            |_, _, ()| {},
        )
        .await
    }

    async fn begin_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
    ) -> Result<Box<dyn Generation>, StoreError> {
        let op = format!("begin generation of view {id}");
        if !schema.is_well_formed() {
            return Err(StoreError::new(StoreErrorKind::Invalid, op, "schema key does not fit its columns"));
        }
        let shared = self.shared();
        let worker_op = op.clone();
        let gen = self.inner.worker.run(op, move || generation::begin(&shared, id, &worker_op)).await?;
        Ok(Box::new(FjallGeneration {
            inner: Arc::clone(&self.inner),
            gen,
            schema: schema.clone(),
            live: true,
            loader: None,
            in_flight: None,
            failed: None,
        }))
    }

    /// A generation finishes its bulk ingestion before it is amended, so
    /// ingested rows never shadow the amendment (see `generation`).
    fn amends_generations(&self) -> bool {
        true
    }

    /// A checkpoint marks the generation so that the next open keeps it
    /// (see `checkpoint`).
    fn resumes_generations(&self) -> bool {
        true
    }

    async fn resume_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
        after: &Key,
    ) -> Result<Option<Box<dyn Generation>>, StoreError> {
        let op = format!("resume generation of view {id}");
        let shared = self.shared();
        let (kept, after) = (schema.clone(), encode_key(after));
        let worker_op = op.clone();
        let gen = self.inner.worker.run(op, move || checkpoint::resume(&shared, id, &kept, &after, &worker_op)).await?;
        Ok(gen.map(|gen| {
            // A fresh handle: its first write starts a loader above the
            // rows the checkpoint kept.
            Box::new(FjallGeneration {
                inner: Arc::clone(&self.inner),
                gen,
                schema: schema.clone(),
                live: true,
                loader: None,
                in_flight: None,
                failed: None,
            }) as Box<dyn Generation>
        }))
    }

    async fn apply(&self, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
        let shared = self.shared();
        let seq = batch.seq;
        let report =
            self.inner.worker.run(format!("apply batch {}", seq.0), move || apply::apply(&shared, batch)).await?;
        self.inner.note_returned(seq);
        Ok(report)
    }

    /// One writer-thread job for the whole run (each batch still its own
    /// atomic fjall batch), so a driver draining a backlog pays one thread
    /// round trip per run instead of per batch.
    async fn apply_many(&self, batches: Vec<ApplyBatch>) -> Vec<Result<ApplyReport, StoreError>> {
        let Some(last) = batches.last().map(|b| b.seq) else {
            return Vec::new();
        };
        let count = batches.len();
        let seqs: Vec<BatchSeq> = batches.iter().map(|b| b.seq).collect();
        let shared = self.shared();
        let results = self
            .inner
            .worker
            .run(format!("apply batches up to {}", last.0), move || {
                let mut out = Vec::with_capacity(count);
                let mut failed = false;
                for batch in batches {
                    if failed {
                        out.push(Err(StoreError::earlier_batch_failed(batch.seq)));
                        continue;
                    }
                    let result = apply::apply(&shared, batch);
                    failed = result.is_err();
                    out.push(result);
                }
                Ok(out)
            })
            .await;
        match results {
            Ok(results) => {
                for (seq, result) in seqs.into_iter().zip(&results) {
                    if result.is_ok() {
                        self.inner.note_returned(seq);
                    }
                }
                results
            }
            // The writer thread is gone or panicked: nothing is known about
            // any of the batches.
            Err(e) => (0..count).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn persist(&self) -> Result<Option<BatchSeq>, StoreError> {
        let through = self.inner.returned();
        // Every batch whose apply returned before this call went to the
        // journal before the first step runs (one writer thread, in call
        // order), so the sync covers it. The fsync itself runs off the
        // writer thread, which meanwhile applies other batches (`journal`).
        let shared = self.shared();
        let covered = self
            .inner
            .worker
            .run("persist".into(), move || {
                let mut state = shared.write("persist")?;
                shared.persist_journal(&mut state, PersistMode::Buffer, "persist")?;
                // Generations replaced by the batches the sync covers; those
                // replaced later wait for the next sync.
                Ok(state.garbage_after_sync.clone())
            })
            .await?;
        let shared = self.shared();
        let synced =
            self.inner.syncer.run("persist".into(), move || Ok(journal::sync_active(&shared.journal_dir))).await?;
        let shared = self.shared();
        self.inner
            .worker
            .run("persist".into(), move || {
                let mut state = shared.write("persist")?;
                match synced {
                    JournalSync::Synced => state.synced_only(&covered),
                    JournalSync::Unavailable => {
                        shared.persist_journal(&mut state, PersistMode::SyncAll, "persist")?;
                        state.synced();
                    }
                    JournalSync::Failed(e) => {
                        let e = StoreError::new(StoreErrorKind::Io, "persist", format!("cannot sync the journal: {e}"));
                        state.poison(&e);
                        return Err(e);
                    }
                }
                // Space of replaced generations comes back a bounded step
                // per persist, off the apply path.
                shared.reclaim(&mut state, RECLAIM_STEP, "persist")?;
                Ok(through)
            })
            .await
    }

    async fn get(&self, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError> {
        guard("get", || read::get(&self.inner.shared, id, key))
    }

    async fn scan(&self, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError> {
        guard("scan", || read::scan(&self.inner.shared, id, range, limit))
    }

    async fn count(&self, id: RelationId) -> Result<u64, StoreError> {
        guard("count", || read::count(&self.inner.shared, id))
    }
}
