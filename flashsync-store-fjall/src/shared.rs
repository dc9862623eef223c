//! The state every handle, generation and writer-thread job shares: the fjall
//! database, our keyspaces, and an in-memory mirror of the small per-view
//! records the hot path needs (which views exist, where their rows are).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use fjall::{Database, Keyspace};
use flashsync_core::{BatchSeq, OriginId, RelationId, RelationSchema, StoreError};

use crate::error::{engine, poisoned};
use crate::layout;
use crate::options::Options;

/// Handles to the fixed keyspaces the store writes after opening (see
/// [`layout`]; `meta` is only read and written by `open`).
pub(crate) struct Keyspaces {
    pub catalog: Keyspace,
    pub jobs: Keyspace,
    pub origins: Keyspace,
    pub copies: Keyspace,
    pub dirty: Keyspace,
}

/// A view's published copy.
#[derive(Clone)]
pub(crate) struct Copy {
    /// Its generation number.
    pub generation: u64,
    /// Its schema.
    pub schema: RelationSchema,
    /// The keyspace holding its rows.
    pub rows: Keyspace,
}

/// What the store knows in memory. Mirrors the committed (not necessarily
/// durable) contents of the catalog, copies and dirty keyspaces; changed only
/// on the writer thread, after the fjall batch that changes the disk commits.
pub(crate) struct State {
    /// Views in the catalog.
    pub catalog: BTreeSet<RelationId>,
    /// Published copies.
    pub copies: HashMap<RelationId, Copy>,
    /// Views left partially updated, with the origin whose transaction did it.
    pub dirty: BTreeMap<RelationId, OriginId>,
    /// The last batch applied since this store was opened. Sequence numbers
    /// belong to one process run: the driver starts over after a restart.
    pub last_seq: Option<BatchSeq>,
    /// Generations replaced by a batch that is not durable yet. They must
    /// survive until it is: a crash may bring the old pointer back.
    pub retired: Vec<Keyspace>,
    /// Next generation number to hand out.
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
}

/// Everything shared behind the store's `Arc`.
pub(crate) struct Shared {
    pub db: Database,
    pub ks: Keyspaces,
    pub state: RwLock<State>,
    pub options: Options,
    pub path: PathBuf,
}

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

    /// Opens (creating) the rows keyspace of a new generation.
    pub fn create_generation(&self, view: RelationId, generation: u64) -> Result<Keyspace, StoreError> {
        let name = layout::rows_keyspace(view, generation);
        self.db
            .keyspace(&name, fjall::KeyspaceCreateOptions::default)
            .map_err(|e| engine(format!("create generation {generation} of view {view}"), e))
    }

    /// Deletes a generation's keyspace. Failure is not fatal: an unreferenced
    /// generation is found and deleted when the store is next opened.
    pub fn drop_generation(&self, rows: Keyspace) {
        let _ = self.db.delete_keyspace(rows);
    }

    /// Deletes every retired generation; call only once everything committed
    /// so far is durable.
    pub fn reclaim_retired(&self, state: &mut State) {
        for rows in state.retired.drain(..) {
            let _ = self.db.delete_keyspace(rows);
        }
    }

    /// The durability to commit an `apply` batch with.
    pub fn apply_durability(&self) -> Option<fjall::PersistMode> {
        match self.options.durability {
            crate::Durability::Explicit => None,
            crate::Durability::Batch => Some(fjall::PersistMode::SyncAll),
        }
    }
}
