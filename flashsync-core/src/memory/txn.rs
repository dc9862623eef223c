//! Upstream transactions: the [`TxnHandle`] that buffers a transaction's
//! changes, committing them to the tables and the log, and what snapshots
//! see of commits that are logged but not yet visible.

use std::collections::BTreeMap;

use super::upstream::{LogEntry, MemoryUpstream, Table, TableIdentity, Upstream};
use crate::change::{Cell, Change, StreamEvent};
use crate::lsn::Lsn;
use crate::value::{Key, Row, Value};

#[derive(Clone, Debug)]
pub(super) enum TxOp {
    Insert(String, Row),
    Update(String, Key, Row),
    Delete(String, Key),
    Truncate(Vec<String>),
}

/// What a transaction overwrote, so snapshots can see the state without it
/// while its commit is in the log but not yet visible.
#[derive(Clone, Debug)]
pub(super) enum Undo {
    Row((String, String), Key, Option<(Row, u64)>),
    Table((String, String), BTreeMap<Key, (Row, u64)>),
}

#[derive(Debug)]
pub(super) struct OpenTxn {
    xid64: u64,
    ops: Vec<TxOp>,
}

/// An open upstream transaction. Changes become visible at
/// [`TxnHandle::commit`]; dropping the handle aborts.
pub struct TxnHandle {
    up: MemoryUpstream,
    xid64: u64,
    done: bool,
}

impl MemoryUpstream {
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
}

impl Upstream {
    /// Applies a transaction's ops to the visible tables, returning the feed
    /// events they produce.
    pub(super) fn apply_ops(&mut self, ops: &[TxOp], undo: &mut Vec<Undo>) -> Vec<StreamEvent> {
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
                        let old_img = (t.sends_old_rows() || new_key != *key).then(|| t.old_image(&old));
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
    pub(super) fn visible_rows(&self, k: &(String, String)) -> Option<BTreeMap<Key, (Row, u64)>> {
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

    pub(super) fn snapshot_point(&self) -> (u64, u64, Vec<u64>) {
        let xmax = self.next_xid;
        let mut xip: Vec<u64> = self.open.keys().chain(self.invisible.keys()).copied().collect();
        xip.sort_unstable();
        let xmin = xip.first().copied().unwrap_or(xmax);
        (xmin, xmax, xip)
    }
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
            let entry = LogEntry {
                xid: txn.xid64 as u32,
                final_lsn,
                end_lsn,
                commit_time: u.clock,
                events,
                shapes: BTreeMap::new(),
            };
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
