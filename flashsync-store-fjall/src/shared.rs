//! The state every handle, generation and writer-thread job shares: the fjall
//! database, its keyspaces, and an in-memory mirror of the small per-view
//! records the hot path needs (which views exist, which generation is theirs).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fjall::{Database, Keyspace, OwnedWriteBatch};
use flashsync_core::{BatchSeq, OriginId, RelationId, RelationSchema, StoreError};

use crate::checkpoint::Checkpointed;
use crate::error::{engine, poisoned};
use crate::layout::{self, GenKey};
use crate::options::Options;

/// Handles to the store's keyspaces (see [`layout`]).
pub(crate) struct Keyspaces {
    pub meta: Keyspace,
    pub catalog: Keyspace,
    pub jobs: Keyspace,
    pub origins: Keyspace,
    pub copies: Keyspace,
    pub dirty: Keyspace,
    pub rows: Keyspace,
    pub filling: Keyspace,
    pub garbage: Keyspace,
}

/// A view's published copy.
#[derive(Clone)]
pub(crate) struct Copy {
    /// Its generation number.
    pub generation: u64,
    /// Its schema.
    pub schema: RelationSchema,
}

/// What the store knows in memory. Mirrors the committed (not necessarily
/// durable) contents of the small keyspaces; changed only on the writer
/// thread, after the fjall batch that changes the disk has committed.
pub(crate) struct State {
    /// Views in the catalog.
    pub catalog: BTreeSet<RelationId>,
    /// Published copies.
    pub copies: HashMap<RelationId, Copy>,
    /// Views a store written by an earlier version left partially updated
    /// by a large transaction, with its origin (that version applied parts
    /// of a transaction at once; now they are staged).
    pub dirty: BTreeMap<RelationId, OriginId>,
    /// Views whose copy an applied batch could not fit (a conflict). Their
    /// dirty marker has an empty value: no commit clears it, only a publish
    /// or a forget.
    pub diverged: BTreeSet<RelationId>,
    /// Generations being written by a live [`Generation`](flashsync_core::Generation).
    pub filling: BTreeSet<GenKey>,
    /// Each view's checkpointed generation ([`crate::checkpoint`]), kept
    /// across restarts: in `filling` too while a live handle writes it.
    /// Mirrors the non-empty `filling` markers, which only synced batches
    /// write or remove, so it is always what a crash would leave.
    pub checkpoints: BTreeMap<RelationId, Checkpointed>,
    /// Garbage generations whose rows may be deleted now.
    pub garbage: VecDeque<GenKey>,
    /// The last row key deleted from the front garbage generation, so the
    /// next step starts after it instead of wading through its tombstones.
    pub reclaim_cursor: Option<Vec<u8>>,
    /// Garbage generations replaced by a batch that is not durable yet: a
    /// crash could bring the old pointer back, so their rows must stay until
    /// the next sync.
    pub garbage_after_sync: Vec<GenKey>,
    /// The last batch applied since this store was opened. Sequence numbers
    /// belong to one process run: the driver starts over after a restart.
    pub last_seq: Option<BatchSeq>,
    /// Staged parts of large transactions ([`flashsync_core::staging`]):
    /// in memory, as they are never visible and must not survive a reopen.
    pub staging: flashsync_core::Staging,
    /// Next generation number to hand out (also stored in `meta`).
    pub next_generation: u64,
    /// Set when a write failed after possibly reaching the journal.
    pub poisoned: Option<String>,
}

impl State {
    /// Refuses work once poisoned.
    pub fn check(&self, op: &str) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(cause) => Err(poisoned(op, cause)),
            None => Ok(()),
        }
    }

    /// Records a failed write: from now on every call fails.
    pub fn poison(&mut self, error: &StoreError) {
        if self.poisoned.is_none() {
            self.poisoned = Some(error.to_string());
        }
    }

    /// Whether `gen` is its view's checkpointed generation.
    pub fn is_checkpoint(&self, gen: GenKey) -> bool {
        self.checkpoints.get(&gen.view).is_some_and(|kept| kept.gen == gen)
    }

    /// Everything committed so far is durable: replaced generations may go.
    pub fn synced(&mut self) {
        self.garbage.extend(self.garbage_after_sync.drain(..));
    }

    /// The batches that replaced `covered` are durable (a sync that began
    /// when they were all that waited): those generations may go, the ones
    /// replaced since wait for the next sync.
    pub fn synced_only(&mut self, covered: &[GenKey]) {
        let (now, later): (Vec<GenKey>, Vec<GenKey>) =
            self.garbage_after_sync.drain(..).partition(|g| covered.contains(g));
        self.garbage.extend(now);
        self.garbage_after_sync = later;
    }

    /// Hands out a generation number, recording the new high-water mark in
    /// `batch` so numbers are never reused, even after a crash.
    pub fn allocate_generation(&mut self, ks: &Keyspaces, batch: &mut OwnedWriteBatch) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        batch.insert(&ks.meta, layout::META_NEXT_GENERATION, layout::encode_u64(self.next_generation));
        generation
    }
}

/// Everything shared behind the store's `Arc`.
pub(crate) struct Shared {
    pub db: Database,
    pub ks: Keyspaces,
    pub state: RwLock<State>,
    pub options: Options,
    pub path: PathBuf,
    /// Where fjall keeps its journal files (see `journal`).
    pub journal_dir: PathBuf,
    /// Created with the store; `None` for stores created before ids were.
    pub store_id: Option<String>,
    /// Readers hold it shared from taking their snapshot until they finish
    /// iterating; reclamation holds it exclusively while it drops whole
    /// tables. Why: a snapshot pins *sequence numbers*, not tables — an
    /// iterator is built from the tables present when it starts, so a table
    /// dropped between a reader's snapshot and its iterator would silently
    /// take rows out of what that reader sees. Deleting key by key needs no
    /// gate (tombstones newer than the snapshot are invisible to it).
    /// Lock order: the state lock first, then this one.
    pub table_drops: RwLock<()>,
    /// Held by [`commit`](Shared::commit) while it commits a batch, and by
    /// an ingestion's register (`loader`) from its journal sync to its
    /// finish. Why: the finish flushes the rows keyspace's memtable into a
    /// table, durable at once, while the journal entries of the batches in
    /// it may not be — a batch committed between the sync and the flush
    /// would have its row changes kept by a power cut and its origin
    /// position (another keyspace) lost, and the restart would apply it
    /// twice. Loader threads register on their own (a copy's rows out of
    /// key order end its ingestion mid-copy) while the writer thread
    /// applies other views' batches, so the exclusion cannot be left to
    /// the callers. Readers never take it. Lock order: the state lock
    /// first, then this one.
    pub commit_gate: Mutex<()>,
}

/// Keys deleted per reclamation step: bounds the work (and the journal lock
/// hold time) a `persist` adds for reclamation.
pub(crate) const RECLAIM_STEP: usize = 4096;

impl Shared {
    /// Read access to the state.
    pub fn read(&self, op: &str) -> Result<RwLockReadGuard<'_, State>, StoreError> {
        let state =
            self.state.read().map_err(|_| poisoned(op, "a thread panicked while updating the store's state"))?;
        state.check(op)?;
        Ok(state)
    }

    /// Write access to the state (writer thread only).
    pub fn write(&self, op: &str) -> Result<RwLockWriteGuard<'_, State>, StoreError> {
        let state =
            self.state.write().map_err(|_| poisoned(op, "a thread panicked while updating the store's state"))?;
        state.check(op)?;
        Ok(state)
    }

    /// The durability to commit an `apply` batch with.
    pub fn apply_durability(&self) -> Option<fjall::PersistMode> {
        match self.options.durability {
            crate::Durability::Explicit => None,
            crate::Durability::Batch => Some(fjall::PersistMode::SyncAll),
        }
    }

    /// Commits `batch`, poisoning the store if it fails: fjall may have
    /// written it to the journal before failing (e.g. the fsync failed), so
    /// what is on disk is unknown.
    pub fn commit(&self, state: &mut State, batch: OwnedWriteBatch, op: &str) -> Result<(), StoreError> {
        let _gate = self.gate(op)?;
        batch.commit().map_err(|e| {
            let e = engine(op, e);
            state.poison(&e);
            e
        })
    }

    /// Takes [`Shared::commit_gate`].
    pub fn gate(&self, op: &str) -> Result<MutexGuard<'_, ()>, StoreError> {
        self.commit_gate.lock().map_err(|_| poisoned(op, "a thread panicked while committing"))
    }

    /// Moves a generation that will never be published to the garbage, in
    /// one batch; its rows can go at once (nothing points at them).
    ///
    /// Not synced for a plain generation: if a crash loses the batch, its
    /// marker is back and the next open makes it garbage anyway. A
    /// checkpointed one's marker would bring it back as resumable, over rows
    /// reclamation may have dropped already: that batch is synced.
    pub fn abandon(&self, state: &mut State, gen: GenKey, op: &str) -> Result<(), StoreError> {
        let checkpointed = state.is_checkpoint(gen);
        let mut batch = self.db.batch().durability(checkpointed.then_some(fjall::PersistMode::SyncAll));
        batch.remove(&self.ks.filling, gen.prefix());
        batch.insert(&self.ks.garbage, gen.prefix(), []);
        self.commit(state, batch, op)?;
        state.filling.remove(&gen);
        if checkpointed {
            state.checkpoints.remove(&gen.view);
            // The fsync made everything committed before it durable too.
            state.synced();
        }
        state.garbage.push_back(gen);
        Ok(())
    }

    /// Deletes rows of garbage generations, about `budget` keys at most (at
    /// least one step). Returns whether garbage remains.
    ///
    /// A generation's reclamation starts by dropping every table that holds
    /// only its keys — the tables a copy's bulk ingestion wrote, which are
    /// most of a copied view's bytes. That gives the disk space back at once:
    /// deleting those rows key by key only adds tombstones, and fjall's
    /// compaction keeps both for a long time (a forgotten 80 MB view still
    /// took 84 MB after a major compaction). What is left — rows written by
    /// ordinary batches, which share tables with other views — is deleted
    /// key by key, one non-durable batch per step: if a crash loses a step,
    /// the garbage marker is still there and the step is redone.
    pub fn reclaim(&self, state: &mut State, budget: usize, op: &str) -> Result<bool, StoreError> {
        let mut spent = 0;
        let mut dropped = false;
        while let Some(&gen) = state.garbage.front() {
            if spent >= budget {
                break;
            }
            let end = gen.prefix_end().map_or(Bound::Unbounded, Bound::Excluded);
            let start = match state.reclaim_cursor.take() {
                Some(last) => Bound::Excluded(last),
                None => {
                    let whole = Bound::Included(gen.prefix().to_vec());
                    dropped |= self.drop_tables_in((whole.clone(), end.clone()), op)?;
                    whole
                }
            };
            let mut batch = self.db.batch().durability(None);
            let mut keys = 0;
            let mut last = None;
            for item in self.ks.rows.range::<Vec<u8>, _>((start, end)) {
                let key = item.key().map_err(|e| engine(op, e))?;
                batch.remove(&self.ks.rows, key.clone());
                last = Some(key.to_vec());
                keys += 1;
                if keys >= RECLAIM_STEP {
                    break;
                }
            }
            let done = keys < RECLAIM_STEP;
            if done {
                batch.remove(&self.ks.garbage, gen.prefix());
            }
            self.commit(state, batch, op)?;
            spent += keys.max(1);
            if done {
                state.garbage.pop_front();
            } else {
                state.reclaim_cursor = last;
            }
        }
        if dropped {
            self.release_dropped_tables(state, op)?;
        }
        Ok(!state.garbage.is_empty())
    }

    /// fjall's `persist` of the journal in `mode`; a failure poisons the
    /// store (what the journal held may be lost, so no later write may
    /// pretend otherwise).
    pub fn persist_journal(&self, state: &mut State, mode: fjall::PersistMode, op: &str) -> Result<(), StoreError> {
        self.db.persist(mode).map_err(|e| {
            let e = engine(op, e);
            state.poison(&e);
            e
        })
    }

    /// Dropped tables stay on disk while an older version of the tree still
    /// lists them, and fjall retires old versions only when a memtable is
    /// sealed. So seal one: the garbage keyspace's, which just received the
    /// removal of a marker and so is never empty. Everything is made durable
    /// first, so the sealed marker removal can never reach disk before the
    /// row deletions it stands for (that order would strand rows).
    fn release_dropped_tables(&self, state: &mut State, op: &str) -> Result<(), StoreError> {
        self.persist_journal(state, fjall::PersistMode::SyncData, op)?;
        self.ks.garbage.rotate_memtable().map_err(|e| engine(op, e))?;
        Ok(())
    }

    /// Drops the tables whose keys all lie in `range` of the rows keyspace:
    /// a garbage generation, or the rows a checkpointed one took after its
    /// checkpoint. Safe against crashes: nothing reads those keys any more
    /// (a garbage marker was written after the pointer moved away and only
    /// leaves once the range is empty; a checkpoint's marker claims no row
    /// above its last key), and a table drop is one atomic version change in
    /// fjall's manifest.
    /// Returns whether any table was dropped.
    pub fn drop_tables_in(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>), op: &str) -> Result<bool, StoreError> {
        use fjall::AbstractTree;
        let _readers_out =
            self.table_drops.write().map_err(|_| poisoned(op, "a thread panicked while reading the store"))?;
        // `tree` is fjall's hidden handle on the keyspace's LSM tree; fjall
        // 3.1 has no public range drop on `Keyspace`, and the version is
        // pinned in the workspace.
        let before = self.ks.rows.table_count();
        self.ks.rows.tree.drop_range(range).map_err(|e| engine(op, fjall::Error::from(e)))?;
        Ok(self.ks.rows.table_count() < before)
    }
}
