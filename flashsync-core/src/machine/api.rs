//! The machine's inputs and outputs: everything that crosses its boundary.

use serde::{Deserialize, Serialize};

use crate::change::{ApplyBatch, BatchSeq, StreamEvent};
use crate::error::{ControlError, SourceError, StoreError};
use crate::event::{Event, SyncSummary};
use crate::handoff::Handoff;
use crate::job::JobRecord;
use crate::lsn::Lsn;
use crate::rowops::ApplyReport;
use std::sync::Arc;

use crate::schema::RelationSchema;
use crate::selector::Selector;
use crate::shape::ViewShape;
use crate::snapshot::SnapshotPoint;
use crate::source::{CopiedChunk, SlotReport};
use crate::store::ViewRecord;
use crate::time::Millis;
use crate::value::Key;
use crate::view::{OriginId, RelationId, UpstreamRelation, ViewDef, ViewName};

/// Identifies a caller's control request; the reply carries it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Identifies one action the machine asked a driver to carry out; the result
/// input carries it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// Identifies one subscription attempt to an origin's feed. Inputs from an
/// older epoch are stale and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

/// Deliberately broken behaviours, for proving that the simulator's checkers
/// catch them. Never set these outside such tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Acknowledge a transaction upstream as soon as it is applied, before it
    /// is durable.
    pub ack_before_durable: bool,
    /// Skip the snapshot visibility filter during the hand-off: apply every
    /// held-back transaction.
    pub skip_xid_filter: bool,
    /// Keep applying transactions to views after they are stopped.
    pub apply_while_disabled: bool,
    /// Drop the move-outs of filtered views: an update after which a row no
    /// longer matches leaves the old row in the view.
    pub skip_move_outs: bool,
    /// Trust a whole old row too far: a change whose old row was not in a
    /// filtered view is skipped for it, even when its new row moves in.
    pub skip_move_ins: bool,
    /// Keep an origin's feed open after its last realtime view stopped.
    pub keep_idle_feeds: bool,
    /// Commit a large transaction without claiming its staged parts: the
    /// store drops them, and the copies miss those changes.
    pub drop_staged_parts: bool,
    /// Leave an abandoned transaction's staged parts in the store: a later
    /// commit naming the same views claims them, and applies them twice.
    pub keep_abandoned_parts: bool,
    /// Apply the feed's changes to the chunks of a chunked copy without
    /// their snapshots' filter: a change a chunk's snapshot already holds is
    /// applied to it again.
    pub skip_chunk_filter: bool,
    /// Drop the feed's changes to the chunks already copied when a chunk
    /// lands, as if every chunk's snapshot held them: the copy misses them.
    pub drop_chunk_changes: bool,
    /// Continue a checkpointed copy after a restart without checking that
    /// the feed delivers every transaction since the checkpoint: the copy
    /// misses those the feed passed before it continued.
    pub resume_past_gap: bool,
    /// Let chunks grow past [`Config::snapshot_chunk_rows`] while little is
    /// held back.
    pub unbounded_chunk_growth: bool,
    /// Stop feeding a live view's copy while a re-copy (forced, or after a
    /// column was added) makes the next one: readers see it fall behind
    /// while its job says running.
    pub freeze_recopied_copy: bool,
    /// After a restart, take the origin's position back to the checkpoint
    /// of a live view's re-copy that continues from it (as if the feed's
    /// replay were new to every view): the old copy takes again the
    /// transactions the feed replays for the new one.
    pub reapply_resumed_span: bool,
    /// After a restart that finds a view's relation changed since its copy
    /// was made, leave its job stored as running while the feed moves on:
    /// a later restart that finds the relation as the copy knew it again
    /// attaches the stale copy over every commit it missed.
    pub keep_unattached_running: bool,
    /// After a restart, attach a stored copy whose columns have the names
    /// and types of the relation's, although the source numbers them
    /// otherwise (a column dropped and added again under its name while
    /// the engine was down): the copy keeps the old column's values.
    pub attach_by_names: bool,
    /// After a restart, attach a stored copy of some columns whatever its
    /// filter read: a column the filter reads but the view does not keep,
    /// dropped and added again under its name while the engine was down,
    /// leaves the copy with rows chosen by the old column's values.
    pub attach_ignoring_filter_columns: bool,
}

/// Tunables. The defaults suit a server process; the simulator varies them.
#[derive(Clone, Debug)]
pub struct Config {
    /// First retry delay after a failure.
    pub retry_base: Millis,
    /// Longest retry delay of a transient failure.
    pub retry_max: Millis,
    /// Shortest retry delay of a permanent failure (authentication or
    /// permission refused, relation missing, no replica identity,
    /// unsupported relation), which will not pass until someone acts; a
    /// forced `sync()` retries at once.
    pub retry_permanent: Millis,
    /// Snapshots (materializations and bootstraps) running at once.
    pub max_concurrent_snapshots: usize,
    /// Bytes of held-back changes (for views still bootstrapping) per origin
    /// before the machine pauses the feed until snapshots land.
    pub holdback_limit_bytes: usize,
    /// Row operations per store batch; a larger transaction is staged in the
    /// store in parts and applied whole by its commit batch (see
    /// [`Progress::Stage`](crate::Progress::Stage)). Default 10,000, by
    /// measurement (`flashsync bench bigtxn`, fjall, peak RSS at 1M / 3M
    /// rows in one transaction): 50,000 gave 157–160 / 205–226 MiB, 10,000
    /// 134–144 / 137–170 MiB, 5,000 153 / 152 MiB, at the same speed. Each
    /// part is about this many decoded rows held at once, several times
    /// over on its way to the store.
    pub max_batch_ops: usize,
    /// Commit xids remembered per origin for the hand-off race check.
    pub recent_commits: usize,
    /// Times a bootstrap retries a snapshot that raced a commit before failing.
    pub max_snapshot_races: u32,
    /// Rows per chunk of a realtime view's copy: a keyed view is copied a
    /// key range at a time, each at its own snapshot, while its feed keeps
    /// flowing, and its hold-back only ever holds one chunk's worth of
    /// changes. 0 copies in one piece. Needs a store whose generations take
    /// changes ([`Store::amends_generations`](crate::Store::amends_generations));
    /// drivers set 0 otherwise. Default 1,000,000, by measurement:
    /// - each chunk costs a snapshot, an index range scan and, in the fjall
    ///   store, registering its tables under the journal lock, which other
    ///   views' batches wait for. A 2M-row copy under writers (`flashsync
    ///   bench latency --rate 500 --during-copy 2000000 --chunk-rows N`,
    ///   2026-12-06) took 1.44–1.59 s in chunks of 1,000,000 against
    ///   2.35–2.79 s in chunks of 250,000, and the small view's p99 latency
    ///   meanwhile was 27–66 ms (median 40) against 45–99 ms (median 61);
    /// - without writers it is no slower (`bench snapshot --rows 3000000
    ///   --realtime`: 2.05–2.12 s against 2.11–2.21 s; 0.73–0.74 at 250,000
    ///   and 0.60 at 25,000 for 1M rows, 2026-12-05);
    /// - a chunk of that size copies in about a second, so what is held back
    ///   meanwhile stays small, and a copy interrupted after its first chunk
    ///   redoes at most a million rows.
    ///
    /// It is the most a chunk asks for. What a chunk holds back is what its
    /// table receives while it copies, so it grows with the rows' width as
    /// well as the write rate (a million rows of 1 KiB copy in about 7 s
    /// here; 16 MB/s of changes meanwhile would reach
    /// [`holdback_limit_bytes`](Self::holdback_limit_bytes), which pauses the
    /// origin's feed). So a chunk that held back more than a quarter of that
    /// limit halves the next one (down to a sixty-fourth of this), and one
    /// that held back less than a sixteenth doubles it again, up to this.
    pub snapshot_chunk_rows: u64,
    /// Checkpoint a copy in chunks after each chunk, so that a restart
    /// continues it (DESIGN §10). Needs a store that keeps generations
    /// across restarts ([`Store::resumes_generations`](crate::Store::resumes_generations));
    /// drivers turn it off for other stores. Default `true`.
    pub checkpoint_copies: bool,
    /// Record an [`AuditRecord`] for every transaction applied to a view and
    /// every copy published, drained with
    /// [`Machine::drain_audit`](crate::Machine::drain_audit). For simulators
    /// and checkers; off by default.
    pub audit: bool,
    /// Row operations handed to the store and not yet applied above which
    /// the executor stops reading feeds: the store sets the pace, and
    /// memory stays bounded however large a transaction is (the source's
    /// TCP back-pressure then reaches the server).
    pub max_ops_in_flight: usize,
    /// Most batches the executor hands the store in one apply run.
    pub apply_run: usize,
    /// Most feed events a driver forwards to the executor in one message
    /// (amortizes its channel overhead).
    pub feed_chunk: usize,
    /// Test-only deliberate bugs (only with the `planted-bugs` feature, so
    /// production builds carry none of them).
    #[cfg(feature = "planted-bugs")]
    pub bugs: InjectedBugs,
}

/// What the machine did to a view, for checkers (see [`Config::audit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditRecord {
    /// The upstream transaction `xid` ending at `end_lsn` is applied to `view`
    /// by batch `seq` (live, or replayed after a snapshot).
    Applied {
        /// The batch.
        seq: crate::change::BatchSeq,
        /// The view.
        view: crate::view::RelationId,
        /// Wire xid of the transaction.
        xid: u32,
        /// Its end LSN.
        end_lsn: Lsn,
        /// Replayed from the hold-back after a snapshot.
        replay: bool,
        /// Applied only at these keys (encoded), where the copy's chunks
        /// lacked it; `None`: wherever it changed the view. A truncate is
        /// only ever applied everywhere.
        keys: Option<Vec<Vec<u8>>>,
    },
    /// `view`'s copy was replaced by a snapshot taken at `point` — for a
    /// copy in chunks, by one snapshot per key range.
    Published {
        /// The view.
        view: crate::view::RelationId,
        /// The snapshots' visibility points, by key range.
        handoff: Handoff,
    },
    /// The changes of transaction `xid` at `keys` (encoded) went into the
    /// generation a copy in chunks is filling, between two chunks.
    Amended {
        /// The view.
        view: crate::view::RelationId,
        /// Wire xid of the transaction.
        xid: u32,
        /// Its end LSN.
        end_lsn: Lsn,
        /// The keys its applied operations touch.
        keys: Vec<Vec<u8>>,
        /// A truncate was among them (it empties the chunks copied so far).
        truncated: bool,
    },
    /// The generation of `view`'s copy in chunks was checkpointed: a crash
    /// from now on takes it back to this point, not to nothing.
    Checkpointed {
        /// The view.
        view: crate::view::RelationId,
    },
    /// After a restart, `view`'s copy continues from its last checkpoint,
    /// as copy `op`.
    Resumed {
        /// The view.
        view: crate::view::RelationId,
        /// The copy's op from now on.
        op: OpId,
    },
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retry_base: Millis(500),
            retry_max: Millis::from_secs(60),
            retry_permanent: Millis::from_secs(60),
            max_concurrent_snapshots: 4,
            holdback_limit_bytes: 64 << 20,
            max_batch_ops: 10_000,
            recent_commits: 4096,
            max_snapshot_races: 8,
            snapshot_chunk_rows: 1_000_000,
            checkpoint_copies: true,
            audit: false,
            max_ops_in_flight: 50_000,
            apply_run: 4096,
            feed_chunk: 1024,
            #[cfg(feature = "planted-bugs")]
            bugs: InjectedBugs::default(),
        }
    }
}

/// Everything that can happen to the machine.
#[derive(Debug)]
pub enum Input {
    /// Define (or redefine) a view.
    Define {
        /// Reply tag.
        request: RequestId,
        /// The definition.
        def: ViewDef,
    },
    /// `sync(selector)`; forced when `force`.
    Sync {
        /// Reply tag.
        request: RequestId,
        /// Views to sync.
        selector: Selector,
        /// Re-materialize and bypass back-off.
        force: bool,
    },
    /// `stop(selector)`: halt and disable.
    Stop {
        /// Reply tag.
        request: RequestId,
        /// Views to stop.
        selector: Selector,
    },
    /// `resume(selector)`: re-enable, then sync.
    Resume {
        /// Reply tag.
        request: RequestId,
        /// Views to resume.
        selector: Selector,
    },
    /// `forget(selector)`: remove views, their jobs, copies and upstream resources.
    Forget {
        /// Reply tag.
        request: RequestId,
        /// Views to forget.
        selector: Selector,
    },
    /// `shutdown()`.
    Shutdown {
        /// Reply tag.
        request: RequestId,
    },
    /// A [`StoreAction`] other than `Apply` finished.
    StoreDone {
        /// The action.
        op: OpId,
        /// Its outcome.
        result: Result<(), StoreError>,
    },
    /// A [`StoreAction::Apply`] finished (not necessarily durably).
    Applied {
        /// The batch.
        seq: BatchSeq,
        /// Its outcome.
        result: Result<ApplyReport, StoreError>,
    },
    /// Every batch up to `through` is durable.
    Durable {
        /// Highest durable batch.
        through: BatchSeq,
    },
    /// A [`SourceAction::Prepare`] finished.
    Prepared {
        /// The action.
        op: OpId,
        /// The relation's description.
        result: Result<RelationSchema, SourceError>,
    },
    /// A [`SourceAction::Snapshot`] finished: rows are in a new, unpublished
    /// generation (on success).
    Snapshotted {
        /// The action.
        op: OpId,
        /// The snapshot's visibility point.
        result: Result<SnapshotPoint, SourceError>,
    },
    /// A [`SourceAction::Snapshot`] with a [`ChunkRequest`] finished: the
    /// chunk's rows are in the generation (on success).
    ChunkCopied {
        /// The action.
        op: OpId,
        /// The chunk's snapshot and where it ended.
        result: Result<CopiedChunk, SourceError>,
    },
    /// A [`StoreAction::Amend`] finished.
    Amended {
        /// The action.
        op: OpId,
        /// Its outcome (conflicts included).
        result: Result<ApplyReport, StoreError>,
    },
    /// A [`StoreAction::Resume`] finished: whether the store handed the
    /// generation back (it is kept for the copy's next chunk).
    Resumed {
        /// The action.
        op: OpId,
        /// `Ok(false)`: the store kept no such copy.
        result: Result<bool, StoreError>,
    },
    /// A [`SourceAction::Subscribe`] finished.
    Subscribed {
        /// The origin.
        origin: OriginId,
        /// The attempt.
        epoch: Epoch,
        /// What the feed reported.
        result: Result<SlotReport, SourceError>,
    },
    /// The next event of a subscribed feed.
    Feed {
        /// The origin.
        origin: OriginId,
        /// The subscription.
        epoch: Epoch,
        /// The event.
        event: StreamEvent,
    },
    /// A subscribed feed broke.
    FeedLost {
        /// The origin.
        origin: OriginId,
        /// The subscription.
        epoch: Epoch,
        /// Why.
        error: SourceError,
    },
    /// A [`SourceAction::Release`] or [`SourceAction::DropFeed`] finished.
    Released {
        /// The action.
        op: OpId,
        /// Its outcome.
        result: Result<(), SourceError>,
    },
    /// The deadline from [`Machine::poll_timeout`](crate::Machine::poll_timeout) passed.
    Timer,
}

/// Store work for the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreAction {
    /// [`Store::put_view`](crate::Store::put_view).
    PutView {
        /// Result tag.
        op: OpId,
        /// The entry.
        view: ViewRecord,
    },
    /// [`Store::put_job`](crate::Store::put_job).
    PutJob {
        /// Result tag.
        op: OpId,
        /// The record.
        job: JobRecord,
    },
    /// [`Store::forget`](crate::Store::forget).
    Forget {
        /// Result tag.
        op: OpId,
        /// The view.
        relation_id: RelationId,
    },
    /// [`Store::forget_origin`](crate::Store::forget_origin).
    ForgetOrigin {
        /// Result tag.
        op: OpId,
        /// The origin.
        origin: OriginId,
    },
    /// Publish the generation filled by snapshot `op` ([`Generation::publish`](crate::Generation::publish)).
    Publish {
        /// The snapshot's op (also the result tag).
        op: OpId,
        /// The job record to write with the switch.
        job: JobRecord,
    },
    /// Apply `ops` to the generation snapshot `op` is filling, between two
    /// of its chunks ([`Generation::amend`](crate::Generation::amend));
    /// answer with [`Input::Amended`].
    Amend {
        /// The snapshot's op (also the result tag).
        op: OpId,
        /// The feed's changes to the chunks copied so far.
        ops: crate::change::ViewOps,
        /// With a job record: checkpoint the generation with it
        /// ([`Generation::checkpoint`](crate::Generation::checkpoint)) rather
        /// than only amend it.
        checkpoint: Option<JobRecord>,
    },
    /// Reopen the generation a checkpoint kept for view `id` before a
    /// restart ([`Store::resume_generation`](crate::Store::resume_generation)),
    /// and keep it for copy `op`; answer with [`Input::Resumed`].
    Resume {
        /// The copy's op (also the result tag).
        op: OpId,
        /// The view.
        id: RelationId,
        /// The schema the copy is made with.
        schema: RelationSchema,
        /// The checkpoint's last key.
        after: Key,
    },
    /// Discard the generation filled by snapshot `op`. No result input.
    Discard {
        /// The snapshot's op.
        op: OpId,
    },
    /// Answer with [`Input::StoreDone`] once every store action emitted
    /// before this one has finished. A pass starts behind a fence, so it sees
    /// every earlier write, and requests arriving meanwhile share the next pass.
    Fence {
        /// Result tag.
        op: OpId,
    },
    /// [`Store::apply`](crate::Store::apply); answer with [`Input::Applied`].
    /// Batches must be applied in the order emitted.
    Apply(ApplyBatch),
}

/// Which chunk of a copy to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRequest {
    /// Rows above this key (all rows when `None`: the first chunk, which
    /// begins the generation).
    pub after: Option<Key>,
    /// Stop at the first key boundary once this many rows are copied.
    pub rows: u64,
    /// Rows the copy already holds (the chunks before this one, those of
    /// an earlier process included when it continued from a checkpoint):
    /// for progress reports.
    pub copied: u64,
}

/// Source work for the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceAction {
    /// [`Source::prepare`](crate::Source::prepare); answer with [`Input::Prepared`].
    Prepare {
        /// Result tag.
        op: OpId,
        /// Which source.
        origin: OriginId,
        /// The relation.
        relation: UpstreamRelation,
        /// Also add it to the feed.
        feed: bool,
    },
    /// Begin a store generation for `relation_id` with the shape's local
    /// schema, run
    /// [`Source::snapshot`](crate::Source::snapshot) into it, keep the
    /// generation for a later `Publish`/`Discard`, and answer with
    /// [`Input::Snapshotted`].
    Snapshot {
        /// Result tag (and the generation's handle).
        op: OpId,
        /// Which source.
        origin: OriginId,
        /// The view.
        relation_id: RelationId,
        /// The relation.
        relation: UpstreamRelation,
        /// The view laid over the relation: what to copy, and how the copy
        /// is keyed.
        shape: Arc<ViewShape>,
        /// Copy one chunk ([`Source::copy_chunk`](crate::Source::copy_chunk))
        /// and answer with [`Input::ChunkCopied`]; a chunk after the first
        /// goes into the generation the first began. `None`: the whole
        /// relation, answered with [`Input::Snapshotted`].
        chunk: Option<ChunkRequest>,
    },
    /// [`Source::subscribe`](crate::Source::subscribe); answer with
    /// [`Input::Subscribed`], then forward events as [`Input::Feed`] until
    /// the feed breaks ([`Input::FeedLost`]) or is closed.
    Subscribe {
        /// Which source.
        origin: OriginId,
        /// The attempt.
        epoch: Epoch,
        /// Resume after this position.
        resume: Option<Lsn>,
    },
    /// Close the feed of `epoch` (no further inputs for it are wanted).
    Unsubscribe {
        /// Which source.
        origin: OriginId,
        /// The attempt.
        epoch: Epoch,
    },
    /// Pause (`paused = true`) or resume reading the feed of `epoch`.
    Flow {
        /// Which source.
        origin: OriginId,
        /// The attempt.
        epoch: Epoch,
        /// Whether to stop reading.
        paused: bool,
    },
    /// Acknowledge `lsn` on the feed of `epoch` ([`Feedback::ack`](crate::Feedback::ack)).
    Ack {
        /// Which source.
        origin: OriginId,
        /// The attempt.
        epoch: Epoch,
        /// Durable position.
        lsn: Lsn,
    },
    /// [`Source::release`](crate::Source::release); answer with [`Input::Released`].
    Release {
        /// Result tag.
        op: OpId,
        /// Which source.
        origin: OriginId,
        /// The relation.
        relation: UpstreamRelation,
    },
    /// [`Source::drop_feed`](crate::Source::drop_feed); answer with [`Input::Released`].
    DropFeed {
        /// Result tag.
        op: OpId,
        /// Which source.
        origin: OriginId,
    },
}

/// The answer to a control request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `Define` succeeded.
    Defined(RelationId),
    /// A sync pass covering the caller's views finished.
    Synced(SyncSummary),
    /// These views are stopped and disabled.
    Stopped(Vec<ViewName>),
    /// These views were re-enabled; then a pass ran.
    Resumed(SyncSummary),
    /// These views are gone; `warnings` lists upstream resources that could
    /// not be released.
    Forgotten {
        /// The views.
        views: Vec<ViewName>,
        /// What could not be cleaned up upstream.
        warnings: Vec<String>,
    },
    /// The machine shut down.
    ShutDown,
    /// The request failed.
    Failed(ControlError),
}

/// Everything the machine produces, drained with
/// [`Machine::poll_output`](crate::Machine::poll_output).
#[derive(Clone, Debug)]
pub enum Output {
    /// Store work.
    Store(StoreAction),
    /// Source work.
    Source(SourceAction),
    /// An observable event.
    Event(Event),
    /// The answer to a request.
    Reply {
        /// The request.
        request: RequestId,
        /// The answer.
        reply: Reply,
    },
}
