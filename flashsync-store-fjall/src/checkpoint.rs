//! Checkpointed generations (guarantee 8 of the store contract): a copy in
//! chunks whose rows, changes and job record a
//! [`checkpoint`](flashsync_core::Generation::checkpoint) made durable
//! together. It is kept across restarts, invisible and unreclaimed, until
//! [`resume_generation`](flashsync_core::Store::resume_generation) hands it
//! back, or its publish, its discard, a new copy of the view or a forget
//! ends it.
//!
//! The marker is the generation's own `filling` marker, given a value: empty
//! for a generation that is only being written (garbage after a restart), a
//! [`CheckpointRecord`] for a checkpointed one (kept by the next open). Why
//! not a keyspace of its own: the set of keyspaces is fixed when a store is
//! created ([`crate::layout`] says why), and with one marker per
//! generation a generation is plain or checkpointed, never both. Stores
//! written before checkpoints existed hold only empty markers, which read
//! as they always did; a build from before reads a checkpoint marker as a
//! plain one and reclaims the generation — the copy starts over, nothing
//! is misread — so the format version stays.
//!
//! What keeps a marker truthful:
//! - **One per view.** Every batch that writes one ends the view's other one
//!   ([`end`]).
//! - **Synced.** Every batch that writes or removes a marker is fsynced, so
//!   [`State::checkpoints`] mirrors what is on disk. That matters when a
//!   checkpoint ends: the generation is reclaimed only once the end is
//!   durable — reclamation drops whole tables, which is durable at once, and
//!   a crash that lost the end would otherwise bring back a marker over
//!   missing rows.
//! - **Never ahead of its rows.** The checkpoint batch holds the marker, the
//!   job record and the amendment, and is written after the generation's
//!   loader has finished its bulk ingestion: fjall fsyncs the ingested tables
//!   and the tree version listing them before `finish` returns. Rows written
//!   through ordinary batches are earlier in the journal than the
//!   checkpoint, whose fsync covers them.
//!
//! Rows written after a checkpoint (all keyed above its last key) may reach
//! the disk before a crash — ingested tables are durable when registered —
//! so resuming deletes every row above the key it is given first.

use std::ops::Bound;

use fjall::{OwnedWriteBatch, PersistMode};
use flashsync_core::{RelationId, RelationSchema, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::{engine, invalid};
use crate::layout::{self, GenKey};
use crate::shared::{Keyspaces, Shared, State, RECLAIM_STEP};

/// The value of a checkpointed generation's `filling` marker, as JSON. The
/// view and the generation are the marker's key.
#[derive(Serialize, Deserialize)]
struct CheckpointRecord {
    /// The schema the generation's rows were written with: resuming with
    /// another one finds nothing.
    schema: RelationSchema,
}

/// A view's checkpointed generation, as [`State::checkpoints`] holds it.
#[derive(Clone, Debug)]
pub(crate) struct Checkpointed {
    /// The generation.
    pub gen: GenKey,
    /// Its schema.
    pub schema: RelationSchema,
}

/// The `filling` marker value of a generation checkpointed with `schema`.
/// Never empty (a JSON object), so it cannot be mistaken for a plain marker.
pub(crate) fn encode_marker(schema: &RelationSchema) -> Result<Vec<u8>, StoreError> {
    layout::encode_json("checkpoint marker", &CheckpointRecord { schema: schema.clone() })
}

/// Reads a `filling` marker's value: `None` for a generation that was only
/// being written, its schema for a checkpointed one. Damaged bytes are
/// `Corrupt`.
pub(crate) fn decode_marker(bytes: &[u8]) -> Result<Option<RelationSchema>, StoreError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let record: CheckpointRecord = layout::decode_json("checkpoint marker", bytes)?;
    Ok(Some(record.schema))
}

/// A checkpoint [`end`] wrote the end of into a batch.
#[must_use = "the state must learn of the end once the batch commits"]
pub(crate) struct Ended {
    gen: GenKey,
    /// Whether a live [`Generation`](flashsync_core::Generation) still
    /// writes the generation: it goes on as a plain one, and its own
    /// publish, discard or drop settles it.
    live: bool,
}

impl Ended {
    /// Updates the state once the batch holding the end has committed —
    /// synced, so a generation no handle writes can be reclaimed at once.
    pub(crate) fn finish(self, state: &mut State) {
        if state.is_checkpoint(self.gen) {
            state.checkpoints.remove(&self.gen.view);
        }
        if !self.live {
            state.garbage.push_back(self.gen);
        }
    }
}

/// Ends view `view`'s checkpoint in `batch` (which must be synced), unless
/// there is none or it is generation `except` (the caller deals with that
/// generation's own marker: a batch must not write one key twice).
///
/// A generation a live handle still writes keeps a plain marker; any other
/// becomes garbage in the same batch.
pub(crate) fn end(
    ks: &Keyspaces,
    state: &State,
    view: RelationId,
    except: Option<GenKey>,
    batch: &mut OwnedWriteBatch,
) -> Option<Ended> {
    let gen = state.checkpoints.get(&view)?.gen;
    if Some(gen) == except {
        return None;
    }
    let live = state.filling.contains(&gen);
    if live {
        batch.insert(&ks.filling, gen.prefix(), []);
    } else {
        batch.remove(&ks.filling, gen.prefix());
        batch.insert(&ks.garbage, gen.prefix(), []);
    }
    Some(Ended { gen, live })
}

/// Hands back view `view`'s checkpointed generation (on the writer thread):
/// `None` if there is none, or if it was made with another schema than
/// `schema` (it then becomes garbage). Its rows keyed above `after` (an
/// [`encode_key`](flashsync_core::codec::encode_key) encoding) are deleted
/// first, and it is marked as being filled again.
pub(crate) fn resume(
    shared: &Shared,
    view: RelationId,
    schema: &RelationSchema,
    after: &[u8],
    op: &str,
) -> Result<Option<GenKey>, StoreError> {
    let mut state = shared.write(op)?;
    let Some(kept) = state.checkpoints.get(&view).cloned() else {
        return Ok(None);
    };
    if state.filling.contains(&kept.gen) {
        // Two handles on one prefix would write it at once, and its rows
        // cannot be cut back under a loader that is still writing them.
        return Err(invalid(
            op,
            format!(
                "generation {} of the view is checkpointed but still being written: publish, discard or drop it first",
                kept.gen.generation
            ),
        ));
    }
    if !schema.fits(&kept.schema) {
        let mut batch = shared.db.batch().durability(Some(PersistMode::SyncAll));
        let ended = end(&shared.ks, &state, view, None, &mut batch);
        shared.commit(&mut state, batch, op)?;
        // The fsync made everything committed before it durable too.
        state.synced();
        if let Some(ended) = ended {
            ended.finish(&mut state);
        }
        return Ok(None);
    }
    drop_rows_after(shared, &mut state, kept.gen, after, op)?;
    state.filling.insert(kept.gen);
    Ok(Some(kept.gen))
}

/// Deletes the rows of `gen` keyed above `after`: the rows written after its
/// last checkpoint. First the tables holding nothing else (what an
/// ingestion after the checkpoint registered) are dropped whole, which
/// gives their space back instead of burying them under tombstones; then
/// what is left goes key by key, a bounded batch at a time.
///
/// Not synced: a crash that loses some of it leaves rows above `after`,
/// which the next resume deletes again. The next checkpoint's fsync makes
/// the deletions durable before it claims the rows written after them.
fn drop_rows_after(shared: &Shared, state: &mut State, gen: GenKey, after: &[u8], op: &str) -> Result<(), StoreError> {
    let start = Bound::Excluded(gen.row_key(after));
    let end = gen.prefix_end().map_or(Bound::Unbounded, Bound::Excluded);
    shared.drop_tables_in((start.clone(), end.clone()), op)?;
    let mut from = start;
    loop {
        let mut batch = shared.db.batch().durability(None);
        let mut keys = 0;
        let mut last = None;
        for item in shared.ks.rows.range::<Vec<u8>, _>((from.clone(), end.clone())) {
            let key = item.key().map_err(|e| engine(op, e))?;
            batch.remove(&shared.ks.rows, key.clone());
            last = Some(key.to_vec());
            keys += 1;
            if keys >= RECLAIM_STEP {
                break;
            }
        }
        if keys == 0 {
            return Ok(());
        }
        shared.commit(state, batch, op)?;
        match last {
            Some(last) if keys >= RECLAIM_STEP => from = Bound::Excluded(last),
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use flashsync_core::{Column, SourceRelId, StoreErrorKind};

    use super::*;

    #[test]
    fn markers_round_trip_and_damage_is_corrupt() {
        let columns = ["id", "name"].map(|n| Column { name: n.into(), type_name: "text".into() }).to_vec();
        let schema = RelationSchema::keyed(SourceRelId(3), columns, vec![0]);
        let bytes = encode_marker(&schema).expect("encodes");
        assert!(!bytes.is_empty(), "a checkpoint marker must not read as a plain one");
        assert_eq!(decode_marker(&bytes).expect("decodes"), Some(schema));
        assert_eq!(decode_marker(&[]).expect("a plain marker"), None);
        for damaged in [&b"{not json"[..], b"\xff\x00", b"{}", b"{\"schema\":7}", &bytes[..bytes.len() - 1]] {
            let e = decode_marker(damaged).expect_err("damaged bytes");
            assert_eq!(e.kind, StoreErrorKind::Corrupt, "{damaged:?}: {e}");
        }
    }
}
