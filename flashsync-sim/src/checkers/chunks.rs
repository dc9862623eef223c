//! The checks on copies made in chunks: each chunk's rows are what its own
//! snapshot saw in its key range; a transaction goes into a chunk already
//! copied only if that chunk's snapshot did not see it (planted bug
//! `skip_chunk_filter`); the published copy is the chunks plus exactly
//! those changes — after which the mirror follows it range by range; and a
//! chunk, sized by what the one before it held back, never asks for more
//! rows than the setting (planted bug `unbounded_chunk_growth`).

use std::collections::BTreeSet;

use flashsync_core::codec::encode_key;
use flashsync_core::{Lsn, OpId, Persistence, RelationId, RelationSchema, Row};

use super::copies::{admitted, laid_over, matched, multiset, same_columns, Numbers};
use super::{Checker, Mirror, SnapRecord};
use crate::upstream::{Delta, TableKind, TableState, Upstream, Visibility};

/// A copy being made in chunks, as the checker knows it.
#[derive(Clone, Debug)]
pub(crate) struct Chunking {
    /// The view, and the upstream table it is a copy of.
    view: RelationId,
    table: &'static str,
    /// Key ranges copied so far, each with its snapshot's visibility.
    segments: Vec<(Option<Vec<u8>>, Visibility)>,
    /// What the generation must hold: upstream rows (the view's shape
    /// admits them when compared).
    rows: TableState,
    /// The upstream shape `rows` have. A copy can continue across a change
    /// of its table's shape that its columns survive (a restart that
    /// describes the table anew continues the checkpointed copy): the rows
    /// copied before follow the new shape ([`matched`]), as the view reads
    /// them.
    upstream: RelationSchema,
    /// Changes the machine said it put into the generation, not yet
    /// checked: (xid, end LSN, keys, whether a truncate was among them).
    amends: Vec<(u32, Lsn, Vec<Vec<u8>>, bool)>,
}

impl Chunking {
    /// Lays `rows` over the upstream columns `now`, by name: a column
    /// gone loses its values, a new one holds the workload's default (as
    /// upstream's rows do when it is added).
    fn follow(&mut self, kind: TableKind, now: &RelationSchema) {
        if same_columns(&self.upstream, now, Numbers::WhereKnown) {
            return;
        }
        let matches = matched(&self.upstream, now);
        self.rows = crate::upstream::reshaped(kind, Some(&self.rows), |row| *row = laid_over(&matches, row));
        self.upstream = now.clone();
    }

    /// A commit's change to the table, its rows laid over the columns the
    /// copy's rows have (a replayed transaction may predate a change of
    /// shape the chunks copied since). Only forward: laying the chunks
    /// back over an older shape would lose the columns added since.
    fn delta_in_shape(&self, kind: TableKind, delta: &Delta, shape: Option<&RelationSchema>) -> Delta {
        let Some(was) = shape.filter(|was| !same_columns(was, &self.upstream, Numbers::WhereKnown)) else {
            return delta.clone();
        };
        let matches = matched(was, &self.upstream);
        let lay = |row: &Row| laid_over(&matches, row);
        match delta {
            Delta::Set(set) => Delta::Set(
                set.iter()
                    .map(|(k, v)| match v {
                        Some((row, n)) => {
                            let row = lay(row);
                            let key = if matches!(kind, TableKind::FullRow | TableKind::NoIdentity) {
                                crate::upstream::key_of(kind, &row)
                            } else {
                                k.clone()
                            };
                            (key, Some((row, *n)))
                        }
                        None => (k.clone(), None),
                    })
                    .collect(),
            ),
            Delta::Replace(all) => Delta::Replace(crate::upstream::reshaped(kind, Some(all), |row| *row = lay(row))),
        }
    }
}

/// Whether `key` lies in the range ending at `through` and above `after`.
fn in_range(key: &[u8], after: Option<&[u8]>, through: Option<&[u8]>) -> bool {
    after.is_none_or(|a| key > a) && through.is_none_or(|t| key <= t)
}

/// The segment `key` falls in: the first whose bound is at or above it.
fn segment_of<'a>(segments: &'a [(Option<Vec<u8>>, Visibility)], key: &[u8]) -> Option<&'a Visibility> {
    segments.iter().find(|(through, _)| through.as_deref().is_none_or(|t| key <= t)).map(|(_, vis)| vis)
}

/// Upstream's rows of `table` as a snapshot with `vis` saw them.
pub(super) fn seen(up: &Upstream, table: &'static str, vis: &Visibility) -> TableState {
    let mut rows = TableState::new();
    for &i in up.commits_on(table) {
        if vis.sees(i) {
            if let Some(d) = up.history().get(i).and_then(|c| c.deltas.get(table)) {
                d.apply(&mut rows);
            }
        }
    }
    rows
}

/// Applies the part of `delta` at `keys` (all of it when `None`) to `rows`.
/// A table replaced wholesale (a truncate) is replaced within `upto`
/// (inclusive) when given, everywhere when `keys` is `None`, and not at all
/// otherwise: the machine applies a truncate only where no chunk's snapshot
/// holds it, which it then says.
fn apply_at(delta: &Delta, keys: Option<&[Vec<u8>]>, upto: Option<Option<&[u8]>>, rows: &mut TableState) {
    match delta {
        Delta::Set(set) => {
            let wanted: Option<BTreeSet<&[u8]>> = keys.map(|k| k.iter().map(Vec::as_slice).collect());
            for (k, v) in set {
                if wanted.as_ref().is_some_and(|w| !w.contains(encode_key(k).as_slice())) {
                    continue;
                }
                match v {
                    Some(v) => {
                        rows.insert(k.clone(), v.clone());
                    }
                    None => {
                        rows.remove(k);
                    }
                }
            }
        }
        Delta::Replace(_) if keys.is_some() && upto.is_none() => {}
        Delta::Replace(all) => match upto {
            Some(upto) => {
                rows.retain(|k, _| !in_range(&encode_key(k), None, upto));
                for (k, v) in all {
                    if in_range(&encode_key(k), None, upto) {
                        rows.insert(k.clone(), v.clone());
                    }
                }
            }
            None => *rows = all.clone(),
        },
    }
}

/// The keys (encoded) a delta touches.
fn delta_keys(delta: &Delta) -> Vec<Vec<u8>> {
    match delta {
        Delta::Set(set) => set.keys().map(encode_key).collect(),
        Delta::Replace(_) => Vec::new(),
    }
}

/// A transaction applied to a view live on a copy made in chunks: applied
/// at `keys` (everywhere it changed the view when `None`), each of which
/// must lie in a range whose snapshot did not see it. A change of the
/// table's shape (`ddl`, recorded as its whole new content) changes no
/// value the view keeps: the mirror's rows were laid over the new shape
/// already, in every range, whether its snapshot saw the change or not.
/// Returns what was wrong, if anything.
pub(super) fn apply_in_segments(
    m: &mut Mirror,
    delta: &Delta,
    idx: usize,
    ddl: bool,
    keys: Option<&[Vec<u8>]>,
) -> Option<String> {
    let segments = m.segments.as_ref()?;
    let touched = keys.map_or_else(|| delta_keys(delta), <[Vec<u8>]>::to_vec);
    let mut problem = None;
    for key in &touched {
        if segment_of(segments, key).is_some_and(|vis| vis.sees(idx)) {
            problem = Some(format!(
                "commit {idx} applied at key {key:?} of a view copied in chunks, whose chunk's snapshot already \
                 holds it"
            ));
            break;
        }
    }
    // The mirror follows the truth, not the machine's account: the commit
    // belongs wherever its key's range lacks it, so a change the machine
    // dropped shows as a difference with the copy.
    match delta {
        Delta::Set(_) => {
            let lacking: Vec<Vec<u8>> = delta_keys(delta)
                .into_iter()
                .filter(|k| !segment_of(segments, k).is_some_and(|vis| vis.sees(idx)))
                .collect();
            apply_at(delta, Some(&lacking), None, &mut m.rows);
        }
        Delta::Replace(_) if ddl => {}
        Delta::Replace(_) => {
            let seeing = segments.iter().filter(|(_, vis)| vis.sees(idx)).count();
            if seeing == 0 {
                apply_at(delta, None, None, &mut m.rows);
            } else if seeing < segments.len() {
                problem = Some(format!(
                    "commit {idx} truncating a view copied in chunks was applied although some chunks' snapshots \
                     hold it and others do not"
                ));
            }
        }
    }
    problem
}

impl Checker {
    /// A chunk asks for at least one row and at most `max`, the configured
    /// chunk size: the machine shrinks chunks that held back much and grows
    /// them again, never past the setting.
    pub fn check_chunk_request(&mut self, view: RelationId, rows: u64, max: u64) {
        if rows == 0 || rows > max {
            self.fail(
                "chunk sizes within the setting",
                format!("view {view} asked for a chunk of {rows} rows; the setting is {max}"),
            );
        }
    }

    /// A chunk's rows must be what its snapshot saw in its key range (a
    /// whole copy is the chunk with neither bound).
    pub fn check_chunk_rows(
        &mut self,
        snap: &SnapRecord,
        rows: Vec<Row>,
        after: Option<&[u8]>,
        through: Option<&[u8]>,
        up: &Upstream,
    ) {
        let mut want = seen(up, snap.table, &snap.vis);
        want.retain(|k, _| in_range(&encode_key(k), after, through));
        let (got, want) = (multiset(&rows), admitted(&snap.shape, &want));
        if got != want {
            self.fail(
                "upstream model: snapshot content",
                format!(
                    "chunk of {} for view {} after {after:?} through {through:?} returned {got:?}, its snapshot saw \
                     {want:?}",
                    snap.table, snap.view
                ),
            );
        }
    }

    /// A chunk was copied into the generation of copy `op` (the first one
    /// of a copy when `first`), through key `through` (to the end: `None`).
    pub fn on_chunk(&mut self, op: OpId, snap: &SnapRecord, first: bool, through: Option<Vec<u8>>, up: &Upstream) {
        if first {
            let fresh = Chunking {
                view: snap.view,
                table: snap.table,
                segments: Vec::new(),
                rows: TableState::new(),
                upstream: snap.shape.upstream().clone(),
                amends: Vec::new(),
            };
            self.chunking.insert(op, fresh);
            // A new copy's generation replaces whatever a checkpoint kept.
            self.checkpoints.remove(&snap.view);
            // The machine's copy is its newest (operations are numbered in
            // order within a run): a first chunk of an abandoned, older
            // copy may still run after a newer copy began.
            let now = self.chunking_now.entry(snap.view).or_insert(op);
            *now = (*now).max(op);
        }
        self.settle_amends(op, snap.view, snap.table, up);
        let Some(c) = self.chunking.get_mut(&op) else { return };
        c.follow(up.kind(snap.table).unwrap_or(TableKind::Keyed), snap.shape.upstream());
        let after = c.segments.last().and_then(|(t, _)| t.clone());
        let mut rows = seen(up, snap.table, &snap.vis);
        rows.retain(|k, _| in_range(&encode_key(k), after.as_deref(), through.as_deref()));
        c.rows.extend(rows);
        c.segments.push((through, snap.vis.clone()));
    }

    /// The machine put a transaction's changes at `keys` into a copy being
    /// made in chunks (checked once the upstream model is at hand).
    pub(super) fn on_amended(&mut self, view: RelationId, xid: u32, end_lsn: Lsn, keys: Vec<Vec<u8>>, truncated: bool) {
        self.amended += 1;
        match self.chunking_now.get(&view).and_then(|op| self.chunking.get_mut(op)) {
            Some(c) => c.amends.push((xid, end_lsn, keys, truncated)),
            None => self.fail(
                "no commit applied twice",
                format!("transaction {xid} (end {end_lsn}) went into a copy of view {view} that is not being made"),
            ),
        }
    }

    /// Checks and applies the changes the machine put into view `view`'s
    /// chunks so far: each key in a range copied already, whose snapshot
    /// did not see the transaction.
    fn settle_amends(&mut self, op: OpId, view: RelationId, table: &'static str, up: &Upstream) {
        let Some(c) = self.chunking.get_mut(&op) else { return };
        let amends = std::mem::take(&mut c.amends);
        let mut problems = Vec::new();
        for (xid, end_lsn, keys, truncated) in amends {
            let Some(commit) = up.commit_at(end_lsn) else {
                problems.push(format!("transaction {xid} went into view {view}'s copy; upstream never committed it"));
                continue;
            };
            for key in &keys {
                match segment_of(&c.segments, key) {
                    None => problems.push(format!(
                        "transaction {xid} (end {end_lsn}) went into view {view}'s copy at key {key:?}, which no \
                         chunk had copied"
                    )),
                    Some(vis) if vis.sees(commit.idx) => problems.push(format!(
                        "transaction {xid} (end {end_lsn}) went into view {view}'s copy at key {key:?}, although \
                         that chunk's snapshot already holds it"
                    )),
                    Some(_) => {}
                }
            }
            let Some(d) = commit.deltas.get(table) else { continue };
            let d = &c.delta_in_shape(up.kind(table).unwrap_or(TableKind::Keyed), d, commit.shapes.get(table));
            let upto = c.segments.last().map(|(t, _)| t.as_deref());
            match d {
                // The truth, not the machine's account: the transaction
                // belongs at every key copied so far whose range lacks it.
                Delta::Set(_) => {
                    let lacking: Vec<Vec<u8>> = delta_keys(d)
                        .into_iter()
                        .filter(|k| segment_of(&c.segments, k).is_some_and(|vis| !vis.sees(commit.idx)))
                        .collect();
                    apply_at(d, Some(&lacking), None, &mut c.rows);
                }
                // A truncate goes in only where no chunk copied so far holds
                // it (otherwise the copy starts over, with no record).
                Delta::Replace(_) => {
                    let seen = c.segments.iter().any(|(_, vis)| vis.sees(commit.idx));
                    if seen && truncated {
                        problems.push(format!(
                            "transaction {xid} (end {end_lsn}) truncated view {view}'s copy, although a chunk's \
                             snapshot already holds it"
                        ));
                    } else if !seen {
                        if !truncated && !commit.ddl {
                            problems.push(format!(
                                "transaction {xid} (end {end_lsn}) truncated {table}, but its truncate never reached \
                                 view {view}'s copy"
                            ));
                        }
                        apply_at(d, Some(&keys), Some(upto.flatten()), &mut c.rows);
                    }
                }
            }
        }
        for p in problems {
            self.fail("no commit applied twice", p);
        }
    }

    /// The store checkpointed copy `op` (durably): a crash from now on
    /// takes it back to exactly this — its chunks, and the changes that
    /// went into them so far.
    pub fn on_checkpoint(&mut self, op: OpId, up: &Upstream) {
        let Some((view, table)) = self.chunking.get(&op).map(|c| (c.view, c.table)) else { return };
        self.settle_amends(op, view, table, up);
        if let Some(c) = self.chunking.get(&op) {
            self.checkpoints.insert(view, c.clone());
            self.checkpointed += 1;
        }
    }

    /// After a restart, the machine continues view `view`'s copy as `op`
    /// from its last checkpoint: the copy is what the checkpoint kept.
    pub(super) fn on_resumed(&mut self, view: RelationId, op: OpId) {
        match self.checkpoints.get(&view) {
            Some(c) => {
                self.chunking.insert(op, c.clone());
                self.chunking_now.insert(view, op);
                self.resumed += 1;
            }
            None => self.fail(
                "copies resume from a checkpoint",
                format!("the copy of view {view} continued after a restart, but no checkpoint of it was kept"),
            ),
        }
    }

    /// A copy made in chunks was published.
    pub(super) fn publish_chunked(&mut self, op: OpId, snap: &SnapRecord, mode: Persistence, up: &Upstream) {
        self.settle_amends(op, snap.view, snap.table, up);
        self.checkpoints.remove(&snap.view);
        let Some(mut c) = self.chunking.remove(&op) else { return };
        if self.chunking_now.get(&snap.view) == Some(&op) {
            self.chunking_now.remove(&snap.view);
        }
        c.follow(up.kind(snap.table).unwrap_or(TableKind::Keyed), snap.shape.upstream());
        self.mirrors.insert(snap.view, Mirror::published(snap, mode, up, c.rows, Some(c.segments)));
    }
}

impl Mirror {
    /// The mirror of a copy just published: `rows` as the snapshot (or the
    /// chunks, with their `segments`) made it.
    pub(super) fn published(
        snap: &SnapRecord,
        mode: Persistence,
        up: &Upstream,
        rows: TableState,
        segments: Option<Vec<(Option<Vec<u8>>, Visibility)>>,
    ) -> Mirror {
        Mirror {
            table: snap.table,
            shape: snap.shape.clone(),
            kind: up.kind(snap.table).unwrap_or(TableKind::Keyed),
            mode,
            vis: snap.vis.clone(),
            lsn: snap.point.lsn,
            applied: BTreeSet::new(),
            rows,
            partial: false,
            lost: false,
            broken: false,
            verified: 0,
            segments,
            followed: false,
        }
    }
}
