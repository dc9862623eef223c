//! The checks on the store's copies: every batch, publication, persist and
//! crash moves the mirrors, and each copy is compared with its mirror.

use std::collections::{BTreeMap, BTreeSet};

use flashsync_core::{
    ApplyBatch, BatchSeq, Column, ColumnMatch, Lsn, Persistence, Progress, RelationId, RelationSchema, Row, Value,
    ViewDef, ViewShape,
};

use super::{Checker, Mirror, SnapRecord};
use crate::store::Durable;
use crate::upstream::{state_of, TableState, Upstream, SCHEMA};

impl Checker {
    /// A batch failed to apply: nothing of it is in the store. Its position
    /// is not either, so no `Durable` covering its number makes it durable
    /// (nor may it be acknowledged); only a later batch that the store did
    /// apply moves the durable position past it. The copies of its views
    /// still equal their mirrors (neither has the batch), but a view that
    /// stays live past it has a gap ([`Checker::check_prefix`]), and once
    /// later changes of the view land its copy has a hole the mirror cannot
    /// follow (row operations are relative): it must be copied again before
    /// it is `running` ([`Checker::check_running`]).
    pub fn on_apply_failed(&mut self, batch: &ApplyBatch) {
        let claimed = self.claims.remove(&batch.seq).unwrap_or_default();
        self.disabled_ops.remove(&batch.seq);
        for id in batch.views.iter().map(|v| v.relation_id).chain(claimed.iter().map(|c| c.view)) {
            if let Some(m) = self.mirrors.get_mut(&id) {
                m.lost = true;
            }
        }
    }

    /// A batch was applied to the store; returns the views it claims to
    /// have applied transactions to.
    pub fn on_applied(&mut self, batch: &ApplyBatch, up: &Upstream) -> Vec<RelationId> {
        let claims = self.claims.remove(&batch.seq).unwrap_or_default();
        let claimed: Vec<RelationId> = claims.iter().map(|c| c.view).collect();
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        for view in self.disabled_ops.remove(&batch.seq).unwrap_or_default() {
            let detail = format!(
                "batch {} ({:?}) changed view {view}, which the caller had stopped",
                batch.seq.0, batch.progress
            );
            self.fail("a disabled job never applies a commit", detail);
        }
        self.acks.applied(batch);
        // Changes landing for a view after a batch of its changes failed
        // leave a hole in its copy.
        for id in batch.views.iter().map(|v| v.relation_id).chain(claimed.iter().copied()) {
            if let Some(m) = self.mirrors.get_mut(&id).filter(|m| m.lost) {
                m.partial = true;
                m.broken = true;
            }
        }
        // A staged part changes no row: the copies must still equal their
        // mirrors after it (compared after every apply run), so a store
        // that let part of a transaction show would be caught there.
        for c in claims {
            self.applied_claims += 1;
            if c.stopped {
                problems.push((
                    "a disabled job never applies a commit",
                    format!(
                        "transaction {} (end {}) applied to stopped view {} in batch {}",
                        c.xid, c.end_lsn, c.view, batch.seq.0
                    ),
                ));
            }
            let Some(commit) = up.commit_at(c.end_lsn) else {
                self.fail(
                    "mirror never ahead of upstream",
                    format!(
                        "view {} got transaction {} ending at {}, which upstream never committed",
                        c.view, c.xid, c.end_lsn
                    ),
                );
                continue;
            };
            if commit.xid as u32 != c.xid {
                self.fail(
                    "mirror never ahead of upstream",
                    format!(
                        "transaction ending at {} has xid {}, the machine says {}",
                        c.end_lsn, commit.xid as u32, c.xid
                    ),
                );
            }
            let Some(m) = self.mirrors.get_mut(&c.view) else {
                self.fail(
                    "mirror never ahead of upstream",
                    format!("transaction {} applied to view {}, which has no published copy", c.xid, c.view),
                );
                continue;
            };
            if let Some(now) = commit.shapes.get(m.table) {
                follow_shape(m, now);
            }
            if m.segments.is_some() {
                if let Some(d) = commit.deltas.get(m.table) {
                    if let Some(problem) =
                        super::chunks::apply_in_segments(m, d, commit.idx, commit.ddl, c.keys.as_deref())
                    {
                        problems.push(("no commit applied twice", format!("{problem} (batch {})", batch.seq.0)));
                    }
                }
                m.applied.insert(commit.idx);
                if !matches!(batch.progress, Progress::Stage { .. }) && !m.broken {
                    m.partial = false;
                }
                continue;
            }
            if m.vis.sees(commit.idx) {
                problems.push((
                    "no commit applied twice",
                    format!(
                        "transaction {} (end {}) applied to view {} in batch {} although its published snapshot \
                         (at {}) already contains it",
                        c.xid, c.end_lsn, c.view, batch.seq.0, m.lsn
                    ),
                ));
            }
            if !m.applied.insert(commit.idx) {
                problems.push((
                    "no commit applied twice",
                    format!(
                        "transaction {} (end {}) applied to view {} twice since its last publish (again in batch {})",
                        c.xid, c.end_lsn, c.view, batch.seq.0
                    ),
                ));
            }
            if let Some(d) = commit.deltas.get(m.table) {
                d.apply(&mut m.rows);
            }
            if !matches!(batch.progress, Progress::Stage { .. }) && !m.broken {
                m.partial = false;
            }
        }
        for (invariant, detail) in problems {
            self.fail(invariant, detail);
        }
        claimed
    }

    /// The store reported operations that did not fit a copy. For a
    /// partial view that is how a move-in the store cannot complete (an
    /// unchanged TOAST value of a row that is not local) is refused: the
    /// copy misses that row until the view is copied again, which the
    /// machine must do before it calls the view `running` again
    /// ([`Checker::check_running`] holds it to that). For a whole view a
    /// conflict means the copy diverged, which the comparison with its
    /// mirror after the batch reports.
    pub fn on_conflicts(&mut self, report: &flashsync_core::ApplyReport) {
        for c in &report.conflicts {
            let Some(m) = self.mirrors.get_mut(&c.relation_id) else { continue };
            if m.shape.is_whole() {
                // The comparison with the mirror after the batch shows it.
                continue;
            }
            m.partial = true;
            m.broken = true;
        }
    }

    /// A snapshot's copy was published (the store switched to it).
    pub fn on_published(&mut self, op: flashsync_core::OpId, snap: &SnapRecord, mode: Persistence, up: &Upstream) {
        if self.chunking.contains_key(&op) {
            self.publish_chunked(op, snap, mode, up);
            return;
        }
        let rows = super::chunks::seen(up, snap.table, &snap.vis);
        self.mirrors.insert(snap.view, Mirror::published(snap, mode, up, rows, None));
    }

    /// A view was forgotten in the store.
    pub fn on_forgotten(&mut self, id: RelationId) {
        self.mirrors.remove(&id);
        self.checkpoints.remove(&id);
    }

    /// The origin's progress was removed from the store (its feed dropped):
    /// positions start over.
    pub fn on_forget_origin(&mut self) {
        self.acks.reset(&super::origin());
    }

    /// What a store call made durable.
    pub fn on_durable(&mut self, d: Durable) {
        match d {
            Durable::Nothing => {}
            Durable::Everything => self.durable = self.mirrors.clone(),
            Durable::View(id) => match self.mirrors.get(&id) {
                Some(m) => {
                    self.durable.insert(id, m.clone());
                }
                None => {
                    self.durable.remove(&id);
                }
            },
        }
    }

    /// `persist` reported batches through `through` durable.
    pub fn on_persisted(&mut self, through: BatchSeq) {
        self.acks.durable_through(through);
        self.durable_ever = self.durable_ever.max(self.acks.durable(&super::origin()));
    }

    /// The machine and its in-flight work are gone; `lost` says whether the
    /// store lost what was not durable.
    pub fn on_crash(&mut self, lost: bool) {
        if lost {
            self.mirrors = self.durable.clone();
        } else {
            self.durable = self.mirrors.clone();
        }
        // What was in flight is gone with the process: nothing can land
        // over a failed batch any more (a restarted machine resumes from the
        // store's position).
        for m in self.mirrors.values_mut().chain(self.durable.values_mut()) {
            m.lost = false;
        }
        self.claims.clear();
        self.disabled_ops.clear();
        // Copies being made die with the process (and a restarted
        // machine numbers its operations afresh).
        self.chunking.clear();
        self.chunking_now.clear();
        self.acks.crashed();
        self.fences_open.clear();
        self.fences = 0;
        self.bursts.clear();
    }

    /// After a restart: the origin position the store loaded is durable
    /// (fjall and SQLite may have made more durable than `persist`
    /// reported, through the fsyncs of other writes).
    pub fn on_loaded_progress(&mut self, lsn: Lsn) {
        self.acks.durable_at(&super::origin(), lsn);
        self.durable_ever = Some(self.durable_ever.map_or(lsn, |a| a.max(lsn)));
    }

    /// After a restart: stopped views are whatever the store says.
    pub fn on_restart(&mut self, disabled: BTreeSet<RelationId>, defs: BTreeMap<RelationId, ViewDef>) {
        self.disabled = disabled;
        self.defs = defs;
    }

    /// Ids of views with a mirror.
    pub fn mirrored(&self) -> Vec<RelationId> {
        self.mirrors.keys().copied().collect()
    }

    /// Compares a view's copy in the store with its mirror.
    pub fn check_copy(&mut self, id: RelationId, store_rows: Option<Vec<Row>>, when: &str) {
        let Some(m) = self.mirrors.get(&id) else { return };
        if m.partial {
            return;
        }
        let Some(rows) = store_rows else {
            self.fail(
                "mirror exact",
                format!("{when}: view {id} has no copy in the store, expected {} rows", m.rows.len()),
            );
            return;
        };
        if !m.shape.is_whole() {
            let (got, want) = (multiset(&rows), admitted(&m.shape, &m.rows));
            if got != want {
                let missing: Vec<_> = want.iter().filter(|(r, n)| got.get(*r) != Some(*n)).take(5).collect();
                let extra: Vec<_> = got.iter().filter(|(r, n)| want.get(*r) != Some(*n)).take(5).collect();
                self.fail(
                    "mirror exact",
                    format!(
                        "{when}: partial view {id} ({} of {}) differs from project(filter(snapshot + applied \
                         commits)): missing {missing:?}, unexpected {extra:?}",
                        m.mode, m.table
                    ),
                );
            }
            return;
        }
        let got = state_of(m.kind, rows);
        if got != m.rows {
            let (missing, extra) = differences(&m.rows, &got);
            self.fail(
                "mirror exact",
                format!(
                    "{when}: view {id} ({} of {}) differs from snapshot + applied commits: missing {missing:?}, \
                     unexpected {extra:?}",
                    m.mode, m.table
                ),
            );
        }
    }

    /// A view the machine reports `running` (realtime, enabled): its copy is
    /// exactly its mirror, a published copy of the view's current table plus
    /// whole commits. The one exception is a large transaction the feed is in
    /// the middle of (`mid_transaction`), whose first `Partial` batches may be
    /// in the store already; a view that left the feed in the middle of one,
    /// or lost a batch, must be copied again before it is `running`.
    pub fn check_running(&mut self, id: RelationId, store_rows: Option<Vec<Row>>, mid_transaction: bool, when: &str) {
        let Some(m) = self.mirrors.get(&id) else {
            self.fail("mirror exact", format!("{when}: view {id} is running but has no published copy"));
            return;
        };
        let def = self.defs.get(&id).map(|d| (d.upstream.table.as_str(), d.persistence));
        if def.is_some_and(|(table, mode)| table != m.table || mode != m.mode) {
            let detail = format!(
                "{when}: view {id} is running as {def:?} on a copy of {} made as {}: a redefinition needs a new copy",
                m.table, m.mode
            );
            self.fail("mirror exact", detail);
            return;
        }
        let redefined = self.defs.get(&id).is_some_and(|d| {
            let columns: Vec<&str> = m.shape.local().columns.iter().map(|c| c.name.as_str()).collect();
            d.filter.as_ref() != m.shape.filter()
                || d.columns.as_ref().is_some_and(|want| !want.iter().map(String::as_str).eq(columns.iter().copied()))
                || (d.columns.is_none() && m.shape.projection().is_some() && !m.followed)
        });
        if redefined {
            let detail = format!(
                "{when}: view {id} is running as {:?} on a copy made for another filter or column list",
                self.defs.get(&id)
            );
            self.fail("mirror exact", detail);
            return;
        }
        if m.broken {
            let detail =
                format!("{when}: view {id} is running but its copy has a hole: a batch of its changes failed and later ones were applied over it");
            self.fail("mirror exact", detail);
            return;
        }
        if m.partial {
            if !mid_transaction {
                let detail = format!(
                    "{when}: view {id} is running between transactions but its copy holds part of a large \
                     transaction whose commit never reached it"
                );
                self.fail("mirror exact", detail);
            }
            return;
        }
        self.check_copy(id, store_rows, when);
    }

    /// For a realtime view whose copy mirrors the feed (live, or kept current
    /// while a re-copy makes the next) and whose feed passed its
    /// snapshot: the copy holds exactly the table's commits up to the
    /// machine's position `at`.
    pub fn check_prefix(&mut self, id: RelationId, at: Lsn, up: &Upstream) {
        // A view of every column takes every change of them.
        let every_column = self.defs.get(&id).is_none_or(|d| d.columns.is_none());
        let Some(m) = self.mirrors.get_mut(&id) else { return };
        if m.partial || m.mode != Persistence::Realtime || at < m.lsn {
            return;
        }
        let commits = up.commits_on(m.table);
        while let Some(&i) = commits.get(m.verified) {
            let Some(c) = up.history().get(i) else { break };
            if c.end_lsn > at {
                break;
            }
            let seen = match &m.segments {
                Some(segments) => segments.iter().any(|(_, vis)| vis.sees(i)),
                None => m.vis.sees(i),
            };
            if !(seen || m.applied.contains(&i) || (c.ddl && unseen_change_of_shape(m, every_column, c, commits, up))) {
                let detail = format!(
                    "view {id} mirroring the feed of {} is at {at} but lacks commit of xid {} (end {}): a gap",
                    m.table, c.xid, c.end_lsn
                );
                self.fail("mirror never ahead of upstream", detail);
                return;
            }
            m.verified += 1;
        }
    }

    /// Whether the view's copy equals `project(filter(table))` now (for
    /// liveness).
    pub fn equals_upstream(&self, shape: &ViewShape, store_rows: &[Row], truth: &TableState) -> bool {
        multiset(store_rows) == admitted(shape, truth)
    }

    /// What differs between a copy and upstream: (only in the copy, only
    /// upstream).
    pub fn upstream_difference(
        &self,
        shape: &ViewShape,
        store_rows: &[Row],
        truth: &TableState,
    ) -> (Vec<Row>, Vec<Row>) {
        let (got, want) = (multiset(store_rows), admitted(shape, truth));
        let extra = got.keys().filter(|r| got.get(*r) != want.get(*r)).cloned().collect();
        let missing = want.keys().filter(|r| got.get(*r) != want.get(*r)).cloned().collect();
        (extra, missing)
    }
}

/// A mirror taking a commit whose rows have another shape than its copy
/// reads (a column added or dropped since, which the feed announces before
/// the first such row, in that commit or before): like the machine's copy,
/// it follows — the columns it keeps read by name where they now are, a
/// projection no definition asked for when the definition keeps every
/// column — and its rows take the table's new layout. A copy that cannot
/// follow (a column it keeps is gone, a table without a key) is left as
/// it was: the machine must make it again, and if it kept it anyway, the
/// comparison says so.
fn follow_shape(m: &mut Mirror, now: &RelationSchema) {
    let was = m.shape.upstream().clone();
    if same_columns(&was, now, Numbers::WhereKnown) {
        return;
    }
    let matches = matched(&was, now);
    // The copy's own definition: the caller may have redefined or forgotten
    // the view since the machine emitted the batch, and the machine followed
    // with the definition it had then (its columns are the copy's; a
    // redefined view is copied afresh).
    let Ok(mut def) = ViewDef::new(SCHEMA, "mirror", m.mode, crate::ORIGIN, SCHEMA, m.table) else { return };
    def.filter = m.shape.filter().cloned();
    let Some(followed) = m.shape.follow(&def, &matches) else { return };
    m.shape = std::sync::Arc::new(followed);
    m.followed = true;
    m.rows = crate::upstream::reshaped(m.kind, Some(&m.rows), |row| *row = laid_over(&matches, row));
}

/// Whether the feed may pass the change of shape `c` without a word to the
/// copy: another change of shape follows it before any change of rows the
/// feed carries (so no `Relation` message ever shows its shape; the later
/// one is judged instead), or it changes nothing the copy keeps.
fn unseen_change_of_shape(
    m: &Mirror,
    every_column: bool,
    c: &crate::upstream::Commit,
    commits: &[usize],
    up: &Upstream,
) -> bool {
    let mut later = commits.iter().filter(|&&j| j > c.idx).filter_map(|&j| up.history().get(j));
    let next = later.find(|n| n.in_feed.contains(m.table));
    next.is_some_and(|n| n.ddl) || changes_nothing_kept(m, every_column, c.shapes.get(m.table))
}

/// Whether a change of the table's shape to `now` leaves what the copy
/// keeps as it was. A copy of every column: the table has the columns it
/// was copied with again, by their numbers (a column added and dropped
/// again while the engine was down). A copy of some: its columns, key and
/// filter all read the same upstream columns (by their numbers) after it.
/// So is a copy of a view of every column that followed a change of shape
/// into keeping the columns it had (a column was added; the view is being
/// copied again, the old copy staying current meanwhile): what it keeps is
/// its columns, and the copy under way brings the rest.
/// The feed says nothing of such a change when a restart's description, or
/// a replay judged against the catalog as it is now, already shows it
/// (Postgres streams no DDL, and its next rows read as the copy expects),
/// so the copy need not take its commit.
fn changes_nothing_kept(m: &Mirror, every_column: bool, now: Option<&RelationSchema>) -> bool {
    let Some(now) = now else { return false };
    if every_column && m.shape.projection().is_none() {
        return same_columns(m.shape.upstream(), now, Numbers::Known);
    }
    let Ok(mut def) = ViewDef::new(SCHEMA, "mirror", m.mode, crate::ORIGIN, SCHEMA, m.table) else { return false };
    def.filter = m.shape.filter().cloned();
    let (was, matches) = (m.shape.local(), matched(m.shape.upstream(), now));
    m.shape.follow(&def, &matches).is_some_and(|f| {
        let kept = f.local();
        kept.columns == was.columns && kept.column_ids == was.column_ids && kept.key == was.key
    })
}

/// What [`same_columns`] asks of the source's column numbers.
#[derive(Clone, Copy, Debug)]
pub(super) enum Numbers {
    /// Equal where both shapes have them: a shape the machine followed has
    /// none, and its columns are matched by name (see [`matched`]).
    WhereKnown,
    /// Known in both shapes, and equal: without numbers, a column dropped
    /// and added again under its name cannot be told from the one before.
    Known,
}

/// Whether two shapes have the same columns: the same names and types, and
/// numbers as `numbers` asks.
pub(super) fn same_columns(a: &RelationSchema, b: &RelationSchema, numbers: Numbers) -> bool {
    let known = !a.column_ids.is_empty() && !b.column_ids.is_empty();
    a.columns == b.columns
        && match numbers {
            Numbers::WhereKnown => !known || a.column_ids == b.column_ids,
            Numbers::Known => known && a.column_ids == b.column_ids,
        }
}

/// `now`'s columns matched to `was`'s: by the source's column numbers
/// where both shapes have them — a column dropped and added again under
/// its name is another column, holding the default — and by name
/// otherwise (a shape the machine followed has no numbers; see
/// [`by_name`]).
pub(super) fn matched(was: &RelationSchema, now: &RelationSchema) -> Vec<ColumnMatch> {
    if was.column_ids.is_empty() || now.column_ids.is_empty() {
        return by_name(&was.columns, &now.columns);
    }
    now.columns
        .iter()
        .zip(&now.column_ids)
        .map(|(c, id)| ColumnMatch { name: c.name.clone(), before: was.column_ids.iter().position(|w| w == id) })
        .collect()
}

/// `now`'s columns matched to `was`'s by name alone. The workload never
/// changes a column's type, and a shape the machine followed names the
/// columns it added with an unknown type (`RelationSchema::after_change`),
/// so a type would only tell the same column apart from itself.
pub(super) fn by_name(was: &[Column], now: &[Column]) -> Vec<ColumnMatch> {
    let names = |cols: &[Column]| cols.iter().map(|c| c.name.clone()).collect::<Vec<String>>();
    ColumnMatch::between(&names(was), &names(now), String::as_str)
}

/// `row` laid over the columns `matches` describes: a column it lacks
/// holds the workload's default (as upstream's rows do when one is added).
pub(super) fn laid_over(matches: &[ColumnMatch], row: &Row) -> Row {
    Row(matches.iter().map(|c| c.before.and_then(|i| row.0.get(i).cloned()).unwrap_or(Value::Int(0))).collect())
}

/// Rows with their number of copies.
type Multiset = BTreeMap<Row, u64>;

pub(super) fn multiset(rows: &[Row]) -> Multiset {
    let mut out = Multiset::new();
    for row in rows {
        *out.entry(row.clone()).or_default() += 1;
    }
    out
}

/// What a view of `shape` holds of a table in `state`.
pub(super) fn admitted(shape: &ViewShape, state: &TableState) -> Multiset {
    let mut out = Multiset::new();
    for (row, n) in state.values() {
        if let Some(local) = shape.admit(row.clone()) {
            *out.entry(local).or_default() += n;
        }
    }
    out
}

/// Up to five rows (with copies) on each side of a difference.
type Sample = Vec<(Row, u64)>;

fn differences(want: &TableState, got: &TableState) -> (Sample, Sample) {
    let missing = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).map(|(_, v)| v.clone()).take(5).collect();
    let extra = got.iter().filter(|(k, v)| want.get(*k) != Some(*v)).map(|(_, v)| v.clone()).take(5).collect();
    (missing, extra)
}
