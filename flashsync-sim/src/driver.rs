//! The virtual-time driver: runs the production [`Machine`] and carries out
//! its actions against the simulated upstream and the store, one event at a
//! time, in an order the seed decides.
//!
//! It does what the tokio driver (`flashsync::driver`) does, with the same
//! ordering guarantees and no others:
//!
//! - store actions run strictly in emission order (one worker), each after a
//!   seeded delay, including `Fence`; `Snapshot` begins a store generation
//!   and runs the source's snapshot into it, keeping the generation for the
//!   `Publish` or `Discard` that follows; a persister makes applied batches
//!   durable some time after they land and reports `Input::Durable`;
//! - source calls (prepare, snapshot, subscribe, release, drop feed) each take
//!   their own random time, so they complete in any order;
//! - feed events arrive in order per subscription, a few at a time, with
//!   random gaps; acknowledgements go out through the subscription's
//!   `Feedback` after a delay (or get lost);
//! - the machine's timer fires at `poll_timeout`.
//!
//! Virtual time jumps from one event to the next; events at the same instant
//! run in the order they were scheduled. Nothing reads a clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use flashsync_core::machine::{BatchGate, Epoch, ViewPhase};
use flashsync_core::memory::{FailPoint, MemorySource};
use flashsync_core::rng::Rng;
use flashsync_core::{
    FeedStart, Generation, Input, JobState, Machine, OpId, OriginId, Output, Persistence, RelationId, RelationSchema,
    Reply, RequestId, Row, RowSink, Selector, SnapshotPoint, Source, SourceAction, SourceError, StoreAction,
    StoreError, StoreErrorKind, StreamEvent, Subscription, Timestamp, UpstreamRelation, ViewDef,
};
use futures::executor::block_on;
use futures::{FutureExt, StreamExt};

use crate::checkers::{Checker, SnapRecord};
use crate::faults::{Fault, Plan};
use crate::store::SimStore;
use crate::trace::Trace;
use crate::upstream::{TxnId, Upstream};

/// Virtual time zero, as a wall-clock timestamp (2025-01-01T00:00:00Z), so
/// job records carry plausible dates.
pub const EPOCH_MS: u64 = 1_735_689_600_000;

/// Aims a scheduled control call at whichever incarnation is up when it
/// arrives (callers that retry across restarts).
pub const ANY_INCARNATION: u64 = u64::MAX;

/// A control call from a caller, before it gets a request id.
#[derive(Clone, Debug)]
pub enum Call {
    /// `define`.
    Define(ViewDef),
    /// `sync` / forced sync.
    Sync {
        /// Which views.
        selector: Selector,
        /// Forced.
        force: bool,
    },
    /// `stop`.
    Stop(Selector),
    /// `resume`.
    Resume(Selector),
    /// `forget`.
    Forget(Selector),
    /// `shutdown`.
    Shutdown,
}

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
    StoreStep {
        inc: u64,
    },
    Persist {
        inc: u64,
    },
    Durable {
        inc: u64,
        through: flashsync_core::BatchSeq,
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
    pub burst: Option<u64>,
}

/// The feed connection as the driver holds it.
struct FeedSlot {
    epoch: Epoch,
    sub: Option<Subscription>,
    paused: bool,
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
    pub machine: Machine,
    /// Bumped by every crash; events of an older incarnation are ignored.
    pub inc: u64,
    /// The local process is down (between a crash and its restart).
    pub down: bool,
    pub store: SimStore,
    pub up: Upstream,
    source: MemorySource,
    pub origin: OriginId,
    feed: Option<FeedSlot>,
    store_q: VecDeque<StoreAction>,
    store_busy: bool,
    persist_scheduled: bool,
    /// Inject a failure into the next apply.
    pub fail_next_apply: bool,
    generations: BTreeMap<OpId, Box<dyn Generation>>,
    /// Refuses batches queued behind a failed one (as every driver does).
    gate: BatchGate,
    snaps: BTreeMap<OpId, SnapRecord>,
    pub requests: BTreeMap<RequestId, Pending>,
    next_request: u64,
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
    /// The machine was shut down (a clean restart is draining the store):
    /// what it reports no longer describes a running system.
    shut_down: bool,
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

impl World {
    pub fn new(seed: u64, plan: Plan, store: SimStore, up: Upstream, machine_seed: u64) -> Result<World, StoreError> {
        let state = store.load()?;
        let machine = Machine::new(plan.config.clone(), machine_seed, state, Timestamp(EPOCH_MS));
        up.db.set_replay_from_confirmed(plan.replay_from_confirmed);
        let source = up.db.source();
        let origin = OriginId::new(crate::ORIGIN)
            .map_err(|e| StoreError::new(StoreErrorKind::Invalid, "origin", e.to_string()))?;
        Ok(World {
            seed,
            now: 0,
            queue: BTreeMap::new(),
            next_seq: 0,
            plan,
            machine,
            inc: 0,
            down: false,
            store,
            up,
            source,
            origin,
            feed: None,
            store_q: VecDeque::new(),
            store_busy: false,
            persist_scheduled: false,
            fail_next_apply: false,
            generations: BTreeMap::new(),
            gate: BatchGate::default(),
            snaps: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_request: 1,
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
            burst_sizes: BTreeMap::new(),
            defs_used: Vec::new(),
            liveness: false,
            next_burst: 1,
            scenario: crate::scenario::Scenario::All,
            feed_txn_open: false,
            shut_down: false,
        })
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
        self.store_q.is_empty()
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
            Ev::Durable { inc, through } if inc == self.inc => self.deliver(Input::Durable { through }),
            Ev::Source { inc, call } if inc == self.inc => self.source_call(call),
            Ev::SnapshotDone { inc, op, result } if inc == self.inc => self.deliver(Input::Snapshotted { op, result }),
            Ev::Pump { inc, epoch } if inc == self.inc => self.pump(epoch),
            Ev::Ack { inc, epoch, lsn } if inc == self.inc => {
                if let Some(f) = self.feed.as_ref().filter(|f| f.epoch == epoch) {
                    if let Some(sub) = &f.sub {
                        sub.feedback.ack(lsn);
                    }
                }
            }
            Ev::Timer { inc, at } if inc == self.inc && self.timer_at == Some(at) => {
                self.timer_at = None;
                self.deliver(Input::Timer);
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
                if self.down {
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

    // ----- the machine -------------------------------------------------------

    /// Hands the machine one input and carries out what comes out.
    pub fn deliver(&mut self, input: Input) {
        if self.down {
            return;
        }
        self.trace.add("in", &input);
        self.counters.inputs += 1;
        let done = match &input {
            Input::StoreDone { op, .. } => Some(*op),
            _ => None,
        };
        self.machine.handle(input, Timestamp(EPOCH_MS + self.now));
        if let Some(op) = done {
            self.checker.on_store_done(op);
        }
        self.dispatch();
        let audit = self.machine.drain_audit();
        for a in &audit {
            self.trace.add("audit", a);
        }
        self.checker.on_audit(audit);
        self.checker.check_passes(&self.machine, self.pass_base);
        self.sync_timer();
    }

    fn sync_timer(&mut self) {
        let t = self.machine.poll_timeout().map(|t| t.0.saturating_sub(EPOCH_MS));
        if t != self.timer_at {
            self.timer_at = t;
            if let Some(at) = t {
                let delay = at.saturating_sub(self.now);
                let inc = self.inc;
                self.schedule(delay, Ev::Timer { inc, at });
            }
        }
    }

    fn dispatch(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            self.trace.add("out", &out);
            match out {
                Output::Store(action) => {
                    match &action {
                        StoreAction::Fence { op } => self.checker.on_fence(*op),
                        StoreAction::Apply(batch) => self.checker.on_batch(batch),
                        _ => {}
                    }
                    self.store_q.push_back(action);
                    if !self.store_busy {
                        self.store_busy = true;
                        let (d, inc) = (self.jitter(self.plan.timing.store_ms), self.inc);
                        self.schedule(d, Ev::StoreStep { inc });
                    }
                }
                Output::Source(action) => self.source_action(action),
                Output::Event(event) => {
                    let before = event.relation_id.and_then(|id| self.checker.def(id).cloned());
                    self.checker.on_event(&event, before.as_ref());
                }
                Output::Reply { request, reply } => self.on_reply(request, reply),
            }
        }
    }

    fn on_reply(&mut self, request: RequestId, reply: Reply) {
        let Some(p) = self.requests.remove(&request) else {
            self.checker
                .report("every call answered once", format!("reply to unknown request {}: {reply:?}", request.0));
            return;
        };
        if let Some(b) = p.burst {
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
        let _ = p.call;
    }

    /// (running, enabled) realtime views, for progress output.
    pub fn running_views(&self) -> (usize, usize) {
        let status = self.machine.status(&Selector::All);
        let rt: Vec<_> = status.iter().filter(|j| j.persistence == Persistence::Realtime && j.enabled).collect();
        let running = rt.iter().filter(|j| j.state == JobState::Running).count();
        (running, rt.len())
    }

    /// Delivers a caller's control call.
    pub fn deliver_call(&mut self, call: Call, burst: Option<u64>) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let name = match &call {
            Call::Define(_) => "define",
            Call::Sync { .. } => "sync",
            Call::Stop(_) => "stop",
            Call::Resume(_) => "resume",
            Call::Forget(_) => "forget",
            Call::Shutdown => "shutdown",
        };
        self.requests.insert(request, Pending { call: name, burst });
        let ids = |w: &World, sel: &Selector| -> Vec<RelationId> {
            w.machine.definitions(sel).into_iter().map(|v| v.relation_id).collect()
        };
        let input = match call {
            Call::Define(def) => {
                let name = def.name.clone();
                self.deliver(Input::Define { request, def: def.clone() });
                if let Some(id) = self.machine.relation_id(&name) {
                    self.checker.on_define(id, def);
                }
                return;
            }
            Call::Sync { selector, force } => {
                self.counters.sync_calls += 1;
                Input::Sync { request, selector, force }
            }
            Call::Stop(selector) => {
                let v = ids(self, &selector);
                self.checker.on_stop(&v);
                Input::Stop { request, selector }
            }
            Call::Resume(selector) => {
                self.counters.sync_calls += 1;
                let v = ids(self, &selector);
                self.checker.on_resume(&v);
                Input::Resume { request, selector }
            }
            Call::Forget(selector) => {
                let v = ids(self, &selector);
                self.checker.on_forget_request(&v);
                Input::Forget { request, selector }
            }
            Call::Shutdown => Input::Shutdown { request },
        };
        self.deliver(input);
    }

    // ----- store actions -----------------------------------------------------

    fn store_step(&mut self) {
        let Some(action) = self.store_q.pop_front() else {
            self.store_busy = false;
            return;
        };
        match action {
            StoreAction::PutView { op, view } => {
                let (result, d) = self.store.put_view(&view);
                self.checker.on_durable(d);
                self.deliver(Input::StoreDone { op, result });
            }
            StoreAction::PutJob { op, job } => {
                let (result, d) = self.store.put_job(&job);
                self.checker.on_durable(d);
                self.deliver(Input::StoreDone { op, result });
            }
            StoreAction::Forget { op, relation_id } => {
                let (result, d) = self.store.forget(relation_id);
                if result.is_ok() {
                    self.checker.on_forgotten(relation_id);
                }
                self.checker.on_durable(d);
                self.deliver(Input::StoreDone { op, result });
            }
            StoreAction::ForgetOrigin { op, origin } => {
                let (result, d) = self.store.forget_origin(&origin);
                if result.is_ok() {
                    self.checker.on_forget_origin();
                }
                self.checker.on_durable(d);
                self.deliver(Input::StoreDone { op, result });
            }
            StoreAction::Publish { op, job } => {
                let result = match self.generations.remove(&op) {
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
                };
                self.deliver(Input::StoreDone { op, result });
            }
            StoreAction::Discard { op } => {
                self.snaps.remove(&op);
                if let Some(g) = self.generations.remove(&op) {
                    if let Err(e) = self.store.discard(g) {
                        self.checker.report("store works", format!("discarding a generation failed: {e}"));
                    }
                }
            }
            StoreAction::Fence { op } => self.deliver(Input::StoreDone { op, result: Ok(()) }),
            StoreAction::Apply(batch) => {
                let seq = batch.seq;
                let result = if let Err(e) = self.gate.admit(&batch) {
                    Err(e)
                } else if std::mem::take(&mut self.fail_next_apply) {
                    Err(StoreError::new(StoreErrorKind::Io, format!("apply batch {}", seq.0), "injected failure"))
                } else {
                    self.store.apply(batch.clone())
                };
                if result.is_err() {
                    self.gate.failed(&batch.origin, batch.chain);
                }
                if result.is_ok() {
                    let mut touched: BTreeSet<RelationId> = batch.views.iter().map(|v| v.relation_id).collect();
                    touched.extend(self.checker.on_applied(&batch, &self.up));
                    for id in touched {
                        let rows = self.store.rows(id);
                        self.check_copy_rows(id, rows, &format!("after batch {}", seq.0));
                    }
                    if !self.persist_scheduled {
                        self.persist_scheduled = true;
                        let (d, inc) = (self.jitter(self.plan.timing.persist_ms), self.inc);
                        self.schedule(d, Ev::Persist { inc });
                    }
                }
                if result.is_err() {
                    self.checker.on_apply_failed(&batch);
                }
                self.deliver(Input::Applied { seq, result });
                self.check_running_views();
            }
        }
        if self.store_q.is_empty() {
            self.store_busy = false;
        } else {
            let (d, inc) = (self.jitter(self.plan.timing.store_ms), self.inc);
            self.schedule(d, Ev::StoreStep { inc });
        }
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
        if self.shut_down || self.store_q.iter().any(|a| matches!(a, StoreAction::Apply(_))) {
            return;
        }
        let at = self.machine.origin_progress(&self.origin).and_then(|(at, _)| at);
        let running: Vec<RelationId> = self
            .machine
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
            let when = format!("running view in phase {}", self.machine.phase(id).map_or("unknown", ViewPhase::name));
            self.checker.check_running(id, rows, self.feed_txn_open, &when);
            if let Some(at) = at.filter(|_| self.machine.phase(id) == Some(ViewPhase::Live)) {
                self.checker.check_prefix(id, at, &self.up);
            }
        }
    }

    fn persist(&mut self) {
        self.persist_scheduled = false;
        match self.store.persist() {
            Ok(Some(through)) => {
                self.checker.on_persisted(through);
                self.checker.on_durable(crate::store::Durable::Everything);
                let (d, inc) = (self.jitter(self.plan.timing.store_ms), self.inc);
                self.schedule(d, Ev::Durable { inc, through });
            }
            Ok(None) => {}
            Err(e) => self.checker.report("store works", format!("persist failed: {e}")),
        }
    }

    // ----- source actions ----------------------------------------------------

    fn source_action(&mut self, action: SourceAction) {
        let inc = self.inc;
        let lat = self.plan.timing.source_ms;
        match action {
            SourceAction::Prepare { op, relation, feed, .. } => {
                let d = self.jitter(lat);
                self.schedule(d, Ev::Source { inc, call: SourceCall::Prepare { op, relation, feed } });
            }
            SourceAction::Snapshot { op, relation_id, relation, schema, .. } => {
                // The snapshot starts some time after it was asked for.
                let d = self.jitter(lat);
                self.schedule(
                    d,
                    Ev::Source { inc, call: SourceCall::Snapshot { op, view: relation_id, relation, schema } },
                );
            }
            SourceAction::Subscribe { epoch, resume, .. } => {
                if let Some(f) = &self.feed {
                    if f.sub.is_some() {
                        self.checker.report(
                            "one feed at a time",
                            format!(
                                "subscribe (epoch {}) while the feed of epoch {} is still open",
                                epoch.0, f.epoch.0
                            ),
                        );
                    }
                }
                self.feed = Some(FeedSlot { epoch, sub: None, paused: false, pumping: false });
                self.feed_txn_open = false;
                let d = self.jitter(lat);
                self.schedule(d, Ev::Source { inc, call: SourceCall::Subscribe { epoch, resume } });
            }
            SourceAction::Unsubscribe { epoch, .. } => {
                if self.feed.as_ref().is_some_and(|f| f.epoch == epoch) {
                    self.feed = None;
                    self.feed_txn_open = false;
                }
            }
            SourceAction::Flow { epoch, paused, .. } => {
                if let Some(f) = self.feed.as_mut().filter(|f| f.epoch == epoch) {
                    f.paused = paused;
                }
                if !paused {
                    self.kick();
                }
            }
            SourceAction::Ack { epoch, lsn, .. } => {
                self.checker.on_ack(lsn, epoch);
                let lost = self.rng.below(100) < u64::from(self.plan.rate(Fault::LostAck));
                if lost {
                    self.count_fault(Fault::LostAck);
                } else {
                    let d = self.jitter(lat);
                    self.schedule(d, Ev::Ack { inc, epoch, lsn });
                }
            }
            SourceAction::Release { op, relation, .. } => {
                let d = self.jitter(lat);
                self.schedule(d, Ev::Source { inc, call: SourceCall::Release { op, relation } });
            }
            SourceAction::DropFeed { op, .. } => {
                self.feed = None;
                self.feed_txn_open = false;
                let d = self.jitter(lat);
                self.schedule(d, Ev::Source { inc, call: SourceCall::DropFeed { op } });
            }
        }
    }

    fn source_call(&mut self, call: SourceCall) {
        self.trace.add("source", &call);
        match call {
            SourceCall::Prepare { op, relation, feed } => {
                let result = block_on(self.source.prepare(&relation, feed));
                self.deliver(Input::Prepared { op, result });
            }
            SourceCall::Snapshot { op, view, relation, schema } => self.snapshot(op, view, relation, schema),
            SourceCall::Subscribe { epoch, resume } => {
                if !self.feed.as_ref().is_some_and(|f| f.epoch == epoch && f.sub.is_none()) {
                    // Unsubscribed before the connection was made.
                    return;
                }
                match block_on(self.source.subscribe(resume)) {
                    Ok(sub) => {
                        if !matches!(sub.report.start, FeedStart::Existing { .. }) {
                            // Creating a slot waits for every commit already
                            // in the log to become visible; the model did so.
                            self.up.slot_created();
                        }
                        let report = sub.report.clone();
                        if let Some(f) = self.feed.as_mut() {
                            f.sub = Some(sub);
                        }
                        let origin = self.origin.clone();
                        self.deliver(Input::Subscribed { origin, epoch, result: Ok(report) });
                        self.kick();
                    }
                    Err(e) => {
                        self.feed = None;
                        let origin = self.origin.clone();
                        self.deliver(Input::Subscribed { origin, epoch, result: Err(e) });
                    }
                }
            }
            SourceCall::Release { op, relation } => {
                let result = block_on(self.source.release(&relation));
                self.deliver(Input::Released { op, result });
            }
            SourceCall::DropFeed { op } => {
                let result = block_on(self.source.drop_feed());
                self.deliver(Input::Released { op, result });
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
                self.generations.insert(op, generation);
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
        let Some(f) = self.feed.as_mut() else { return };
        if f.sub.is_none() || f.paused || f.pumping {
            return;
        }
        f.pumping = true;
        let epoch = f.epoch;
        let mut d = self.rng.below(lat + 1);
        if self.rng.below(100) < u64::from(stall) {
            d += 50 + self.rng.below(500);
            self.count_fault(Fault::FeedStall);
        }
        self.schedule(d, Ev::Pump { inc, epoch });
    }

    fn pump(&mut self, epoch: Epoch) {
        let chunk = 1 + self.rng.below(self.plan.timing.feed_chunk);
        let mut got: Vec<Result<StreamEvent, SourceError>> = Vec::new();
        let mut ended = false;
        {
            let Some(f) = self.feed.as_mut().filter(|f| f.epoch == epoch) else { return };
            f.pumping = false;
            if f.paused {
                return;
            }
            let Some(sub) = f.sub.as_mut() else { return };
            for _ in 0..chunk {
                match sub.events.next().now_or_never() {
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
                f.sub = None;
            }
        }
        let any = !got.is_empty();
        let origin = self.origin.clone();
        for e in got {
            if self.down || self.feed.as_ref().is_none_or(|f| f.epoch != epoch) {
                break;
            }
            match e {
                Ok(event) => {
                    match &event {
                        StreamEvent::Begin { .. } => self.feed_txn_open = true,
                        StreamEvent::Commit { .. } => self.feed_txn_open = false,
                        _ => {}
                    }
                    self.deliver(Input::Feed { origin: origin.clone(), epoch, event })
                }
                Err(error) => {
                    self.feed_txn_open = false;
                    self.deliver(Input::FeedLost { origin: origin.clone(), epoch, error })
                }
            }
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

    /// The local process dies: the machine and everything in flight are
    /// gone; the store keeps what was durable (or, with `lose` false, happens
    /// to keep everything). It restarts after `downtime`.
    pub fn crash(&mut self, lose: bool, downtime: u64) {
        self.trace.add("crash", &lose);
        self.shut_down = false;
        self.counters.crashes += 1;
        self.accumulate_stats();
        self.inc += 1;
        self.down = true;
        self.store_q.clear();
        self.store_busy = false;
        self.persist_scheduled = false;
        self.timer_at = None;
        self.generations.clear();
        self.gate = BatchGate::default();
        self.snaps.clear();
        // The connection dies with the process.
        self.feed = None;
        self.feed_txn_open = false;
        self.counters.lost_requests += self.requests.len() as u64;
        self.requests.clear();
        if let Err(e) = self.store.crash(lose) {
            self.checker.report("store works", format!("crash and reopen failed: {e}"));
        }
        self.checker.on_crash(lose);
        self.schedule(downtime, Ev::Restart);
    }

    fn accumulate_stats(&mut self) {
        let s = self.machine.stats();
        self.dead_stats.passes += s.passes;
        self.dead_stats.commits_applied += s.commits_applied;
    }

    /// Passes and commits over every incarnation.
    pub fn total_stats(&self) -> (u64, u64) {
        let s = self.machine.stats();
        (self.dead_stats.passes + s.passes, self.dead_stats.commits_applied + s.commits_applied)
    }

    /// A clean shutdown (the store drains and persists), then a restart.
    pub fn clean_restart(&mut self, downtime: u64) {
        self.deliver_call(Call::Shutdown, None);
        self.shut_down = true;
        // Like the tokio driver: finish every queued store action, persist.
        while !self.store_q.is_empty() {
            self.store_step();
        }
        self.persist();
        self.crash(false, downtime);
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
        self.machine = Machine::new(self.plan.config.clone(), seed, state, Timestamp(EPOCH_MS + self.now));
        self.pass_base = 0;
        self.down = false;
        self.checker.on_restart(disabled, defs);
        // Crash consistency: every copy is what was durable.
        for id in self.checker.mirrored() {
            let rows = self.store.rows(id);
            self.check_copy_rows(id, rows, "after restart");
        }
        // The application calls sync() on startup.
        self.deliver_call(Call::Sync { selector: Selector::All, force: false }, None);
        self.sync_timer();
    }

    /// Makes the next `n` calls of `point` fail.
    pub fn fail_calls(&mut self, point: FailPoint, n: u32) {
        self.up.db.fail_next(point, n);
    }
}
