//! Writing your own `Store`, and proving it right with the conformance suite.
//!
//! A store holds four kinds of records (views, jobs, origin positions, dirty
//! markers) and the rows of each view's published copy, and hands the parts
//! of very large transactions to a `Staging` until their commit. Everything subtle
//! about rows — keyed maps vs full-row multisets, unchanged TOAST cells, key
//! moves, truncates — lives in `flashsync_core::rowops::apply_ops`: a store
//! only says how to read and buffer writes ([`RowAccess`]). What remains is
//! atomicity (a batch lands whole or not at all) and atomic replacement
//! (a new generation becomes visible in one step).
//!
//! This one keeps everything in a `BTreeMap` behind a mutex, and makes every
//! batch "durable" at once. Run it with `cargo run -p flashsync --example
//! custom_store`; its conformance test runs with `cargo test -p flashsync
//! --example custom_store`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flashsync_core::codec::{decode_stored_row, encode_key, encode_stored_row};
use flashsync_core::rowops::{apply_staged, ApplyReport, RowAccess};
use flashsync_core::{
    ApplyBatch, BatchSeq, Generation, JobRecord, Key, KeyRange, OriginId, OriginProgress, Progress, RelationId,
    RelationSchema, Row, RowSink, Staging, Store, StoreError, StoreErrorKind, StoredState, ViewRecord,
};

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Default)]
struct State {
    views: BTreeMap<RelationId, ViewRecord>,
    jobs: BTreeMap<RelationId, JobRecord>,
    origins: BTreeMap<OriginId, flashsync_core::Lsn>,
    copies: BTreeMap<RelationId, (RelationSchema, Rows)>,
    /// Views an applied batch could not fit: dirty until published again.
    diverged: BTreeSet<RelationId>,
    last_seq: Option<BatchSeq>,
}

/// A store on a `BTreeMap`: small enough to read in one sitting. Staged
/// parts of large transactions live beside the state, not in it: the state
/// is copied for every batch, and staging is never durable anyway.
#[derive(Clone, Default)]
pub struct BTreeStore(Arc<Mutex<State>>, Arc<Mutex<Staging>>);

impl BTreeStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn err(kind: StoreErrorKind, op: &str, msg: impl Into<String>) -> StoreError {
    StoreError::new(kind, op, msg)
}

/// Reads and writes of one batch, against a private copy of the state.
struct Access<'a>(&'a mut State);

impl RowAccess for Access<'_> {
    fn read(&mut self, view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.copies.get(&view).and_then(|(_, rows)| rows.get(key).cloned()))
    }
    fn write(&mut self, view: RelationId, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        let (_, rows) = self.0.copies.get_mut(&view).ok_or_else(|| StoreError::no_view("apply", view))?;
        match value {
            Some(v) => rows.insert(key, v),
            None => rows.remove(&key),
        };
        Ok(())
    }
    // Writes go straight into the batch's copy of the state, where reads
    // see them: a large transaction's staged parts are applied one by one.
    fn reads_own_writes(&self) -> bool {
        true
    }
    fn mark_diverged(&mut self, view: RelationId) -> Result<(), StoreError> {
        self.0.diverged.insert(view);
        Ok(())
    }
    fn clear(&mut self, view: RelationId) -> Result<(), StoreError> {
        let (_, rows) = self.0.copies.get_mut(&view).ok_or_else(|| StoreError::no_view("apply", view))?;
        rows.clear();
        Ok(())
    }
}

/// A new copy being filled; invisible until published.
struct NewCopy {
    store: BTreeStore,
    id: RelationId,
    schema: RelationSchema,
    rows: Rows,
}

#[async_trait]
impl RowSink for NewCopy {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        for row in rows {
            let key = self.schema.key_of(&row).map_err(|e| err(StoreErrorKind::Invalid, "snapshot", e.to_string()))?;
            let k = encode_key(&key);
            // Full-row views are multisets: count identical rows.
            let copies = match self.rows.get(&k) {
                Some(b) => decode_stored_row(b).map_err(|e| err(StoreErrorKind::Corrupt, "snapshot", e.to_string()))?.1,
                None => 0,
            };
            self.rows.insert(k, encode_stored_row(&row, copies + 1));
        }
        Ok(())
    }
}

#[async_trait]
impl Generation for NewCopy {
    async fn publish(self: Box<Self>, job: &JobRecord) -> Result<(), StoreError> {
        let mut s = self.store.state();
        if !s.views.contains_key(&self.id) {
            return Err(StoreError::no_view("publish", self.id));
        }
        if job.relation_id != self.id {
            return Err(err(StoreErrorKind::Invalid, "publish", "job record of another view"));
        }
        // One step: rows, schema and job together.
        s.copies.insert(self.id, (self.schema.clone(), self.rows.clone()));
        s.jobs.insert(self.id, job.clone());
        s.diverged.remove(&self.id);
        Ok(())
    }
    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Store for BTreeStore {
    async fn load(&self) -> Result<StoredState, StoreError> {
        let s = self.state();
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
        self.state().views.insert(view.relation_id, view.clone());
        Ok(())
    }
    async fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.state().jobs.insert(job.relation_id, job.clone());
        Ok(())
    }
    async fn forget(&self, id: RelationId) -> Result<(), StoreError> {
        let mut s = self.state();
        s.views.remove(&id);
        s.jobs.remove(&id);
        s.copies.remove(&id);
        s.diverged.remove(&id);
        Ok(())
    }
    async fn forget_origin(&self, origin: &OriginId) -> Result<(), StoreError> {
        self.state().origins.remove(origin);
        Ok(())
    }
    async fn begin_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
    ) -> Result<Box<dyn Generation>, StoreError> {
        if !self.state().views.contains_key(&id) {
            return Err(StoreError::no_view("begin generation", id));
        }
        if !schema.is_well_formed() {
            return Err(err(StoreErrorKind::Invalid, "begin generation", "the schema's key does not fit its columns"));
        }
        Ok(Box::new(NewCopy { store: self.clone(), id, schema: schema.clone(), rows: Rows::new() }))
    }
    async fn apply(&self, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
        let mut s = self.state();
        let op = format!("apply batch {}", batch.seq.0);
        if s.last_seq.is_some_and(|last| batch.seq <= last) {
            return Err(err(StoreErrorKind::Invalid, &op, "batch sequence numbers must increase"));
        }
        // A staged part changes no row; a commit applies its views' parts.
        let (batch, claimed) = self.1.lock().unwrap_or_else(|e| e.into_inner()).absorb(batch)?;
        // All or nothing: work on a copy, swap it in at the end.
        let mut next = s.clone();
        for v in &batch.views {
            if !next.copies.contains_key(&v.relation_id) {
                return Err(StoreError::no_view(op, v.relation_id));
            }
        }
        let report = apply_staged(&batch, claimed, &mut Access(&mut next))?;
        for job in &batch.jobs {
            next.jobs.insert(job.relation_id, job.clone());
        }
        match batch.progress {
            Progress::Commit { end_lsn } => {
                next.origins.insert(batch.origin.clone(), end_lsn);
            }
            Progress::Stage { .. } | Progress::Replay => {}
        }
        next.last_seq = Some(batch.seq);
        *s = next;
        Ok(report)
    }
    async fn persist(&self) -> Result<Option<BatchSeq>, StoreError> {
        Ok(self.state().last_seq)
    }
    async fn get(&self, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError> {
        let s = self.state();
        let (_, rows) = s.copies.get(&id).ok_or_else(|| StoreError::no_view("get", id))?;
        rows.get(&encode_key(key))
            .map(|b| {
                decode_stored_row(b).map(|(r, _)| r).map_err(|e| err(StoreErrorKind::Corrupt, "get", e.to_string()))
            })
            .transpose()
    }
    async fn scan(&self, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError> {
        let s = self.state();
        let (_, rows) = s.copies.get(&id).ok_or_else(|| StoreError::no_view("scan", id))?;
        let (start, end) = (range.start.as_ref().map(encode_key), range.end.as_ref().map(encode_key));
        let mut out = Vec::new();
        for (k, b) in rows {
            if start.as_ref().is_some_and(|s| k < s) {
                continue;
            }
            if end.as_ref().is_some_and(|e| k >= e) {
                break;
            }
            let (row, copies) =
                decode_stored_row(b).map_err(|e| err(StoreErrorKind::Corrupt, "scan", e.to_string()))?;
            for _ in 0..copies {
                if out.len() == limit {
                    return Ok(out);
                }
                out.push(row.clone());
            }
        }
        Ok(out)
    }
    async fn count(&self, id: RelationId) -> Result<u64, StoreError> {
        let s = self.state();
        let (_, rows) = s.copies.get(&id).ok_or_else(|| StoreError::no_view("count", id))?;
        rows.values()
            .map(|b| {
                decode_stored_row(b).map(|(_, c)| c).map_err(|e| err(StoreErrorKind::Corrupt, "count", e.to_string()))
            })
            .sum()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    futures::executor::block_on(flashsync_core::conformance::run_all(BTreeStore::default))?;
    println!("BTreeStore passes every check of the store conformance suite");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn conforms() {
        let result = futures::executor::block_on(flashsync_core::conformance::run_all(super::BTreeStore::default));
        assert!(result.is_ok(), "{result:?}");
    }
}
