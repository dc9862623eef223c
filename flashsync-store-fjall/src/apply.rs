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
//! A `Truncate` does not delete rows one by one: the view switches, inside the
//! same batch, to a fresh empty generation that receives the rows written
//! after the truncate. The old generation is deleted once the switch is
//! durable — until then a crash could bring the old pointer back.

use std::collections::HashMap;

use fjall::Keyspace;
use flashsync_core::rowops::{apply_ops, ApplyReport, RowAccess};
use flashsync_core::{ApplyBatch, Progress, RelationId, StoreError, StoreErrorKind};

use crate::error::engine;
use crate::layout::{self, CopyRecord};
use crate::shared::{Copy, Shared, State};

/// Applies `batch` (on the writer thread).
pub(crate) fn apply(shared: &Shared, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
    let op = format!("apply batch {}", batch.seq.0);
    let mut state = shared.write(&op)?;
    if state.last_seq.is_some_and(|last| batch.seq <= last) {
        return Err(StoreError::new(StoreErrorKind::Invalid, op, "batch sequence numbers must increase"));
    }
    // Refuse before touching anything: the batch is all or nothing.
    for v in &batch.views {
        if !state.copies.contains_key(&v.relation_id) {
            return Err(StoreError::no_view(op, v.relation_id));
        }
    }

    let mut access = BatchAccess { shared, state: &mut state, views: HashMap::new(), created: Vec::new() };
    let report = match apply_ops(&batch.views, &mut access) {
        Ok(report) => report,
        Err(e) => {
            for rows in access.created.drain(..) {
                shared.drop_generation(rows);
            }
            return Err(e);
        }
    };
    let BatchAccess { views, created, .. } = access;

    let result = commit(shared, &mut state, &batch, &views);
    if let Err(e) = result {
        for rows in created {
            shared.drop_generation(rows);
        }
        return Err(e);
    }

    // The batch is committed (visible); mirror it in memory.
    for (view, buf) in views {
        if let Some(generation) = buf.fresh {
            if let Some(copy) = state.copies.get_mut(&view) {
                let old = std::mem::replace(copy, Copy { generation, schema: copy.schema.clone(), rows: buf.target });
                state.retired.push(old.rows);
            }
        }
    }
    match batch.progress {
        Progress::Commit { .. } => state.dirty.retain(|_, origin| *origin != batch.origin),
        Progress::Partial => {
            for v in &batch.views {
                state.dirty.insert(v.relation_id, batch.origin.clone());
            }
        }
        Progress::Replay => {}
    }
    state.last_seq = Some(batch.seq);
    if shared.apply_durability().is_some() {
        shared.reclaim_retired(&mut state);
    }
    Ok(report)
}

/// Builds and commits the fjall batch.
fn commit(
    shared: &Shared,
    state: &mut State,
    batch: &ApplyBatch,
    views: &HashMap<RelationId, ViewBuf>,
) -> Result<(), StoreError> {
    let op = || format!("apply batch {}", batch.seq.0);
    let ks = &shared.ks;
    let mut wb = shared.db.batch().durability(shared.apply_durability());
    for (view, buf) in views {
        for (key, value) in &buf.writes {
            match value {
                Some(value) => wb.insert(&buf.target, key.as_slice(), value.as_slice()),
                // A fresh generation starts empty: nothing to delete there.
                None if buf.fresh.is_some() => {}
                None => wb.remove(&buf.target, key.as_slice()),
            }
        }
        if let Some(generation) = buf.fresh {
            let schema = match state.copies.get(view) {
                Some(copy) => copy.schema.clone(),
                None => return Err(StoreError::no_view(op(), *view)),
            };
            let record = layout::encode_json("published copy", &CopyRecord { generation, schema })?;
            wb.insert(&ks.copies, layout::view_key(*view), record);
        }
    }
    for job in &batch.jobs {
        // Jobs of views no longer in the catalog (forgotten meanwhile) are
        // dropped, as the reference store does.
        if state.catalog.contains(&job.relation_id) {
            let record = layout::encode_json("job record", job)?;
            wb.insert(&ks.jobs, layout::view_key(job.relation_id), record);
        }
    }
    match batch.progress {
        Progress::Commit { end_lsn } => {
            wb.insert(&ks.origins, batch.origin.as_str(), layout::encode_lsn(end_lsn));
            // The transaction is complete: views it left half-applied are whole.
            for (view, origin) in &state.dirty {
                if *origin == batch.origin {
                    wb.remove(&ks.dirty, layout::view_key(*view));
                }
            }
        }
        Progress::Partial => {
            for v in &batch.views {
                wb.insert(&ks.dirty, layout::view_key(v.relation_id), batch.origin.as_str());
            }
        }
        Progress::Replay => {}
    }
    wb.commit().map_err(|e| {
        let e = engine(op(), e);
        // fjall may have written the batch to its journal before failing
        // (e.g. the fsync failed): what is on disk is now unknown.
        state.poison(&e);
        e
    })
}

/// One view's share of the batch under construction.
struct ViewBuf {
    /// Where the view's rows go: its published generation, or a fresh one
    /// after a truncate.
    target: Keyspace,
    /// The fresh generation's number, once the batch truncated the view.
    fresh: Option<u64>,
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
    /// Generations created for truncates; deleted again if the batch fails.
    created: Vec<Keyspace>,
}

impl BatchAccess<'_> {
    fn buf(&mut self, view: RelationId) -> Result<&mut ViewBuf, StoreError> {
        if !self.views.contains_key(&view) {
            let copy = self.state.copies.get(&view).ok_or_else(|| StoreError::no_view("apply", view))?;
            self.views.insert(view, ViewBuf { target: copy.rows.clone(), fresh: None, writes: HashMap::new() });
        }
        self.views.get_mut(&view).ok_or_else(|| StoreError::no_view("apply", view))
    }
}

impl RowAccess for BatchAccess<'_> {
    fn read(&mut self, view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(buf) = self.views.get(&view) {
            if let Some(value) = buf.writes.get(key) {
                return Ok(value.clone());
            }
            if buf.fresh.is_some() {
                return Ok(None);
            }
        }
        let copy = self.state.copies.get(&view).ok_or_else(|| StoreError::no_view("apply", view))?;
        copy.rows.get(key).map(|v| v.map(|v| v.to_vec())).map_err(|e| engine(format!("read row of view {view}"), e))
    }

    fn write(&mut self, view: RelationId, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        self.buf(view)?.writes.insert(key, value);
        Ok(())
    }

    fn clear(&mut self, view: RelationId) -> Result<(), StoreError> {
        let needs_generation = self.buf(view)?.fresh.is_none();
        if needs_generation {
            let generation = self.state.next_generation;
            self.state.next_generation += 1;
            let rows = self.shared.create_generation(view, generation)?;
            self.created.push(rows.clone());
            let buf = self.buf(view)?;
            buf.target = rows;
            buf.fresh = Some(generation);
        }
        // Everything written to the view so far in this batch is gone too.
        self.buf(view)?.writes.clear();
        Ok(())
    }
}
