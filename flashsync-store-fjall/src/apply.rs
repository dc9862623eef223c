//! `Store::apply`: one upstream batch as one atomic fjall write batch.
//!
//! Row operations are interpreted by the core's
//! [`apply_ops`](flashsync_core::rowops::apply_ops) through [`BatchAccess`],
//! which reads the committed rows and buffers every write. Nothing reaches
//! fjall until the whole batch has been interpreted; then rows, job records,
//! the origin's applied LSN and dirty markers go into a single
//! [`fjall::OwnedWriteBatch`], which fjall commits atomically across
//! keyspaces (one journal entry with a checksum, replayed whole or not at all).
//!
//! A `Truncate` does not delete rows one by one: inside the same batch the
//! view switches to a fresh, empty generation, which receives the rows written
//! after the truncate, and the old generation is marked garbage. Its rows are
//! deleted once the switch is durable — until then a crash could bring the
//! old pointer back.

use std::collections::{BTreeSet, HashMap};

use flashsync_core::rowops::{apply_batch, ApplyReport, RowAccess};
use flashsync_core::{ApplyBatch, Progress, RelationId, StoreError, StoreErrorKind, ViewOps};

use crate::error::engine;
use crate::layout::{self, CopyRecord, GenKey};
use crate::shared::{Shared, State};

/// Applies `batch` (on the writer thread).
pub(crate) fn apply(shared: &Shared, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
    let op = format!("apply batch {}", batch.seq.0);
    let mut state = shared.write(&op)?;
    if state.last_seq.is_some_and(|last| batch.seq <= last) {
        return Err(StoreError::new(StoreErrorKind::Invalid, op, "batch sequence numbers must increase"));
    }
    // A staged part changes no row; a commit applies its views' parts.
    let (batch, mut claimed) = state.staging.absorb(batch)?;
    // Refuse before touching anything: the batch is all or nothing.
    for v in &batch.views {
        if !state.copies.contains_key(&v.relation_id) {
            return Err(StoreError::no_view(op, v.relation_id));
        }
    }
    // A commit's staged parts land one fjall batch each, before the commit's
    // own: one fjall batch for the whole transaction would hold all of it in
    // memory several times over (buffered writes, the write batch, the
    // memtable). The state lock is held throughout, so no reader sees a
    // part alone; each part marks its views as partly updated until the
    // commit clears the mark, so a crash in between copies them again.
    //
    // Readers wait meanwhile (2.4–2.8 s for a million rows, `bench
    // bigtxn`'s slowest point read). Letting point reads use a snapshot
    // taken before the first part answered them in 7–13 ms, but fjall
    // keeps every version of the tree newer than the oldest open snapshot,
    // and with them every memtable the parts filled and sealed: peak RSS
    // 333–342 MiB instead of 121–128 (2026-12-06). Flat memory wins.
    let mut report = ApplyReport::default();
    let mut parts_written = false;
    let mut whole = || -> Result<(), StoreError> {
        for v in &batch.views {
            for ops in claimed.take(v.relation_id) {
                let part = ApplyBatch {
                    seq: batch.seq,
                    origin: batch.origin.clone(),
                    progress: Progress::Stage { first: false },
                    views: vec![ViewOps { relation_id: v.relation_id, identity: v.identity, ops: ops? }],
                    jobs: Vec::new(),
                    chain: batch.chain,
                    commit_time: None,
                    capture: batch.capture,
                };
                report.merge(apply_one(shared, &mut state, &part, &op)?);
                parts_written = true;
            }
        }
        report.merge(apply_one(shared, &mut state, &batch, &op)?);
        Ok(())
    };
    match whole() {
        Ok(()) => Ok(report),
        Err(e) => {
            // Part of the transaction is in the rows: readers must not get
            // to see it. Refusing everything until the store is reopened
            // (where the parts' marks make the views copy again) is what a
            // failed write does anyway.
            if parts_written {
                state.poison(&e);
            }
            Err(e)
        }
    }
}

/// Writes one batch's rows, jobs, progress and markers as one fjall batch.
fn apply_one(shared: &Shared, state: &mut State, batch: &ApplyBatch, op: &str) -> Result<ApplyReport, StoreError> {
    let mut access = BatchAccess { shared, state, views: HashMap::new(), diverged: BTreeSet::new() };
    let report = apply_batch(batch, &mut access)?;
    let (views, diverged) = (access.views, access.diverged);

    let mut wb = shared.db.batch().durability(shared.apply_durability());
    let ks = &shared.ks;
    let mut switched = Vec::new();
    for (view, buf) in &views {
        for (key, value) in &buf.writes {
            let key = buf.target.row_key(key);
            match value {
                Some(value) => wb.insert(&ks.rows, key, value.as_slice()),
                // A fresh generation starts empty: nothing to delete there.
                None if buf.fresh => {}
                None => wb.remove(&ks.rows, key),
            }
        }
        if buf.fresh {
            let Some(copy) = state.copies.get(view) else {
                return Err(StoreError::no_view(op, *view));
            };
            let old = GenKey { view: *view, generation: copy.generation };
            let record = CopyRecord { generation: buf.target.generation, schema: copy.schema.clone() };
            wb.insert(&ks.copies, layout::view_key(*view), layout::encode_json("published copy", &record)?);
            wb.insert(&ks.garbage, old.prefix(), []);
            switched.push((*view, buf.target.generation, old));
        }
    }
    if !switched.is_empty() {
        wb.insert(&ks.meta, layout::META_NEXT_GENERATION, layout::encode_u64(state.next_generation));
    }
    for job in &batch.jobs {
        // Jobs of views no longer in the catalog (forgotten meanwhile) are
        // dropped, as the reference store does.
        if state.catalog.contains(&job.relation_id) {
            wb.insert(&ks.jobs, layout::view_key(job.relation_id), layout::encode_json("job record", job)?);
        }
    }
    let is_diverged = |view: &RelationId| diverged.contains(view) || state.diverged.contains(view);
    match batch.progress {
        Progress::Commit { end_lsn } => {
            wb.insert(&ks.origins, batch.origin.as_str(), layout::encode_lsn(end_lsn));
            // Markers an earlier version left for a transaction it applied in
            // parts: the origin's next commit completes it.
            for (view, origin) in &state.dirty {
                if *origin == batch.origin && !is_diverged(view) {
                    wb.remove(&ks.dirty, layout::view_key(*view));
                }
            }
        }
        // A part of a commit's staged transaction, applied ahead of it.
        Progress::Stage { .. } => {
            for v in batch.views.iter().filter(|v| !is_diverged(&v.relation_id)) {
                wb.insert(&ks.dirty, layout::view_key(v.relation_id), batch.origin.as_str());
            }
        }
        Progress::Replay => {}
    }
    // Last, so no marker above overwrites it: an empty value says diverged.
    for view in &diverged {
        wb.insert(&ks.dirty, layout::view_key(*view), []);
    }
    shared.commit(state, wb, op)?;

    // The batch is committed (visible); mirror it in memory.
    for (view, generation, old) in switched {
        if let Some(copy) = state.copies.get_mut(&view) {
            copy.generation = generation;
        }
        state.garbage_after_sync.push(old);
    }
    match batch.progress {
        Progress::Commit { .. } => state.dirty.retain(|_, origin| *origin != batch.origin),
        Progress::Stage { .. } => {
            for v in &batch.views {
                state.dirty.insert(v.relation_id, batch.origin.clone());
            }
        }
        Progress::Replay => {}
    }
    for view in diverged {
        state.dirty.remove(&view);
        state.diverged.insert(view);
    }
    state.last_seq = Some(batch.seq);
    if shared.apply_durability().is_some() {
        state.synced();
    }
    Ok(report)
}

/// One view's share of the batch under construction.
struct ViewBuf {
    /// Where the view's rows go: its published generation, or a fresh one
    /// after a truncate.
    target: GenKey,
    /// Whether the batch truncated the view (so `target` is fresh).
    fresh: bool,
    /// Buffered writes (`None` deletes), by encoded key.
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// [`RowAccess`] over the committed rows plus this batch's buffered writes.
///
/// Reads see the batch's own earlier writes even across separate `ViewOps` of
/// the same view, so a batch means the same however the machine groups it.
struct BatchAccess<'a> {
    shared: &'a Shared,
    state: &'a mut State,
    views: HashMap<RelationId, ViewBuf>,
    /// Views the batch found diverged (see [`RowAccess::mark_diverged`]).
    diverged: BTreeSet<RelationId>,
}

impl BatchAccess<'_> {
    fn buf(&mut self, view: RelationId) -> Result<&mut ViewBuf, StoreError> {
        if !self.views.contains_key(&view) {
            let copy = self.state.copies.get(&view).ok_or_else(|| StoreError::no_view("apply", view))?;
            let target = GenKey { view, generation: copy.generation };
            self.views.insert(view, ViewBuf { target, fresh: false, writes: HashMap::new() });
        }
        self.views.get_mut(&view).ok_or_else(|| StoreError::no_view("apply", view))
    }
}

impl RowAccess for BatchAccess<'_> {
    /// Reads check the batch's buffered writes first.
    fn reads_own_writes(&self) -> bool {
        true
    }

    fn mark_diverged(&mut self, view: RelationId) -> Result<(), StoreError> {
        self.diverged.insert(view);
        Ok(())
    }

    fn read(&mut self, view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(buf) = self.views.get(&view) {
            if let Some(value) = buf.writes.get(key) {
                return Ok(value.clone());
            }
            if buf.fresh {
                return Ok(None);
            }
        }
        let copy = self.state.copies.get(&view).ok_or_else(|| StoreError::no_view("apply", view))?;
        let key = GenKey { view, generation: copy.generation }.row_key(key);
        self.shared
            .ks
            .rows
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| engine(format!("read row of view {view}"), e))
    }

    fn write(&mut self, view: RelationId, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        self.buf(view)?.writes.insert(key, value);
        Ok(())
    }

    fn clear(&mut self, view: RelationId) -> Result<(), StoreError> {
        let fresh = self.buf(view)?.fresh;
        if !fresh {
            // Recorded in `meta` by the batch that switches to it.
            let generation = self.state.next_generation;
            self.state.next_generation += 1;
            let buf = self.buf(view)?;
            buf.target = GenKey { view, generation };
            buf.fresh = true;
        }
        // Everything written to the view so far in this batch is gone too.
        self.buf(view)?.writes.clear();
        Ok(())
    }
}
