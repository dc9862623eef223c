//! The virtual-time driver: runs the production [`Executor`] (and through it
//! the production [`Machine`]) and does its work against the simulated
//! upstream and the store, one event at a time, in an order the seed decides.
//!
//! What each action means (store ordering, apply runs, fences, generations,
//! the persist contract, feed slots, back-pressure, the shutdown drain) is
//! the executor's, exactly as under the tokio driver. This module only
//! decides *when* things happen:
//!
//! - each store step the executor hands out runs after a seeded delay; a
//!   persist runs some time after it is asked for, and its answer arrives
//!   later still;
//! - source calls (prepare, snapshot, subscribe, release, drop feed) each take
//!   their own random time, so they complete in any order;
//! - feed events arrive in order per subscription, a few at a time, with
//!   random gaps; acknowledgements go out through the subscription's
//!   `Feedback` after a delay (or get lost);
//! - the machine's timer fires at `poll_timeout`.
//!
//! Virtual time jumps from one event to the next; events at the same instant
//! run in the order they were scheduled. Nothing reads a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flashsync_core::exec::{Executor, SourceAnswer, StoreStep};
use flashsync_core::machine::Epoch;
use flashsync_core::memory::MemorySource;
use flashsync_core::rng::Rng;
use flashsync_core::{
    BatchSeq, Feedback, Generation, Machine, OpId, OriginId, Persistence, RelationId, RequestId, Row, RowSink,
    Selector, SnapshotPoint, SourceError, StoreError, StoreErrorKind, StreamEvent, Timestamp, UpstreamRelation,
    ViewDef, ViewShape,
};
use futures::stream::BoxStream;

use crate::checkers::{Checker, SnapRecord};
use crate::faults::{Fault, Plan};
use crate::store::SimStore;
use crate::trace::Trace;
use crate::upstream::{TxnId, Upstream};

mod lifecycle;
mod network;
mod store_steps;
mod work;

pub use flashsync_core::exec::Call;

/// The executor the simulator runs: the production one.
pub(crate) type SimExec = Executor<Pending, Box<dyn Generation>, Box<dyn Feedback>>;

/// Virtual time zero, as a wall-clock timestamp (2025-01-01T00:00:00Z), so
/// job records carry plausible dates.
pub const EPOCH_MS: u64 = 1_735_689_600_000;

/// Aims a scheduled control call at whichever incarnation is up when it
/// arrives (callers that retry across restarts).
pub const ANY_INCARNATION: u64 = u64::MAX;

/// A source call waiting for its (random) completion time.
#[derive(Debug)]
pub(crate) enum SourceCall {
    Prepare {
        op: OpId,
        relation: UpstreamRelation,
        feed: bool,
    },
    Snapshot {
        op: OpId,
        view: RelationId,
        relation: UpstreamRelation,
        shape: Arc<ViewShape>,
        chunk: Option<flashsync_core::machine::ChunkRequest>,
    },
    Subscribe {
        epoch: Epoch,
        resume: Option<flashsync_core::Lsn>,
    },
    Release {
        op: OpId,
        relation: UpstreamRelation,
    },
    DropFeed {
        op: OpId,
    },
}

/// Something scheduled to happen.
#[derive(Debug)]
pub(crate) enum Ev {
    /// The workload acts.
    Tick,
    /// A keepalive from the origin.
    Keepalive,
    /// A caller's control call arrives (for the incarnation it was aimed at).
    Control {
        inc: u64,
        call: Call,
        burst: Option<u64>,
    },
    /// The store step handed out runs.
    StoreStep {
        inc: u64,
    },
    /// The persist asked for runs.
    Persist {
        inc: u64,
    },
    /// The persist's answer reaches the executor.
    Persisted {
        inc: u64,
        result: Result<Option<BatchSeq>, StoreError>,
    },
    Source {
        inc: u64,
        call: SourceCall,
    },
    SnapshotDone {
        inc: u64,
        op: OpId,
        result: Result<SnapshotPoint, SourceError>,
    },
    ChunkDone {
        inc: u64,
        op: OpId,
        result: Result<flashsync_core::CopiedChunk, SourceError>,
    },
    Pump {
        inc: u64,
        epoch: Epoch,
    },
    Ack {
        inc: u64,
        epoch: Epoch,
        lsn: flashsync_core::Lsn,
    },
    Timer {
        inc: u64,
        at: u64,
    },
    /// A logged commit becomes visible to snapshots.
    Visible {
        xid: u64,
    },
    /// An open transaction does more work, or commits.
    TxnStep {
        txn: TxnId,
        commit: bool,
    },
    /// The origin comes back online.
    Online,
    /// The replication connection drops (during a storm).
    FlapFeed,
    /// The liveness phase's `sync()` calls (forced for materialized views).
    LivenessSync,
    /// The local process starts again after a crash.
    Restart,
    /// The local process dies, at a moment a fault aimed for (for the
    /// incarnation it was aimed at).
    Crash {
        inc: u64,
        /// Whether what was not durable is lost.
        lose: bool,
    },
}

/// A control request waiting for its reply.
#[derive(Debug)]
pub(crate) struct Pending {
    pub call: &'static str,
}

/// The feed connection, as the simulated network holds it.
struct Conn {
    epoch: Epoch,
    events: Option<BoxStream<'static, Result<StreamEvent, SourceError>>>,
    pumping: bool,
}

/// Counters for the report.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Steps (events processed).
    pub steps: u64,
    /// Inputs handed to the machine.
    pub inputs: u64,
    /// `sync()` calls delivered (incl. resumes).
    pub sync_calls: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Crashes and restarts.
    pub crashes: u64,
    /// Passes run by all incarnations.
    pub passes: u64,
    /// Transactions applied by all incarnations.
    pub commits_applied: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Control requests lost to crashes.
    pub lost_requests: u64,
}

/// Everything one simulation run holds.
pub(crate) struct World {
    pub seed: u64,
    pub now: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    next_seq: u64,
    pub plan: Plan,
    pub exec: SimExec,
    /// Bumped by every crash; events of an older incarnation are ignored.
    pub inc: u64,
    /// The local process is down (between a crash and its restart).
    pub down: bool,
    pub store: SimStore,
    pub up: Upstream,
    source: MemorySource,
    pub origin: OriginId,
    feed: Option<Conn>,
    /// The store step the executor handed out, waiting for its time.
    store_step: Option<StoreStep<Box<dyn Generation>>>,
    /// Inject a failure into the next apply.
    pub fail_next_apply: bool,
    /// Generations filled by snapshots whose answer is still on its way.
    snap_generations: BTreeMap<OpId, Box<dyn Generation>>,
    snaps: BTreeMap<OpId, SnapRecord>,
    timer_at: Option<u64>,
    pub rng: Rng,
    pub checker: Checker,
    /// Follows every view through the changes the store reports.
    pub followed: crate::checkers::FeedMirror,
    pub trace: Trace,
    pub counters: Counters,
    /// The machine's pass counter when this incarnation started (always 0).
    pass_base: u64,
    /// Stats of machines that crashed, added to the report.
    dead_stats: flashsync_core::machine::Stats,
    pub offline_until: Option<u64>,
    /// Log for humans (stderr), when verbose.
    pub verbose: bool,
    /// Completed bursts: (burst, passes, time).
    pub burst_log: Vec<(u64, u64, u64)>,
    /// The burst of each request still unanswered.
    bursts: BTreeMap<RequestId, u64>,
    /// Bursts scheduled and not yet started: id -> calls.
    pub burst_sizes: BTreeMap<u64, usize>,
    /// Every definition the workload has used, for churn.
    pub defs_used: Vec<ViewDef>,
    /// The liveness phase: the workload stops acting.
    pub liveness: bool,
    /// Crashes aimed at a live view's re-copy once it has a checkpoint.
    recopy_crashes: u32,
    /// A crash aimed that way, armed by this incarnation for this view: it
    /// fires once a batch changes the view's old copy, and loses nothing
    /// (as after a journal rotation), so the old copy holds a transaction
    /// the checkpoint lacks, which the feed replays for the new copy after
    /// the restart.
    pub(crate) recopy_crash: Option<(u64, RelationId)>,
    /// An `ALTER TABLE` waiting for the transactions that touched its table.
    pub(crate) pending_alter: Option<(&'static str, crate::workload::Alter)>,
    /// The draws about columns dropped and added again (a stream of their
    /// own: adding them moved no other draw of a seed), on the seeds that
    /// add dropped columns again at all.
    pub(crate) readds: Option<Rng>,
    pub next_burst: u64,
    /// The scenario being run.
    pub scenario: crate::scenario::Scenario,
    /// The machine has been handed a feed transaction's `Begin` and not yet
    /// its `Commit` (the feed is in the middle of a transaction).
    feed_txn_open: bool,
    /// A clean shutdown is draining: restart after this downtime once the
    /// executor answers it. What the machine reports meanwhile no longer
    /// describes a running system.
    shutting_down: Option<u64>,
}

/// Wraps a generation to see the rows a snapshot writes.
struct Tee<'a> {
    inner: &'a mut dyn Generation,
    rows: Vec<Row>,
}

#[async_trait::async_trait]
impl RowSink for Tee<'_> {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        self.rows.extend(rows.iter().cloned());
        self.inner.write(rows).await
    }
}

/// A store step, for traces and reports.
fn summary<G>(step: &StoreStep<G>) -> String {
    match step {
        StoreStep::PutView(v) => format!("put view {}", v.relation_id),
        StoreStep::PutJob(j) => format!("put job {} {:?}", j.relation_id, j.state),
        StoreStep::Forget(id) => format!("forget {id}"),
        StoreStep::ForgetOrigin(o) => format!("forget origin {o}"),
        StoreStep::Publish { op, generation, .. } => format!("publish {} (kept: {})", op.0, generation.is_some()),
        StoreStep::Discard { op, .. } => format!("discard {}", op.0),
        StoreStep::Amend { op, ops, checkpoint, .. } => {
            let what = if checkpoint.is_some() { "checkpoint" } else { "amend" };
            format!("{what} {} ({} ops)", op.0, ops.ops.len())
        }
        StoreStep::Resume { id, .. } => format!("resume {id}"),
        StoreStep::Fence(op) => format!("fence {}", op.0),
        StoreStep::Apply(run) => {
            let seqs: Vec<u64> = run.iter().map(|b| b.seq.0).collect();
            format!("apply {seqs:?}")
        }
    }
}

/// A new executor over a new machine.
fn executor(plan: &Plan, seed: u64, state: flashsync_core::StoredState, now: u64) -> SimExec {
    let at = Timestamp(EPOCH_MS + now);
    let mut exec = Executor::new(Machine::new(plan.config.clone(), seed, state, at), at);
    exec.set_tap(true);
    exec.plant(plan.exec_bugs);
    exec.set_capture(plan.capture);
    exec
}

impl World {
    pub fn new(seed: u64, plan: Plan, store: SimStore, up: Upstream, machine_seed: u64) -> Result<World, StoreError> {
        let state = store.load()?;
        let exec = executor(&plan, machine_seed, state, 0);
        up.db.set_replay_from_confirmed(plan.replay_from_confirmed);
        let source = up.db.source();
        let origin = OriginId::new(crate::ORIGIN)
            .map_err(|e| StoreError::new(StoreErrorKind::Invalid, "origin", e.to_string()))?;
        let mut w = World {
            seed,
            now: 0,
            queue: BTreeMap::new(),
            next_seq: 0,
            plan,
            exec,
            inc: 0,
            down: false,
            store,
            up,
            source,
            origin,
            feed: None,
            store_step: None,
            fail_next_apply: false,
            snap_generations: BTreeMap::new(),
            snaps: BTreeMap::new(),
            timer_at: None,
            rng: Rng::new(seed ^ 0x7469_6d69_6e67),
            checker: Checker::default(),
            followed: Default::default(),
            trace: Trace::default(),
            counters: Counters::default(),
            pass_base: 0,
            dead_stats: Default::default(),
            offline_until: None,
            verbose: false,
            burst_log: Vec::new(),
            bursts: BTreeMap::new(),
            burst_sizes: BTreeMap::new(),
            defs_used: Vec::new(),
            liveness: false,
            recopy_crashes: 0,
            recopy_crash: None,
            pending_alter: None,
            readds: None,
            next_burst: 1,
            scenario: crate::scenario::Scenario::All,
            feed_txn_open: false,
            shutting_down: None,
        };
        w.checker.on_start(w.exec.machine());
        w.after_input();
        Ok(w)
    }

    /// The machine, to read its state.
    pub fn machine(&self) -> &Machine {
        self.exec.machine()
    }

    // ----- the event queue ---------------------------------------------------

    pub fn schedule(&mut self, delay: u64, ev: Ev) {
        let at = self.now.saturating_add(delay);
        self.queue.insert((at, self.next_seq), ev);
        self.next_seq += 1;
    }

    /// Same as [`World::schedule`]; reads better for storm plans.
    pub fn queue_at(&mut self, delay: u64, ev: Ev) {
        self.schedule(delay, ev);
    }

    /// Whether every store action emitted so far has run.
    pub fn store_idle(&self) -> bool {
        self.store_step.is_none() && !self.exec.has_applies_pending()
    }

    /// A random delay in `0..=max`.
    pub fn jitter(&mut self, max: u64) -> u64 {
        self.rng.below(max + 1)
    }

    /// Runs the next event; `false` when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some(((at, _), ev)) = self.queue.pop_first() else {
            return false;
        };
        self.now = self.now.max(at);
        self.counters.steps += 1;
        self.run(ev);
        true
    }

    /// Whether any event of the current incarnation other than workload
    /// ticks and keepalives is pending.
    pub fn busy(&self) -> bool {
        self.queue.values().any(|e| !matches!(e, Ev::Tick | Ev::Keepalive))
    }

    fn at(&self) -> Timestamp {
        Timestamp(EPOCH_MS + self.now)
    }

    fn run(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => crate::workload::tick(self),
            Ev::Keepalive => crate::workload::keepalive(self),
            Ev::Control { inc, call, burst } if (inc == self.inc || inc == ANY_INCARNATION) && !self.down => {
                if let Some(n) = burst.and_then(|b| self.burst_sizes.remove(&b)) {
                    self.checker.burst_start(burst.unwrap_or_default(), n);
                    self.checker.count_burst_calls(n as u64);
                }
                self.deliver_call(call, burst);
            }
            Ev::StoreStep { inc } if inc == self.inc => self.store_step(),
            Ev::Persist { inc } if inc == self.inc => self.persist(),
            Ev::Persisted { inc, result } if inc == self.inc && !self.down => {
                self.trace.add("persisted", &result);
                let at = self.at();
                self.exec.persisted(result, at);
                self.after_input();
            }
            Ev::Source { inc, call } if inc == self.inc => self.source_call(call),
            Ev::SnapshotDone { inc, op, result } if inc == self.inc && !self.down => {
                let result = match result {
                    Ok(point) => match self.snap_generations.remove(&op) {
                        Some(g) => Ok((point, g)),
                        None => Err(SourceError::new(
                            flashsync_core::SourceErrorKind::Sink,
                            "the snapshot's generation went missing",
                        )),
                    },
                    Err(e) => Err(e),
                };
                self.trace.add("snapshotted", &(op, result.as_ref().map(|(p, _)| p)));
                let at = self.at();
                self.exec.source_done(SourceAnswer::Snapshotted { op, result }, at);
                self.after_input();
            }
            Ev::ChunkDone { inc, op, result } if inc == self.inc && !self.down => {
                let result = match result {
                    Ok(chunk) => match self.snap_generations.remove(&op) {
                        Some(g) => Ok((chunk, g)),
                        None => Err(SourceError::new(
                            flashsync_core::SourceErrorKind::Sink,
                            "the chunk's generation went missing",
                        )),
                    },
                    Err(e) => Err(e),
                };
                self.trace.add("chunk copied", &(op, result.as_ref().map(|(c, _)| c)));
                let at = self.at();
                self.exec.source_done(SourceAnswer::ChunkCopied { op, result }, at);
                self.after_input();
            }
            Ev::Pump { inc, epoch } if inc == self.inc => self.pump(epoch),
            Ev::Ack { inc, epoch, lsn } if inc == self.inc => {
                if let Some(feedback) = self.exec.feedback(&self.origin, epoch) {
                    feedback.ack(lsn);
                }
            }
            Ev::Timer { inc, at } if inc == self.inc && self.timer_at == Some(at) && !self.down => {
                self.timer_at = None;
                self.trace.add("in", &"timer");
                let now = self.at();
                self.exec.timer(now);
                self.after_input();
            }
            Ev::Visible { xid } => {
                self.trace.add("visible", &xid);
                self.up.make_visible(xid);
            }
            Ev::TxnStep { txn, commit } => crate::workload::txn_step(self, txn, commit),
            Ev::Online if self.offline_until.is_some_and(|t| t <= self.now) => {
                self.trace.add("online", &self.now);
                self.up.db.set_offline(false);
                self.offline_until = None;
            }
            Ev::Restart => self.restart(),
            Ev::Crash { inc, lose } if inc == self.inc && !self.down && !self.liveness => {
                let downtime = 10 + self.jitter(300);
                self.crash(lose, downtime);
            }
            Ev::LivenessSync => {
                if self.down || self.shutting_down.is_some() {
                    self.schedule(5, Ev::LivenessSync);
                } else {
                    self.deliver_call(Call::Sync { selector: Selector::All, force: false }, None);
                    let materialized: BTreeSet<flashsync_core::ViewName> = self
                        .checker
                        .defs()
                        .values()
                        .filter(|d| d.persistence == Persistence::Materialized)
                        .map(|d| d.name.clone())
                        .collect();
                    if !materialized.is_empty() {
                        let selector = Selector::Names(materialized);
                        self.deliver_call(Call::Sync { selector, force: true }, None);
                    }
                }
            }
            Ev::FlapFeed if !self.liveness => {
                self.trace.add("flap", &self.now);
                self.count_fault(Fault::CutFeed);
                self.up.db.cut_feed();
                self.kick();
            }
            // Events of a crashed incarnation.
            _ => {}
        }
    }
}
