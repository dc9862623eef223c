//! The meaning of [`RowOp`]s, written once for every store.
//!
//! A store implements [`RowAccess`] over its own batch type (reads of the
//! committed state, buffered writes) and calls [`apply_ops`], which handles
//! read-your-writes inside the batch, unchanged-TOAST merging, key moves,
//! multiset counting for full-row views, truncation, and conflict reporting
//! — and, when the batch asks, records what it did to each view's rows
//! ([`crate::rowchange`]).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::change::{ApplyBatch, Cell, RowOp, ViewOps};
use crate::codec::{decode_key, decode_stored_row, encode_key, encode_stored_row};
use crate::error::{StoreError, StoreErrorKind};
use crate::rowchange::{Capture, RowChange, ViewChanges};
use crate::schema::Identity;
use crate::value::{Key, Row};
use crate::view::RelationId;

/// A store's view of one batch under construction.
pub trait RowAccess {
    /// The stored value under `key` in `view`'s published copy, as of before
    /// this batch ([`apply_ops`] keeps the batch's own writes itself).
    fn read(&mut self, view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Buffers a write (`None` deletes) into the batch.
    fn write(&mut self, view: RelationId, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError>;
    /// Buffers the removal of every row of `view` into the batch (rows
    /// written to the view later in the same batch survive).
    fn clear(&mut self, view: RelationId) -> Result<(), StoreError>;
    /// Records in the batch that `view`'s copy can no longer be trusted (an
    /// operation did not fit it). The mark must land atomically with the
    /// batch and last until the view is published again or forgotten: the
    /// store lists the view as dirty on every later load, so a restart
    /// copies it again even if the machine never got to say so.
    fn mark_diverged(&mut self, view: RelationId) -> Result<(), StoreError>;

    /// Whether [`read`](Self::read) sees the writes made through this
    /// access (a store writing into an open transaction, say), not only the
    /// state before the batch. Such a store applies a commit's staged parts
    /// one at a time, each with a fresh overlay, so memory stays bounded by
    /// a part however large the transaction ([`apply_staged`]). The default
    /// says no: every write of the batch is kept for reading back.
    fn reads_own_writes(&self) -> bool {
        false
    }
}

/// Why an operation did not fit the local copy. A conflict means the mirror
/// diverged from upstream (a bug, or an external write to the store); the
/// machine reports it and re-bootstraps the view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The view.
    pub relation_id: RelationId,
    /// The row's key.
    pub key: Key,
    /// What did not fit.
    pub detail: String,
}

/// What applying a batch noticed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Operations that did not fit the local copy (applied as far as safe).
    pub conflicts: Vec<Conflict>,
    /// What the batch did to each view's rows, in order, when the batch
    /// asked for it ([`ApplyBatch::capture`]); empty otherwise.
    #[serde(default)]
    pub changes: Vec<ViewChanges>,
}

impl ApplyReport {
    /// Adds what a later part of the same batch noticed: conflicts after
    /// these, and each view's changes after its earlier ones (for stores
    /// that write a batch in parts).
    pub fn merge(&mut self, later: ApplyReport) {
        self.conflicts.extend(later.conflicts);
        for vc in later.changes {
            match self.changes.iter_mut().find(|c| c.relation_id == vc.relation_id) {
                Some(c) => c.changes.extend(vc.changes),
                None => self.changes.push(vc),
            }
        }
    }
}

#[derive(Default)]
struct Overlay {
    cleared: bool,
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The rows this batch changed, when capturing.
    log: Option<Log>,
}

/// The changes captured for one view.
struct Log {
    capture: Capture,
    changes: Vec<RowChange>,
}

impl Overlay {
    fn read(&self, access: &mut impl RowAccess, view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        if self.cleared {
            return Ok(None);
        }
        access.read(view, key)
    }

    fn write(
        &mut self,
        access: &mut impl RowAccess,
        view: RelationId,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if self.log.is_some() {
            // What the write replaces decides what a reader sees happen:
            // read before writing, and only while capturing.
            let before = self.read(access, view, &key)?;
            self.record(view, &key, before.as_deref(), value.as_deref())?;
        }
        access.write(view, key.clone(), value.clone())?;
        self.writes.insert(key, value);
        Ok(())
    }

    fn clear(&mut self, access: &mut impl RowAccess, view: RelationId) -> Result<(), StoreError> {
        access.clear(view)?;
        let log = self.log.take().map(|mut log| {
            log.changes.push(RowChange::Truncate);
            log
        });
        *self = Overlay { cleared: true, writes: HashMap::new(), log };
        Ok(())
    }

    /// Records the change from stored value `before` to `after` under `key`:
    /// the copies a full-row view gained or lost, or a keyed row set or gone.
    fn record(
        &mut self,
        view: RelationId,
        key: &[u8],
        before: Option<&[u8]>,
        after: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let Some(log) = self.log.as_mut() else { return Ok(()) };
        let decode = |bytes: Option<&[u8]>| -> Result<Option<(Row, u64)>, StoreError> {
            bytes.map(|b| decode_stored_row(b).map_err(|e| corrupt(view, e))).transpose()
        };
        let (before, after) = (decode(before)?, decode(after)?);
        let had = before.as_ref().map_or(0, |(_, copies)| *copies);
        let has = after.as_ref().map_or(0, |(_, copies)| *copies);
        let key = decode_key(key).map_err(|e| corrupt(view, e))?;
        match after {
            Some((row, _)) if has > had => {
                // Keyed rows have one copy; a full-row view's key is its row.
                for _ in had..has {
                    log.changes.push(RowChange::Insert { key: key.clone(), row: row.clone() });
                }
            }
            Some((row, _)) if has == had => {
                if before.is_some_and(|(old, _)| old != row) {
                    log.changes.push(RowChange::Update { key, row });
                }
            }
            _ => {
                #[cfg(feature = "planted-bugs")]
                if log.capture == Capture::DropRemovals {
                    return Ok(());
                }
                let _ = log.capture;
                for _ in has..had {
                    log.changes.push(RowChange::Delete { key: key.clone() });
                }
            }
        }
        Ok(())
    }
}

fn corrupt(view: RelationId, e: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, format!("read row of view {view}"), e.to_string())
}

/// Applies every view's operations through `access`, in order, capturing
/// nothing.
pub fn apply_ops(views: &[ViewOps], access: &mut impl RowAccess) -> Result<ApplyReport, StoreError> {
    apply_captured(views.iter().map(|v| Ok(Cow::Borrowed(v))), Capture::Off, access)
}

/// Applies a batch's row operations through `access`, in order, and
/// captures what they did when the batch asks ([`ApplyBatch::capture`]):
/// what a store's `apply` should call.
pub fn apply_batch(batch: &ApplyBatch, access: &mut impl RowAccess) -> Result<ApplyReport, StoreError> {
    apply_captured(batch.views.iter().map(|v| Ok(Cow::Borrowed(v))), batch.capture, access)
}

/// [`apply_batch`] for a batch a [`Staging`](crate::staging::Staging) has
/// absorbed: each view's claimed parts go first, decoded one at a time (and
/// dropped once applied), then the batch's own operations — all in the
/// same overlays, so the store writes them as one batch. What a store's
/// `apply` should call.
pub fn apply_staged(
    batch: &ApplyBatch,
    mut claimed: crate::staging::Claimed,
    access: &mut impl RowAccess,
) -> Result<ApplyReport, StoreError> {
    if claimed.is_empty() {
        return apply_batch(batch, access);
    }
    if access.reads_own_writes() {
        // Part by part, each in an overlay of its own: the store's reads see
        // the earlier parts' writes, and nothing here grows with the
        // transaction.
        let mut report = ApplyReport::default();
        for v in &batch.views {
            let (id, identity) = (v.relation_id, v.identity);
            for ops in claimed.take(id) {
                let part = ViewOps { relation_id: id, identity, ops: ops? };
                report.merge(apply_captured(std::iter::once(Ok(Cow::Owned(part))), batch.capture, access)?);
            }
            report.merge(apply_captured(std::iter::once(Ok(Cow::Borrowed(v))), batch.capture, access)?);
        }
        return Ok(report);
    }
    let views = batch.views.iter().flat_map(move |v| {
        let (id, identity) = (v.relation_id, v.identity);
        let parts =
            claimed.take(id).map(move |ops| ops.map(|ops| Cow::Owned(ViewOps { relation_id: id, identity, ops })));
        parts.chain(std::iter::once(Ok(Cow::Borrowed(v))))
    });
    apply_captured(views, batch.capture, access)
}

fn apply_captured<'a>(
    views: impl Iterator<Item = Result<Cow<'a, ViewOps>, StoreError>>,
    capture: Capture,
    access: &mut impl RowAccess,
) -> Result<ApplyReport, StoreError> {
    let mut report = ApplyReport::default();
    // One overlay per view for the whole batch: a view may appear in several
    // `ViewOps`, and later ones must see the earlier ones' writes.
    let mut overlays: HashMap<RelationId, Overlay> = HashMap::new();
    // Views in the order they first appear, for the captured changes.
    let mut order: Vec<RelationId> = Vec::new();
    for v in views {
        let v = v?;
        let id = v.relation_id;
        let overlay = overlays.entry(id).or_insert_with(|| {
            order.push(id);
            Overlay { log: capture.is_on().then(|| Log { capture, changes: Vec::new() }), ..Overlay::default() }
        });
        for op in &v.ops {
            match (op, v.identity) {
                (RowOp::Truncate, _) => overlay.clear(access, id)?,
                (RowOp::Insert { key, row }, Identity::Key) => {
                    overlay.write(access, id, encode_key(key), Some(encode_stored_row(row, 1)))?;
                }
                (RowOp::Insert { key, row }, Identity::FullRow) => {
                    let k = encode_key(key);
                    let copies = match overlay.read(access, id, &k)? {
                        Some(bytes) => decode_stored_row(&bytes).map_err(|e| corrupt(id, e))?.1,
                        None => 0,
                    };
                    overlay.write(access, id, k, Some(encode_stored_row(row, copies + 1)))?;
                }
                (RowOp::Evict { key }, _) => {
                    // Read first: most evictions are of rows a filtered view
                    // never held, and they should cost no write.
                    let k = encode_key(key);
                    if overlay.read(access, id, &k)?.is_some() {
                        match v.identity {
                            Identity::Key => overlay.write(access, id, k, None)?,
                            Identity::FullRow => remove_copy(overlay, access, id, key, &mut report)?,
                        }
                    }
                }
                (RowOp::Delete { key }, Identity::Key) => {
                    overlay.write(access, id, encode_key(key), None)?;
                }
                (RowOp::Delete { key }, Identity::FullRow) => remove_copy(overlay, access, id, key, &mut report)?,
                (RowOp::UpdateIf { old_key, key, new, filter }, _) => {
                    let from = old_key.as_ref().unwrap_or(key);
                    let local = match overlay.read(access, id, &encode_key(from))? {
                        Some(bytes) => Some(decode_stored_row(&bytes).map_err(|e| corrupt(id, e))?.0),
                        None => None,
                    };
                    let merged = match local.as_ref().map(|row| merge(Some(row), new)) {
                        Some(Ok(row)) => row,
                        Some(Err(detail)) => {
                            report.conflicts.push(Conflict { relation_id: id, key: from.clone(), detail });
                            continue;
                        }
                        None => {
                            // Not local: the old row did not match, and the
                            // values the filter needs came with neither.
                            report.conflicts.push(Conflict {
                                relation_id: id,
                                key: from.clone(),
                                detail: "an update may move this row into the view, but it did not carry values the \
                                         filter reads (unchanged TOAST values) and the row is not local"
                                    .into(),
                            });
                            continue;
                        }
                    };
                    if filter.matches(&merged.0) {
                        if old_key.as_ref().is_some_and(|old| old != key) {
                            overlay.write(access, id, encode_key(from), None)?;
                        }
                        overlay.write(access, id, encode_key(key), Some(encode_stored_row(&merged, 1)))?;
                    } else {
                        overlay.write(access, id, encode_key(from), None)?;
                    }
                }
                (RowOp::Update { old_key, key, new }, identity) => {
                    let needs_old = identity == Identity::FullRow || new.iter().any(|c| matches!(c, Cell::Unchanged));
                    let from = old_key.as_ref().unwrap_or(key);
                    let old_row = if needs_old {
                        match overlay.read(access, id, &encode_key(from))? {
                            Some(bytes) => Some(decode_stored_row(&bytes).map_err(|e| corrupt(id, e))?.0),
                            None => None,
                        }
                    } else {
                        None
                    };
                    let merged = match merge(old_row.as_ref(), new) {
                        Ok(row) => row,
                        Err(detail) => {
                            report.conflicts.push(Conflict { relation_id: id, key: from.clone(), detail });
                            continue;
                        }
                    };
                    match identity {
                        Identity::Key => {
                            if let Some(old) = old_key {
                                if old != key {
                                    overlay.write(access, id, encode_key(old), None)?;
                                }
                            }
                            overlay.write(access, id, encode_key(key), Some(encode_stored_row(&merged, 1)))?;
                        }
                        Identity::FullRow => {
                            // The old image is the old key; the new key is the merged row.
                            remove_copy(overlay, access, id, from, &mut report)?;
                            let new_key = Key(merged.0.clone());
                            let k = encode_key(&new_key);
                            let copies = match overlay.read(access, id, &k)? {
                                Some(bytes) => decode_stored_row(&bytes).map_err(|e| corrupt(id, e))?.1,
                                None => 0,
                            };
                            overlay.write(access, id, k, Some(encode_stored_row(&merged, copies + 1)))?;
                        }
                    }
                }
            }
        }
    }
    let mut marked = std::collections::BTreeSet::new();
    for c in &report.conflicts {
        if marked.insert(c.relation_id) {
            access.mark_diverged(c.relation_id)?;
        }
    }
    for id in order {
        if let Some(log) = overlays.remove(&id).and_then(|o| o.log) {
            if !log.changes.is_empty() {
                report.changes.push(ViewChanges { relation_id: id, changes: log.changes });
            }
        }
    }
    Ok(report)
}

fn remove_copy(
    overlay: &mut Overlay,
    access: &mut impl RowAccess,
    id: RelationId,
    key: &Key,
    report: &mut ApplyReport,
) -> Result<(), StoreError> {
    let k = encode_key(key);
    match overlay.read(access, id, &k)? {
        Some(bytes) => {
            let (row, copies) = decode_stored_row(&bytes).map_err(|e| corrupt(id, e))?;
            let value = (copies > 1).then(|| encode_stored_row(&row, copies - 1));
            overlay.write(access, id, k, value)
        }
        None => {
            report.conflicts.push(Conflict {
                relation_id: id,
                key: key.clone(),
                detail: "removal of a row that is not in the local copy".into(),
            });
            Ok(())
        }
    }
}

fn merge(old: Option<&Row>, new: &[Cell]) -> Result<Row, String> {
    let mut out = Vec::with_capacity(new.len());
    for (i, cell) in new.iter().enumerate() {
        match cell {
            Cell::Set(v) => out.push(v.clone()),
            Cell::Unchanged => match old.and_then(|r| r.0.get(i)) {
                Some(v) => out.push(v.clone()),
                None if old.is_none() => {
                    return Err("update keeps unchanged values of a row that is not in the local copy".into())
                }
                None => return Err(format!("update keeps column {i}, which the local row does not have")),
            },
        }
    }
    Ok(Row(out))
}
