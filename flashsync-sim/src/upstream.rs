//! The upstream workload: tables, transactions with row locks, and the truth.
//!
//! The simulator's upstream *is* [`MemoryUpstream`], the same model the other
//! tests use; this module decides what happens to it (inserts, updates incl.
//! key changes, deletes, truncates, transactions left open across snapshots,
//! commits that reach the log before they become visible, column additions)
//! and records, independently of the machine, what every commit did:
//!
//! - the committed state of every table after every commit, computed from its
//!   own op semantics and cross-checked against the model (a mismatch is a bug
//!   in the model or here, reported as such);
//! - each commit's effect per table ([`Delta`]), its end LSN and whether the
//!   feed carries it;
//! - which commits a snapshot taken *now* can see ([`Visibility`]).
//!
//! Concurrency follows Postgres: a transaction locks every row it touches
//! (and the whole table for a truncate or a column addition) until its commit
//! is visible, so concurrent commits never touch the same rows. That is what
//! makes commits commute, and it is what [`MemoryUpstream::make_visible`]
//! requires of its callers.

use std::collections::{BTreeMap, BTreeSet};

use flashsync_core::memory::{MemoryUpstream, TableIdentity};
use flashsync_core::rng::Rng;
use flashsync_core::{Key, Lsn, Row, Value};

mod model;

use model::{apply_op, diff, random_row, Locks, OpenTxn, TableModel, TxOp, TOAST_THRESHOLD};
pub use model::{key_of, state_of, Commit, Delta, TableKind, TableState, TxnId, Visibility, SCHEMA, TABLES};

/// A mismatch between what the workload expects and what the model did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream model disagrees with the workload on {table}: {detail}")]
pub struct ModelError {
    /// The table.
    pub table: String,
    /// What differed.
    pub detail: String,
}

/// The upstream workload over a [`MemoryUpstream`].
pub struct Upstream {
    /// The model itself (shared with the `Source` the machine uses).
    pub db: MemoryUpstream,
    tables: BTreeMap<&'static str, TableModel>,
    truth: BTreeMap<&'static str, TableState>,
    history: Vec<Commit>,
    by_lsn: BTreeMap<Lsn, usize>,
    per_table: BTreeMap<&'static str, Vec<usize>>,
    /// Logged but not yet visible: 64-bit xid -> (commit, transaction).
    invisible: BTreeMap<u64, (usize, TxnId)>,
    /// Locks kept until visibility, by transaction.
    held: BTreeMap<TxnId, Locks>,
    open: BTreeMap<TxnId, OpenTxn>,
    row_locks: BTreeMap<(&'static str, Key), TxnId>,
    table_locks: BTreeMap<&'static str, TxnId>,
    next_txn: TxnId,
    key_space: i64,
}

impl Upstream {
    /// Creates the tables in a fresh model whose xids start at `first_xid`.
    /// Each table but the one without a replica identity gets `added` int8
    /// columns as if added before the run (after its own columns, where
    /// additions go): views may keep them and the workload may drop them,
    /// so that dropping the first moves the others.
    pub fn new(first_xid: u64, key_space: i64, added: usize) -> Self {
        let db = MemoryUpstream::with_first_xid(first_xid);
        let mut tables = BTreeMap::new();
        let mut truth = BTreeMap::new();
        for (name, kind) in TABLES {
            let (cols, identity): (&[(&str, &str)], TableIdentity) = match kind {
                TableKind::Keyed => {
                    (&[("id", "int8"), ("name", "text"), ("score", "int8")], TableIdentity::PrimaryKey(vec![0]))
                }
                TableKind::Composite => {
                    (&[("a", "int8"), ("b", "text"), ("n", "int8")], TableIdentity::PrimaryKey(vec![0, 1]))
                }
                TableKind::Toasted => {
                    (&[("id", "int8"), ("body", "text"), ("likes", "int8")], TableIdentity::PrimaryKey(vec![0]))
                }
                TableKind::FullRow => (&[("kind", "text"), ("n", "int8")], TableIdentity::Full),
                TableKind::NoIdentity => (&[("msg", "text"), ("at", "int8")], TableIdentity::Nothing),
            };
            let extras: Vec<String> = match kind {
                TableKind::NoIdentity => Vec::new(),
                _ => (1..=added).map(|i| format!("extra{i}")).collect(),
            };
            let mut cols: Vec<(&str, &str)> = cols.to_vec();
            cols.extend(extras.iter().map(|e| (e.as_str(), "int8")));
            db.create_table(SCHEMA, name, &cols, identity);
            if kind == TableKind::Toasted {
                db.set_toast_threshold(SCHEMA, name, TOAST_THRESHOLD);
            }
            let added = extras.len();
            tables.insert(name, TableModel { kind, extras, added, dropped: Vec::new() });
            truth.insert(name, TableState::new());
        }
        Upstream {
            db,
            tables,
            truth,
            history: Vec::new(),
            by_lsn: BTreeMap::new(),
            per_table: BTreeMap::new(),
            invisible: BTreeMap::new(),
            held: BTreeMap::new(),
            open: BTreeMap::new(),
            row_locks: BTreeMap::new(),
            table_locks: BTreeMap::new(),
            next_txn: 1,
            key_space: key_space.max(2),
        }
    }

    /// Makes the keyed tables whose bit (in [`TABLES`] order) is set in
    /// `mask` send whole old rows, as Postgres does under `REPLICA IDENTITY
    /// FULL`: their filtered views decide move-outs and TOASTed move-ins
    /// from the old row instead of their local rows. Call before any view is
    /// defined.
    pub fn send_whole_old_rows(&self, mask: u64) {
        for (i, (name, kind)) in TABLES.iter().enumerate() {
            let keyed = matches!(kind, TableKind::Keyed | TableKind::Composite | TableKind::Toasted);
            if keyed && mask & (1 << i) != 0 {
                self.db.set_replica_identity_full(SCHEMA, name);
            }
        }
    }

    /// The columns [`Upstream::add_column`] added to a table and not dropped
    /// since, in table order.
    pub fn extras(&self, table: &str) -> Vec<String> {
        self.tables.get(table).map(|t| t.extras.clone()).unwrap_or_default()
    }

    /// The kind of a table.
    pub fn kind(&self, table: &str) -> Option<TableKind> {
        self.tables.get(table).map(|t| t.kind)
    }

    /// The committed content of a table (including commits not yet visible).
    pub fn state(&self, table: &str) -> Option<&TableState> {
        self.truth.get(table)
    }

    /// Every commit so far, in log order.
    pub fn history(&self) -> &[Commit] {
        &self.history
    }

    /// The commit the feed reports with this end LSN.
    pub fn commit_at(&self, end_lsn: Lsn) -> Option<&Commit> {
        self.by_lsn.get(&end_lsn).and_then(|&i| self.history.get(i))
    }

    /// Commits that touched `table`, in log order.
    pub fn commits_on(&self, table: &str) -> &[usize] {
        self.per_table.get(table).map_or(&[], Vec::as_slice)
    }

    /// What a snapshot taken now sees.
    pub fn visibility(&self) -> Visibility {
        Visibility { count: self.history.len(), invisible: self.invisible.values().map(|&(i, _)| i).collect() }
    }

    /// Transactions begun and not yet committed or aborted.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Open transactions, oldest first.
    pub fn open_ids(&self) -> Vec<TxnId> {
        self.open.keys().copied().collect()
    }

    /// Commits logged but not yet visible, by 64-bit xid.
    pub fn invisible_xids(&self) -> Vec<u64> {
        self.invisible.keys().copied().collect()
    }

    /// Begins a transaction (its xid is assigned now).
    pub fn begin(&mut self) -> TxnId {
        let id = self.next_txn;
        self.next_txn += 1;
        let txn = OpenTxn { handle: self.db.begin(), ops: Vec::new(), locks: Locks::default() };
        self.open.insert(id, txn);
        id
    }

    /// Adds up to `n` random operations to an open transaction, skipping what
    /// another transaction has locked. Returns how many were added.
    pub fn add_ops(&mut self, id: TxnId, n: usize, rng: &mut Rng, allow_truncate: bool) -> usize {
        let Some(mut txn) = self.open.remove(&id) else {
            return 0;
        };
        let mut added = 0;
        for _ in 0..n {
            // A few attempts per op: a random choice may hit a lock.
            for _ in 0..4 {
                let names: Vec<&'static str> = self.tables.keys().copied().collect();
                let table = names[rng.below(names.len() as u64) as usize];
                if self.try_op(id, &mut txn, table, rng, allow_truncate) {
                    added += 1;
                    break;
                }
            }
        }
        self.open.insert(id, txn);
        added
    }

    fn locked_by_other(&self, id: TxnId, table: &'static str, key: Option<&Key>) -> bool {
        if self.table_locks.get(table).is_some_and(|&t| t != id) {
            return true;
        }
        match key {
            Some(k) => self.row_locks.get(&(table, k.clone())).is_some_and(|&t| t != id),
            None => self.row_locks.iter().any(|((t, _), &owner)| *t == table && owner != id),
        }
    }

    fn lock_row(&mut self, id: TxnId, txn: &mut OpenTxn, table: &'static str, key: &Key) {
        self.row_locks.insert((table, key.clone()), id);
        txn.locks.rows.insert((table, key.clone()));
    }

    /// The transaction's view of a table.
    fn view_of(&self, txn: &OpenTxn, table: &'static str, kind: TableKind) -> TableState {
        let mut state = self.truth.get(table).cloned().unwrap_or_default();
        for (t, op) in &txn.ops {
            if *t == table {
                apply_op(kind, &mut state, op);
            }
        }
        state
    }

    fn push_op(txn: &mut OpenTxn, table: &'static str, op: TxOp) {
        match &op {
            TxOp::Insert(row) => txn.handle.insert(SCHEMA, table, row.clone()),
            TxOp::Update(key, row) => txn.handle.update(SCHEMA, table, key.clone(), row.clone()),
            TxOp::Delete(key) => txn.handle.delete(SCHEMA, table, key.clone()),
            TxOp::Truncate => txn.handle.truncate(&[(SCHEMA, table)]),
        }
        txn.ops.push((table, op));
    }

    fn try_op(&mut self, id: TxnId, txn: &mut OpenTxn, table: &'static str, rng: &mut Rng, truncate: bool) -> bool {
        if self.table_locks.get(table).is_some_and(|&t| t != id) {
            return false;
        }
        let Some(model) = self.tables.get(table) else { return false };
        let (kind, extra) = (model.kind, model.extras.len());
        let key_space = self.key_space;
        let state = self.view_of(txn, table, kind);
        let keyed = matches!(kind, TableKind::Keyed | TableKind::Composite | TableKind::Toasted);
        let roll = rng.below(100);
        if truncate && roll < 3 {
            if self.locked_by_other(id, table, None) {
                return false;
            }
            self.table_locks.insert(table, id);
            txn.locks.tables.insert(table);
            Self::push_op(txn, table, TxOp::Truncate);
            return true;
        }
        let existing: Vec<Key> = state.keys().cloned().collect();
        let pick = |rng: &mut Rng| -> Option<Key> {
            (!existing.is_empty()).then(|| existing[rng.below(existing.len() as u64) as usize].clone())
        };
        if roll < 45 || existing.is_empty() {
            // Insert: a new key for keyed tables, any row (maybe a
            // duplicate) for tables without a key.
            let row = random_row(kind, extra, key_space, rng);
            let key = key_of(kind, &row);
            if (keyed && state.contains_key(&key)) || self.locked_by_other(id, table, Some(&key)) {
                return false;
            }
            self.lock_row(id, txn, table, &key);
            Self::push_op(txn, table, TxOp::Insert(row));
            return true;
        }
        let Some(key) = pick(rng) else { return false };
        if self.locked_by_other(id, table, Some(&key)) {
            return false;
        }
        if roll >= 80 {
            self.lock_row(id, txn, table, &key);
            Self::push_op(txn, table, TxOp::Delete(key));
            return true;
        }
        // Update; for keyed tables sometimes moving the row to another key.
        let old = state.get(&key).map(|(r, _)| r.clone()).unwrap_or_default();
        let mut row = random_row(kind, extra, key_space, rng);
        if keyed {
            if rng.below(4) != 0 {
                for (i, v) in key.0.iter().enumerate() {
                    row.0[i] = v.clone();
                }
            }
            if kind == TableKind::Toasted && rng.below(2) == 0 {
                // Keep the long body: the feed sends it as unchanged.
                row.0[1] = old.0[1].clone();
            }
        }
        let new_key = key_of(kind, &row);
        if new_key != key
            && ((keyed && state.contains_key(&new_key)) || self.locked_by_other(id, table, Some(&new_key)))
        {
            return false;
        }
        self.lock_row(id, txn, table, &key);
        self.lock_row(id, txn, table, &new_key);
        Self::push_op(txn, table, TxOp::Update(key, row));
        true
    }

    /// Commits an open transaction. With `visible_now` false (and every table
    /// it touched published), the commit reaches the log first and becomes
    /// visible to snapshots only at [`Upstream::make_visible`]; the returned
    /// xid is then `Some`. A transaction without operations is aborted.
    pub fn commit(&mut self, id: TxnId, visible_now: bool) -> Result<Option<u64>, ModelError> {
        let Some(txn) = self.open.remove(&id) else {
            return Ok(None);
        };
        if txn.ops.is_empty() {
            self.release(id, txn.locks);
            return Ok(None);
        }
        let touched: Vec<&'static str> = txn.ops.iter().map(|(t, _)| *t).collect::<BTreeSet<_>>().into_iter().collect();
        let in_feed: BTreeSet<&'static str> =
            touched.iter().copied().filter(|t| self.db.is_published(SCHEMA, t)).collect();
        // A window between log and visibility only where the feed carries the
        // commit: Postgres decides publication membership with the catalog of
        // the commit's time, and that window is microseconds there; leaving a
        // commit invisible to a snapshot *and* absent from the feed would
        // model a race Postgres practically never shows.
        let deferred = !visible_now && in_feed.len() == touched.len();
        let expected: BTreeMap<&'static str, TableState> =
            touched.iter().map(|t| (*t, self.view_of(&txn, t, self.kind(t).unwrap_or(TableKind::Keyed)))).collect();
        let truncated: BTreeSet<&'static str> =
            txn.ops.iter().filter(|(_, op)| matches!(op, TxOp::Truncate)).map(|(t, _)| *t).collect();
        let OpenTxn { handle, locks, .. } = txn;
        let (end_lsn, xid) = handle.commit_to_log();
        if !deferred {
            self.db.make_visible(xid);
        }
        let mut deltas = BTreeMap::new();
        for table in &touched {
            let kind = self.kind(table).unwrap_or(TableKind::Keyed);
            let after = state_of(kind, self.db.rows(SCHEMA, table));
            let expected = expected.get(table).cloned().unwrap_or_default();
            if after != expected {
                return Err(ModelError {
                    table: (*table).to_owned(),
                    detail: format!("after commit of xid {xid}: model has {after:?}, workload expected {expected:?}"),
                });
            }
            let before = self.truth.get(table).cloned().unwrap_or_default();
            let delta = if truncated.contains(table) { Delta::Replace(after.clone()) } else { diff(&before, &after) };
            deltas.insert(*table, delta);
            self.truth.insert(table, after);
        }
        let idx = self.record(xid, end_lsn, deltas, in_feed, false);
        if deferred {
            self.invisible.insert(xid, (idx, id));
            self.held.insert(id, locks);
            Ok(Some(xid))
        } else {
            self.release(id, locks);
            Ok(None)
        }
    }

    fn record(
        &mut self,
        xid: u64,
        end_lsn: Lsn,
        deltas: BTreeMap<&'static str, Delta>,
        in_feed: BTreeSet<&'static str>,
        ddl: bool,
    ) -> usize {
        let idx = self.history.len();
        let shapes = deltas.keys().filter_map(|t| Some((*t, self.db.describe(SCHEMA, t)?))).collect();
        for t in deltas.keys() {
            self.per_table.entry(t).or_default().push(idx);
        }
        if !in_feed.is_empty() {
            self.by_lsn.insert(end_lsn, idx);
        }
        self.history.push(Commit { idx, xid, end_lsn, deltas, in_feed, ddl, shapes });
        idx
    }

    fn release(&mut self, id: TxnId, locks: Locks) {
        for k in locks.rows {
            if self.row_locks.get(&k) == Some(&id) {
                self.row_locks.remove(&k);
            }
        }
        for t in locks.tables {
            if self.table_locks.get(t) == Some(&id) {
                self.table_locks.remove(t);
            }
        }
    }

    /// Makes a commit logged by [`Upstream::commit`] visible and releases its locks.
    pub fn make_visible(&mut self, xid: u64) {
        self.db.make_visible(xid);
        if let Some((_, id)) = self.invisible.remove(&xid) {
            if let Some(locks) = self.held.remove(&id) {
                self.release(id, locks);
            }
        }
    }

    /// A replication slot was created (or re-created): [`MemoryUpstream`],
    /// like Postgres, first waited for every commit already in the log to
    /// become visible. Records that, and releases their locks.
    pub fn slot_created(&mut self) {
        for xid in self.invisible_xids() {
            self.make_visible(xid);
        }
    }

    /// Rolls an open transaction back.
    pub fn abort(&mut self, id: TxnId) {
        if let Some(txn) = self.open.remove(&id) {
            // Dropping the handle rolls the transaction back in the model.
            self.release(id, txn.locks);
        }
    }

    /// Whether `ALTER TABLE` on `table` would wait: it waits for every
    /// transaction that touched the table (open, or committed and not yet
    /// visible, which still hold their row locks here).
    fn in_use(&self, table: &str) -> bool {
        self.open.values().any(|t| t.ops.iter().any(|(n, _)| *n == table))
            || self.row_locks.keys().any(|(n, _)| *n == table)
            || self.table_locks.contains_key(table)
    }

    /// Adds an int8 column (default 0) to a table, if no transaction holds a
    /// lock on it: a new name, or (now and then, picked by `readds` when
    /// given) one dropped before.
    pub fn add_column(&mut self, table: &'static str, readds: Option<&mut Rng>) -> Result<Altered, ModelError> {
        if self.in_use(table) {
            return Ok(Altered::Busy);
        }
        let Some(model) = self.tables.get_mut(table) else { return Ok(Altered::Refused) };
        if model.extras.len() >= 3 {
            return Ok(Altered::Refused);
        }
        let reused = readds.filter(|_| !model.dropped.is_empty()).and_then(|rng| {
            rng.chance(0.5).then(|| model.dropped.remove(rng.below(model.dropped.len() as u64) as usize))
        });
        let name = if let Some(name) = reused {
            name
        } else if model.added < 5 {
            model.added += 1;
            format!("extra{}", model.added)
        } else {
            return Ok(Altered::Refused);
        };
        self.add_named(table, name)
    }

    /// Drops one of the added columns (picked by `rng`, mostly the last)
    /// and at once adds a column of the same name and type, as a migration
    /// that recreates a column does: the table reads as before (the last
    /// column recreated, every column reads where it did), but no row keeps
    /// a value of the old column.
    pub fn readd_column(&mut self, table: &'static str, rng: &mut Rng) -> Result<Altered, ModelError> {
        let added = match self.droppable(table) {
            Ok(added) => added,
            Err(refused) => return Ok(refused),
        };
        let at = if rng.chance(0.75) { added - 1 } else { rng.below(added as u64) as usize };
        match self.drop_column_at(table, at)? {
            Altered::Done => {}
            other => return Ok(other),
        }
        let Some(name) = self.tables.get_mut(table).and_then(|m| m.dropped.pop()) else {
            return Ok(Altered::Refused);
        };
        self.add_named(table, name)
    }

    /// Adds column `name` (int8, default 0) after the others (the callers
    /// checked there is room for it).
    fn add_named(&mut self, table: &'static str, name: String) -> Result<Altered, ModelError> {
        let Some(model) = self.tables.get_mut(table) else { return Ok(Altered::Refused) };
        model.extras.push(name.clone());
        let kind = model.kind;
        let published = self.db.is_published(SCHEMA, table);
        let altered = self.db.add_column(SCHEMA, table, &name, "int8", Value::Int(0));
        if !altered.done() {
            return Err(ModelError { table: table.to_owned(), detail: format!("could not add its column {name}") });
        }
        // The transaction that logs it, when the table is published (else
        // nothing reads its id).
        let xid = altered.xid().unwrap_or(0);
        let widened = reshaped(kind, self.truth.get(table), |row| row.0.push(Value::Int(0)));
        self.record_reshape(table, kind, xid, published, widened, &format!("adding {name}"))?;
        Ok(Altered::Done)
    }

    /// Drops one of the columns [`Upstream::add_column`] added (picked by
    /// `rng`), if no transaction holds a lock on the table: the remaining
    /// columns move up, so a view that keeps only the table's own columns
    /// can still follow it.
    pub fn drop_column(&mut self, table: &'static str, rng: &mut Rng) -> Result<Altered, ModelError> {
        let added = match self.droppable(table) {
            Ok(added) => added,
            Err(refused) => return Ok(refused),
        };
        // Mostly the first added: the ones after it move.
        let at = if rng.chance(0.75) { 0 } else { rng.below(added as u64) as usize };
        self.drop_column_at(table, at)
    }

    /// How many added columns `table` has, if one may be dropped now (else
    /// why not). Asked before any draw, so a seed draws as it always did.
    fn droppable(&self, table: &'static str) -> Result<usize, Altered> {
        if self.in_use(table) {
            return Err(Altered::Busy);
        }
        match self.tables.get(table).map(|m| m.extras.len()) {
            Some(added) if added > 0 => Ok(added),
            _ => Err(Altered::Refused),
        }
    }

    /// Drops the added column at `at` (among the added ones).
    fn drop_column_at(&mut self, table: &'static str, at: usize) -> Result<Altered, ModelError> {
        let Some(model) = self.tables.get_mut(table) else { return Ok(Altered::Refused) };
        if at >= model.extras.len() {
            return Ok(Altered::Refused);
        }
        let kind = model.kind;
        let name = model.extras.remove(at);
        model.dropped.push(name.clone());
        let Some(was) = self.db.describe(SCHEMA, table).map(|s| s.columns) else { return Ok(Altered::Refused) };
        let Some(gone) = was.iter().position(|c| c.name == name) else { return Ok(Altered::Refused) };
        let published = self.db.is_published(SCHEMA, table);
        let altered = self.db.drop_column(SCHEMA, table, &name);
        if !altered.done() {
            return Err(ModelError { table: table.to_owned(), detail: format!("could not drop its column {name}") });
        }
        let narrowed = reshaped(kind, self.truth.get(table), |row| {
            if gone < row.0.len() {
                row.0.remove(gone);
            }
        });
        self.record_reshape(table, kind, altered.xid().unwrap_or(0), published, narrowed, &format!("dropping {name}"))?;
        Ok(Altered::Done)
    }

    /// Checks the table's rows after a change of its shape against what the
    /// workload expected, and records the change as a commit that replaces
    /// the table's content.
    fn record_reshape(
        &mut self,
        table: &'static str,
        kind: TableKind,
        xid: u64,
        published: bool,
        expected: TableState,
        what: &str,
    ) -> Result<(), ModelError> {
        let after = state_of(kind, self.db.rows(SCHEMA, table));
        if after != expected {
            return Err(ModelError {
                table: table.to_owned(),
                detail: format!("after {what}: model has {after:?}, workload expected {expected:?}"),
            });
        }
        self.truth.insert(table, after.clone());
        let in_feed = if published { BTreeSet::from([table]) } else { BTreeSet::new() };
        let end_lsn = self.db.current_lsn();
        self.record(xid, end_lsn, BTreeMap::from([(table, Delta::Replace(after))]), in_feed, true);
        Ok(())
    }
}

/// What became of an `ALTER TABLE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Altered {
    /// The table has its new shape.
    Done,
    /// A transaction that touched the table is open or not yet visible: as
    /// Postgres' `ALTER TABLE` would, it has to wait.
    Busy,
    /// Nothing to do (no column to drop, or enough added already).
    Refused,
}

/// A table's content with every row changed by `f`, rows that became equal
/// merged (a table without a key keeps copies).
pub(crate) fn reshaped(kind: TableKind, before: Option<&TableState>, f: impl Fn(&mut Row)) -> TableState {
    let mut out = TableState::new();
    for (row, n) in before.into_iter().flat_map(|s| s.values()) {
        let mut row = row.clone();
        f(&mut row);
        out.entry(key_of(kind, &row)).and_modify(|(_, m)| *m += n).or_insert((row, *n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_match_the_model_and_deltas_replay_to_the_truth() {
        let mut up = Upstream::new((1 << 32) - 20, 8, 2);
        let mut rng = Rng::new(9);
        let mut replayed: BTreeMap<&str, TableState> = BTreeMap::new();
        for i in 0..300 {
            let t = up.begin();
            up.add_ops(t, 1 + (i % 4), &mut rng, true);
            up.commit(t, true).expect("model agrees");
            // Shapes change in between: deltas still replay to the truth.
            if i % 100 == 0 {
                assert_eq!(up.add_column("users", Some(&mut rng)).ok(), Some(Altered::Done));
            } else if i % 100 == 50 {
                assert_eq!(up.drop_column("users", &mut rng).ok(), Some(Altered::Done));
            }
        }
        for c in up.history() {
            for (t, d) in &c.deltas {
                d.apply(replayed.entry(t).or_default());
            }
        }
        for (name, _) in TABLES {
            assert_eq!(replayed.get(name).cloned().unwrap_or_default(), up.state(name).cloned().unwrap_or_default());
        }
        assert!(up.history().len() > 250);
    }

    #[test]
    fn locks_keep_concurrent_transactions_apart() {
        let mut up = Upstream::new(1000, 4, 0);
        let mut rng = Rng::new(1);
        let a = up.begin();
        up.add_ops(a, 6, &mut rng, true);
        let b = up.begin();
        up.add_ops(b, 6, &mut rng, true);
        let locked_a: BTreeSet<_> = up.open.get(&a).map(|t| t.locks.rows.clone()).unwrap_or_default();
        let locked_b: BTreeSet<_> = up.open.get(&b).map(|t| t.locks.rows.clone()).unwrap_or_default();
        assert!(locked_a.is_disjoint(&locked_b));
        up.commit(b, true).expect("b commits");
        up.commit(a, true).expect("a commits");
    }
}
