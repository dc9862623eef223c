//! An in-memory upstream database: its tables, log, slot and publication.
//!
//! [`MemoryUpstream`] models what the Postgres source relies on: tables with
//! keys or full-row identity, transactions with 32-bit wire xids (widened to
//! 64 bits), an LSN-ordered log of committed transactions, one replication
//! slot with `confirmed_flush`, a publication deciding which tables' changes
//! the feed carries, snapshots with `xmin`/`xmax`/`xip`, transactions that
//! stay open across snapshots, and commits that reach the log before they
//! become visible to snapshots (the window that makes the hand-off subtle).
//! It also injects faults: cut feeds, a dropped or invalidated slot, failing
//! calls, an unreachable origin.
//!
//! Transactions live in `txn`, fault injection in `faults`, and the `Source`
//! over the database in `source`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::faults::FailPoint;
use super::shapes::{send_entry, Shapes};
use super::source::{ActiveFeed, MemorySource};
use super::txn::{OpenTxn, Undo};
use crate::change::{Change, OldRow, StreamEvent};
use crate::lsn::Lsn;
use crate::schema::{Column, RelationSchema, SourceRelId};
use crate::time::Timestamp;
use crate::value::{Key, Row, Value};

/// How an upstream table identifies rows in its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableIdentity {
    /// A primary key on these column indices.
    PrimaryKey(Vec<usize>),
    /// No key, `REPLICA IDENTITY FULL`.
    Full,
    /// No key and default replica identity: updates and deletes cannot be
    /// replicated.
    Nothing,
}

/// What an `ALTER TABLE` on a [`MemoryUpstream`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alteration {
    /// Nothing: no such table, or no such column to drop (or one of the
    /// table's key).
    Refused,
    /// Done; the table is not published, so no feed hears of it.
    Unlogged,
    /// Done, and logged for the feed as transaction `xid`.
    Logged {
        /// The transaction that carries the change in the log.
        xid: u64,
    },
}

impl Alteration {
    /// Whether the table changed.
    pub fn done(self) -> bool {
        self != Alteration::Refused
    }

    /// The transaction that logged the change, if the feed hears of it.
    pub fn xid(self) -> Option<u64> {
        match self {
            Alteration::Logged { xid } => Some(xid),
            Alteration::Refused | Alteration::Unlogged => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Table {
    pub(super) id: SourceRelId,
    pub(super) columns: Vec<Column>,
    /// Each column's number, as Postgres' attribute numbers: never given
    /// twice, so a column dropped and added again under its name has
    /// another ([`RelationSchema::column_ids`]).
    pub(super) column_ids: Vec<u32>,
    /// The last number given.
    pub(super) last_column_id: u32,
    pub(super) identity: TableIdentity,
    /// Visible rows: key -> (row, copies). For full/nothing identity the key
    /// is the whole row.
    pub(super) rows: BTreeMap<Key, (Row, u64)>,
    /// Text values longer than this are "TOASTed": an update that leaves them
    /// unchanged sends [`Cell::Unchanged`](crate::change::Cell::Unchanged).
    pub(super) toast_threshold: Option<usize>,
    /// What updates and deletes of a keyed table send as the old row.
    pub(super) old_rows: OldRows,
}

/// What a keyed table's changes send as the old row (Postgres' replica
/// identity setting beside the primary key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OldRows {
    /// `REPLICA IDENTITY DEFAULT`: the key, and for updates only when it
    /// changed.
    Key,
    /// `REPLICA IDENTITY FULL`: the whole old row, always.
    Full,
}

impl Table {
    /// The number of the column named `name`, if the table has one.
    pub(super) fn column_id(&self, name: &str) -> Option<u32> {
        let at = self.columns.iter().position(|c| c.name == name)?;
        self.column_ids.get(at).copied()
    }

    fn key_cols(&self) -> Vec<usize> {
        match &self.identity {
            TableIdentity::PrimaryKey(k) => k.clone(),
            _ => (0..self.columns.len()).collect(),
        }
    }

    pub(super) fn key_of(&self, row: &Row) -> Key {
        Key(self.key_cols().iter().map(|&i| row.0.get(i).cloned().unwrap_or(Value::Null)).collect())
    }

    pub(super) fn schema(&self) -> RelationSchema {
        match &self.identity {
            TableIdentity::PrimaryKey(k) => RelationSchema::keyed(self.id, self.columns.clone(), k.clone()),
            _ => RelationSchema::full_row(self.id, self.columns.clone()),
        }
        .with_column_ids(self.column_ids.clone())
    }

    /// The old-row image a change carries: key columns set, others NULL (or
    /// the full row for full identity).
    pub(super) fn old_image(&self, row: &Row) -> OldRow {
        match &self.identity {
            TableIdentity::PrimaryKey(k) if self.old_rows == OldRows::Key => OldRow::Key(Row((0..self.columns.len())
                .map(|i| if k.contains(&i) { row.0[i].clone() } else { Value::Null })
                .collect())),
            _ => OldRow::Full(row.clone()),
        }
    }

    /// Whether every update sends the old row (not only key changes).
    pub(super) fn sends_old_rows(&self) -> bool {
        !matches!(self.identity, TableIdentity::PrimaryKey(_)) || self.old_rows == OldRows::Full
    }
}

/// One committed transaction in the log.
#[derive(Clone, Debug)]
pub(super) struct LogEntry {
    pub(super) xid: u32,
    pub(super) final_lsn: Lsn,
    pub(super) end_lsn: Lsn,
    pub(super) commit_time: Timestamp,
    /// Changes the feed carries (already filtered by publication membership
    /// at commit time, as pgoutput decides with the catalog of that moment).
    pub(super) events: Vec<StreamEvent>,
    /// The columns, as of this commit, of each relation its events concern:
    /// the shape its rows have, which the feed compares with the shape last
    /// expected (`shapes.rs`), as the Postgres source compares each
    /// `Relation` message.
    pub(super) shapes: BTreeMap<SourceRelId, Vec<Column>>,
}

#[derive(Clone, Debug)]
pub(super) struct Slot {
    pub(super) confirmed_flush: Lsn,
    pub(super) invalidated: bool,
}

/// Counters for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// `prepare` calls that succeeded.
    pub prepares: u64,
    /// Snapshots taken, per `schema.table` (each chunk of a chunked copy
    /// counts as one).
    pub snapshots: BTreeMap<String, u64>,
    /// Chunks copied by `copy_chunk` (also counted in `snapshots`).
    pub chunks: u64,
    /// Successful `subscribe` calls.
    pub subscribes: u64,
    /// Feeds open right now.
    pub active_feeds: u64,
    /// Most feeds ever open at once.
    pub max_active_feeds: u64,
    /// Slots created (including re-creations).
    pub slots_created: u64,
    /// Highest LSN acknowledged.
    pub max_ack: Lsn,
    /// Subscriptions refused because another one was active.
    pub refused_subscriptions: u64,
}

pub(super) struct Upstream {
    pub(super) tables: BTreeMap<(String, String), Table>,
    pub(super) next_rel: u64,
    pub(super) next_xid: u64,
    pub(super) open: BTreeMap<u64, OpenTxn>,
    /// Transactions whose commit is in the log (and applied to `tables`) but
    /// not yet visible to snapshots, with what they overwrote.
    pub(super) invisible: BTreeMap<u64, Vec<Undo>>,
    pub(super) lsn: Lsn,
    pub(super) log: VecDeque<LogEntry>,
    pub(super) publication: BTreeSet<(String, String)>,
    pub(super) slot: Option<Slot>,
    pub(super) slot_name: String,
    pub(super) feed: Option<ActiveFeed>,
    pub(super) next_feed: u64,
    pub(super) offline: bool,
    pub(super) fail: BTreeMap<FailPoint, u32>,
    pub(super) stats: SourceStats,
    pub(super) clock: Timestamp,
    /// When set, the feed restarts from `confirmed_flush` even if a later
    /// position was requested (allowed by the contract; exercises dedupe).
    pub(super) replay_from_confirmed: bool,
    /// Rows per snapshot batch.
    pub(super) snapshot_batch: usize,
    /// The shape of each relation the feed expects, and when it says
    /// what changed (`shapes.rs`).
    pub(super) shapes: Shapes,
    /// The last source instance made ([`MemoryUpstream::source`]).
    pub(super) sources: u64,
}

/// An in-memory upstream database with one replication slot. Cheap to clone;
/// clones share state.
#[derive(Clone)]
pub struct MemoryUpstream {
    inner: Arc<Mutex<Upstream>>,
}

impl std::fmt::Debug for MemoryUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryUpstream").finish_non_exhaustive()
    }
}

impl Default for MemoryUpstream {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryUpstream {
    /// An empty database whose transaction ids start at 1000.
    pub fn new() -> Self {
        Self::with_first_xid(1000)
    }

    /// An empty database whose first transaction id is `xid` (use a value
    /// near a multiple of 2^32 to exercise wraparound).
    pub fn with_first_xid(xid: u64) -> Self {
        MemoryUpstream {
            inner: Arc::new(Mutex::new(Upstream {
                tables: BTreeMap::new(),
                next_rel: 16384,
                next_xid: xid.max(3),
                open: BTreeMap::new(),
                invisible: BTreeMap::new(),
                lsn: Lsn(0x0100_0000),
                log: VecDeque::new(),
                publication: BTreeSet::new(),
                slot: None,
                slot_name: "flashsync_memory".into(),
                feed: None,
                next_feed: 1,
                offline: false,
                fail: BTreeMap::new(),
                stats: SourceStats::default(),
                clock: Timestamp(0),
                replay_from_confirmed: false,
                snapshot_batch: 256,
                shapes: Shapes::default(),
                sources: 0,
            })),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Upstream> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `Source` for this database. Each call makes another source, as a
    /// new process of an engine would: its feeds judge the relations'
    /// shapes by what it describes, not by what an earlier one knew.
    pub fn source(&self) -> MemorySource {
        let instance = {
            let mut u = self.lock();
            u.sources += 1;
            u.sources
        };
        MemorySource { up: self.clone(), instance }
    }

    /// Creates a table. `columns` are `(name, type)` pairs.
    pub fn create_table(&self, schema: &str, table: &str, columns: &[(&str, &str)], identity: TableIdentity) {
        let mut u = self.lock();
        u.next_rel += 1;
        let id = SourceRelId(u.next_rel);
        let columns: Vec<Column> =
            columns.iter().map(|(n, t)| Column { name: (*n).into(), type_name: (*t).into() }).collect();
        let last_column_id = u32::try_from(columns.len()).unwrap_or(u32::MAX);
        let created = Table {
            id,
            column_ids: (1..=last_column_id).collect(),
            last_column_id,
            columns,
            identity,
            rows: BTreeMap::new(),
            toast_threshold: None,
            old_rows: OldRows::Key,
        };
        u.tables.insert((schema.into(), table.into()), created);
    }

    /// Makes text values longer than `bytes` behave like TOASTed values.
    pub fn set_toast_threshold(&self, schema: &str, table: &str, bytes: usize) {
        if let Some(t) = self.lock().tables.get_mut(&(schema.into(), table.into())) {
            t.toast_threshold = Some(bytes);
        }
    }

    /// Makes a keyed table's updates and deletes send the whole old row, as
    /// Postgres does under `REPLICA IDENTITY FULL`. Call it before the table
    /// is described: unlike Postgres, the feed does not report the change.
    pub fn set_replica_identity_full(&self, schema: &str, table: &str) {
        if let Some(t) = self.lock().tables.get_mut(&(schema.into(), table.into())) {
            t.old_rows = OldRows::Full;
        }
    }

    /// Drops a table (and removes it from the publication). A feed that
    /// carried the table reports it, as the Postgres source does.
    pub fn drop_table(&self, schema: &str, table: &str) {
        let mut u = self.lock();
        let k = (schema.to_owned(), table.to_owned());
        let Some(t) = u.tables.remove(&k) else { return };
        if u.publication.remove(&k) {
            u.log_shape_change(t.id, format!("{schema}.{table} was dropped"), None);
        }
    }

    /// Adds a column (existing rows get `default`). The feed reports the new
    /// shape before the table's next change.
    pub fn add_column(&self, schema: &str, table: &str, name: &str, type_name: &str, default: Value) -> Alteration {
        let mut u = self.lock();
        let k = (schema.to_owned(), table.to_owned());
        let published = u.publication.contains(&k);
        let Some(t) = u.tables.get_mut(&k) else { return Alteration::Refused };
        t.columns.push(Column { name: name.into(), type_name: type_name.into() });
        t.last_column_id += 1;
        t.column_ids.push(t.last_column_id);
        // Every column it had is where it was; the new one comes last.
        let last = t.columns.len() - 1;
        let columns: Vec<crate::schema::ColumnMatch> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| crate::schema::ColumnMatch { name: c.name.clone(), before: (i < last).then_some(i) })
            .collect();
        let full = !matches!(t.identity, TableIdentity::PrimaryKey(_));
        let old = std::mem::take(&mut t.rows);
        for (key, (mut row, n)) in old {
            row.0.push(default.clone());
            let key = if full { Key(row.0.clone()) } else { key };
            t.rows.insert(key, (row, n));
        }
        let rel = t.id;
        if published {
            let xid = u.log_shape_change(
                rel,
                format!("column {name} ({type_name}) added to {schema}.{table}"),
                Some(columns),
            );
            return Alteration::Logged { xid };
        }
        Alteration::Unlogged
    }

    /// Drops a column that is not part of the table's key (rows lose its
    /// value; rows of a table without a key that become equal merge, as
    /// Postgres' would become duplicates). The feed reports the new shape
    /// before the table's next change, each remaining column matched to
    /// where it was. Refused when the table or a column of that name
    /// outside the key does not exist.
    pub fn drop_column(&self, schema: &str, table: &str, name: &str) -> Alteration {
        let mut u = self.lock();
        let k = (schema.to_owned(), table.to_owned());
        let published = u.publication.contains(&k);
        let Some(t) = u.tables.get_mut(&k) else { return Alteration::Refused };
        let Some(gone) = t.columns.iter().position(|c| c.name == name) else { return Alteration::Refused };
        if let TableIdentity::PrimaryKey(key) = &mut t.identity {
            if key.contains(&gone) {
                return Alteration::Refused;
            }
            for i in key.iter_mut() {
                if *i > gone {
                    *i -= 1;
                }
            }
        }
        let dropped = t.columns.remove(gone);
        t.column_ids.remove(gone);
        let columns = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| crate::schema::ColumnMatch {
                name: c.name.clone(),
                before: Some(if i < gone { i } else { i + 1 }),
            })
            .collect();
        let old = std::mem::take(&mut t.rows);
        for (_, (mut row, n)) in old {
            if gone < row.0.len() {
                row.0.remove(gone);
            }
            let key = t.key_of(&row);
            t.rows.entry(key).and_modify(|(_, m)| *m += n).or_insert((row, n));
        }
        let rel = t.id;
        if published {
            let detail = format!("column {} ({}) dropped from {schema}.{table}", dropped.name, dropped.type_name);
            return Alteration::Logged { xid: u.log_shape_change(rel, detail, Some(columns)) };
        }
        Alteration::Unlogged
    }

    /// The table's schema as `prepare` would describe it now.
    pub fn describe(&self, schema: &str, table: &str) -> Option<RelationSchema> {
        self.lock().tables.get(&(schema.into(), table.into())).map(|t| t.schema())
    }

    /// Committed rows of a table in key order (copies repeated), including
    /// commits not yet visible to snapshots.
    pub fn rows(&self, schema: &str, table: &str) -> Vec<Row> {
        let u = self.lock();
        let Some(t) = u.tables.get(&(schema.into(), table.into())) else {
            return Vec::new();
        };
        t.rows.values().flat_map(|(r, n)| std::iter::repeat_n(r.clone(), *n as usize)).collect()
    }

    /// The current end of the log.
    pub fn current_lsn(&self) -> Lsn {
        self.lock().lsn
    }

    /// Sets the commit timestamp given to later commits.
    pub fn set_clock(&self, now: Timestamp) {
        self.lock().clock = now;
    }

    /// Counters.
    pub fn stats(&self) -> SourceStats {
        self.lock().stats.clone()
    }

    /// The slot's `confirmed_flush`, if the slot exists.
    pub fn confirmed_flush(&self) -> Option<Lsn> {
        self.lock().slot.as_ref().map(|s| s.confirmed_flush)
    }

    /// Whether a table is part of the publication.
    pub fn is_published(&self, schema: &str, table: &str) -> bool {
        self.lock().publication.contains(&(schema.into(), table.into()))
    }

    /// Whether a feed is connected and read (Postgres: a walsender holds
    /// the slot).
    pub fn feed_connected(&self) -> bool {
        self.lock().feed.as_ref().is_some_and(|f| !f.tx.is_closed())
    }

    /// Whether the slot exists.
    pub fn has_slot(&self) -> bool {
        self.lock().slot.is_some()
    }

    /// Transactions currently open (begun, not committed or aborted).
    pub fn open_transactions(&self) -> usize {
        self.lock().open.len()
    }
}

impl Upstream {
    /// Logs a DDL "transaction" carrying only a change of `rel`'s shape
    /// (`columns`: `None` when the relation is gone), and returns its id.
    fn log_shape_change(
        &mut self,
        rel: SourceRelId,
        detail: String,
        columns: Option<Vec<crate::schema::ColumnMatch>>,
    ) -> u64 {
        self.lsn.0 += 8;
        let end = self.lsn;
        self.next_xid += 1;
        let xid = (self.next_xid - 1) as u32;
        let entry = LogEntry {
            xid,
            final_lsn: Lsn(end.0 - 4),
            end_lsn: end,
            commit_time: self.clock,
            events: vec![StreamEvent::SchemaChanged { rel, detail, columns }],
            shapes: BTreeMap::new(),
        };
        self.push_entry(entry);
        self.next_xid - 1
    }

    pub(super) fn push_entry(&mut self, mut entry: LogEntry) {
        for e in &entry.events {
            let Some(rel) = shaped_rel(e) else { continue };
            if let Some(t) = self.tables.values().find(|t| t.id == rel) {
                entry.shapes.entry(rel).or_insert_with(|| t.columns.clone());
            }
        }
        if let Some(feed) = &mut self.feed {
            // Only a feed someone reads: the shapes a feed expects move
            // with what it takes, and a dead process's feed takes nothing
            // (its next one must still be told; seed 430003540).
            if entry.final_lsn >= feed.from && !feed.tx.is_closed() {
                send_entry(&mut self.shapes, &self.tables, &feed.tx, &entry, &BTreeSet::new());
                feed.from = entry.end_lsn;
            }
        }
        self.log.push_back(entry);
        // Keep only what the slot still needs.
        let keep_from = self.slot.as_ref().map_or(self.lsn, |s| s.confirmed_flush);
        while self.log.front().is_some_and(|e| e.end_lsn <= keep_from) {
            self.log.pop_front();
        }
    }
}

/// The relation whose shape an event depends on: that of the rows a change
/// carries (a truncate carries none), or the one whose shape changed.
pub(super) fn shaped_rel(e: &StreamEvent) -> Option<SourceRelId> {
    match e {
        StreamEvent::Change(Change::Insert { rel, .. } | Change::Update { rel, .. } | Change::Delete { rel, .. })
        | StreamEvent::SchemaChanged { rel, .. } => Some(*rel),
        _ => None,
    }
}
