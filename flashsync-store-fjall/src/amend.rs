//! Amending an unpublished generation on the writer thread: the feed's
//! changes to the rows of a copy made in chunks
//! ([`Generation::amend`](flashsync_core::Generation::amend)), and the same
//! made durable together with the job record and the generation's
//! checkpoint marker
//! ([`Generation::checkpoint`](flashsync_core::Generation::checkpoint),
//! see [`crate::checkpoint`]).
//!
//! The generation's loader has finished before either runs (see
//! [`crate::generation`] for why), so the ingested rows are registered and
//! read back here like every batch written before.

use std::collections::HashMap;

use fjall::PersistMode;
use flashsync_core::rowops::{apply_ops, ApplyReport, RowAccess};
use flashsync_core::{RelationId, RelationSchema, StoreError, StoreErrorKind, ViewOps};

use crate::checkpoint::{self, Checkpointed};
use crate::error::engine;
use crate::layout::{self, GenKey};
use crate::shared::Shared;

/// What a checkpoint writes besides the amendment.
pub(crate) struct Checkpoint {
    /// The job record, encoded as `put_job` stores it.
    pub job: Vec<u8>,
    /// The generation's marker value ([`checkpoint::encode_marker`]).
    pub marker: Vec<u8>,
    /// The schema the marker names.
    pub schema: RelationSchema,
}

/// Applies `ops` to the rows of generation `gen`, whose loader has
/// finished, as one batch — with `checkpoint`'s job record and marker when
/// given. Returns what [`apply_ops`] noticed and the generation now holding
/// the rows: `gen`, or a fresh one after a truncate.
pub(crate) fn amend(
    shared: &Shared,
    gen: GenKey,
    ops: &ViewOps,
    checkpoint: Option<Checkpoint>,
    op: &str,
) -> Result<(ApplyReport, GenKey), StoreError> {
    let mut state = shared.write(op)?;
    if !state.filling.contains(&gen) {
        return Err(StoreError::new(StoreErrorKind::Closed, op, "the generation is no longer being filled"));
    }
    if checkpoint.is_some() && !state.catalog.contains(&gen.view) {
        // A forgotten view gets no job record and no resumable copy back.
        return Err(StoreError::no_view(op, gen.view));
    }
    let mut access = GenAccess { shared, gen, fresh: false, writes: HashMap::new(), op };
    let report = apply_ops(std::slice::from_ref(ops), &mut access)?;
    let GenAccess { fresh, writes, .. } = access;
    // Changes made without a checkpoint to a checkpointed generation are not
    // in what its checkpoint promises (the job record says how far the copy
    // and the feed got): they end the checkpoint, in their own batch, so a
    // crash leaves the checkpoint with its rows or neither.
    let uncheckpoints = checkpoint.is_none() && state.is_checkpoint(gen);
    if checkpoint.is_none() && !fresh && writes.is_empty() {
        return Ok((report, gen));
    }
    let ks = &shared.ks;
    // Synced when the batch moves the generation (the next loader ingests
    // into the new prefix bypassing the journal, so its marker and number
    // must be on disk first, as in `begin`) or writes or removes a
    // checkpoint marker (see `checkpoint`). Otherwise unsynced like the
    // copy's other batches: publish's fsync makes them durable, and a crash
    // before it discards the whole generation.
    let synced = fresh || checkpoint.is_some() || uncheckpoints;
    let mut wb = shared.db.batch().durability(synced.then_some(PersistMode::SyncAll));
    let target = if fresh {
        // The rows so far are dropped whole: the generation moves to a fresh
        // prefix, and the old one becomes garbage.
        let target = GenKey { view: gen.view, generation: state.allocate_generation(ks, &mut wb) };
        wb.remove(&ks.filling, gen.prefix());
        wb.insert(&ks.garbage, gen.prefix(), []);
        target
    } else {
        gen
    };
    // The marker of the generation holding the rows now: the checkpoint's,
    // or a plain one (a fresh prefix needs one; a checkpointed generation
    // loses its checkpoint).
    match &checkpoint {
        Some(checkpoint) => wb.insert(&ks.filling, target.prefix(), checkpoint.marker.clone()),
        None if fresh || uncheckpoints => wb.insert(&ks.filling, target.prefix(), []),
        None => {}
    }
    let ended = match &checkpoint {
        Some(checkpoint) => {
            wb.insert(&ks.jobs, layout::view_key(gen.view), checkpoint.job.clone());
            // One checkpoint per view: another generation's ends here.
            checkpoint::end(ks, &state, gen.view, Some(gen), &mut wb)
        }
        None => None,
    };
    for (key, value) in writes {
        let key = target.row_key(&key);
        match value {
            Some(value) => wb.insert(&ks.rows, key, value),
            // A fresh prefix starts empty: nothing to delete there.
            None if fresh => {}
            None => wb.remove(&ks.rows, key),
        }
    }
    shared.commit(&mut state, wb, op)?;
    if synced {
        // The fsync made everything committed before it durable too.
        state.synced();
    }
    if fresh {
        state.filling.remove(&gen);
        state.filling.insert(target);
        // Nothing points at the old rows and its loader has stopped: they
        // can go at once.
        state.garbage.push_back(gen);
    }
    if let Some(ended) = ended {
        ended.finish(&mut state);
    }
    match checkpoint {
        Some(checkpoint) => {
            state.checkpoints.insert(gen.view, Checkpointed { gen: target, schema: checkpoint.schema });
        }
        None if uncheckpoints => {
            state.checkpoints.remove(&gen.view);
        }
        None => {}
    }
    Ok((report, target))
}

/// [`RowAccess`] over an unpublished generation's rows plus the amendment's
/// buffered writes.
struct GenAccess<'a> {
    shared: &'a Shared,
    gen: GenKey,
    /// Whether the amendment truncated the rows written before it.
    fresh: bool,
    /// Buffered writes (`None` deletes), by encoded key.
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    op: &'a str,
}

impl RowAccess for GenAccess<'_> {
    /// Reads check the amendment's buffered writes first.
    fn reads_own_writes(&self) -> bool {
        true
    }

    /// The conflict is in the report; the machine copies the view again.
    fn mark_diverged(&mut self, _view: RelationId) -> Result<(), StoreError> {
        Ok(())
    }

    fn read(&mut self, _view: RelationId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        if self.fresh {
            return Ok(None);
        }
        // The loader has finished, so its ingested tables are registered
        // and visible here like every batch written before.
        self.shared.ks.rows.get(self.gen.row_key(key)).map(|v| v.map(|v| v.to_vec())).map_err(|e| engine(self.op, e))
    }

    fn write(&mut self, _view: RelationId, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        self.writes.insert(key, value);
        Ok(())
    }

    fn clear(&mut self, _view: RelationId) -> Result<(), StoreError> {
        self.fresh = true;
        self.writes.clear();
        Ok(())
    }
}
