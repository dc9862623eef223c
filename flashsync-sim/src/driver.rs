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

use flashsync_core::exec::{Executor, FeedCommand, SourceAnswer, StoreAnswer, StoreStep, Work};
use flashsync_core::machine::{Epoch, ViewPhase};
use flashsync_core::memory::{FailPoint, MemorySource};
use flashsync_core::rng::Rng;
use flashsync_core::{
    ApplyReport, BatchSeq, FeedStart, Feedback, Generation, JobState, Machine, OpId, OriginId, Output, Persistence,
    RelationId, RelationSchema, Reply, RequestId, Row, RowSink, Selector, SnapshotPoint, Source, SourceAction,
    SourceError, StoreAction, StoreError, StoreErrorKind, StreamEvent, Timestamp, UpstreamRelation, ViewDef,
};
use futures::executor::block_on;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use crate::checkers::{Checker, SnapRecord};
use crate::faults::{Fault, Plan};
use crate::store::SimStore;
use crate::trace::Trace;
use crate::upstream::{TxnId, Upstream};

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
    Prepare { op: OpId, relation: UpstreamRelation, feed: bool },
    Snapshot { op: OpId, view: RelationId, relation: UpstreamRelation, schema: RelationSchema },
    Subscribe { epoch: Epoch, resume: Option<flashsync_core::Lsn> },
    Release { op: OpId, relation: UpstreamRelation },
    DropFeed { op: OpId },
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
            next_burst: 1,
            scenario: crate::scenario::Scenario::All,
            feed_txn_open: false,
            shutting_down: None,
        };
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

    // ----- the executor ------------------------------------------------------

    /// After every call into the executor: observe what the machine did,
    /// check it, and carry out the work handed out.
    fn after_input(&mut self) {
        self.counters.inputs += 1;
        for out in self.exec.drain_tap() {
            self.observe(out);
        }
        let audit = self.exec.drain_audit();
        for a in &audit {
            self.trace.add("audit", a);
        }
        self.checker.on_audit(audit);
        self.checker.check_passes(self.exec.machine(), self.pass_base);
        while let Some(work) = self.exec.poll_work() {
            self.work(work);
        }
        self.sync_timer();
    }

    /// A machine output, as the executor took it.
    fn observe(&mut self, out: Output) {
        self.trace.add("out", &out);
        match out {
            Output::Store(StoreAction::Fence { op }) => self.checker.on_fence(op),
            Output::Store(StoreAction::Apply(batch)) => self.checker.on_batch(&batch),
            Output::Source(SourceAction::Ack { epoch, lsn, .. }) => self.checker.on_ack(lsn, epoch),
            Output::Event(event) => {
                let before = event.relation_id.and_then(|id| self.checker.def(id).cloned());
                self.checker.on_event(&event, before.as_ref());
            }
            Output::Reply { request, .. } => self.on_reply(request),
            _ => {}
        }
    }

    fn sync_timer(&mut self) {
        let t = self.exec.poll_timeout().map(|t| t.0.saturating_sub(EPOCH_MS));
        if t != self.timer_at {
            self.timer_at = t;
            if let Some(at) = t {
                let delay = at.saturating_sub(self.now);
                let inc = self.inc;
                self.schedule(delay, Ev::Timer { inc, at });
            }
        }
    }

    /// Schedules one unit of the executor's work.
    fn work(&mut self, work: Work<Pending, Box<dyn Generation>>) {
        let inc = self.inc;
        let lat = self.plan.timing.source_ms;
        match work {
            Work::Store(step) => {
                if self.store_step.is_some() {
                    self.checker
                        .report("one store step at a time", format!("{} while another is running", summary(&step)));
                }
                self.store_step = Some(step);
                let d = self.jitter(self.plan.timing.store_ms);
                self.schedule(d, Ev::StoreStep { inc });
            }
            Work::Persist => {
                let d = self.jitter(self.plan.timing.persist_ms);
                self.schedule(d, Ev::Persist { inc });
            }
            Work::Source(call) => {
                let call = match call {
                    flashsync_core::exec::SourceCall::Prepare { op, relation, feed, .. } => {
                        SourceCall::Prepare { op, relation, feed }
                    }
                    flashsync_core::exec::SourceCall::Snapshot { op, relation_id, relation, schema, .. } => {
                        SourceCall::Snapshot { op, view: relation_id, relation, schema }
                    }
                    flashsync_core::exec::SourceCall::Release { op, relation, .. } => {
                        SourceCall::Release { op, relation }
                    }
                    flashsync_core::exec::SourceCall::DropFeed { op, .. } => SourceCall::DropFeed { op },
                };
                let d = self.jitter(lat);
                self.schedule(d, Ev::Source { inc, call });
            }
            Work::Feed(FeedCommand::Open { epoch, resume, .. }) => {
                if let Some(old) = self.feed.as_ref().filter(|c| c.events.is_some()) {
                    self.checker.report(
                        "one feed at a time",
                        format!("opening the feed of epoch {} while epoch {} is still open", epoch.0, old.epoch.0),
                    );
                }
                self.feed = Some(Conn { epoch, events: None, pumping: false });
                self.feed_txn_open = false;
                let d = self.jitter(lat);
                self.schedule(d, Ev::Source { inc, call: SourceCall::Subscribe { epoch, resume } });
            }
            Work::Feed(FeedCommand::Close { epoch, .. }) => {
                if self.feed.as_ref().is_some_and(|c| c.epoch == epoch) {
                    self.feed = None;
                    self.feed_txn_open = false;
                }
            }
            Work::Feed(FeedCommand::Pause { paused, .. }) => {
                if !paused {
                    self.kick();
                }
            }
            Work::Ack { epoch, lsn, .. } => {
                let lost = self.rng.below(100) < u64::from(self.plan.rate(Fault::LostAck));
                if lost {
                    self.count_fault(Fault::LostAck);
                } else {
                    let d = self.jitter(lat);
                    self.schedule(d, Ev::Ack { inc, epoch, lsn });
                }
            }
            Work::Event(_) => {}
            Work::Reply(pending, reply) => self.replied(pending, reply),
        }
    }

    /// A reply as the machine emits it (in order with its other outputs, so
    /// the burst accounting sees passes and replies in their real order).
    fn on_reply(&mut self, request: RequestId) {
        let Some(b) = self.bursts.remove(&request) else { return };
        if let Some(passes) = self.checker.burst_reply(b) {
            self.burst_log.push((b, passes, self.now));
            if self.verbose {
                let running = self.running_views();
                eprintln!(
                    "  t={:>7.3}s storm wave {b}: every caller answered by {passes} pass(es); \
                     realtime views running: {}/{}",
                    self.now as f64 / 1000.0,
                    running.0,
                    running.1
                );
            }
        }
    }

    /// A reply reaches its caller.
    fn replied(&mut self, p: Pending, reply: Reply) {
        if p.call == "shutdown" && reply == Reply::ShutDown {
            if let Some(downtime) = self.shutting_down.take() {
                // Drained and persisted: a crash now must lose nothing.
                self.crash(true, downtime);
            }
        }
    }

    /// (running, enabled) realtime views, for progress output.
    pub fn running_views(&self) -> (usize, usize) {
        let status = self.machine().status(&Selector::All);
        let rt: Vec<_> = status.iter().filter(|j| j.persistence == Persistence::Realtime && j.enabled).collect();
        let running = rt.iter().filter(|j| j.state == JobState::Running).count();
        (running, rt.len())
    }

    /// Delivers a caller's control call.
    pub fn deliver_call(&mut self, call: Call, burst: Option<u64>) {
        if self.down {
            return;
        }
        let ids = |w: &World, sel: &Selector| -> Vec<RelationId> {
            w.machine().definitions(sel).into_iter().map(|v| v.relation_id).collect()
        };
        let define = match &call {
            Call::Define(def) => Some(def.clone()),
            Call::Sync { .. } => {
                self.counters.sync_calls += 1;
                None
            }
            Call::Stop(selector) => {
                let v = ids(self, selector);
                self.checker.on_stop(&v);
                None
            }
            Call::Resume(selector) => {
                self.counters.sync_calls += 1;
                let v = ids(self, selector);
                self.checker.on_resume(&v);
                None
            }
            Call::Forget(selector) => {
                let v = ids(self, selector);
                self.checker.on_forget_request(&v);
                None
            }
            Call::Shutdown => None,
        };
        self.trace.add("in", &call);
        let at = self.at();
        let request = self.exec.call(call.clone(), Pending { call: call.name() }, at);
        if let Some(b) = burst {
            self.bursts.insert(request, b);
        }
        // Observe first: the events of a redefinition are checked against
        // the definition they replace.
        self.after_input();
        if let Some(def) = define {
            if let Some(id) = self.machine().relation_id(&def.name) {
                self.checker.on_define(id, def);
            }
        }
    }

    // ----- store steps -------------------------------------------------------

    fn store_step(&mut self) {
        let Some(step) = self.store_step.take() else { return };
        self.trace.add("store", &summary(&step));
        let answer = match step {
            StoreStep::PutView(view) => {
                let (result, d) = self.store.put_view(&view);
                self.checker.on_durable(d);
                StoreAnswer::Done(result)
            }
            StoreStep::PutJob(job) => {
                let (result, d) = self.store.put_job(&job);
                self.checker.on_durable(d);
                StoreAnswer::Done(result)
            }
            StoreStep::Forget(relation_id) => {
                let (result, d) = self.store.forget(relation_id);
                if result.is_ok() {
                    self.checker.on_forgotten(relation_id);
                }
                self.checker.on_durable(d);
                StoreAnswer::Done(result)
            }
            StoreStep::ForgetOrigin(origin) => {
                let (result, d) = self.store.forget_origin(&origin);
                if result.is_ok() {
                    self.checker.on_forget_origin();
                }
                self.checker.on_durable(d);
                StoreAnswer::Done(result)
            }
            StoreStep::Publish { op, generation, job } => StoreAnswer::Done(match generation {
                Some(g) => {
                    let (r, d) = self.store.publish(g, &job);
                    if r.is_ok() {
                        if let Some(snap) = self.snaps.remove(&op) {
                            self.checker.on_published(&snap, job.persistence, &self.up);
                        }
                    }
                    self.checker.on_durable(d);
                    if r.is_ok() {
                        let rows = self.store.rows(job.relation_id);
                        self.check_copy_rows(job.relation_id, rows, "after publish");
                    }
                    r
                }
                None => Err(StoreError::new(
                    StoreErrorKind::NotFound,
                    "publish",
                    format!("no generation for operation {}", op.0),
                )),
            }),
            StoreStep::Discard { op, generation } => {
                self.snaps.remove(&op);
                if let Some(g) = generation {
                    if let Err(e) = self.store.discard(g) {
                        self.checker.report("store works", format!("discarding a generation failed: {e}"));
                    }
                }
                StoreAnswer::Discarded
            }
            StoreStep::Fence(op) => {
                self.checker.on_store_done(op);
                StoreAnswer::Done(Ok(()))
            }
            StoreStep::Apply(batches) => StoreAnswer::Applied(self.apply_run(batches)),
        };
        let at = self.at();
        self.exec.store_done(answer, at);
        self.after_input();
        self.check_running_views();
    }

    /// Applies a run of batches the way a store's `apply_many` does (each
    /// atomically, none after a failure), checking each copy afterwards.
    fn apply_run(&mut self, batches: Vec<flashsync_core::ApplyBatch>) -> Vec<Result<ApplyReport, StoreError>> {
        let mut results = Vec::with_capacity(batches.len());
        let mut failed = false;
        let mut touched: BTreeSet<RelationId> = BTreeSet::new();
        for batch in batches {
            let seq = batch.seq;
            let result = if failed {
                Err(StoreError::new(StoreErrorKind::Io, format!("apply batch {}", seq.0), "an earlier batch failed"))
            } else if std::mem::take(&mut self.fail_next_apply) {
                Err(StoreError::new(StoreErrorKind::Io, format!("apply batch {}", seq.0), "injected failure"))
            } else {
                self.store.apply(batch.clone())
            };
            match &result {
                Ok(_) => {
                    touched.extend(batch.views.iter().map(|v| v.relation_id));
                    touched.extend(self.checker.on_applied(&batch, &self.up));
                }
                Err(_) => {
                    failed = true;
                    self.checker.on_apply_failed(&batch);
                }
            }
            results.push(result);
        }
        for id in touched {
            let rows = self.store.rows(id);
            self.check_copy_rows(id, rows, "after an apply run");
        }
        results
    }

    fn check_copy_rows(&mut self, id: RelationId, rows: Result<Option<Vec<Row>>, StoreError>, when: &str) {
        match rows {
            Ok(rows) => self.checker.check_copy(id, rows, when),
            Err(e) => self.checker.report("store works", format!("{when}: reading view {id} failed: {e}")),
        }
    }

    /// Checks on the views the machine reports `running`, once every batch
    /// it emitted is in the store: each copy is exactly its mirror (see
    /// [`Checker::check_running`]), and a live one whose feed has passed its
    /// snapshot has no gap up to the machine's position.
    fn check_running_views(&mut self) {
        if self.down || self.shutting_down.is_some() || !self.store_idle() {
            return;
        }
        let at = self.machine().origin_progress(&self.origin).and_then(|(at, _)| at);
        let running: Vec<RelationId> = self
            .machine()
            .status(&Selector::All)
            .iter()
            .filter(|j| j.enabled && j.state == JobState::Running && j.persistence == Persistence::Realtime)
            .map(|j| j.relation_id)
            .collect();
        for id in running {
            let rows = match self.store.rows(id) {
                Ok(rows) => rows,
                Err(e) => {
                    self.checker.report("store works", format!("reading running view {id} failed: {e}"));
                    continue;
                }
            };
            let when = format!("running view in phase {}", self.machine().phase(id).map_or("unknown", ViewPhase::name));
            self.checker.check_running(id, rows, self.feed_txn_open, &when);
            if let Some(at) = at.filter(|_| self.machine().phase(id) == Some(ViewPhase::Live)) {
                self.checker.check_prefix(id, at, &self.up);
            }
        }
    }

    fn persist(&mut self) {
        if self.down {
            return;
        }
        let result = self.store.persist();
        match &result {
            Ok(Some(through)) => {
                self.checker.on_persisted(*through);
                self.checker.on_durable(crate::store::Durable::Everything);
            }
            Ok(None) => {}
            Err(e) => self.checker.report("store works", format!("persist failed: {e}")),
        }
        // The answer takes its time to reach the executor.
        let (d, inc) = (self.jitter(self.plan.timing.store_ms), self.inc);
        self.schedule(d, Ev::Persisted { inc, result });
    }

    // ----- source calls ------------------------------------------------------

    fn source_call(&mut self, call: SourceCall) {
        if self.down {
            return;
        }
        self.trace.add("source", &call);
        let answer = match call {
            SourceCall::Prepare { op, relation, feed } => {
                SourceAnswer::Prepared { op, result: block_on(self.source.prepare(&relation, feed)) }
            }
            SourceCall::Snapshot { op, view, relation, schema } => return self.snapshot(op, view, relation, schema),
            SourceCall::Subscribe { epoch, resume } => return self.subscribe(epoch, resume),
            SourceCall::Release { op, relation } => {
                SourceAnswer::Released { op, result: block_on(self.source.release(&relation)) }
            }
            SourceCall::DropFeed { op } => SourceAnswer::Released { op, result: block_on(self.source.drop_feed()) },
        };
        let at = self.at();
        self.exec.source_done(answer, at);
        self.after_input();
    }

    fn subscribe(&mut self, epoch: Epoch, resume: Option<flashsync_core::Lsn>) {
        if !self.feed.as_ref().is_some_and(|c| c.epoch == epoch && c.events.is_none()) {
            // Closed before the connection was made.
            return;
        }
        let origin = self.origin.clone();
        let at = self.at();
        match block_on(self.source.subscribe(resume)) {
            Ok(sub) => {
                if !matches!(sub.report.start, FeedStart::Existing { .. }) {
                    // Creating a slot waits for every commit already in the
                    // log to become visible; the model did so.
                    self.up.slot_created();
                }
                if let Some(c) = self.feed.as_mut() {
                    c.events = Some(sub.events);
                }
                self.exec.subscribed(origin, epoch, Ok((sub.report, sub.feedback)), at);
                self.after_input();
                self.kick();
            }
            Err(e) => {
                self.feed = None;
                self.exec.subscribed(origin, epoch, Err(e), at);
                self.after_input();
            }
        }
    }

    fn snapshot(&mut self, op: OpId, view: RelationId, relation: UpstreamRelation, schema: RelationSchema) {
        let inc = self.inc;
        let mut generation = match self.store.begin_generation(view, &schema) {
            Ok(g) => g,
            Err(e) => {
                let d = self.jitter(self.plan.timing.snapshot_ms);
                self.schedule(d, Ev::SnapshotDone { inc, op, result: Err(e.into()) });
                return;
            }
        };
        let vis = self.up.visibility();
        let mut tee = Tee { inner: &mut *generation, rows: Vec::new() };
        let result = block_on(self.source.snapshot(&relation, &schema, &mut tee));
        let rows = std::mem::take(&mut tee.rows);
        let slow = self.rng.below(100) < u64::from(self.plan.rate(Fault::SlowSnapshot));
        let d = if slow {
            self.count_fault(Fault::SlowSnapshot);
            300 + self.jitter(2500)
        } else {
            self.jitter(self.plan.timing.snapshot_ms)
        };
        match result {
            Ok(point) => {
                self.counters.snapshots += 1;
                let table =
                    crate::upstream::TABLES.iter().map(|(t, _)| *t).find(|t| *t == relation.table).unwrap_or("unknown");
                let rec = SnapRecord { view, table, point: point.clone(), vis };
                self.checker.check_snapshot_rows(&rec, rows, &self.up);
                self.snaps.insert(op, rec);
                self.snap_generations.insert(op, generation);
                self.schedule(d, Ev::SnapshotDone { inc, op, result: Ok(point) });
            }
            Err(e) => {
                if let Err(de) = self.store.discard(generation) {
                    self.checker.report("store works", format!("discarding a failed snapshot's generation: {de}"));
                }
                self.schedule(d, Ev::SnapshotDone { inc, op, result: Err(e) });
            }
        }
    }

    // ----- the feed ----------------------------------------------------------

    /// Wakes the feed reader if it is idle (new upstream events may be there).
    pub fn kick(&mut self) {
        let inc = self.inc;
        let lat = self.plan.timing.feed_ms;
        let stall = self.plan.rate(Fault::FeedStall);
        if self.exec.is_feed_paused(&self.origin) {
            return;
        }
        let Some(c) = self.feed.as_mut() else { return };
        if c.events.is_none() || c.pumping {
            return;
        }
        c.pumping = true;
        let epoch = c.epoch;
        let mut d = self.rng.below(lat + 1);
        if self.rng.below(100) < u64::from(stall) {
            d += 50 + self.rng.below(500);
            self.count_fault(Fault::FeedStall);
        }
        self.schedule(d, Ev::Pump { inc, epoch });
    }

    fn pump(&mut self, epoch: Epoch) {
        let chunk = 1 + self.rng.below(self.plan.timing.feed_chunk);
        let paused = self.exec.is_feed_paused(&self.origin);
        let mut got: Vec<Result<StreamEvent, SourceError>> = Vec::new();
        let mut ended = false;
        {
            let Some(c) = self.feed.as_mut().filter(|c| c.epoch == epoch) else { return };
            c.pumping = false;
            if paused {
                return;
            }
            let Some(events) = c.events.as_mut() else { return };
            for _ in 0..chunk {
                match events.next().now_or_never() {
                    Some(Some(e)) => {
                        let err = e.is_err();
                        got.push(e);
                        if err {
                            ended = true;
                            break;
                        }
                    }
                    Some(None) => {
                        got.push(Err(SourceError::connection("the feed ended")));
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            if ended {
                c.events = None;
            }
        }
        let any = !got.is_empty();
        let origin = self.origin.clone();
        for e in got {
            if self.down || self.feed.as_ref().is_none_or(|c| c.epoch != epoch) {
                break;
            }
            let at = self.at();
            match e {
                Ok(event) => {
                    match &event {
                        StreamEvent::Begin { .. } => self.feed_txn_open = true,
                        StreamEvent::Commit { .. } => self.feed_txn_open = false,
                        _ => {}
                    }
                    self.trace.add("in", &event);
                    self.exec.feed_event(&origin, epoch, event, at);
                }
                Err(error) => {
                    self.feed_txn_open = false;
                    self.trace.add("in", &error);
                    self.exec.feed_lost(origin.clone(), epoch, error, at);
                }
            }
            self.after_input();
        }
        if any && !ended {
            self.kick();
        }
    }

    // ----- faults on the local side -----------------------------------------

    /// Counts an injected fault.
    pub fn count_fault(&mut self, f: Fault) {
        *self.counters.faults.entry(f.name()).or_default() += 1;
    }

    /// The local process dies: the executor, the machine and everything in
    /// flight are gone; the store keeps what was durable (or, with `lose`
    /// false, happens to keep everything). It restarts after `downtime`.
    pub fn crash(&mut self, lose: bool, downtime: u64) {
        self.trace.add("crash", &lose);
        self.shutting_down = None;
        self.counters.crashes += 1;
        self.accumulate_stats();
        self.inc += 1;
        self.down = true;
        self.store_step = None;
        self.timer_at = None;
        self.snap_generations.clear();
        self.snaps.clear();
        // The connection dies with the process.
        self.feed = None;
        self.feed_txn_open = false;
        self.counters.lost_requests += self.exec.waiting() as u64;
        self.bursts.clear();
        if let Err(e) = self.store.crash(lose) {
            self.checker.report("store works", format!("crash and reopen failed: {e}"));
        }
        self.checker.on_crash(lose);
        self.schedule(downtime, Ev::Restart);
    }

    fn accumulate_stats(&mut self) {
        let s = self.exec.machine().stats();
        self.dead_stats.passes += s.passes;
        self.dead_stats.commits_applied += s.commits_applied;
    }

    /// Passes and commits over every incarnation.
    pub fn total_stats(&self) -> (u64, u64) {
        let s = self.machine().stats();
        (self.dead_stats.passes + s.passes, self.dead_stats.commits_applied + s.commits_applied)
    }

    /// A clean shutdown: the executor drains the store and persists; once it
    /// answers, the process stops (losing whatever was not durable: nothing
    /// should be) and restarts after `downtime`.
    pub fn clean_restart(&mut self, downtime: u64) {
        if self.down || self.shutting_down.is_some() {
            return;
        }
        self.shutting_down = Some(downtime);
        self.deliver_call(Call::Shutdown, None);
    }

    fn restart(&mut self) {
        if !self.down {
            return;
        }
        let state = match self.store.load() {
            Ok(s) => s,
            Err(e) => {
                self.checker.report("store works", format!("load after restart failed: {e}"));
                return;
            }
        };
        let disabled: BTreeSet<RelationId> = state.jobs.iter().filter(|j| !j.enabled).map(|j| j.relation_id).collect();
        let defs: BTreeMap<RelationId, ViewDef> = state.views.iter().map(|v| (v.relation_id, v.def.clone())).collect();
        self.trace.add("restart", &state);
        for p in &state.origins {
            self.checker.on_loaded_progress(p.applied);
        }
        let seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(self.inc);
        self.exec = executor(&self.plan, seed, state, self.now);
        self.pass_base = 0;
        self.down = false;
        self.checker.on_restart(disabled, defs);
        // Crash consistency: every copy is what was durable.
        for id in self.checker.mirrored() {
            let rows = self.store.rows(id);
            self.check_copy_rows(id, rows, "after restart");
        }
        self.after_input();
        // The application calls sync() on startup.
        self.deliver_call(Call::Sync { selector: Selector::All, force: false }, None);
    }

    /// Makes the next `n` calls of `point` fail.
    pub fn fail_calls(&mut self, point: FailPoint, n: u32) {
        self.up.db.fail_next(point, n);
    }
}
