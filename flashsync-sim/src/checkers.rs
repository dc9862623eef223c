//! Invariant checkers, run after every step.
//!
//! The checkers never trust the machine's own account of the world. They
//! know the truth from the upstream workload ([`Upstream`](crate::upstream::Upstream): every commit's
//! effect, and what every snapshot could see) and from what the driver
//! actually did to the store, and hold the machine to it:
//!
//! - **no commit applied twice**: with [`Config::audit`] the machine says
//!   which transaction it applied to which view in which batch; once that
//!   batch is in the store, the transaction must not have been applied to the
//!   view since its copy was last published, and the published snapshot must
//!   not already contain it (decided from the upstream's visibility at the
//!   instant the snapshot ran, not from the machine's `SnapshotPoint`);
//! - **mirror exact and never ahead**: each view's copy in the store equals a
//!   *mirror* the checker keeps — the snapshot's content, plus the effect of
//!   exactly the commits the audit says were applied — so it only ever holds
//!   committed upstream changes; and a view whose copy mirrors the feed (a
//!   live one, or one whose old copy stays current while a re-copy —
//!   forced, or after a column was added — makes the next; through a
//!   column's addition the mirror reads its columns from the widened rows)
//!   and whose feed has passed its
//!   snapshot holds exactly the commits up to the machine's position, with no
//!   gap (upstream as of a commit prefix); and every view the machine reports
//!   `running` holds exactly its mirror — a published copy of the view's
//!   current table and mode plus whole commits — except for the part of a
//!   large transaction the feed is in the middle of: a view that left the
//!   feed mid-transaction, or lost part of one to a failed batch, must be
//!   copied again before it is `running`;
//! - **legal state transitions** for the view's mode, each starting where
//!   the last left ([`StateChanges`], shared with the fuzz targets);
//! - **ack ≤ durable**: every acknowledgement is at most the end LSN of a
//!   commit batch the store applied and then reported durable (a batch that
//!   failed never counts, whatever `Durable` later covers its number), and
//!   acknowledgements on one feed increase ([`Acks`], shared likewise);
//! - **one pass at a time**: at most one pass fence outstanding, passes equal
//!   fences, and a burst of `sync()` calls arriving together runs at most two
//!   passes;
//! - **one feed at a time**: no subscription while another is open, and the
//!   upstream refused none;
//! - **a disabled job never applies a commit**: no batch the machine emits
//!   after the caller stopped a view changes it, and no audit names it;
//! - **crash consistency**: after a restart, every copy equals its mirror as
//!   of the last durable point.
//!
//! [`Config::audit`]: flashsync_core::Config::audit

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flashsync_core::invariants::{Acks, StateChanges};
use flashsync_core::machine::Epoch;
use flashsync_core::{
    ApplyBatch, AuditRecord, BatchSeq, Event, EventKind, Lsn, Machine, OpId, OriginId, Persistence, Phase, RelationId,
    SnapshotPoint, ViewDef, ViewShape,
};

use crate::upstream::{TableKind, TableState, Visibility};

mod chunks;
mod copies;
mod feed;

pub(crate) use feed::FeedMirror;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which invariant (a short stable name).
    pub invariant: &'static str,
    /// What exactly happened.
    pub detail: String,
}

/// What the checker knows about a snapshot the driver ran.
#[derive(Clone, Debug)]
pub struct SnapRecord {
    /// The view.
    pub view: RelationId,
    /// The upstream table.
    pub table: &'static str,
    /// What the source reported.
    pub point: SnapshotPoint,
    /// What the snapshot could see (the truth).
    pub vis: Visibility,
    /// What part of the table the view keeps.
    pub shape: Arc<ViewShape>,
}

/// A view's copy as it must be.
#[derive(Clone, Debug)]
struct Mirror {
    table: &'static str,
    /// What part of the table the view keeps: the copy must equal the
    /// mirror's rows as this shape admits them.
    shape: Arc<ViewShape>,
    kind: TableKind,
    mode: Persistence,
    vis: Visibility,
    /// The snapshot's position.
    lsn: Lsn,
    /// Commits applied since the snapshot (by log index).
    applied: BTreeSet<usize>,
    rows: TableState,
    /// Part of a large transaction (`Partial` batches) is in the store and
    /// its commit is not, or the copy is broken: the copy is between states.
    partial: bool,
    /// A batch with changes for this view failed in this incarnation: if
    /// more changes of the view land after it, the copy has a hole.
    lost: bool,
    /// The copy has a hole (a failed batch, then later changes applied over
    /// it), which the mirror cannot follow: not trusted until the next
    /// publish.
    broken: bool,
    /// Commits of the table verified present (an index into its history).
    verified: usize,
    /// A copy made in chunks: each key range (through an inclusive bound,
    /// encoded) with what its snapshot could see; `vis` is then the last
    /// range's. A transaction applies only where its range lacks it.
    segments: Option<Vec<(Option<Vec<u8>>, Visibility)>>,
    /// The copy follows a column added to its table since it was made: its
    /// shape reads the columns it has from the widened rows, a projection
    /// no definition asked for.
    followed: bool,
}

/// One applied-transaction claim waiting for its batch to reach the store.
#[derive(Clone, Debug)]
struct Claim {
    view: RelationId,
    xid: u32,
    end_lsn: Lsn,
    /// The caller had stopped the view when the machine made the claim.
    stopped: bool,
    /// Applied only at these keys (encoded), for a copy made in chunks.
    keys: Option<Vec<Vec<u8>>>,
}

/// A burst of `sync()` calls that arrived together.
#[derive(Clone, Debug, Default)]
struct Burst {
    outstanding: usize,
    fences_before: u64,
}

/// Invariant state for one run.
#[derive(Default)]
pub struct Checker {
    /// The first violation found, if any.
    pub violation: Option<Violation>,
    mirrors: BTreeMap<RelationId, Mirror>,
    durable: BTreeMap<RelationId, Mirror>,
    claims: BTreeMap<BatchSeq, Vec<Claim>>,
    /// Views the caller had stopped when the machine emitted a batch with
    /// row operations for them, by batch.
    disabled_ops: BTreeMap<BatchSeq, Vec<RelationId>>,
    /// The shared ack rule ([`Acks`]): fed the commit batches the store
    /// applied (a batch that failed is not: its position is not in the
    /// store) and what it reported durable.
    acks: Acks,
    /// The shared state-change rule ([`StateChanges`]).
    states: StateChanges,
    /// Highest LSN ever durable (positions only grow upstream).
    durable_ever: Option<Lsn>,
    /// Views' definitions as last delivered to the machine.
    defs: BTreeMap<RelationId, ViewDef>,
    disabled: BTreeSet<RelationId>,
    fences_open: BTreeSet<OpId>,
    /// Pass fences emitted by this incarnation of the machine.
    pub fences: u64,
    bursts: BTreeMap<u64, Burst>,
    /// Most passes any burst ran.
    pub max_passes_per_burst: u64,
    /// Bursts completed.
    pub bursts_done: u64,
    /// Calls in completed bursts.
    pub burst_calls: u64,
    /// Transactions applied to views (claims that reached the store).
    pub applied_claims: u64,
    /// Copies being made in chunks, by operation (a copy the machine gave
    /// up may still be published, by a step already handed out).
    chunking: BTreeMap<OpId, chunks::Chunking>,
    /// Each view's latest copy in chunks: the one the machine amends.
    chunking_now: BTreeMap<RelationId, OpId>,
    /// Per view, the copy in chunks as its last checkpoint left it in the
    /// store: what a restart continues from.
    checkpoints: BTreeMap<RelationId, chunks::Chunking>,
    /// Changes that went into copies being made in chunks.
    pub amended: u64,
    /// Checkpoints of copies in chunks the store kept.
    pub checkpointed: u64,
    /// Copies continued from a checkpoint after a restart.
    pub resumed: u64,
}

/// The origin every simulated view reads from.
fn origin() -> OriginId {
    OriginId::new(crate::ORIGIN).unwrap_or_else(|e| panic!("the simulator's origin is invalid: {e}"))
}

impl Checker {
    /// After a (re)start: job states start from what the machine loaded.
    pub fn on_start(&mut self, machine: &Machine) {
        self.states = StateChanges::default();
        for job in machine.status(&flashsync_core::Selector::All) {
            self.states.start(job.relation_id, job.state);
        }
    }

    fn fail(&mut self, invariant: &'static str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { invariant, detail });
        }
    }

    /// Whether a violation was found.
    pub fn failed(&self) -> bool {
        self.violation.is_some()
    }

    // ----- definitions, stop and resume -------------------------------------

    /// A `Define` was delivered and the machine knows the view as `id`.
    pub fn on_define(&mut self, id: RelationId, def: ViewDef) {
        self.defs.insert(id, def);
    }

    /// The definition of a view.
    pub fn def(&self, id: RelationId) -> Option<&ViewDef> {
        self.defs.get(&id)
    }

    /// Views the checker knows, with their definitions.
    pub fn defs(&self) -> &BTreeMap<RelationId, ViewDef> {
        &self.defs
    }

    /// Whether the caller stopped this view (and did not resume it).
    pub fn is_disabled(&self, id: RelationId) -> bool {
        self.disabled.contains(&id)
    }

    /// A `Stop` covering these views was delivered.
    pub fn on_stop(&mut self, ids: &[RelationId]) {
        self.disabled.extend(ids.iter().copied());
    }

    /// A `Resume` covering these views was delivered.
    pub fn on_resume(&mut self, ids: &[RelationId]) {
        for id in ids {
            self.disabled.remove(id);
        }
    }

    /// A `Forget` covering these views was delivered.
    pub fn on_forget_request(&mut self, ids: &[RelationId]) {
        for id in ids {
            self.disabled.remove(id);
            self.defs.remove(id);
        }
    }

    // ----- machine outputs ---------------------------------------------------

    /// A pass fence was emitted.
    pub fn on_fence(&mut self, op: OpId) {
        self.fences += 1;
        self.fences_open.insert(op);
        if self.fences_open.len() > 1 {
            self.fail("one pass at a time", format!("pass fences {:?} outstanding at once", self.fences_open));
        }
    }

    /// A store operation's result was delivered.
    pub fn on_store_done(&mut self, op: OpId) {
        self.fences_open.remove(&op);
    }

    /// After every input: the machine's pass counter must match its fences.
    pub fn check_passes(&mut self, machine: &Machine, base: u64) {
        let passes = machine.stats().passes.saturating_sub(base);
        if passes != self.fences {
            self.fail(
                "one pass at a time",
                format!("machine counts {passes} passes but emitted {} fences", self.fences),
            );
        }
    }

    /// A job state change was reported.
    pub fn on_event(&mut self, event: &Event, before: Option<&ViewDef>) {
        let EventKind::StateChanged { from, to } = &event.kind else { return };
        let Some(id) = event.relation_id else {
            self.fail("legal state transitions", format!("state change without a view: {event:?}"));
            return;
        };
        let now = self.defs.get(&id).map(|d| d.persistence);
        let then = before.map(|d| d.persistence);
        let modes: Vec<Persistence> = [now, then].into_iter().flatten().collect();
        if let Err(e) = self.states.change(id, *from, *to, &modes) {
            self.fail(e.invariant, format!("{} in phase {}", e.detail, event.phase));
        }
        if event.phase == Phase::Define && before.is_none() && now.is_none() {
            self.fail("legal state transitions", format!("state change of unknown view {id}"));
        }
    }

    /// Audit records drained after an input.
    pub fn on_audit(&mut self, records: Vec<AuditRecord>) {
        for r in records {
            match r {
                AuditRecord::Applied { seq, view, xid, end_lsn, keys, .. } => {
                    let stopped = self.disabled.contains(&view);
                    self.claims.entry(seq).or_default().push(Claim { view, xid, end_lsn, stopped, keys });
                }
                AuditRecord::Published { .. } => {}
                AuditRecord::Amended { view, xid, end_lsn, keys, truncated } => {
                    self.on_amended(view, xid, end_lsn, keys, truncated)
                }
                // What the store keeps is recorded when it keeps it.
                AuditRecord::Checkpointed { .. } => {}
                AuditRecord::Resumed { view, op } => self.on_resumed(view, op),
            }
        }
    }

    /// The machine emitted a batch for the store.
    pub fn on_batch(&mut self, batch: &ApplyBatch) {
        let stopped: Vec<RelationId> = batch
            .views
            .iter()
            .filter(|v| !v.ops.is_empty() && self.disabled.contains(&v.relation_id))
            .map(|v| v.relation_id)
            .collect();
        if !stopped.is_empty() {
            self.disabled_ops.insert(batch.seq, stopped);
        }
    }

    /// An acknowledgement is about to go upstream.
    pub fn on_ack(&mut self, lsn: Lsn, epoch: Epoch) {
        if let Err(e) = self.acks.ack(&origin(), epoch, lsn) {
            self.fail(e.invariant, e.detail);
        }
    }

    /// The origin position durable in the store.
    pub fn durable_lsn(&self) -> Option<Lsn> {
        self.acks.durable(&origin())
    }

    /// The highest LSN ever durable.
    pub fn durable_ever(&self) -> Option<Lsn> {
        self.durable_ever
    }

    // ----- bursts ------------------------------------------------------------

    /// The first call of a burst is about to be delivered.
    pub fn burst_start(&mut self, burst: u64, calls: usize) {
        self.bursts.insert(burst, Burst { outstanding: calls, fences_before: self.fences });
    }

    /// A call of a burst was answered; returns the passes it ran when the
    /// burst is complete.
    pub fn burst_reply(&mut self, burst: u64) -> Option<u64> {
        let b = self.bursts.get_mut(&burst)?;
        b.outstanding = b.outstanding.saturating_sub(1);
        if b.outstanding > 0 {
            return None;
        }
        let passes = self.fences.saturating_sub(b.fences_before);
        self.bursts.remove(&burst);
        self.bursts_done += 1;
        self.max_passes_per_burst = self.max_passes_per_burst.max(passes);
        if passes > 2 {
            self.fail("one pass at a time", format!("a burst of sync() calls ran {passes} passes (at most 2 allowed)"));
        }
        Some(passes)
    }

    /// Counts the calls of a burst (for the report).
    pub fn count_burst_calls(&mut self, n: u64) {
        self.burst_calls += n;
    }

    /// Records a violation found elsewhere.
    pub fn report(&mut self, invariant: &'static str, detail: String) {
        self.fail(invariant, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstream;
    use flashsync_core::{Identity, Key, OriginId, Progress, Row, RowOp, Value, ViewOps};

    fn batch(seq: u64, progress: Progress, views: Vec<ViewOps>) -> ApplyBatch {
        let origin = OriginId::new(crate::ORIGIN).expect("origin");
        ApplyBatch {
            seq: BatchSeq(seq),
            origin,
            progress,
            views,
            jobs: vec![],
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        }
    }

    fn commit(seq: u64, lsn: u64) -> ApplyBatch {
        batch(seq, Progress::Commit { end_lsn: Lsn(lsn) }, vec![])
    }

    #[test]
    fn a_failed_batch_is_never_durable_whatever_covers_its_number() {
        let up = Upstream::new(1000, 4, 0);
        let mut c = Checker::default();
        c.on_applied(&commit(1, 100), &up);
        c.on_apply_failed(&commit(2, 200));
        c.on_persisted(BatchSeq(2));
        assert_eq!(c.durable_lsn(), Some(Lsn(100)));
        c.on_ack(Lsn(100), Epoch(1));
        assert!(!c.failed());
        c.on_ack(Lsn(200), Epoch(1));
        assert_eq!(c.violation.as_ref().map(|v| v.invariant), Some("ack <= durable"));
        // A later batch the store took moves the durable position past it.
        let mut c = Checker::default();
        c.on_apply_failed(&commit(1, 200));
        c.on_applied(&commit(2, 300), &up);
        c.on_persisted(BatchSeq(2));
        c.on_ack(Lsn(300), Epoch(1));
        assert!(!c.failed());
    }

    #[test]
    fn a_batch_changing_a_stopped_view_is_caught_without_an_audit() {
        let up = Upstream::new(1000, 4, 0);
        let mut c = Checker::default();
        let id = RelationId(7);
        c.on_stop(&[id]);
        let key = Key(vec![Value::Int(1)]);
        let ops = vec![RowOp::Insert { key, row: Row(vec![Value::Int(1)]) }];
        let b =
            batch(1, Progress::Stage { first: true }, vec![ViewOps { relation_id: id, identity: Identity::Key, ops }]);
        c.on_batch(&b);
        c.on_applied(&b, &up);
        assert_eq!(c.violation.as_ref().map(|v| v.invariant), Some("a disabled job never applies a commit"));
    }
}
