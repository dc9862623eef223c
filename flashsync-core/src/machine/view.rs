//! Per-view runtime state: where each view is in its life cycle.

use crate::change::RowOp;
use crate::job::JobRecord;
use crate::lsn::Lsn;
use std::sync::Arc;

use crate::handoff::{Handoff, Segment};
use crate::schema::RelationSchema;
use crate::shape::ViewShape;
use crate::snapshot::SnapshotPoint;
use crate::value::Key;
use crate::view::{RelationId, ViewDef};

use super::OpId;

/// What a `prepare` is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Goal {
    /// Copy a materialized view.
    Materialize,
    /// Copy a realtime view and hand it over to the feed.
    Bootstrap,
    /// Re-attach a realtime view whose stored copy is current through the
    /// origin's stored position (after a restart): no copy needed if the
    /// relation is unchanged.
    Attach,
}

/// One upstream transaction held back for a bootstrapping view.
#[derive(Clone, Debug)]
pub(super) struct HeldTxn {
    pub xid: u32,
    pub final_lsn: Lsn,
    pub end_lsn: Lsn,
    pub ops: Vec<RowOp>,
}

/// The feed's share for a view whose snapshot has not landed yet.
#[derive(Clone, Debug, Default)]
pub(super) struct HoldBack {
    /// The origin's commit counter when holding started: commits counted at
    /// or below it were delivered before, and must be in the snapshot.
    pub since: u64,
    pub txns: Vec<HeldTxn>,
    pub bytes: usize,
}

/// Where a chunked copy is between its chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ChunkStep {
    /// A chunk is being copied (or, for a copy in one piece, the copy).
    Copying,
    /// The feed's changes to the chunks copied so far are going into the
    /// generation (with a checkpoint, when the store keeps one); the next
    /// chunk starts when they are in.
    Amending,
    /// The store is handing back the generation a checkpoint kept (before
    /// a restart, or before a chunk failed); the next chunk starts when it
    /// is back.
    Resuming,
    /// A chunk failed (a lost connection, say): the copy goes on from its
    /// last checkpoint at `at`, its hold-back still holding.
    Retrying { at: crate::time::Timestamp },
    /// A resumed copy's last chunk (ending at `point`) is in, but the feed
    /// has not yet delivered everything live views already have
    /// ([`Resumed::to`]): it is published once it has.
    Draining { point: SnapshotPoint },
    /// A re-copy whose old copy stays current is whole (its last chunk
    /// ended at `point`), but the transaction being received staged parts
    /// for the old copy: the store applies a view's staged parts with the
    /// commit that names it, whichever copy is published by then, so the
    /// new copy is published only once that transaction is over.
    AwaitingCommit { point: SnapshotPoint },
}

/// How a realtime bootstrap is copied: in one piece (`rows == 0`), or a key
/// range at a time, each range at its own snapshot (DESIGN §10).
#[derive(Clone, Debug)]
pub(super) struct Chunks {
    /// Rows asked of each chunk; 0 copies the relation in one piece.
    pub rows: u64,
    /// The key ranges copied so far, in key order, each with its snapshot.
    pub done: Vec<Segment>,
    /// The last key copied: the next chunk starts above it.
    pub after: Option<Key>,
    /// Rows copied by the chunks so far.
    pub copied: u64,
    pub step: ChunkStep,
    /// The feed position of the copy's last durable checkpoint
    /// ([`CopyCheckpoint::through`](crate::CopyCheckpoint::through)): the
    /// origin is not acknowledged past it, so a restart receives every
    /// transaction the checkpointed copy lacks again. `None` before the
    /// first (a crash then starts the copy over, needing nothing).
    pub kept: Option<Lsn>,
    /// For a copy resumed from a checkpoint, the span of the feed it must
    /// take that live views already have.
    pub resumed: Option<Resumed>,
    /// Chunks that failed in a row (each retried from the checkpoint).
    pub failed: u32,
}

impl Chunks {
    /// A copy in chunks of `rows` rows (0: in one piece).
    pub fn new(rows: u64) -> Self {
        Chunks {
            rows,
            done: Vec::new(),
            after: None,
            copied: 0,
            step: ChunkStep::Copying,
            kept: None,
            resumed: None,
            failed: 0,
        }
    }

    /// Sizes the next chunk by what the chunk that just landed held back
    /// (`held` bytes), so that a chunk's hold-back stays well under the
    /// origin's `limit` whatever the rows' width and the table's write
    /// rate: past a quarter of the limit the next chunk asks for half the
    /// rows (down to `max / 64`, at least one), under a sixteenth it asks
    /// for twice as many (up to `max`). A copy starts at `max`. `grow_past`
    /// is the planted bug `unbounded_chunk_growth`.
    pub fn resize(&mut self, held: usize, limit: usize, max: u64, grow_past: bool) {
        if self.rows == 0 {
            return;
        }
        let floor = (max / 64).max(1);
        if held > limit / 4 {
            self.rows = (self.rows / 2).max(floor);
        } else if held < limit / 16 {
            let grown = self.rows.saturating_mul(2);
            self.rows = if grow_past { grown } else { grown.min(max) };
        }
    }

    /// A copy continued from `checkpoint`, `rows` rows a chunk, on a feed
    /// whose live views have everything before `applied`.
    pub fn resumed(rows: u64, checkpoint: &crate::job::CopyCheckpoint, applied: Option<Lsn>) -> Self {
        Chunks {
            rows,
            done: checkpoint.segments.clone(),
            after: Some(checkpoint.after.clone()),
            copied: checkpoint.rows,
            step: ChunkStep::Resuming,
            kept: Some(checkpoint.through),
            resumed: Some(Resumed {
                from: checkpoint.through,
                to: applied.map_or(checkpoint.through, |a| a.max(checkpoint.through)),
            }),
            failed: 0,
        }
    }
}

/// A copy resumed from a checkpoint, until the feed has caught up with
/// it. The feed replays from the checkpoint: what commits before `to` live
/// views have already (duplicates, to them), while the copy lacks whatever
/// commits at or after `from`. Once the feed has delivered past `to`, the
/// copy holds everything a copy never interrupted would, and this goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Resumed {
    /// Transactions that commit before it are in the copy or held for it:
    /// the checkpoint's position at first, then how far the feed has
    /// delivered (a reconnected feed replays some again). What a
    /// checkpoint records.
    pub from: Lsn,
    /// The origin's position (or the checkpoint's, if later) when the copy
    /// resumed. The copy is published only once the feed has delivered past
    /// it: after the publish, live views' duplicates are dropped, and the
    /// copy would miss them.
    pub to: Lsn,
}

impl Resumed {
    /// The feed delivered everything before `position`; returns whether
    /// that catches the copy up.
    pub fn delivered(&mut self, position: Lsn) -> bool {
        self.from = self.from.max(position);
        position >= self.to
    }
}

/// What a copy is for.
// One per view being copied, moved rarely: variant size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(super) enum CopyKind {
    /// A materialized view's refresh: the copy replaces the old one.
    Materialize,
    /// A realtime view's bootstrap: its share of the feed is held back
    /// meanwhile, and replayed (less what the snapshot holds) once it lands
    /// — for a chunked copy, once each chunk lands.
    Bootstrap(HoldBack, Chunks),
}

/// What becomes of a realtime view's published copy while a new one is made.
#[derive(Clone, Debug)]
pub(super) enum OldCopy {
    /// Left as it is until the new copy replaces it: there is none yet, or
    /// it cannot be trusted (it diverged, the relation changed, the feed
    /// lost history). Readers still see it; it falls behind.
    Frozen,
    /// A live view copied again — on request, or because its relation
    /// changed shape in a way its copy can still follow (a column added,
    /// say): the published copy keeps mirroring the feed through `shape`
    /// (the live one, or the old columns read from the new relation) with
    /// its hand-off `filter`, until the new copy is handed to the store to
    /// publish. Readers never see it fall behind. The new copy is
    /// checkpointed beside a job stored as running: after a restart the old
    /// copy, current through the stored position, re-attaches and the new
    /// one continues ([`Recopying::Resumed`]); if the relation changed
    /// meanwhile, the old copy is frozen and the new one continues if it
    /// still fits.
    Current { shape: Arc<ViewShape>, filter: Option<Handoff>, why: Recopying },
}

/// Why a live view is being copied again while its old copy stays current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recopying {
    /// A forced `sync()`: if the new copy fails, the view goes on live on
    /// the old one, and the caller hears of the failure.
    Forced,
    /// Its relation changed shape: the old copy can follow the feed, but
    /// only the new one holds what changed, so a failure is a failure (the
    /// view is retried after its back-off, its old copy left as it is).
    Reshaped,
    /// A re-copy a checkpoint kept across a restart, continued once the old
    /// copy re-attached: the old copy is as good as before the restart, so
    /// nobody waits for the new one (the pass that attached the view is
    /// answered when the old copy runs) and, as for a forced one, a failure
    /// leaves the view live on the old copy.
    Resumed,
}

/// Where a view is. Each variant holds exactly what that step needs.
// One per view, moved rarely: variant size does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(super) enum Phase {
    /// Nothing in flight.
    Idle,
    /// Describing the upstream relation.
    Preparing { op: OpId, goal: Goal, old: OldCopy },
    /// Described; waiting for a snapshot slot (and, for realtime views, for
    /// the feed to be up and between transactions).
    Queued { shape: Arc<ViewShape>, races: u32, old: OldCopy },
    /// Copying rows into a new generation. Realtime views hold back their
    /// share of the feed meanwhile.
    Copying { op: OpId, shape: Arc<ViewShape>, copy: CopyKind, races: u32, old: OldCopy },
    /// Switching to the new generation. `handoff` says which feed
    /// transactions each key range of the copy holds. The old copy is no
    /// longer fed from here on: the store publishes the new one before any
    /// batch emitted after it, which must therefore go to the hold-back.
    Publishing { op: OpId, shape: Arc<ViewShape>, handoff: Handoff, copy: CopyKind, job: JobRecord },
    /// Realtime: mirroring the feed. Until the feed passes `filter.lsn`,
    /// transactions the snapshot already holds are skipped. Until the
    /// hand-off batch `replay` (the held-back transactions) is durable, the
    /// job is not stored as running: job records are durable at once,
    /// batches only once persisted, and a crash that loses the hand-off
    /// batch must not leave a job that resumes without it.
    /// `shape` is the view laid over the relation as described when it went
    /// live: what routes each change.
    Live { shape: Arc<ViewShape>, filter: Option<Handoff>, replay: Option<crate::change::BatchSeq> },
}

/// Where a view is in its life cycle, as [`Machine::phase`](super::Machine::phase)
/// reports it (the job state users see is coarser: see `ARCHITECTURE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViewPhase {
    /// Nothing in flight.
    Idle,
    /// Describing the upstream relation.
    Preparing,
    /// Waiting for a snapshot slot (realtime: for the feed, between
    /// transactions).
    Queued,
    /// Copying rows into a new generation.
    Copying,
    /// Replacing the copy with the new generation.
    Publishing,
    /// Realtime: mirroring the feed.
    Live,
}

impl ViewPhase {
    /// Its lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ViewPhase::Idle => "idle",
            ViewPhase::Preparing => "preparing",
            ViewPhase::Queued => "queued",
            ViewPhase::Copying => "copying",
            ViewPhase::Publishing => "publishing",
            ViewPhase::Live => "live",
        }
    }
}

impl std::fmt::Display for ViewPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The keys (encoded) an operation touches, for the audit.
pub(super) fn op_keys(op: &RowOp) -> Vec<Vec<u8>> {
    use crate::codec::encode_key;
    match op {
        RowOp::Insert { key, .. } | RowOp::Evict { key } | RowOp::Delete { key } => vec![encode_key(key)],
        RowOp::Update { old_key, key, .. } | RowOp::UpdateIf { old_key, key, .. } => {
            old_key.iter().chain(std::iter::once(key)).map(encode_key).collect()
        }
        RowOp::Truncate => Vec::new(),
    }
}

impl Phase {
    /// The public name of this phase.
    pub fn public(&self) -> ViewPhase {
        match self {
            Phase::Idle => ViewPhase::Idle,
            Phase::Preparing { .. } => ViewPhase::Preparing,
            Phase::Queued { .. } => ViewPhase::Queued,
            Phase::Copying { .. } => ViewPhase::Copying,
            Phase::Publishing { .. } => ViewPhase::Publishing,
            Phase::Live { .. } => ViewPhase::Live,
        }
    }

    /// Whether the copy readers see mirrors the feed: a live view's, or
    /// the old copy of a view being copied again on request
    /// ([`OldCopy::Current`]).
    pub fn mirrors(&self) -> bool {
        self.mirror_filter().is_some()
    }

    /// The hand-off filter of the copy readers see, if it mirrors the feed
    /// (`Some(None)`: it takes every transaction whole).
    pub fn mirror_filter(&self) -> Option<Option<&Handoff>> {
        match self {
            Phase::Live { filter, .. }
            | Phase::Preparing { old: OldCopy::Current { filter, .. }, .. }
            | Phase::Queued { old: OldCopy::Current { filter, .. }, .. }
            | Phase::Copying { old: OldCopy::Current { filter, .. }, .. } => Some(filter.as_ref()),
            _ => None,
        }
    }

    /// See [`mirror_filter`](Self::mirror_filter).
    pub fn mirror_filter_mut(&mut self) -> Option<&mut Option<Handoff>> {
        match self {
            Phase::Live { filter, .. }
            | Phase::Preparing { old: OldCopy::Current { filter, .. }, .. }
            | Phase::Queued { old: OldCopy::Current { filter, .. }, .. }
            | Phase::Copying { old: OldCopy::Current { filter, .. }, .. } => Some(filter),
            _ => None,
        }
    }

    /// The old copy a re-copy keeps current, if it does.
    pub fn current_old(&self) -> Option<(&Arc<ViewShape>, &Option<Handoff>, Recopying)> {
        match self {
            Phase::Preparing { old: OldCopy::Current { shape, filter, why }, .. }
            | Phase::Queued { old: OldCopy::Current { shape, filter, why }, .. }
            | Phase::Copying { old: OldCopy::Current { shape, filter, why }, .. } => Some((shape, filter, *why)),
            _ => None,
        }
    }

    /// Whether this is a re-copy whose old copy stays current.
    pub fn recopies_live(&self) -> bool {
        self.current_old().is_some()
    }

    /// The held-back transactions, if this phase holds any.
    pub fn hold(&self) -> Option<&HoldBack> {
        match self {
            Phase::Copying { copy: CopyKind::Bootstrap(hold, _), .. }
            | Phase::Publishing { copy: CopyKind::Bootstrap(hold, _), .. } => Some(hold),
            _ => None,
        }
    }

    /// Whether this is a copy whose chunks are all in, waiting for the feed
    /// — a resumed copy for what it lacks ([`ChunkStep::Draining`]), a
    /// re-copy for the end of a transaction ([`ChunkStep::AwaitingCommit`]):
    /// only the feed going on releases its hold-back, so it must never
    /// pause the feed.
    pub fn drains_feed(&self) -> bool {
        matches!(
            self,
            Phase::Copying {
                copy: CopyKind::Bootstrap(
                    _,
                    Chunks { step: ChunkStep::Draining { .. } | ChunkStep::AwaitingCommit { .. }, .. }
                ),
                ..
            }
        )
    }

    pub fn hold_mut(&mut self) -> Option<&mut HoldBack> {
        match self {
            Phase::Copying { copy: CopyKind::Bootstrap(hold, _), .. }
            | Phase::Publishing { copy: CopyKind::Bootstrap(hold, _), .. } => Some(hold),
            _ => None,
        }
    }

    /// The chunks of a realtime bootstrap being made or published.
    pub fn chunks(&self) -> Option<&Chunks> {
        match self {
            Phase::Copying { copy: CopyKind::Bootstrap(_, chunks), .. }
            | Phase::Publishing { copy: CopyKind::Bootstrap(_, chunks), .. } => Some(chunks),
            _ => None,
        }
    }

    /// See [`Resumed::from`].
    pub fn floor(&self) -> Option<Lsn> {
        self.chunks().and_then(|c| c.resumed).map(|r| r.from)
    }
}

impl View {
    /// How the copy being made is keyed, once the view is described.
    pub fn schema_identity(&self) -> Option<crate::schema::Identity> {
        match &self.phase {
            Phase::Queued { shape, .. }
            | Phase::Copying { shape, .. }
            | Phase::Publishing { shape, .. }
            | Phase::Live { shape, .. } => Some(shape.local().identity),
            Phase::Idle | Phase::Preparing { .. } => None,
        }
    }
}

/// A view the machine knows.
#[derive(Clone, Debug)]
pub(super) struct View {
    pub id: RelationId,
    pub def: ViewDef,
    /// `None` until a pass first ensures the job row.
    pub job: Option<JobRecord>,
    /// Schema of the published copy, if one exists.
    pub schema: Option<std::sync::Arc<RelationSchema>>,
    pub phase: Phase,
    /// The stored copy cannot be trusted (a large transaction was cut short by
    /// a crash, or the copy diverged): re-copy before use.
    pub dirty: bool,
    /// A retry pass for this view is already queued.
    pub retry_queued: bool,
    /// Loaded as `running` with a trusted copy and stored origin progress:
    /// the view may re-attach to the feed without a new snapshot, as long as
    /// its origin's feed has not started in this process yet.
    pub attachable: bool,
}

#[cfg(test)]
mod tests {
    use super::Chunks;

    /// A chunk that held back over a quarter of the limit halves the next,
    /// down to a sixty-fourth of the setting; one under a sixteenth doubles
    /// it, up to the setting; in between, and for a copy in one piece,
    /// nothing changes.
    #[test]
    fn chunks_shrink_under_hold_back_and_grow_back_to_the_setting() {
        let (limit, max) = (64 << 20, 1_000_000);
        let mut c = Chunks::new(max);
        c.resize(limit / 2, limit, max, false);
        assert_eq!(c.rows, 500_000);
        for _ in 0..20 {
            c.resize(limit, limit, max, false);
        }
        assert_eq!(c.rows, max / 64);
        c.resize(limit / 8, limit, max, false);
        assert_eq!(c.rows, max / 64, "between a sixteenth and a quarter: kept");
        for _ in 0..20 {
            c.resize(0, limit, max, false);
        }
        assert_eq!(c.rows, max);
        let mut whole = Chunks::new(0);
        whole.resize(limit, limit, max, false);
        assert_eq!(whole.rows, 0);
        let mut tiny = Chunks::new(3);
        tiny.resize(limit, limit, 3, false);
        assert_eq!(tiny.rows, 1, "never below one row");
    }
}
