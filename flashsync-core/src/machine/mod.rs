//! The sans-IO sync machine.
//!
//! One input at a time goes in through [`Machine::handle`] (with the current
//! time); decisions come out through [`Machine::poll_output`]; the deadline
//! for the next [`Input::Timer`] through [`Machine::poll_timeout`]. Mutate
//! once, then drain.
//!
//! How the pieces fit:
//! - **Passes** (`pass.rs`): `sync()` requests coalesce into at most one
//!   running and one queued pass. A pass discovers the selected views, makes
//!   sure each has a job row, and starts per-view work; it ends when every
//!   view has an outcome.
//! - **Views** (`view.rs`): each view walks `Idle → Preparing → Queued →
//!   Copying → Publishing → Idle` (materialized) or `… → Live`
//!   (realtime). Failures go back to `Idle` with the job `failed` and a retry
//!   time; a timer re-runs them.
//! - **Origins** (`origin.rs`): one feed per origin, shared by its realtime
//!   views. Transactions are routed per view at `Begin`: live views apply,
//!   bootstrapping views hold back. When a snapshot lands, held transactions
//!   that the snapshot does not contain are replayed in one batch; from then
//!   on the view is live.
//! - **Progress and acks** (`batch.rs`): every batch that completes a
//!   transaction records the origin's position; a position is acknowledged
//!   upstream only after the store reports the batch durable
//!   ([`Input::Durable`]). Batches carry their origin's chain, so drivers
//!   refuse those queued behind a failed one ([`BatchGate`]).
//! - **Jobs** (`jobs.rs`) are the records users see; `route.rs` moves views
//!   between phases and decides which views take part in a feed; `control.rs`
//!   answers the control calls, `work.rs` does a view's copy and hand-off,
//!   `feed.rs` follows the feed, `backoff.rs` says when to retry.
//!
//! # A run loop
//!
//! A driver turns outputs into store and source calls and their results back
//! into inputs. This one runs everything inline over the in-memory store and
//! upstream (the tokio driver and the simulator do the same with tasks and
//! virtual time): a realtime view bootstraps, then mirrors a commit.
//!
//! ```
//! use std::collections::{BTreeMap, VecDeque};
//!
//! use flashsync_core::machine::Epoch;
//! use flashsync_core::memory::{MemoryStore, MemoryUpstream, TableIdentity};
//! use flashsync_core::*;
//! use futures::{executor::block_on, FutureExt, StreamExt};
//!
//! let up = MemoryUpstream::new();
//! up.create_table("public", "users", &[("id", "int8"), ("name", "text")], TableIdentity::PrimaryKey(vec![0]));
//! up.insert("public", "users", row![1, "ada"]);
//! let (store, source) = (MemoryStore::new(), up.source());
//! let state = block_on(store.load())?;
//! let mut m = Machine::new(Config::default(), 7, state, Timestamp(0));
//! let mut generations = BTreeMap::new();
//! let mut feed: Option<(Epoch, Subscription)> = None;
//! let mut run = |m: &mut Machine, input: Input| -> Result<(), Box<dyn std::error::Error>> {
//!     let mut inputs = VecDeque::from([input]);
//!     while let Some(input) = inputs.pop_front() {
//!         m.handle(input, Timestamp(0));
//!         while let Some(out) = m.poll_output() {
//!             let next = match out {
//!                 Output::Store(StoreAction::PutView { op, view }) => Input::StoreDone { op, result: block_on(store.put_view(&view)) },
//!                 Output::Store(StoreAction::PutJob { op, job }) => Input::StoreDone { op, result: block_on(store.put_job(&job)) },
//!                 Output::Store(StoreAction::Fence { op }) => Input::StoreDone { op, result: Ok(()) },
//!                 Output::Store(StoreAction::Publish { op, job }) => {
//!                     let g: Box<dyn Generation> = generations.remove(&op).ok_or("no generation")?;
//!                     Input::StoreDone { op, result: block_on(g.publish(&job)) }
//!                 }
//!                 Output::Store(StoreAction::Apply(batch)) => {
//!                     let seq = batch.seq;
//!                     inputs.push_back(Input::Applied { seq, result: block_on(store.apply(batch)) });
//!                     Input::Durable { through: block_on(store.persist())?.ok_or("nothing durable")? }
//!                 }
//!                 Output::Source(SourceAction::Prepare { op, relation, feed, .. }) => Input::Prepared { op, result: block_on(source.prepare(&relation, feed)) },
//!                 Output::Source(SourceAction::Snapshot { op, relation_id, relation, shape, .. }) => {
//!                     let mut g = block_on(store.begin_generation(relation_id, shape.local()))?;
//!                     let result = block_on(source.snapshot(&relation, &shape, &mut *g));
//!                     generations.insert(op, g);
//!                     Input::Snapshotted { op, result }
//!                 }
//!                 Output::Source(SourceAction::Subscribe { origin, epoch, resume }) => {
//!                     let sub = block_on(source.subscribe(resume))?;
//!                     let report = sub.report.clone();
//!                     feed = Some((epoch, sub));
//!                     Input::Subscribed { origin, epoch, result: Ok(report) }
//!                 }
//!                 Output::Source(SourceAction::Ack { lsn, .. }) => { feed.as_ref().ok_or("no feed")?.1.feedback.ack(lsn); continue }
//!                 Output::Reply { reply: Reply::Failed(e), .. } => return Err(e.into()),
//!                 _ => continue, // events, replies, discards, flow control
//!             };
//!             inputs.push_back(next);
//!         }
//!         // Hand the machine whatever the feed has ready.
//!         if let Some((epoch, sub)) = feed.as_mut() {
//!             while let Some(Some(Ok(event))) = sub.events.next().now_or_never() {
//!                 inputs.push_back(Input::Feed { origin: OriginId::new("postgres:main")?, epoch: *epoch, event });
//!             }
//!         }
//!     }
//!     Ok(())
//! };
//! let def = ViewDef::new("public", "users_live", Persistence::Realtime, "postgres:main", "public", "users")?;
//! run(&mut m, Input::Define { request: RequestId(1), def })?;
//! run(&mut m, Input::Sync { request: RequestId(2), selector: Selector::All, force: false })?;
//! up.insert("public", "users", row![2, "grace"]);
//! run(&mut m, Input::Timer)?; // any input: the loop drains the feed
//! let id = m.relation_id(&ViewName::new("public", "users_live")?).ok_or("defined")?;
//! assert_eq!(store.rows(id), vec![row![1, "ada"], row![2, "grace"]]);
//! assert_eq!(m.status(&Selector::All)[0].state, JobState::Running);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod api;
mod backoff;
mod gate;
mod origin;
mod pass;
mod view;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub use api::{
    AuditRecord, ChunkRequest, Config, Epoch, InjectedBugs, Input, OpId, Output, Reply, RequestId, SourceAction,
    StoreAction,
};
pub use gate::BatchGate;
pub use view::ViewPhase;

use crate::change::{ApplyBatch, BatchSeq, Cell, Change, Progress, RowOp, StreamEvent, ViewOps};
use crate::codec::encode_key;
use crate::error::{ControlError, SourceError, StoreError, StoreErrorKind};
use crate::event::{Event, EventKind, Phase as EventPhase};
use crate::handoff::{Handoff, Segment, Sifted};
use crate::job::{CopyCheckpoint, JobRecord, JobState, Recopy, RecopyReason};
use crate::lsn::Lsn;
use crate::rng::Rng;
use crate::rowops::ApplyReport;
use crate::schema::{Identity, RelationSchema, SourceRelId};
use crate::selector::Selector;
use crate::shape::ViewShape;
use crate::snapshot::{widen_xid, SnapshotPoint};
use crate::source::{ChunkEnd, CopiedChunk, FeedStart, SlotReport};
use crate::store::{StoredState, ViewRecord};
use crate::time::{Millis, Now, Timestamp};
use crate::value::Key;
use crate::view::{OriginId, Persistence, RelationId, ViewDef, ViewName};
use backoff::Retry;

use batch::{Flight, InFlight};
use origin::{Feed, Origin, Route, Txn};
use pass::{Outcome, Pass, Passes, Queued, Stage, Waiter, WaiterKind};
use route::{RelRoutes, RouteTable};
use view::{op_keys, ChunkStep, Chunks, CopyKind, Goal, HeldTxn, HoldBack, OldCopy, Phase, Recopying, View};

/// Counters, for tests, the simulator and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sync passes started.
    pub passes: u64,
    /// Snapshots started (materializations and bootstraps).
    pub snapshots: u64,
    /// Forced re-copies of live views whose new copy went to be published
    /// while the old one stayed current.
    pub live_recopies: u64,
    /// Re-copies of live views continued from a checkpoint after a restart,
    /// their old copy re-attached meanwhile.
    pub recopies_resumed: u64,
    /// Feed subscriptions started.
    pub subscribes: u64,
    /// Store batches emitted.
    pub batches: u64,
    /// Transactions applied (not counting duplicates skipped).
    pub commits_applied: u64,
    /// Duplicate transactions skipped on replay.
    pub duplicates_skipped: u64,
    /// Transactions skipped for a view because its snapshot already held them.
    pub filtered: u64,
    /// Snapshots retaken because they raced a commit.
    pub snapshot_races: u64,
    /// Acknowledgements emitted.
    pub acks: u64,
}

/// What an in-flight operation was for.
#[derive(Clone, Debug)]
enum Op {
    /// The store fence a pass waits behind.
    Fence,
    /// A job record write nobody waits for.
    Job,
    /// Work a control request waits for.
    Request(RequestId),
    /// Releasing upstream resources for a request; `what` names them.
    Release {
        request: RequestId,
        what: String,
        release: Release,
    },
    /// A store deletion of a forget request (a view, or an origin's
    /// position): its upstream releases wait for every one of them.
    Forgetting(RequestId),
    Prepare(RelationId),
    Snapshot(RelationId),
    Publish(RelationId),
    /// Changes going into a chunked copy's generation between two chunks
    /// (the op of the copy itself).
    Amend(RelationId),
    /// A copy's generation coming back from a checkpoint (the op of the
    /// copy itself).
    Resume(RelationId),
    /// A snapshot nobody wants any more: discard its generation when it ends.
    AbandonedSnapshot,
    /// A publish nobody waits for; the view's copy still changes.
    AbandonedPublish {
        id: RelationId,
        schema: Arc<RelationSchema>,
    },
}

/// Upstream resources a forget gives up.
#[derive(Clone, Debug)]
enum Release {
    /// The relation leaves the origin's feed (no realtime view needs it).
    Relation { origin: OriginId, relation: crate::view::UpstreamRelation },
    /// The origin's feed (slot) is dropped (no realtime view is left).
    Feed { origin: OriginId },
}

/// A control request waiting for its operations.
#[derive(Debug)]
struct PendingRequest {
    outstanding: usize,
    reply: Reply,
    warnings: Vec<String>,
    failure: Option<ControlError>,
    /// A forget's upstream releases, held until the store has forgotten
    /// what they served (see [`Machine::on_forget`]).
    releases: Vec<Release>,
    /// The forget's store deletions not yet done.
    forgetting: usize,
}

/// The sync machine. See the [module docs](self).
#[derive(Debug)]
pub struct Machine {
    cfg: Config,
    rng: Rng,
    /// The wall clock, for records users read.
    now: Timestamp,
    /// The monotonic clock, for deadlines.
    mono: Millis,
    /// `wall - mono` when the machine started: deadlines are kept as wall
    /// times of this start-anchored clock ([`Machine::clock`]), so they
    /// compare with stored `next_retry_at` values yet never jump.
    anchor: i128,
    views: BTreeMap<RelationId, View>,
    names: BTreeMap<ViewName, RelationId>,
    origins: BTreeMap<OriginId, Origin>,
    /// Per origin: which views currently take part in its feed. `None` = stale.
    routes: BTreeMap<OriginId, Option<Arc<RouteTable>>>,
    queued_views: BTreeSet<RelationId>,
    copying: usize,
    passes: Passes,
    ops: BTreeMap<OpId, Op>,
    requests: BTreeMap<RequestId, PendingRequest>,
    /// Every store batch not yet answered.
    batches: BTreeMap<BatchSeq, InFlight>,
    held_bytes: BTreeMap<OriginId, usize>,
    next_relation: u64,
    next_op: u64,
    next_batch: u64,
    next_epoch: u64,
    out: VecDeque<Output>,
    audit: Vec<AuditRecord>,
    shut_down: bool,
    /// The store refused to amend a generation: copies go in one piece.
    chunks_refused: bool,
    stats: Stats,
}

impl Machine {
    /// A machine over the state a store loaded, seeded for back-off jitter.
    pub fn new(config: Config, seed: u64, state: StoredState, now: impl Into<Now>) -> Self {
        let now = now.into();
        let mut m = Machine {
            cfg: config,
            rng: Rng::new(seed),
            now: now.wall,
            mono: now.mono,
            anchor: i128::from(now.wall.0) - i128::from(now.mono.0),
            views: BTreeMap::new(),
            names: BTreeMap::new(),
            origins: BTreeMap::new(),
            routes: BTreeMap::new(),
            queued_views: BTreeSet::new(),
            copying: 0,
            passes: Passes::default(),
            ops: BTreeMap::new(),
            requests: BTreeMap::new(),
            batches: BTreeMap::new(),
            held_bytes: BTreeMap::new(),
            next_relation: 1,
            next_op: 1,
            next_batch: 1,
            next_epoch: 1,
            out: VecDeque::new(),
            audit: Vec::new(),
            shut_down: false,
            chunks_refused: false,
            stats: Stats::default(),
        };
        m.next_batch = state.last_batch.map_or(1, |b| b.0 + 1);
        let progress: BTreeMap<OriginId, Lsn> = state.origins.into_iter().map(|p| (p.origin, p.applied)).collect();
        let schemas: BTreeMap<RelationId, RelationSchema> = state.schemas.into_iter().collect();
        let dirty: BTreeSet<RelationId> = state.dirty.into_iter().collect();
        let mut jobs: BTreeMap<RelationId, JobRecord> = state.jobs.into_iter().map(|j| (j.relation_id, j)).collect();
        let mut demote = Vec::new();
        for rec in state.views {
            let id = rec.relation_id;
            m.next_relation = m.next_relation.max(id.0 + 1);
            let origin = rec.def.origin.clone();
            m.origins
                .entry(origin.clone())
                .or_insert_with(|| Origin::new(origin.clone(), progress.get(&origin).copied()));
            m.routes.insert(origin, None);
            m.names.insert(rec.def.name.clone(), id);
            let mut job = jobs.remove(&id);
            let mut dirty = dirty.contains(&id);
            if let Some(j) = job.as_mut() {
                // A redefinition stores the reset job first, then the new
                // definition; a crash in between leaves a job of another mode:
                // reset it again, and copy the view afresh.
                let redefined = j.persistence != rec.def.persistence || j.mode != rec.def.persistence;
                if redefined {
                    j.persistence = rec.def.persistence;
                    j.mode = rec.def.persistence;
                    j.state = JobState::Idle;
                    j.slot_id = None;
                    dirty = true;
                }
                // Why the copy is made again. A reason recorded before the
                // restart and not yet paid for by a successful copy is the
                // one that made the store's marker (a conflict is recorded
                // beside it; the reset job of a redefinition carries it):
                // kept. Otherwise the marker is a large transaction a crash
                // cut short. Stored with the next job record written.
                if dirty && !j.recopy_pending() {
                    let reason = if redefined {
                        RecopyReason::Redefined
                    } else {
                        RecopyReason::CutShort {
                            detail: "the copy was found incomplete at startup: a transaction too large for one \
                                     batch did not finish before the process stopped"
                                .into(),
                        }
                    };
                    j.last_recopy = Some(Recopy { reason, at: m.now });
                }
            }
            let schema = schemas.get(&id).cloned().map(Arc::new);
            let attachable = rec.def.persistence == Persistence::Realtime
                && job.as_ref().is_some_and(|j| j.state == JobState::Running && j.enabled)
                && !dirty
                && schema.is_some()
                && progress.contains_key(&rec.def.origin);
            let mut demoted = false;
            if let (true, Some(j), Some(&applied)) = (attachable, job.as_mut(), progress.get(&rec.def.origin)) {
                // A view that resumes reflects its origin through the stored
                // position (that is what resuming from it means), though its
                // stored record may say less: batches of keepalives and of
                // changes it only skipped move its last commit seen in
                // memory without rewriting the record.
                j.last_seen_commit = j.last_seen_commit.max(Some(applied));
            }
            if let Some(j) = job.as_mut() {
                // Nothing runs until sync(); a realtime job that cannot resume
                // where it stopped will be copied again, so it is not running.
                if rec.def.persistence == Persistence::Realtime && j.state == JobState::Running && !attachable {
                    j.state = JobState::Idle;
                    demoted = true;
                }
            }
            if demoted {
                // Stored at once: the store's dirty marker may be cleared by a
                // later commit of the origin before the copy is made afresh,
                // and the job must not look resumable after another restart.
                demote.push(id);
            }
            m.views.insert(
                id,
                View { id, def: rec.def, job, schema, phase: Phase::Idle, dirty, retry_queued: false, attachable },
            );
        }
        for id in demote {
            m.persist_job(id);
        }
        m
    }

    /// Feeds one input. Neither clock of `now` goes backwards (a smaller
    /// value is treated as the last one seen).
    pub fn handle(&mut self, input: Input, now: impl Into<Now>) {
        let now = now.into();
        self.now = self.now.max(now.wall);
        self.mono = self.mono.max(now.mono);
        match input {
            Input::Define { request, def } => self.guard(request, |m| m.on_define(request, def)),
            Input::Sync { request, selector, force } => {
                self.guard(request, |m| m.enqueue(Waiter { kind: WaiterKind::Sync { request, force }, selector }))
            }
            Input::Stop { request, selector } => self.guard(request, |m| m.on_stop(request, &selector)),
            Input::Resume { request, selector } => self.guard(request, |m| m.on_resume(request, selector)),
            Input::Forget { request, selector } => self.guard(request, |m| m.on_forget(request, &selector)),
            Input::Shutdown { request } => self.on_shutdown(request),
            Input::StoreDone { op, result } => self.on_store_done(op, result),
            Input::Applied { seq, result } => self.on_applied(seq, result),
            Input::Durable { through } => self.on_durable(through),
            Input::Prepared { op, result } => self.on_prepared(op, result),
            Input::Snapshotted { op, result } => self.on_snapshotted(op, result),
            Input::ChunkCopied { op, result } => self.on_chunk_copied(op, result),
            Input::Amended { op, result } => self.on_amended(op, result),
            Input::Resumed { op, result } => self.on_resumed(op, result),
            Input::Subscribed { origin, epoch, result } => self.on_subscribed(&origin, epoch, result),
            Input::Feed { origin, epoch, event } => self.on_feed(&origin, epoch, event),
            Input::FeedLost { origin, epoch, error } => self.on_feed_lost(&origin, epoch, &error),
            Input::Released { op, result } => self.on_released(op, result),
            Input::Timer => self.on_timer(),
        }
    }

    /// The next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The deliberate bugs planted for a checker test; none unless built
    /// with the `planted-bugs` feature (then the checks fold away).
    #[inline]
    fn bugs(&self) -> InjectedBugs {
        #[cfg(feature = "planted-bugs")]
        return self.cfg.bugs;
        #[cfg(not(feature = "planted-bugs"))]
        InjectedBugs::default()
    }

    /// Now on the deadline clock: the monotonic clock, expressed as the wall
    /// time it would be had the system clock not been set since the machine
    /// started. Retry times (`next_retry_at`) are on this clock.
    pub(crate) fn clock(&self) -> Timestamp {
        Timestamp(u64::try_from(i128::from(self.mono.0) + self.anchor).unwrap_or(0))
    }

    /// A deadline-clock time on the monotonic clock.
    fn to_mono(&self, t: Timestamp) -> Millis {
        Millis(u64::try_from(i128::from(t.0) - self.anchor).unwrap_or(0))
    }

    // ----- plumbing -----------------------------------------------------

    fn guard(&mut self, request: RequestId, f: impl FnOnce(&mut Self)) {
        if self.shut_down {
            self.reply(request, Reply::Failed(ControlError::ShutDown));
        } else {
            f(self);
        }
    }

    fn op(&mut self, kind: Op) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(id, kind);
        id
    }

    /// Takes `op` out of the table if `answers` says the input that arrived
    /// answers an op of that kind; otherwise leaves it (a repeated or stray
    /// result must not discard an unrelated pending operation).
    fn take_op(&mut self, op: OpId, answers: impl Fn(&Op) -> bool) -> Option<Op> {
        if self.ops.get(&op).is_some_and(answers) {
            self.ops.remove(&op)
        } else {
            None
        }
    }

    fn reply(&mut self, request: RequestId, reply: Reply) {
        self.out.push_back(Output::Reply { request, reply });
    }

    fn store(&mut self, action: StoreAction) {
        self.out.push_back(Output::Store(action));
    }

    fn source(&mut self, action: SourceAction) {
        self.out.push_back(Output::Source(action));
    }

    fn event(&mut self, phase: EventPhase, id: Option<RelationId>, origin: Option<OriginId>, kind: EventKind) {
        let view = id.and_then(|id| self.views.get(&id)).map(|v| v.def.name.clone());
        let origin = origin.or_else(|| id.and_then(|id| self.views.get(&id)).map(|v| v.def.origin.clone()));
        self.out.push_back(Output::Event(Event { at: self.now, phase, view, relation_id: id, origin, kind }));
    }

    fn error(&mut self, phase: EventPhase, id: Option<RelationId>, origin: Option<OriginId>, message: String) {
        self.event(phase, id, origin, EventKind::Error { message });
    }

    /// Views matching `selector`, by id.
    fn select(&self, selector: &Selector) -> Vec<RelationId> {
        self.names.iter().filter(|(n, _)| selector.matches(n)).map(|(_, id)| *id).collect()
    }

    fn request_op(&mut self, request: RequestId) -> OpId {
        if let Some(p) = self.requests.get_mut(&request) {
            p.outstanding += 1;
        }
        self.op(Op::Request(request))
    }

    /// Registers a request that will be answered when its operations finish.
    fn open_request(&mut self, request: RequestId, reply: Reply) {
        self.requests.insert(
            request,
            PendingRequest {
                outstanding: 0,
                reply,
                warnings: Vec::new(),
                failure: None,
                releases: Vec::new(),
                forgetting: 0,
            },
        );
    }

    /// Answers a registered request if nothing is outstanding.
    fn settle_request(&mut self, request: RequestId) {
        let done = self.requests.get(&request).is_some_and(|p| p.outstanding == 0);
        if !done {
            return;
        }
        if let Some(p) = self.requests.remove(&request) {
            let reply = match (p.failure, p.reply) {
                (Some(e), _) => Reply::Failed(e),
                (None, Reply::Forgotten { views, mut warnings }) => {
                    warnings.extend(p.warnings);
                    Reply::Forgotten { views, warnings }
                }
                (None, reply) => reply,
            };
            self.reply(request, reply);
        }
    }

    fn finish_request_op(&mut self, request: RequestId, failure: Option<ControlError>, warning: Option<String>) {
        if let Some(p) = self.requests.get_mut(&request) {
            p.outstanding = p.outstanding.saturating_sub(1);
            if p.failure.is_none() {
                p.failure = failure;
            }
            p.warnings.extend(warning);
        }
        self.settle_request(request);
    }
}

mod batch;
mod control;
mod feed;
mod jobs;
mod read;
mod route;
mod work;

#[cfg(test)]
mod tests;
