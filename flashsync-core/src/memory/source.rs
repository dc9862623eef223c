//! An in-memory upstream database and the `Source` over it.
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::StreamExt;

use crate::change::{Cell, Change, StreamEvent};
use crate::error::{SourceError, SourceErrorKind};
use crate::lsn::Lsn;
use crate::schema::{Column, RelationSchema, SourceRelId};
use crate::snapshot::SnapshotPoint;
use crate::source::{FeedStart, Feedback, SlotReport, Source, Subscription};
use crate::store::RowSink;
use crate::time::Timestamp;
use crate::value::{Key, Row, Value};
use crate::view::UpstreamRelation;

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

#[derive(Clone, Debug)]
struct Table {
    id: SourceRelId,
    columns: Vec<Column>,
    identity: TableIdentity,
    /// Visible rows: key -> (row, copies). For full/nothing identity the key
    /// is the whole row.
    rows: BTreeMap<Key, (Row, u64)>,
    /// Text values longer than this are "TOASTed": an update that leaves them
    /// unchanged sends [`Cell::Unchanged`].
    toast_threshold: Option<usize>,
}

impl Table {
    fn key_cols(&self) -> Vec<usize> {
        match &self.identity {
            TableIdentity::PrimaryKey(k) => k.clone(),
            _ => (0..self.columns.len()).collect(),
        }
    }

    fn key_of(&self, row: &Row) -> Key {
        Key(self.key_cols().iter().map(|&i| row.0.get(i).cloned().unwrap_or(Value::Null)).collect())
    }

    fn schema(&self) -> RelationSchema {
        match &self.identity {
            TableIdentity::PrimaryKey(k) => RelationSchema::keyed(self.id, self.columns.clone(), k.clone()),
            _ => RelationSchema::full_row(self.id, self.columns.clone()),
        }
    }

    /// The old-row image a change carries: key columns set, others NULL (or
    /// the full row for full identity).
    fn old_image(&self, row: &Row) -> Row {
        match &self.identity {
            TableIdentity::PrimaryKey(k) => Row((0..self.columns.len())
                .map(|i| if k.contains(&i) { row.0[i].clone() } else { Value::Null })
                .collect()),
            _ => row.clone(),
        }
    }
}

/// One committed transaction in the log.
#[derive(Clone, Debug)]
struct LogEntry {
    xid: u32,
    final_lsn: Lsn,
    end_lsn: Lsn,
    commit_time: Timestamp,
    /// Changes the feed carries (already filtered by publication membership
    /// at commit time, as pgoutput decides with the catalog of that moment).
    events: Vec<StreamEvent>,
}

#[derive(Clone, Debug)]
struct Slot {
    confirmed_flush: Lsn,
    invalidated: bool,
}

struct ActiveFeed {
    id: u64,
    tx: mpsc::UnboundedSender<Result<StreamEvent, SourceError>>,
    /// Next log position to deliver (entries with `final_lsn >= from`).
    from: Lsn,
}

#[derive(Clone, Debug)]
enum TxOp {
    Insert(String, Row),
    Update(String, Key, Row),
    Delete(String, Key),
    Truncate(Vec<String>),
}

/// What a transaction overwrote, so snapshots can see the state without it
/// while its commit is in the log but not yet visible.
#[derive(Clone, Debug)]
enum Undo {
    Row((String, String), Key, Option<(Row, u64)>),
    Table((String, String), BTreeMap<Key, (Row, u64)>),
}

#[derive(Debug)]
struct OpenTxn {
    xid64: u64,
    ops: Vec<TxOp>,
}

/// Calls that can be made to fail once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailPoint {
    /// `prepare`.
    Prepare,
    /// `snapshot`.
    Snapshot,
    /// `subscribe`.
    Subscribe,
    /// `release` and `drop_feed`.
    Release,
}

/// Counters for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// `prepare` calls that succeeded.
    pub prepares: u64,
    /// Snapshots taken, per `schema.table`.
    pub snapshots: BTreeMap<String, u64>,
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

struct Upstream {
    tables: BTreeMap<(String, String), Table>,
    next_rel: u64,
    next_xid: u64,
    open: BTreeMap<u64, OpenTxn>,
    /// Transactions whose commit is in the log (and applied to `tables`) but
    /// not yet visible to snapshots, with what they overwrote.
    invisible: BTreeMap<u64, Vec<Undo>>,
    lsn: Lsn,
    log: VecDeque<LogEntry>,
    publication: BTreeSet<(String, String)>,
    slot: Option<Slot>,
    slot_name: String,
    feed: Option<ActiveFeed>,
    next_feed: u64,
    offline: bool,
    fail: BTreeMap<FailPoint, u32>,
    stats: SourceStats,
    clock: Timestamp,
    /// When set, the feed restarts from `confirmed_flush` even if a later
    /// position was requested (allowed by the contract; exercises dedupe).
    replay_from_confirmed: bool,
    /// Rows per snapshot batch.
    snapshot_batch: usize,
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

/// An open upstream transaction. Changes become visible at
/// [`TxnHandle::commit`]; dropping the handle aborts.
pub struct TxnHandle {
    up: MemoryUpstream,
    xid64: u64,
    done: bool,
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
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Upstream> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `Source` for this database.
    pub fn source(&self) -> MemorySource {
        MemorySource { up: self.clone() }
    }

    /// Creates a table. `columns` are `(name, type)` pairs.
    pub fn create_table(&self, schema: &str, table: &str, columns: &[(&str, &str)], identity: TableIdentity) {
        let mut u = self.lock();
        u.next_rel += 1;
        let id = SourceRelId(u.next_rel);
        let columns = columns.iter().map(|(n, t)| Column { name: (*n).into(), type_name: (*t).into() }).collect();
        u.tables.insert(
            (schema.into(), table.into()),
            Table { id, columns, identity, rows: BTreeMap::new(), toast_threshold: None },
        );
    }

    /// Makes text values longer than `bytes` behave like TOASTed values.
    pub fn set_toast_threshold(&self, schema: &str, table: &str, bytes: usize) {
        if let Some(t) = self.lock().tables.get_mut(&(schema.into(), table.into())) {
            t.toast_threshold = Some(bytes);
        }
    }

    /// Drops a table (and removes it from the publication). A feed that
    /// carried the table reports it, as the Postgres source does.
    pub fn drop_table(&self, schema: &str, table: &str) {
        let mut u = self.lock();
        let k = (schema.to_owned(), table.to_owned());
        let Some(t) = u.tables.remove(&k) else { return };
        if u.publication.remove(&k) {
            u.lsn.0 += 8;
            let end = u.lsn;
            u.next_xid += 1;
            let xid = (u.next_xid - 1) as u32;
            let entry = LogEntry {
                xid,
                final_lsn: Lsn(end.0 - 4),
                end_lsn: end,
                commit_time: u.clock,
                events: vec![StreamEvent::SchemaChanged { rel: t.id, detail: format!("{schema}.{table} was dropped") }],
            };
            u.push_entry(entry);
        }
    }

    /// Adds a column (existing rows get `default`). The feed reports the new
    /// shape before the table's next change.
    pub fn add_column(&self, schema: &str, table: &str, name: &str, type_name: &str, default: Value) {
        let mut u = self.lock();
        let k = (schema.to_owned(), table.to_owned());
        let published = u.publication.contains(&k);
        let Some(t) = u.tables.get_mut(&k) else {
            return;
        };
        t.columns.push(Column { name: name.into(), type_name: type_name.into() });
        let full = !matches!(t.identity, TableIdentity::PrimaryKey(_));
        let old = std::mem::take(&mut t.rows);
        for (key, (mut row, n)) in old {
            row.0.push(default.clone());
            let key = if full { Key(row.0.clone()) } else { key };
            t.rows.insert(key, (row, n));
        }
        let rel = t.id;
        if published {
            u.lsn.0 += 8;
            let end = u.lsn;
            // A DDL "transaction" carrying only the shape change.
            u.next_xid += 1;
            let xid = (u.next_xid - 1) as u32;
            let entry = LogEntry {
                xid,
                final_lsn: Lsn(end.0 - 4),
                end_lsn: end,
                commit_time: u.clock,
                events: vec![StreamEvent::SchemaChanged {
                    rel,
                    detail: format!("column {name} ({type_name}) added to {schema}.{table}"),
                }],
            };
            u.push_entry(entry);
        }
    }

    /// Begins a transaction (its xid is assigned now).
    pub fn begin(&self) -> TxnHandle {
        let mut u = self.lock();
        let xid64 = u.next_xid;
        u.next_xid += 1;
        u.open.insert(xid64, OpenTxn { xid64, ops: Vec::new() });
        TxnHandle { up: self.clone(), xid64, done: false }
    }

    /// Inserts one row in its own transaction; returns the commit's end LSN.
    pub fn insert(&self, schema: &str, table: &str, row: Row) -> Lsn {
        let mut t = self.begin();
        t.insert(schema, table, row);
        t.commit()
    }

    /// Updates one row (by key) in its own transaction.
    pub fn update(&self, schema: &str, table: &str, key: Key, row: Row) -> Lsn {
        let mut t = self.begin();
        t.update(schema, table, key, row);
        t.commit()
    }

    /// Deletes one row (by key) in its own transaction.
    pub fn delete(&self, schema: &str, table: &str, key: Key) -> Lsn {
        let mut t = self.begin();
        t.delete(schema, table, key);
        t.commit()
    }

    /// Truncates a table in its own transaction.
    pub fn truncate(&self, schema: &str, table: &str) -> Lsn {
        let mut t = self.begin();
        t.truncate(&[(schema, table)]);
        t.commit()
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

    /// Sends a keepalive on the open feed, if any.
    pub fn keepalive(&self, reply_requested: bool) {
        let mut u = self.lock();
        let wal_end = u.lsn;
        if let Some(feed) = &mut u.feed {
            // Everything before wal_end has been delivered to this feed.
            let _ = feed.tx.unbounded_send(Ok(StreamEvent::Keepalive { wal_end, reply_requested }));
        }
    }

    /// Breaks the open feed (as if the connection dropped).
    pub fn cut_feed(&self) {
        let mut u = self.lock();
        if let Some(feed) = u.feed.take() {
            let _ = feed.tx.unbounded_send(Err(SourceError::connection("connection to memory upstream was cut")));
            u.stats.active_feeds = 0;
        }
    }

    /// Makes every call fail with a connection error (and cuts the feed) until
    /// set back.
    pub fn set_offline(&self, offline: bool) {
        if offline {
            self.cut_feed();
        }
        self.lock().offline = offline;
    }

    /// Makes the next `n` calls of `point` fail with a connection error.
    pub fn fail_next(&self, point: FailPoint, n: u32) {
        *self.lock().fail.entry(point).or_default() += n;
    }

    /// Drops the replication slot (as an operator might).
    pub fn drop_slot(&self) {
        let mut u = self.lock();
        u.slot = None;
        if let Some(feed) = u.feed.take() {
            let _ = feed.tx.unbounded_send(Err(SourceError::connection("replication slot was dropped")));
            u.stats.active_feeds = 0;
        }
    }

    /// Invalidates the slot (as `max_slot_wal_keep_size` would) and breaks the feed.
    pub fn invalidate_slot(&self) {
        let mut u = self.lock();
        if let Some(slot) = &mut u.slot {
            slot.invalidated = true;
        }
        if let Some(feed) = u.feed.take() {
            let _ = feed.tx.unbounded_send(Err(SourceError::connection("replication slot was invalidated")));
            u.stats.active_feeds = 0;
        }
    }

    /// When set, re-subscribing replays from `confirmed_flush` even when a
    /// later position was asked for.
    pub fn set_replay_from_confirmed(&self, on: bool) {
        self.lock().replay_from_confirmed = on;
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
    fn take_fail(&mut self, point: FailPoint) -> Result<(), SourceError> {
        if self.offline {
            return Err(SourceError::connection("memory upstream is offline"));
        }
        if let Some(n) = self.fail.get_mut(&point) {
            if *n > 0 {
                *n -= 1;
                return Err(SourceError::connection(format!("injected failure in {point:?}")));
            }
        }
        Ok(())
    }

    fn push_entry(&mut self, entry: LogEntry) {
        if let Some(feed) = &mut self.feed {
            if entry.final_lsn >= feed.from {
                send_entry(&feed.tx, &entry);
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

    /// Applies a transaction's ops to the visible tables, returning the feed
    /// events they produce.
    fn apply_ops(&mut self, ops: &[TxOp], undo: &mut Vec<Undo>) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        for op in ops {
            match op {
                TxOp::Insert(name, row) => {
                    let published = self.is_pub(name);
                    let Some(t) = self.table_mut(name) else {
                        continue;
                    };
                    let key = t.key_of(row);
                    undo.push(Undo::Row(split(name).unwrap_or_default(), key.clone(), t.rows.get(&key).cloned()));
                    let e = t.rows.entry(key).or_insert((row.clone(), 0));
                    e.0 = row.clone();
                    e.1 += 1;
                    if published {
                        events.push(StreamEvent::Change(Change::Insert { rel: t.id, new: row.clone() }));
                    }
                }
                TxOp::Update(name, key, row) => {
                    let published = self.is_pub(name);
                    let Some(t) = self.table_mut(name) else {
                        continue;
                    };
                    let Some((old, n)) = t.rows.get(key).cloned() else {
                        continue;
                    };
                    let tk = split(name).unwrap_or_default();
                    undo.push(Undo::Row(tk.clone(), key.clone(), Some((old.clone(), n))));
                    if n <= 1 {
                        t.rows.remove(key);
                    } else if let Some(e) = t.rows.get_mut(key) {
                        e.1 -= 1;
                    }
                    let new_key = t.key_of(row);
                    undo.push(Undo::Row(tk, new_key.clone(), t.rows.get(&new_key).cloned()));
                    let e = t.rows.entry(new_key.clone()).or_insert((row.clone(), 0));
                    e.0 = row.clone();
                    e.1 += 1;
                    if published && t.identity != TableIdentity::Nothing {
                        let cells = row
                            .0
                            .iter()
                            .enumerate()
                            .map(|(i, v)| match (v, old.0.get(i), t.toast_threshold) {
                                (Value::Text(s), Some(o), Some(th)) if s.len() > th && o == v => Cell::Unchanged,
                                _ => Cell::Set(v.clone()),
                            })
                            .collect();
                        let old_img = match &t.identity {
                            TableIdentity::Full => Some(old.clone()),
                            _ if new_key != *key => Some(t.old_image(&old)),
                            _ => None,
                        };
                        events.push(StreamEvent::Change(Change::Update { rel: t.id, old: old_img, new: cells }));
                    }
                }
                TxOp::Delete(name, key) => {
                    let published = self.is_pub(name);
                    let Some(t) = self.table_mut(name) else {
                        continue;
                    };
                    let Some((old, n)) = t.rows.get(key).cloned() else {
                        continue;
                    };
                    undo.push(Undo::Row(split(name).unwrap_or_default(), key.clone(), Some((old.clone(), n))));
                    if n <= 1 {
                        t.rows.remove(key);
                    } else if let Some(e) = t.rows.get_mut(key) {
                        e.1 -= 1;
                    }
                    if published && t.identity != TableIdentity::Nothing {
                        events.push(StreamEvent::Change(Change::Delete { rel: t.id, old: t.old_image(&old) }));
                    }
                }
                TxOp::Truncate(names) => {
                    let mut rels = Vec::new();
                    for name in names {
                        let published = self.is_pub(name);
                        if let Some(t) = self.table_mut(name) {
                            undo.push(Undo::Table(split(name).unwrap_or_default(), std::mem::take(&mut t.rows)));
                            if published {
                                rels.push(t.id);
                            }
                        }
                    }
                    if !rels.is_empty() {
                        events.push(StreamEvent::Change(Change::Truncate { rels }));
                    }
                }
            }
        }
        events
    }

    fn is_pub(&self, name: &str) -> bool {
        split(name).is_some_and(|k| self.publication.contains(&k))
    }

    fn table_mut(&mut self, name: &str) -> Option<&mut Table> {
        let k = split(name)?;
        self.tables.get_mut(&k)
    }

    /// A table's rows as snapshots see them: current rows with every
    /// not-yet-visible transaction undone (newest first).
    fn visible_rows(&self, k: &(String, String)) -> Option<BTreeMap<Key, (Row, u64)>> {
        let mut rows = self.tables.get(k)?.rows.clone();
        for undo in self.invisible.values().rev() {
            for u in undo.iter().rev() {
                match u {
                    Undo::Row(t, key, prev) if t == k => match prev {
                        Some(p) => {
                            rows.insert(key.clone(), p.clone());
                        }
                        None => {
                            rows.remove(key);
                        }
                    },
                    Undo::Table(t, prev) if t == k => rows = prev.clone(),
                    _ => {}
                }
            }
        }
        Some(rows)
    }

    fn snapshot_point(&self) -> (u64, u64, Vec<u64>) {
        let xmax = self.next_xid;
        let mut xip: Vec<u64> = self.open.keys().chain(self.invisible.keys()).copied().collect();
        xip.sort_unstable();
        let xmin = xip.first().copied().unwrap_or(xmax);
        (xmin, xmax, xip)
    }
}

fn send_entry(tx: &mpsc::UnboundedSender<Result<StreamEvent, SourceError>>, entry: &LogEntry) {
    let _ = tx.unbounded_send(Ok(StreamEvent::Begin {
        xid: entry.xid,
        final_lsn: entry.final_lsn,
        commit_time: entry.commit_time,
    }));
    for e in &entry.events {
        let _ = tx.unbounded_send(Ok(e.clone()));
    }
    let _ = tx.unbounded_send(Ok(StreamEvent::Commit { end_lsn: entry.end_lsn }));
}

fn join(schema: &str, table: &str) -> String {
    format!("{schema}\u{0}{table}")
}

fn split(name: &str) -> Option<(String, String)> {
    name.split_once('\u{0}').map(|(a, b)| (a.to_owned(), b.to_owned()))
}

impl TxnHandle {
    fn push(&mut self, op: TxOp) {
        let mut u = self.up.lock();
        if let Some(t) = u.open.get_mut(&self.xid64) {
            t.ops.push(op);
        }
    }

    /// The transaction's 64-bit id.
    pub fn xid(&self) -> u64 {
        self.xid64
    }

    /// Inserts a row.
    pub fn insert(&mut self, schema: &str, table: &str, row: Row) {
        self.push(TxOp::Insert(join(schema, table), row));
    }

    /// Replaces the row with `key` by `row` (which may change the key).
    pub fn update(&mut self, schema: &str, table: &str, key: Key, row: Row) {
        self.push(TxOp::Update(join(schema, table), key, row));
    }

    /// Deletes the row with `key` (one copy, for tables without a key).
    pub fn delete(&mut self, schema: &str, table: &str, key: Key) {
        self.push(TxOp::Delete(join(schema, table), key));
    }

    /// Truncates tables.
    pub fn truncate(&mut self, tables: &[(&str, &str)]) {
        self.push(TxOp::Truncate(tables.iter().map(|(s, t)| join(s, t)).collect()));
    }

    /// Commits: writes the commit to the log and makes it visible. Returns the
    /// commit's end LSN.
    pub fn commit(self) -> Lsn {
        let up = self.up.clone();
        let (lsn, xid64) = self.commit_to_log();
        up.make_visible(xid64);
        lsn
    }

    /// Writes the commit to the log (the feed delivers it) but leaves the
    /// transaction invisible to snapshots until [`MemoryUpstream::make_visible`].
    pub fn commit_to_log(mut self) -> (Lsn, u64) {
        self.done = true;
        let mut u = self.up.lock();
        let Some(txn) = u.open.remove(&self.xid64) else {
            return (u.lsn, self.xid64);
        };
        let mut undo = Vec::new();
        let events = u.apply_ops(&txn.ops, &mut undo);
        let n = txn.ops.len() as u64;
        u.lsn.0 += 16 * n.max(1);
        let final_lsn = u.lsn;
        u.lsn.0 += 16;
        let end_lsn = u.lsn;
        u.invisible.insert(txn.xid64, undo);
        if !events.is_empty() {
            let entry = LogEntry { xid: txn.xid64 as u32, final_lsn, end_lsn, commit_time: u.clock, events };
            u.push_entry(entry);
        }
        (end_lsn, txn.xid64)
    }
}

impl MemoryUpstream {
    /// Makes a transaction committed with [`TxnHandle::commit_to_log`] visible.
    /// Callers must not let other transactions touch the same rows before
    /// this (Postgres holds their row locks until then, too).
    pub fn make_visible(&self, xid64: u64) {
        self.lock().invisible.remove(&xid64);
    }
}

impl Drop for TxnHandle {
    fn drop(&mut self) {
        if !self.done {
            self.up.lock().open.remove(&self.xid64);
        }
    }
}

/// The `Source` over a [`MemoryUpstream`].
#[derive(Clone, Debug)]
pub struct MemorySource {
    up: MemoryUpstream,
}

struct MemoryFeedback {
    up: MemoryUpstream,
    feed: u64,
}

impl Feedback for MemoryFeedback {
    fn ack(&self, lsn: Lsn) {
        let mut u = self.up.lock();
        if u.feed.as_ref().map(|f| f.id) != Some(self.feed) {
            return;
        }
        let cur = u.lsn;
        if let Some(slot) = &mut u.slot {
            slot.confirmed_flush = slot.confirmed_flush.max(lsn.min(cur));
        }
        u.stats.max_ack = u.stats.max_ack.max(lsn);
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn prepare(&self, relation: &UpstreamRelation, feed: bool) -> Result<RelationSchema, SourceError> {
        let mut u = self.up.lock();
        u.take_fail(FailPoint::Prepare)?;
        let k = (relation.schema.clone(), relation.table.clone());
        let t = u.tables.get(&k).ok_or_else(|| SourceError::relation_missing(relation))?;
        if feed && t.identity == TableIdentity::Nothing {
            return Err(SourceError::new(
                SourceErrorKind::ReplicaIdentity,
                format!("{relation} has no primary key and REPLICA IDENTITY DEFAULT; realtime sync needs a primary key or REPLICA IDENTITY FULL"),
            ));
        }
        let schema = t.schema();
        if feed {
            u.publication.insert(k);
        }
        u.stats.prepares += 1;
        Ok(schema)
    }

    async fn snapshot(
        &self,
        relation: &UpstreamRelation,
        schema: &RelationSchema,
        sink: &mut dyn RowSink,
    ) -> Result<SnapshotPoint, SourceError> {
        let (rows, point, batch) = {
            let mut u = self.up.lock();
            u.take_fail(FailPoint::Snapshot)?;
            let k = (relation.schema.clone(), relation.table.clone());
            let t = u.tables.get(&k).ok_or_else(|| SourceError::relation_missing(relation))?;
            if t.id != schema.source_id || !t.schema().same_shape(schema) {
                return Err(SourceError::new(
                    // Describing it again fixes this (as with Postgres).
                    SourceErrorKind::Other,
                    format!("{relation} changed shape since it was described"),
                ));
            }
            let visible = u.visible_rows(&k).unwrap_or_default();
            let rows: Vec<Row> =
                visible.values().flat_map(|(r, n)| std::iter::repeat_n(r.clone(), *n as usize)).collect();
            let (xmin, xmax, xip) = u.snapshot_point();
            // What the Postgres source checks with pg_xact_status(): a
            // transaction the snapshot lists as in progress whose commit is
            // already logged (so the feed may have delivered it) would be in
            // neither the copy nor the stream after it (see the contract).
            if xip.iter().any(|x| u.invisible.contains_key(x)) {
                return Err(SourceError::new(
                    SourceErrorKind::Other,
                    format!(
                        "could not take a consistent snapshot of {relation}: transactions listed as in progress \
                         had already committed"
                    ),
                ));
            }
            let point = SnapshotPoint { xmin, xmax, xip, lsn: u.lsn, rows: rows.len() as u64 };
            *u.stats.snapshots.entry(relation.to_string()).or_default() += 1;
            (rows, point, u.snapshot_batch)
        };
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Row> = rows.by_ref().take(batch).collect();
            sink.write(chunk).await?;
        }
        Ok(point)
    }

    async fn subscribe(&self, resume: Option<Lsn>) -> Result<Subscription, SourceError> {
        let mut u = self.up.lock();
        u.take_fail(FailPoint::Subscribe)?;
        // A feed whose reader is gone is inactive, as a slot is once its
        // walsender exits.
        if u.feed.as_ref().is_some_and(|f| f.tx.is_closed()) {
            u.feed = None;
            u.stats.active_feeds = 0;
        }
        if u.feed.is_some() {
            u.stats.refused_subscriptions += 1;
            return Err(SourceError::new(
                SourceErrorKind::Refused,
                format!("replication slot {:?} is active for another connection", u.slot_name),
            ));
        }
        let cur = u.lsn;
        let name = u.slot_name.clone();
        // Creating a slot waits until every transaction already committed to
        // the log is visible (Postgres waits for running transactions before
        // its consistent point); otherwise such a commit would be neither in
        // the feed nor in a later snapshot.
        if u.slot.is_none() || u.slot.as_ref().is_some_and(|s| s.invalidated) {
            u.invisible.clear();
        }
        let start = match &u.slot {
            None => {
                u.slot = Some(Slot { confirmed_flush: cur, invalidated: false });
                u.stats.slots_created += 1;
                FeedStart::Created { consistent_point: cur }
            }
            Some(s) if s.invalidated => {
                u.slot = Some(Slot { confirmed_flush: cur, invalidated: false });
                u.stats.slots_created += 1;
                FeedStart::Recreated {
                    consistent_point: cur,
                    reason: format!("replication slot {name:?} was invalidated (wal_status = lost)"),
                }
            }
            Some(s) => FeedStart::Existing { confirmed_flush: s.confirmed_flush },
        };
        let confirmed = u.slot.as_ref().map_or(cur, |s| s.confirmed_flush);
        let from = if u.replay_from_confirmed { confirmed } else { resume.unwrap_or(Lsn::ZERO).max(confirmed) };
        let (tx, rx) = mpsc::unbounded();
        let mut next = from;
        for entry in u.log.iter().filter(|e| e.final_lsn >= from) {
            send_entry(&tx, entry);
            next = entry.end_lsn;
        }
        let id = u.next_feed;
        u.next_feed += 1;
        u.feed = Some(ActiveFeed { id, tx, from: next.max(from) });
        u.stats.subscribes += 1;
        u.stats.active_feeds = 1;
        u.stats.max_active_feeds = u.stats.max_active_feeds.max(1);
        Ok(Subscription {
            report: SlotReport { slot_id: name, start },
            events: rx.boxed(),
            feedback: Box::new(MemoryFeedback { up: self.up.clone(), feed: id }),
        })
    }

    async fn release(&self, relation: &UpstreamRelation) -> Result<(), SourceError> {
        let mut u = self.up.lock();
        u.take_fail(FailPoint::Release)?;
        u.publication.remove(&(relation.schema.clone(), relation.table.clone()));
        Ok(())
    }

    async fn drop_feed(&self) -> Result<(), SourceError> {
        let mut u = self.up.lock();
        u.take_fail(FailPoint::Release)?;
        u.feed = None;
        u.stats.active_feeds = 0;
        u.slot = None;
        u.publication.clear();
        Ok(())
    }
}

impl MemorySource {
    /// The upstream this source reads.
    pub fn upstream(&self) -> &MemoryUpstream {
        &self.up
    }
}
