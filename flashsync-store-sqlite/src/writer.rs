//! The writer thread's state: the read-write connection, and an in-memory
//! mirror of the small records the hot path needs (which views exist, which
//! table holds each published copy, which generations a checkpoint keeps).
//! Only the writer thread changes the database, so the mirror is exact: it
//! is updated after each commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use flashsync_core::{BatchSeq, RelationId, StoreError, ViewName};
use rusqlite::Connection;

use crate::checkpoint::Checkpointed;
use crate::error::{poisoned, sql};
use crate::options::Durability;
use crate::table::Plan;
use crate::worker::Context;

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub conn: Connection,
    pub durability: Durability,
    /// Views in the catalog, with their names (which name their tables).
    pub catalog: BTreeMap<RelationId, ViewName>,
    /// Published copies.
    pub copies: HashMap<RelationId, Arc<Plan>>,
    /// Unpublished generations a checkpoint keeps, by view (mirrors
    /// `_flashsync_checkpoints`).
    pub checkpoints: HashMap<RelationId, Checkpointed>,
    /// Generation tables a live [`Generation`](flashsync_core::Generation)
    /// handle fills: never dropped but by that handle (see
    /// [`checkpoint`](crate::checkpoint)). In memory: handles die with the
    /// process.
    pub held: HashSet<String>,
    /// The last batch applied since this store was opened. Sequence numbers
    /// belong to one process run: the driver starts over after a restart.
    pub last_seq: Option<BatchSeq>,
    /// Staged parts of large transactions ([`flashsync_core::staging`]):
    /// in memory, as they are never visible and must not survive a reopen.
    pub staging: flashsync_core::Staging,
    /// Whether a commit since the last fsync of the log was not synced.
    pub unsynced: bool,
    /// Next generation number (generation tables left by an earlier run are
    /// dropped when the store opens, but for those a checkpoint keeps, which
    /// numbering continues after).
    pub next_generation: u64,
    /// Set when a commit failed after possibly reaching the log.
    pub poisoned: Option<String>,
}

impl Context for Writer {
    fn recover(&mut self, cause: &str) {
        // A panic may have left a transaction open, and the mirror may
        // disagree with the file: refuse further work until reopened.
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.poison(format!("a writer job panicked: {cause}"));
    }
}

impl Writer {
    /// Refuses work once poisoned.
    pub(crate) fn check(&self, op: &str) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(cause) => Err(poisoned(op, cause)),
            None => Ok(()),
        }
    }

    /// Records a failed write: from now on every call fails.
    pub(crate) fn poison(&mut self, cause: String) {
        if self.poisoned.is_none() {
            self.poisoned = Some(cause);
        }
    }

    /// Runs `f` in one write transaction (`BEGIN IMMEDIATE` … `COMMIT`): all
    /// of it lands or none. With `durable`, the commit fsyncs the log —
    /// which makes every earlier commit durable too, the log being
    /// sequential. If `f` fails the transaction is rolled back; if the
    /// commit itself fails the store is poisoned, since whether it reached
    /// the log is unknown.
    pub(crate) fn transaction<T>(
        &mut self,
        op: &str,
        durable: bool,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.check(op)?;
        // In `Batch` mode every commit is already synchronous.
        let switch = durable && self.durability == Durability::Explicit;
        if switch {
            self.conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql(op, e))?;
        }
        let result = self.run_transaction(op, f);
        if switch {
            if let Err(e) = self.conn.pragma_update(None, "synchronous", "NORMAL") {
                // Harmless for correctness (commits would only be slower),
                // but a connection that refuses a pragma is in trouble.
                self.poison(format!("restoring synchronous = NORMAL failed: {e}"));
            }
        }
        // Only `sync` clears the flag: a durable transaction that changed no
        // page (a DELETE that matched nothing) makes SQLite write and fsync
        // nothing, so it proves nothing about the commits before it.
        if result.is_ok() && !durable && self.durability == Durability::Explicit {
            self.unsynced = true;
        }
        result
    }

    fn run_transaction<T>(
        &mut self,
        op: &str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| sql(op, e))?;
        match f(&self.conn) {
            Ok(value) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(value),
                Err(e) => {
                    let e = sql(op, e);
                    if !self.conn.is_autocommit() {
                        let _ = self.conn.execute_batch("ROLLBACK");
                    }
                    self.poison(e.to_string());
                    Err(e)
                }
            },
            Err(e) => {
                // SQLite may have rolled back already (some errors do).
                if !self.conn.is_autocommit() {
                    if let Err(rollback) = self.conn.execute_batch("ROLLBACK") {
                        self.poison(format!("rollback after a failed write failed: {rollback}"));
                    }
                }
                Err(e)
            }
        }
    }

    /// Makes every commit so far durable: a tiny synchronous commit fsyncs
    /// the write-ahead log, and with it every frame before it (frames already
    /// checkpointed into the database file were synced by the checkpoint).
    pub(crate) fn sync(&mut self, op: &str) -> Result<(), StoreError> {
        self.check(op)?;
        if !self.unsynced {
            return Ok(());
        }
        // Always changes a row, so the commit always reaches the log with a
        // sync, and every frame before it with it.
        self.transaction(op, true, |conn| {
            conn.execute("UPDATE _flashsync_meta SET value = value + 1 WHERE key = 'syncs'", [])
                .map_err(|e| sql(op, e))?;
            Ok(())
        })?;
        self.unsynced = false;
        Ok(())
    }
}
