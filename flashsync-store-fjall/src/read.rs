//! Reads of published copies and of the stored sync state. Reads run on the
//! caller's thread; each sees one committed point in time — never part of a
//! batch — because fjall publishes a batch's writes atomically and every
//! iterator reads from a snapshot.

use std::ops::Bound;
use std::sync::RwLockReadGuard;

use fjall::Readable;
use flashsync_core::codec::{decode_stored_row, encode_key};
use flashsync_core::{
    JobRecord, Key, KeyRange, OriginId, OriginProgress, RelationId, Row, StoreError, StoredState, ViewRecord,
};

use crate::error::{corrupt, engine, poisoned};
use crate::layout::{self, CopyRecord, GenKey};
use crate::shared::Shared;

/// A published copy to read: its generation, a snapshot of the database
/// taken under the same lock — the writer thread commits a batch and updates
/// the generation pointers while holding the state lock, so the pair always
/// agrees (a reader never sees a new pointer over old rows, or half a
/// batch) — and a guard that keeps reclamation from dropping the
/// generation's tables until the read is over.
struct Published<'a> {
    gen: GenKey,
    snap: fjall::Snapshot,
    _tables_kept: RwLockReadGuard<'a, ()>,
}

fn published<'a>(shared: &'a Shared, op: &str, id: RelationId) -> Result<Published<'a>, StoreError> {
    let state = shared.read(op)?;
    let gen = state
        .copies
        .get(&id)
        .map(|copy| GenKey { view: id, generation: copy.generation })
        .ok_or_else(|| StoreError::no_view(op, id))?;
    // Taken while the state lock is held (the lock order reclamation
    // follows too), so no table drop can fall between pointer and guard.
    let tables_kept =
        shared.table_drops.read().map_err(|_| poisoned(op, "a thread panicked while reclaiming space"))?;
    Ok(Published { gen, snap: shared.db.snapshot(), _tables_kept: tables_kept })
}

/// One row by key.
pub(crate) fn get(shared: &Shared, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError> {
    let op = format!("get from view {id}");
    let Published { gen, snap, _tables_kept } = published(shared, &op, id)?;
    match snap.get(&shared.ks.rows, gen.row_key(&encode_key(key))).map_err(|e| engine(op.as_str(), e))? {
        Some(bytes) => Ok(Some(decode_stored_row(&bytes).map_err(|e| corrupt(op, e))?.0)),
        None => Ok(None),
    }
}

/// Up to `limit` rows in key order, copies repeated.
pub(crate) fn scan(shared: &Shared, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError> {
    let op = format!("scan view {id}");
    let Published { gen, snap, _tables_kept } = published(shared, &op, id)?;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let start = range.start.as_ref().map(|k| gen.row_key(&encode_key(k)));
    let end = range.end.as_ref().map(|k| gen.row_key(&encode_key(k)));
    if let (Some(s), Some(e)) = (&start, &end) {
        // An empty or inverted range: nothing to read (and some range
        // implementations refuse inverted bounds).
        if s >= e {
            return Ok(Vec::new());
        }
    }
    let bounds = (
        Bound::Included(start.unwrap_or_else(|| gen.prefix().to_vec())),
        match end.or_else(|| gen.prefix_end()) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        },
    );
    let mut out = Vec::new();
    for item in snap.range::<Vec<u8>, _>(&shared.ks.rows, bounds) {
        let value = item.value().map_err(|e| engine(op.as_str(), e))?;
        let (row, copies) = decode_stored_row(&value).map_err(|e| corrupt(op.as_str(), e))?;
        for _ in 0..copies {
            if out.len() >= limit {
                return Ok(out);
            }
            out.push(row.clone());
        }
    }
    Ok(out)
}

/// Number of rows, copies counted.
pub(crate) fn count(shared: &Shared, id: RelationId) -> Result<u64, StoreError> {
    let op = format!("count view {id}");
    let Published { gen, snap, _tables_kept } = published(shared, &op, id)?;
    let mut total = 0u64;
    for item in snap.prefix(&shared.ks.rows, gen.prefix()) {
        let value = item.value().map_err(|e| engine(op.as_str(), e))?;
        let (_, copies) = decode_stored_row(&value).map_err(|e| corrupt(op.as_str(), e))?;
        total = total.checked_add(copies).ok_or_else(|| corrupt(op.as_str(), "row copy counts overflow"))?;
    }
    Ok(total)
}

/// Everything `Store::load` returns, read from one snapshot so the parts agree
/// (e.g. an origin's LSN and the dirty markers of the same commit).
pub(crate) fn load(shared: &Shared) -> Result<StoredState, StoreError> {
    let op = "load";
    // Holding the state lock keeps the writer thread out while the snapshot
    // is taken, so the snapshot and the copies' generations agree.
    let state = shared.read(op)?;
    let snap = shared.db.snapshot();
    let ks = &shared.ks;
    let mut out = StoredState { last_batch: state.last_seq, ..StoredState::default() };

    for item in snap.iter(&ks.catalog) {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let id = layout::decode_view_key("catalog", &key)?;
        let view: ViewRecord = layout::decode_json("catalog entry", &value)?;
        if view.relation_id != id {
            return Err(corrupt(op, format!("catalog entry {id} holds view {}", view.relation_id)));
        }
        out.views.push(view);
    }
    for item in snap.iter(&ks.jobs) {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let id = layout::decode_view_key("jobs", &key)?;
        let job: JobRecord = layout::decode_json("job record", &value)?;
        if job.relation_id != id {
            return Err(corrupt(op, format!("job record {id} is for view {}", job.relation_id)));
        }
        out.jobs.push(job);
    }
    for item in snap.iter(&ks.origins) {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let origin = std::str::from_utf8(&key)
            .ok()
            .and_then(|s| OriginId::new(s).ok())
            .ok_or_else(|| corrupt(op, "origin progress under an invalid origin id"))?;
        out.origins.push(OriginProgress { origin, applied: layout::decode_lsn("origin progress", &value)? });
    }
    for item in snap.iter(&ks.copies) {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let id = layout::decode_view_key("copies", &key)?;
        let copy: CopyRecord = layout::decode_json("published copy", &value)?;
        out.schemas.push((id, copy.schema));
    }
    for item in snap.iter(&ks.dirty) {
        let key = item.key().map_err(|e| engine(op, e))?;
        out.dirty.push(layout::decode_view_key("dirty marker", &key)?);
    }
    Ok(out)
}
