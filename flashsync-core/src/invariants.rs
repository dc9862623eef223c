//! The rules every observer of the machine checks, written once.
//!
//! The simulator's checkers, the `core_machine` and `core_executor` fuzz
//! targets and the executor's test harness each watch the machine from a
//! different place; where they check the same rule they use the trackers
//! here, so the rule means the same everywhere. Each tracker is fed what the
//! observer sees and answers a [`Broken`] naming the invariant (the names
//! are the ones the simulator reports).
//!
//! ```
//! use flashsync_core::invariants::Acks;
//! use flashsync_core::machine::Epoch;
//! use flashsync_core::{Lsn, OriginId};
//!
//! let origin = OriginId::new("postgres:main")?;
//! let mut acks = Acks::default();
//! acks.durable_at(&origin, Lsn(100));
//! assert!(acks.ack(&origin, Epoch(1), Lsn(100)).is_ok());
//! assert!(acks.ack(&origin, Epoch(1), Lsn(200)).is_err(), "beyond what is durable");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use crate::change::{ApplyBatch, BatchSeq, Progress};
use crate::job::JobState;
use crate::lsn::Lsn;
use crate::machine::{AuditRecord, Epoch};
use crate::view::{OriginId, Persistence, RelationId};

/// A broken invariant: which, and what happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{invariant}: {detail}")]
pub struct Broken {
    /// The invariant's name.
    pub invariant: &'static str,
    /// What happened.
    pub detail: String,
}

fn broken(invariant: &'static str, detail: String) -> Broken {
    Broken { invariant, detail }
}

/// **ack <= durable**: an acknowledgement never passes what is durable
/// locally (the end of the last commit batch a persist covered, or the
/// position loaded at start-up), and acknowledgements on one feed strictly
/// increase.
#[derive(Clone, Debug, Default)]
pub struct Acks {
    /// Commit batches applied and not yet covered by a persist.
    pending: BTreeMap<BatchSeq, (OriginId, Lsn)>,
    durable: BTreeMap<OriginId, Lsn>,
    last: BTreeMap<(OriginId, Epoch), Lsn>,
}

impl Acks {
    /// A batch reached the store: a commit batch becomes durable once a
    /// persist covers it.
    pub fn applied(&mut self, batch: &ApplyBatch) {
        if let Progress::Commit { end_lsn } = batch.progress {
            self.pending.insert(batch.seq, (batch.origin.clone(), end_lsn));
        }
    }

    /// A persist made every batch through `through` durable.
    pub fn durable_through(&mut self, through: BatchSeq) {
        let rest = self.pending.split_off(&BatchSeq(through.0.saturating_add(1)));
        for (_, (origin, lsn)) in std::mem::replace(&mut self.pending, rest) {
            self.durable_at(&origin, lsn);
        }
    }

    /// `origin` is durable through `lsn` (e.g. the position a store loaded).
    pub fn durable_at(&mut self, origin: &OriginId, lsn: Lsn) {
        let d = self.durable.entry(origin.clone()).or_insert(lsn);
        *d = (*d).max(lsn);
    }

    /// Everything not yet durable is gone (a crash), or the origin's
    /// position was removed (`forget_all`): positions start over.
    pub fn reset(&mut self, origin: &OriginId) {
        self.pending.retain(|_, (o, _)| o != origin);
        self.durable.remove(origin);
    }

    /// The process died: batches no persist covered are lost, and the next
    /// process numbers its feeds afresh.
    pub fn crashed(&mut self) {
        self.pending.clear();
        self.last.clear();
    }

    /// Whether some applied commit batch awaits a persist.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The highest position acknowledged on any feed of `origin`.
    pub fn acked(&self, origin: &OriginId) -> Option<Lsn> {
        self.last.iter().filter(|((o, _), _)| o == origin).map(|(_, l)| *l).max()
    }

    /// How far `origin` is durable.
    pub fn durable(&self, origin: &OriginId) -> Option<Lsn> {
        self.durable.get(origin).copied()
    }

    /// The machine acknowledged `lsn` on the feed `epoch` of `origin`.
    pub fn ack(&mut self, origin: &OriginId, epoch: Epoch, lsn: Lsn) -> Result<(), Broken> {
        let durable = self.durable(origin);
        if durable.is_none_or(|d| lsn > d) {
            return Err(broken(
                "ack <= durable",
                format!("acknowledged {lsn} on feed {} of {origin}, but only {durable:?} is durable", epoch.0),
            ));
        }
        if let Some(prev) = self.last.insert((origin.clone(), epoch), lsn) {
            if lsn <= prev {
                return Err(broken(
                    "ack <= durable",
                    format!("acknowledged {lsn} on feed {} of {origin} after {prev}", epoch.0),
                ));
            }
        }
        Ok(())
    }
}

/// **legal state transitions**: every reported job state change is legal
/// for the view's persistence ([`JobState::is_legal`]) and starts from the
/// state the previous change (or the loaded job) left.
#[derive(Clone, Debug, Default)]
pub struct StateChanges {
    states: BTreeMap<RelationId, JobState>,
}

impl StateChanges {
    /// The state `id` starts from (a loaded job); views without one start
    /// `idle`.
    pub fn start(&mut self, id: RelationId, state: JobState) {
        self.states.insert(id, state);
    }

    /// A reported change of `id`, legal under any of `modes` (a
    /// redefinition may change its persistence).
    pub fn change(
        &mut self,
        id: RelationId,
        from: JobState,
        to: JobState,
        modes: &[Persistence],
    ) -> Result<(), Broken> {
        if !modes.iter().any(|m| JobState::is_legal(*m, from, to)) {
            return Err(broken("legal state transitions", format!("view {id} ({modes:?}) went {from} -> {to}")));
        }
        let was = self.state(id);
        self.states.insert(id, to);
        if from != was {
            return Err(broken(
                "legal state transitions",
                format!("view {id} reported a change from {from}, but was {was}"),
            ));
        }
        Ok(())
    }

    /// The state the reported changes say `id` is in.
    pub fn state(&self, id: RelationId) -> JobState {
        self.states.get(&id).copied().unwrap_or(JobState::Idle)
    }

    /// Forgets `id` (the view is gone).
    pub fn forget(&mut self, id: RelationId) {
        self.states.remove(&id);
    }

    /// Keeps only the views `keep` says exist.
    pub fn retain(&mut self, keep: impl Fn(RelationId) -> bool) {
        self.states.retain(|id, _| keep(*id));
    }
}

/// **no commit applied twice**: per view, the commits applied between two
/// copies (publications) have strictly increasing end LSNs.
#[derive(Clone, Debug, Default)]
pub struct AppliedOrder {
    last: BTreeMap<RelationId, Lsn>,
}

impl AppliedOrder {
    /// An audit record from the machine ([`Config::audit`](crate::Config::audit)).
    pub fn audit(&mut self, record: &AuditRecord) -> Result<(), Broken> {
        match record {
            AuditRecord::Applied { view, end_lsn, xid, .. } => match self.last.insert(*view, *end_lsn) {
                Some(prev) if *end_lsn <= prev => Err(broken(
                    "no commit applied twice",
                    format!("view {view} applied xid {xid} ending {end_lsn} after one ending {prev}"),
                )),
                _ => Ok(()),
            },
            AuditRecord::Published { view, .. } => {
                self.last.remove(view);
                Ok(())
            }
            // Into a copy not yet published: its transactions may come
            // again after the publish, at other keys.
            AuditRecord::Amended { .. } | AuditRecord::Checkpointed { .. } | AuditRecord::Resumed { .. } => Ok(()),
        }
    }

    /// The views' copies are gone or unknown (a restart): start over.
    pub fn clear(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn origin() -> OriginId {
        OriginId::new("postgres:main").expect("origin")
    }

    fn commit(seq: u64, end: u64) -> ApplyBatch {
        ApplyBatch {
            seq: BatchSeq(seq),
            origin: origin(),
            progress: Progress::Commit { end_lsn: Lsn(end) },
            views: Vec::new(),
            jobs: Vec::new(),
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        }
    }

    #[test]
    fn acks_wait_for_a_persist_and_increase_per_feed() {
        let mut a = Acks::default();
        a.applied(&commit(1, 100));
        a.applied(&commit(2, 200));
        assert!(a.ack(&origin(), Epoch(1), Lsn(100)).is_err(), "applied is not durable");
        a.durable_through(BatchSeq(1));
        assert!(a.ack(&origin(), Epoch(1), Lsn(100)).is_ok());
        assert!(a.ack(&origin(), Epoch(1), Lsn(200)).is_err(), "batch 2 is not covered");
        assert!(a.ack(&origin(), Epoch(1), Lsn(100)).is_err(), "the same position twice on one feed");
        assert!(a.ack(&origin(), Epoch(2), Lsn(100)).is_ok(), "a new feed starts over");
        a.crashed();
        a.durable_through(BatchSeq(2));
        assert_eq!(a.durable(&origin()), Some(Lsn(100)), "batch 2 was lost with the process");
    }

    #[test]
    fn state_changes_must_be_legal_and_continue_from_the_last() {
        let mut s = StateChanges::default();
        let id = RelationId(1);
        assert!(s.change(id, JobState::Idle, JobState::Running, &[Persistence::Realtime]).is_ok());
        assert!(s.change(id, JobState::Idle, JobState::Failed, &[Persistence::Realtime]).is_err(), "was running");
        assert!(s.change(id, JobState::Failed, JobState::Synced, &[Persistence::Realtime]).is_err(), "not realtime");
        s.start(id, JobState::Failed);
        assert!(s.change(id, JobState::Failed, JobState::Synced, &[Persistence::Materialized]).is_ok());
    }

    #[test]
    fn a_commit_applied_twice_between_copies_is_caught() {
        let mut o = AppliedOrder::default();
        let view = RelationId(1);
        let applied =
            |end| AuditRecord::Applied { seq: BatchSeq(1), view, xid: 7, end_lsn: Lsn(end), replay: false, keys: None };
        assert!(o.audit(&applied(100)).is_ok());
        assert!(o.audit(&applied(100)).is_err());
        let point = crate::snapshot::SnapshotPoint { xmin: 1, xmax: 1, xip: Vec::new(), lsn: Lsn(50), rows: 0 };
        let handoff = crate::handoff::Handoff::whole(point);
        assert!(o.audit(&AuditRecord::Published { view, handoff }).is_ok());
        assert!(o.audit(&applied(100)).is_ok(), "a new copy starts over");
    }
}
