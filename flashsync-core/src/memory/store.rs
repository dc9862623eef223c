//! An in-memory `Store`: everything in maps behind one mutex.
//!
//! "Durability" is modelled: [`MemoryStore::crash`] throws away every batch
//! applied since the last [`Store::persist`], exactly what a real store may
//! lose, so tests and the simulator can exercise crash recovery.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::change::{ApplyBatch, BatchSeq, Progress, ViewOps};
use crate::codec::{decode_stored_row, encode_key};
use crate::error::{StoreError, StoreErrorKind};
use crate::job::JobRecord;
use crate::rowops::{apply_ops, apply_staged, ApplyReport, RowAccess};
use crate::schema::RelationSchema;
use crate::staging::Staging;
use crate::store::{Generation, KeyRange, OriginProgress, RowSink, Store, StoredState, ViewRecord};
use crate::value::{Key, Row};
use crate::view::{OriginId, RelationId};

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Default)]
struct State {
    views: BTreeMap<RelationId, ViewRecord>,
    jobs: BTreeMap<RelationId, JobRecord>,
    origins: BTreeMap<OriginId, crate::lsn::Lsn>,
    /// Published copy per view: schema and rows (key bytes -> stored row bytes).
    copies: BTreeMap<RelationId, (RelationSchema, Rows)>,
    /// Views whose copy an applied batch could not fit (a conflict): dirty
    /// until published again or forgotten, whatever commits follow.
    diverged: BTreeSet<RelationId>,
    /// Unfinished copies kept by a checkpoint, per view: the generation's
    /// number, schema and rows as of the checkpoint.
    checkpoints: BTreeMap<RelationId, (u64, RelationSchema, Rows)>,
    last_seq: Option<BatchSeq>,
}

#[derive(Default)]
struct Inner {
    live: State,
    /// What survives a crash: the state as of the last persist.
    durable: State,
    next_generation: u64,
    /// Staged parts of large transactions: outside both states, as they are
    /// never visible and never survive a crash.
    staging: Staging,
    /// Test hook: when set, the next `apply` fails with this error.
    fail_next_apply: Option<StoreError>,
}

/// The in-memory store. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (every mutation builds its result before assigning), so recovering
        // the guard is sound.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates a crash and reopening: every batch applied since the last
    /// `persist` is lost, and batch numbering starts afresh (sequence numbers
    /// increase within one opening of a store).
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.live = inner.durable.clone();
        inner.live.last_seq = None;
        inner.staging.clear();
    }

    /// Makes the next `apply` fail with `error` (for failure-path tests).
    pub fn fail_next_apply(&self, error: StoreError) {
        self.lock().fail_next_apply = Some(error);
    }

    /// The sequence number of the last applied batch.
    pub fn last_applied(&self) -> Option<BatchSeq> {
        self.lock().live.last_seq
    }

    /// Every row of a view's published copy, in key order (copies repeated).
    pub fn rows(&self, id: RelationId) -> Vec<Row> {
        let inner = self.lock();
        let Some((_, rows)) = inner.live.copies.get(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for bytes in rows.values() {
            if let Ok((row, copies)) = decode_stored_row(bytes) {
                for _ in 0..copies {
                    out.push(row.clone());
                }
            }
        }
        out
    }
}

struct Access<'a> {
    state: &'a mut State,
}

impl RowAccess for Access<'_> {
    fn read(&mut self, view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state.copies.get(&view).and_then(|(_, rows)| rows.get(key).cloned()))
    }

    fn write(&mut self, view: RelationId, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        let (_, rows) = self.state.copies.get_mut(&view).ok_or_else(|| StoreError::no_view("apply", view))?;
        match value {
            Some(v) => rows.insert(key, v),
            None => rows.remove(&key),
        };
        Ok(())
    }

    fn clear(&mut self, view: RelationId) -> Result<(), StoreError> {
        let (_, rows) = self.state.copies.get_mut(&view).ok_or_else(|| StoreError::no_view("apply", view))?;
        rows.clear();
        Ok(())
    }

    /// Writes go straight into the batch's copy of the state.
    fn reads_own_writes(&self) -> bool {
        true
    }

    fn mark_diverged(&mut self, view: RelationId) -> Result<(), StoreError> {
        self.state.diverged.insert(view);
        Ok(())
    }
}

struct MemoryGeneration {
    store: MemoryStore,
    id: RelationId,
    /// Tells this generation's checkpoint from a later copy's.
    number: u64,
    schema: RelationSchema,
    rows: Rows,
}

#[async_trait]
impl RowSink for MemoryGeneration {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        for row in rows {
            let key = self.schema.key_of(&row).map_err(|e| {
                StoreError::new(StoreErrorKind::Invalid, format!("snapshot of view {}", self.id), e.to_string())
            })?;
            let k = encode_key(&key);
            let copies = match self.rows.get(&k) {
                Some(bytes) if self.schema.identity == crate::schema::Identity::FullRow => {
                    decode_stored_row(bytes)
                        .map_err(|e| StoreError::new(StoreErrorKind::Corrupt, "snapshot", e.to_string()))?
                        .1
                }
                _ => 0,
            };
            self.rows.insert(k, crate::codec::encode_stored_row(&row, copies + 1));
        }
        Ok(())
    }
}

#[async_trait]
impl Generation for MemoryGeneration {
    async fn publish(self: Box<Self>, job: &JobRecord) -> Result<(), StoreError> {
        let mut inner = self.store.lock();
        if !inner.live.views.contains_key(&self.id) {
            return Err(StoreError::no_view("publish", self.id));
        }
        if job.relation_id != self.id {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                "publish",
                format!("job record of view {} given for a copy of view {}", job.relation_id, self.id),
            ));
        }
        // Publishing is durable on return: apply it to both states. The
        // durable state receives exactly the same switch.
        let inner = &mut *inner;
        for state in [&mut inner.live, &mut inner.durable] {
            if state.views.contains_key(&self.id) {
                state.copies.insert(self.id, (self.schema.clone(), self.rows.clone()));
                state.jobs.insert(self.id, job.clone());
                state.diverged.remove(&self.id);
                state.checkpoints.remove(&self.id);
            }
        }
        Ok(())
    }

    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        let mut inner = self.store.lock();
        let inner = &mut *inner;
        for state in [&mut inner.live, &mut inner.durable] {
            if state.checkpoints.get(&self.id).is_some_and(|(n, _, _)| *n == self.number) {
                state.checkpoints.remove(&self.id);
            }
        }
        Ok(())
    }

    async fn checkpoint(&mut self, ops: ViewOps, job: &JobRecord) -> Result<ApplyReport, StoreError> {
        if job.relation_id != self.id {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                "checkpoint",
                format!("job record of view {} given for a copy of view {}", job.relation_id, self.id),
            ));
        }
        let report = self.amend(ops).await?;
        let mut inner = self.store.lock();
        if !inner.live.views.contains_key(&self.id) {
            return Err(StoreError::no_view("checkpoint", self.id));
        }
        // Durable on return: both states get the same copy of the rows.
        let inner = &mut *inner;
        for state in [&mut inner.live, &mut inner.durable] {
            state.checkpoints.insert(self.id, (self.number, self.schema.clone(), self.rows.clone()));
            state.jobs.insert(self.id, job.clone());
        }
        Ok(report)
    }

    async fn amend(&mut self, ops: ViewOps) -> Result<ApplyReport, StoreError> {
        if ops.relation_id != self.id {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                "amend",
                format!("operations of view {} given for a copy of view {}", ops.relation_id, self.id),
            ));
        }
        apply_ops(std::slice::from_ref(&ops), &mut GenerationAccess { rows: &mut self.rows })
    }
}

/// [`RowAccess`] over an unpublished generation's rows (one view).
struct GenerationAccess<'a> {
    rows: &'a mut Rows,
}

impl RowAccess for GenerationAccess<'_> {
    fn read(&mut self, _view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.rows.get(key).cloned())
    }

    fn write(&mut self, _view: RelationId, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.rows.insert(key, v),
            None => self.rows.remove(&key),
        };
        Ok(())
    }

    fn clear(&mut self, _view: RelationId) -> Result<(), StoreError> {
        self.rows.clear();
        Ok(())
    }

    fn reads_own_writes(&self) -> bool {
        true
    }

    /// The conflict is in the report; the machine copies the view again.
    fn mark_diverged(&mut self, _view: RelationId) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<StoredState, StoreError> {
        let inner = self.lock();
        let s = &inner.live;
        Ok(StoredState {
            views: s.views.values().cloned().collect(),
            jobs: s.jobs.values().cloned().collect(),
            origins: s.origins.iter().map(|(o, l)| OriginProgress { origin: o.clone(), applied: *l }).collect(),
            schemas: s.copies.iter().map(|(id, (schema, _))| (*id, schema.clone())).collect(),
            dirty: s.diverged.iter().copied().collect(),
            last_batch: s.last_seq,
        })
    }

    async fn put_view(&self, view: &ViewRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for state in [&mut inner.live, &mut inner.durable] {
            state.views.insert(view.relation_id, view.clone());
        }
        Ok(())
    }

    async fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // Durable on return, but it must not resurrect batches lost in the
        // live state: write the record into both states independently.
        let inner = &mut *inner;
        for state in [&mut inner.live, &mut inner.durable] {
            state.jobs.insert(job.relation_id, job.clone());
        }
        Ok(())
    }

    async fn forget(&self, id: RelationId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for state in [&mut inner.live, &mut inner.durable] {
            state.views.remove(&id);
            state.jobs.remove(&id);
            state.copies.remove(&id);
            state.diverged.remove(&id);
            state.checkpoints.remove(&id);
        }
        Ok(())
    }

    async fn forget_origin(&self, origin: &OriginId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for state in [&mut inner.live, &mut inner.durable] {
            state.origins.remove(origin);
        }
        Ok(())
    }

    fn amends_generations(&self) -> bool {
        true
    }

    fn resumes_generations(&self) -> bool {
        true
    }

    async fn resume_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
        after: &Key,
    ) -> Result<Option<Box<dyn Generation>>, StoreError> {
        let mut inner = self.lock();
        let Some((number, kept, rows)) = inner.live.checkpoints.get(&id).cloned() else {
            return Ok(None);
        };
        if !schema.fits(&kept) {
            let inner = &mut *inner;
            for state in [&mut inner.live, &mut inner.durable] {
                state.checkpoints.remove(&id);
            }
            return Ok(None);
        }
        let bound = encode_key(after);
        let rows = rows.into_iter().filter(|(k, _)| *k <= bound).collect();
        Ok(Some(Box::new(MemoryGeneration { store: self.clone(), id, number, schema: kept, rows })))
    }

    async fn begin_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
    ) -> Result<Box<dyn Generation>, StoreError> {
        let mut inner = self.lock();
        if !inner.live.views.contains_key(&id) {
            return Err(StoreError::no_view("begin generation", id));
        }
        if !schema.is_well_formed() {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                "begin generation",
                "schema key does not fit its columns",
            ));
        }
        inner.next_generation += 1;
        let number = inner.next_generation;
        // A new copy replaces whatever unfinished one a checkpoint kept.
        let inner = &mut *inner;
        for state in [&mut inner.live, &mut inner.durable] {
            state.checkpoints.remove(&id);
        }
        Ok(Box::new(MemoryGeneration { store: self.clone(), id, number, schema: schema.clone(), rows: Rows::new() }))
    }

    async fn apply(&self, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
        let mut inner = self.lock();
        if let Some(e) = inner.fail_next_apply.take() {
            return Err(e);
        }
        if inner.live.last_seq.is_some_and(|last| batch.seq <= last) {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!("apply batch {}", batch.seq.0),
                "batch sequence numbers must increase",
            ));
        }
        let (batch, claimed) = inner.staging.absorb(batch)?;
        // All or nothing: work on a copy of the touched state, swap it in at the end.
        let mut next = inner.live.clone();
        for v in &batch.views {
            if !next.copies.contains_key(&v.relation_id) {
                return Err(StoreError::no_view(format!("apply batch {}", batch.seq.0), v.relation_id));
            }
        }
        let report = apply_staged(&batch, claimed, &mut Access { state: &mut next })?;
        for job in &batch.jobs {
            if next.views.contains_key(&job.relation_id) {
                next.jobs.insert(job.relation_id, job.clone());
            }
        }
        match batch.progress {
            Progress::Commit { end_lsn } => {
                next.origins.insert(batch.origin.clone(), end_lsn);
            }
            Progress::Stage { .. } | Progress::Replay => {}
        }
        next.last_seq = Some(batch.seq);
        inner.live = next;
        Ok(report)
    }

    async fn persist(&self) -> Result<Option<BatchSeq>, StoreError> {
        let mut inner = self.lock();
        inner.durable = inner.live.clone();
        Ok(inner.live.last_seq)
    }

    async fn get(&self, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError> {
        let inner = self.lock();
        let (_, rows) = inner.live.copies.get(&id).ok_or_else(|| StoreError::no_view("get", id))?;
        match rows.get(&encode_key(key)) {
            Some(bytes) => Ok(Some(
                decode_stored_row(bytes).map_err(|e| StoreError::new(StoreErrorKind::Corrupt, "get", e.to_string()))?.0,
            )),
            None => Ok(None),
        }
    }

    async fn scan(&self, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError> {
        let inner = self.lock();
        let (_, rows) = inner.live.copies.get(&id).ok_or_else(|| StoreError::no_view("scan", id))?;
        let start = range.start.as_ref().map(encode_key);
        let end = range.end.as_ref().map(encode_key);
        let mut out = Vec::new();
        for (k, bytes) in rows {
            if start.as_ref().is_some_and(|s| k < s) {
                continue;
            }
            if end.as_ref().is_some_and(|e| k >= e) {
                break;
            }
            let (row, copies) = decode_stored_row(bytes)
                .map_err(|e| StoreError::new(StoreErrorKind::Corrupt, "scan", e.to_string()))?;
            for _ in 0..copies {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(row.clone());
            }
        }
        Ok(out)
    }

    async fn count(&self, id: RelationId) -> Result<u64, StoreError> {
        let inner = self.lock();
        let (_, rows) = inner.live.copies.get(&id).ok_or_else(|| StoreError::no_view("count", id))?;
        rows.values()
            .map(|b| {
                decode_stored_row(b)
                    .map(|(_, c)| c)
                    .map_err(|e| StoreError::new(StoreErrorKind::Corrupt, "count", e.to_string()))
            })
            .sum()
    }
}
