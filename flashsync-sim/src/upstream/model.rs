//! The upstream's data model: the simulated tables, what a commit did
//! ([`Delta`], [`Commit`]), what a snapshot can see ([`Visibility`]),
//! transactions and their locks, and the pure helpers over table states.

use std::collections::{BTreeMap, BTreeSet};

use flashsync_core::memory::TxnHandle;
use flashsync_core::rng::Rng;
use flashsync_core::{Key, Lsn, RelationSchema, Row, Value};

/// The upstream schema every simulated table lives in.
pub const SCHEMA: &str = "public";

/// The shapes of table the workload uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TableKind {
    /// `(id int8 primary key, name text, score int8)`: key changes included.
    Keyed,
    /// `(a int8, b text, n int8)`, primary key `(a, b)`.
    Composite,
    /// `(id int8 primary key, body text, likes int8)` with long `body` values
    /// "TOASTed": updates that keep them send them as unchanged.
    Toasted,
    /// `(kind text, n int8)`, no key, `REPLICA IDENTITY FULL`: a multiset.
    FullRow,
    /// `(msg text, at int8)`, no key and default replica identity: only
    /// materialized views work; realtime views must fail clearly.
    NoIdentity,
}

/// The tables every simulation creates, by name.
pub const TABLES: [(&str, TableKind); 5] = [
    ("users", TableKind::Keyed),
    ("tags", TableKind::Composite),
    ("posts", TableKind::Toasted),
    ("events", TableKind::FullRow),
    ("logs", TableKind::NoIdentity),
];

/// Text longer than this in `posts.body` is treated as TOASTed.
pub(super) const TOAST_THRESHOLD: usize = 24;

/// Rows of a table: key -> (row, copies). For tables without a key the key is
/// the whole row and copies count duplicates, as in the model.
pub type TableState = BTreeMap<Key, (Row, u64)>;

/// What one commit did to one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// These keys hold these rows afterwards (`None`: gone). Row locks make
    /// this order-independent among concurrent commits.
    Set(BTreeMap<Key, Option<(Row, u64)>>),
    /// The table was replaced wholesale (truncate or column addition, both
    /// under a table lock): this is its content afterwards.
    Replace(TableState),
}

impl Delta {
    /// Applies the effect to a copy of the table.
    pub fn apply(&self, state: &mut TableState) {
        match self {
            Delta::Set(keys) => {
                for (k, v) in keys {
                    match v {
                        Some(v) => {
                            state.insert(k.clone(), v.clone());
                        }
                        None => {
                            state.remove(k);
                        }
                    }
                }
            }
            Delta::Replace(all) => *state = all.clone(),
        }
    }
}

/// One committed transaction, in log order.
#[derive(Clone, Debug)]
pub struct Commit {
    /// Position in the log (0-based, in commit order).
    pub idx: usize,
    /// 64-bit transaction id.
    pub xid: u64,
    /// End LSN of its commit record.
    pub end_lsn: Lsn,
    /// Its effect on each table it touched.
    pub deltas: BTreeMap<&'static str, Delta>,
    /// Tables whose changes the feed carries (published at commit time).
    pub in_feed: BTreeSet<&'static str>,
    /// A change of a table's shape rather than of its data.
    pub ddl: bool,
    /// The shape each table it touched had at its commit (columns, and
    /// their numbers): the shape its rows have.
    pub shapes: BTreeMap<&'static str, RelationSchema>,
}

/// Which commits a snapshot taken at one instant sees: every commit logged
/// before it except those not yet visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visibility {
    /// Commits in the log at that instant.
    pub count: usize,
    /// Of those, the ones not yet visible.
    pub invisible: BTreeSet<usize>,
}

impl Visibility {
    /// Whether the snapshot sees commit `idx`.
    pub fn sees(&self, idx: usize) -> bool {
        idx < self.count && !self.invisible.contains(&idx)
    }
}

/// A transaction of the workload.
pub type TxnId = u64;

pub(super) struct OpenTxn {
    pub(super) handle: TxnHandle,
    /// Its operations so far, in order. Its view of a table is the committed
    /// state with these replayed: the rows it touches are locked, so nobody
    /// else changes them meanwhile, and other rows may move under it.
    pub(super) ops: Vec<(&'static str, TxOp)>,
    pub(super) locks: Locks,
}

/// One operation, with the model's semantics.
#[derive(Clone, Debug)]
pub(super) enum TxOp {
    Insert(Row),
    Update(Key, Row),
    Delete(Key),
    Truncate,
}

/// Applies an operation as [`MemoryUpstream`] does.
pub(super) fn apply_op(kind: TableKind, state: &mut TableState, op: &TxOp) {
    let remove_one = |state: &mut TableState, key: &Key| {
        if let Some(e) = state.get_mut(key) {
            if e.1 <= 1 {
                state.remove(key);
            } else {
                e.1 -= 1;
            }
        }
    };
    match op {
        TxOp::Insert(row) => {
            let e = state.entry(key_of(kind, row)).or_insert((row.clone(), 0));
            e.0 = row.clone();
            e.1 += 1;
        }
        TxOp::Update(key, row) => {
            if !state.contains_key(key) {
                return;
            }
            remove_one(state, key);
            let e = state.entry(key_of(kind, row)).or_insert((row.clone(), 0));
            e.0 = row.clone();
            e.1 += 1;
        }
        TxOp::Delete(key) => remove_one(state, key),
        TxOp::Truncate => state.clear(),
    }
}

/// Locks a transaction holds until its commit is visible (or it aborts).
#[derive(Default)]
pub(super) struct Locks {
    pub(super) rows: BTreeSet<(&'static str, Key)>,
    pub(super) tables: BTreeSet<&'static str>,
}

pub(super) struct TableModel {
    pub(super) kind: TableKind,
    /// Columns added by the workload (int8, default 0) and not dropped
    /// since, in table order (after the table's own columns).
    pub(super) extras: Vec<String>,
    /// Columns ever added, which names the next one.
    pub(super) added: usize,
    /// Names of added columns dropped since: the workload adds one again
    /// now and then, as a migration that drops and re-adds a column does —
    /// a new column under an old name.
    pub(super) dropped: Vec<String>,
}

/// The key of a row of a table of `kind`.
pub fn key_of(kind: TableKind, row: &Row) -> Key {
    match kind {
        TableKind::Keyed | TableKind::Toasted => Key(vec![row.0.first().cloned().unwrap_or(Value::Null)]),
        TableKind::Composite => Key(row.0.iter().take(2).cloned().collect()),
        TableKind::FullRow | TableKind::NoIdentity => Key(row.0.clone()),
    }
}

/// Rows (copies repeated) as a table state.
pub fn state_of(kind: TableKind, rows: Vec<Row>) -> TableState {
    let mut state = TableState::new();
    for row in rows {
        let e = state.entry(key_of(kind, &row)).or_insert((row.clone(), 0));
        e.0 = row;
        e.1 += 1;
    }
    state
}

pub(super) fn diff(before: &TableState, after: &TableState) -> Delta {
    let mut keys = BTreeMap::new();
    for (k, v) in before {
        if after.get(k) != Some(v) {
            keys.insert(k.clone(), after.get(k).cloned());
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            keys.insert(k.clone(), Some(v.clone()));
        }
    }
    Delta::Set(keys)
}

pub(super) fn random_row(kind: TableKind, extra: usize, key_space: i64, rng: &mut Rng) -> Row {
    let r = |rng: &mut Rng, n: u64| rng.below(n) as i64;
    let mut values = match kind {
        TableKind::Keyed => {
            vec![Value::Int(r(rng, key_space as u64)), Value::Text(format!("u{}", r(rng, 5))), Value::Int(r(rng, 100))]
        }
        TableKind::Composite => vec![
            Value::Int(r(rng, 4)),
            Value::Text(["x", "y", "z"][rng.below(3) as usize].to_owned()),
            Value::Int(r(rng, 10)),
        ],
        TableKind::Toasted => vec![
            Value::Int(r(rng, key_space as u64)),
            Value::Text(format!("post body {} {}", r(rng, 4), "lorem ipsum dolor sit amet ".repeat(2))),
            Value::Int(r(rng, 50)),
        ],
        TableKind::FullRow => {
            vec![Value::Text(["a", "b", "c"][rng.below(3) as usize].to_owned()), Value::Int(r(rng, 3))]
        }
        TableKind::NoIdentity => vec![Value::Text(format!("m{}", r(rng, 4))), Value::Int(r(rng, 5))],
    };
    // Added columns: a fresh value now and then.
    values.extend((0..extra).map(|_| Value::Int(r(rng, 3))));
    Row(values)
}
