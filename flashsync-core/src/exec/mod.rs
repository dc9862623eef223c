//! The executor: what every driver of the [`Machine`] shares.
//!
//! The machine says *what* must happen ([`Output`]); a driver does the I/O.
//! Between the two sits the meaning of each action, and it is written once,
//! here, so that the tokio driver, the simulator, the fuzz targets and the
//! unit tests all run the same rules:
//!
//! - **requests**: control calls get their [`RequestId`](crate::RequestId)
//!   here and the reply goes back to the caller's handle `W`;
//! - **the store queue** (`store_queue.rs`): store actions run one step at a time
//!   in emission order, consecutive batches as one apply run (at most
//!   [`Config::apply_run`](crate::Config::apply_run) batches), batches
//!   behind a failed one refused ([`BatchGate`](crate::machine::BatchGate));
//! - **generations**: a snapshot's store generation `G` is kept from the
//!   snapshot's answer until its `Publish` or `Discard` step;
//! - **persisting** (`persist.rs`): one persist at a time, in the background;
//!   the machine hears `Durable` only from what a persist reported;
//! - **feeds** (`feeds.rs`): one connection per origin (subscribing again closes
//!   the old one), acknowledgements only on an open feed, and one
//!   back-pressure rule: a feed is read only while the machine has not
//!   paused it and the store keeps up ([`Config::max_ops_in_flight`](crate::Config::max_ops_in_flight));
//! - **shutdown**: once the machine has shut down, feeds close, the store
//!   queue drains, a final persist runs, and only then is the caller told.
//!
//! It does no I/O and has no runtime: a driver calls the methods named in
//! each [`Work`] item's docs with the outcome, whenever it comes.
//!
//! ```
//! use flashsync_core::exec::{Call, Executor, StoreAnswer, StoreStep, Work};
//! use flashsync_core::{Config, Machine, Reply, StoredState, Timestamp};
//!
//! // No views, no sources: a shutdown needs only the store.
//! let machine = Machine::new(Config::default(), 1, StoredState::default(), Timestamp(0));
//! let mut exec: Executor<&str, (), ()> = Executor::new(machine, Timestamp(0));
//! exec.call(Call::Shutdown, "caller", Timestamp(0));
//! let mut answered = None;
//! while let Some(work) = exec.poll_work() {
//!     match work {
//!         Work::Persist => exec.persisted(Ok(None), Timestamp(0)),
//!         Work::Store(StoreStep::PutJob(_)) => exec.store_done(StoreAnswer::Done(Ok(())), Timestamp(0)),
//!         Work::Reply(who, reply) => answered = Some((who, reply)),
//!         _ => {}
//!     }
//! }
//! assert_eq!(answered, Some(("caller", Reply::ShutDown)));
//! assert!(exec.is_finished());
//! ```

mod feeds;
pub mod harness;
mod persist;
mod requests;
mod store_queue;
#[cfg(test)]
mod tests;
mod work;

use std::collections::VecDeque;

pub use work::{Call, FeedCommand, SourceCall, StoreAnswer, StoreStep, Work};

use crate::change::{BatchSeq, StreamEvent};
use crate::error::{ControlError, SourceError, StoreError};
use crate::event::{Event, EventKind, Phase};
use crate::machine::{AuditRecord, Epoch, Input, Machine, OpId, Output, Reply, SourceAction};
use crate::rowchange::Capture;
use crate::schema::RelationSchema;
use crate::snapshot::SnapshotPoint;
use crate::source::SlotReport;
use crate::time::{Millis, Now};
use crate::view::OriginId;

use feeds::{FeedSlots, Hold};
use persist::Persist;
use requests::Requests;
use store_queue::{Answered, Next, StoreQueue};

/// The answer to a [`SourceCall`].
#[derive(Debug)]
pub enum SourceAnswer<G> {
    /// [`SourceCall::Prepare`] finished.
    Prepared {
        /// The call.
        op: OpId,
        /// The relation's description.
        result: Result<RelationSchema, SourceError>,
    },
    /// A chunk of a copy in chunks ([`SourceCall::Snapshot`] with a chunk,
    /// or [`Work::Chunk`]) finished; on success the generation comes along.
    ChunkCopied {
        /// The call.
        op: OpId,
        /// The chunk and the generation.
        result: Result<(crate::source::CopiedChunk, G), SourceError>,
    },
    /// [`SourceCall::Snapshot`] finished; on success the generation holding
    /// the rows comes along.
    Snapshotted {
        /// The call.
        op: OpId,
        /// The snapshot's point and generation.
        result: Result<(SnapshotPoint, G), SourceError>,
    },
    /// [`SourceCall::Release`] or [`SourceCall::DropFeed`] finished.
    Released {
        /// The call.
        op: OpId,
        /// Its outcome.
        result: Result<(), SourceError>,
    },
}

/// Deliberately broken executor behaviours, for proving that the simulator
/// and the fuzz targets catch them.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Report batches durable as soon as they are applied, before any persist.
    pub durable_before_persist: bool,
    /// Run the first two queued store actions in the wrong order.
    pub reorder_store: bool,
    /// Ask the store for captured changes that leave out removals of rows.
    pub drop_captured_removals: bool,
}

/// Where the executor is in its life.
#[derive(Debug)]
enum Life<W> {
    Running,
    /// The machine shut down; the caller `waiter` hears it once the store is
    /// drained and persisted.
    Draining {
        waiter: Option<W>,
        stage: Drain,
    },
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drain {
    /// Store steps still queued or running.
    Store,
    /// The final persist is running.
    Persist,
}

/// Runs a [`Machine`] for a driver: see the [module docs](self).
///
/// `W` is the driver's handle for a caller waiting for a reply, `G` a store
/// generation, `F` a feed's acknowledgement handle.
pub struct Executor<W, G, F> {
    machine: Machine,
    requests: Requests<W>,
    store: StoreQueue<G>,
    feeds: FeedSlots<F>,
    persist: Persist,
    life: Life<W>,
    work: VecDeque<Work<W, G>>,
    /// Every machine output, cloned, when an observer asked for them.
    tap: Option<Vec<Output>>,
    max_ops_in_flight: usize,
    /// Whether batches go to the store asking for their changes.
    capture: Capture,
    #[cfg(feature = "planted-bugs")]
    bugs: PlantedBugs,
}

impl<W, G, F> Executor<W, G, F> {
    /// Takes over `machine`, including whatever it queued when it was
    /// created (a machine's first outputs are part of its contract).
    /// `now` is the time of the machine's creation.
    pub fn new(machine: Machine, now: impl Into<Now>) -> Self {
        let now = now.into();
        let cfg = machine.config();
        let (apply_run, max_ops_in_flight) = (cfg.apply_run, cfg.max_ops_in_flight);
        let mut exec = Executor {
            machine,
            requests: Requests::new(),
            store: StoreQueue::new(apply_run),
            feeds: FeedSlots::new(),
            persist: Persist::Clean,
            life: Life::Running,
            work: VecDeque::new(),
            tap: None,
            max_ops_in_flight: max_ops_in_flight.max(1),
            capture: Capture::Off,
            #[cfg(feature = "planted-bugs")]
            bugs: PlantedBugs::default(),
        };
        exec.pump(now);
        exec
    }

    /// Whether the batches handed to the store from now on ask it for what
    /// they did to each view's rows ([`ApplyBatch::capture`](crate::ApplyBatch::capture)):
    /// a driver turns this on while a change feed listens.
    pub fn set_capture(&mut self, on: bool) {
        self.capture = if on { Capture::On } else { Capture::Off };
    }

    /// Plants deliberate bugs (tests of the checkers only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bugs: PlantedBugs) {
        self.bugs = bugs;
    }

    /// Keeps a clone of every machine output for [`Executor::drain_tap`]
    /// (simulators and checkers).
    pub fn set_tap(&mut self, on: bool) {
        self.tap = on.then(Vec::new);
    }

    /// The machine's outputs since the last call (empty unless tapped).
    pub fn drain_tap(&mut self) -> Vec<Output> {
        self.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The machine, to read its state.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The machine's audit records (see [`Config::audit`](crate::Config::audit)).
    pub fn drain_audit(&mut self) -> Vec<AuditRecord> {
        self.machine.drain_audit()
    }

    /// A caller's control call; the reply goes to `waiter` through
    /// [`Work::Reply`].
    pub fn call(&mut self, call: Call, waiter: W, now: impl Into<Now>) -> crate::machine::RequestId {
        let now = now.into();
        let request = self.requests.add(waiter);
        let input = match call {
            Call::Define(def) => Input::Define { request, def },
            Call::Sync { selector, force } => Input::Sync { request, selector, force },
            Call::Stop(selector) => Input::Stop { request, selector },
            Call::Resume(selector) => Input::Resume { request, selector },
            Call::Forget(selector) => Input::Forget { request, selector },
            Call::Shutdown => Input::Shutdown { request },
        };
        self.input(input, now);
        request
    }

    /// The answer to a [`Work::Store`] step.
    pub fn store_done(&mut self, answer: StoreAnswer<G>, now: impl Into<Now>) {
        let now = now.into();
        let answered = self.store.done(answer);
        self.answered(answered, now);
        self.pump(now);
    }

    /// The answer to [`Work::Persist`]: what [`Store::persist`](crate::Store::persist) returned.
    pub fn persisted(&mut self, result: Result<Option<BatchSeq>, StoreError>, now: impl Into<Now>) {
        let now = now.into();
        match result {
            Ok(Some(through)) => self.machine.handle(Input::Durable { through }, now),
            Ok(None) => {}
            Err(e) => self.work.push_back(Work::Event(Event {
                at: now.wall,
                phase: Phase::Apply,
                view: None,
                relation_id: None,
                origin: None,
                kind: EventKind::Error { message: format!("could not make the store durable: {e}") },
            })),
        }
        if self.persist.finished() {
            self.work.push_back(Work::Persist);
        }
        self.pump(now);
    }

    /// The answer to a [`Work::Source`] call.
    pub fn source_done(&mut self, answer: SourceAnswer<G>, now: impl Into<Now>) {
        let now = now.into();
        let input = match answer {
            SourceAnswer::Prepared { op, result } => Input::Prepared { op, result },
            SourceAnswer::Released { op, result } => Input::Released { op, result },
            SourceAnswer::Snapshotted { op, result } => {
                let result = result.map(|(point, generation)| {
                    self.store.keep_generation(op, generation);
                    point
                });
                Input::Snapshotted { op, result }
            }
            SourceAnswer::ChunkCopied { op, result } => {
                let result = result.map(|(chunk, generation)| {
                    self.store.keep_generation(op, generation);
                    chunk
                });
                Input::ChunkCopied { op, result }
            }
        };
        self.input(input, now);
    }

    /// The outcome of [`FeedCommand::Open`]: the slot report and the feed's
    /// acknowledgement handle, or why subscribing failed.
    pub fn subscribed(
        &mut self,
        origin: OriginId,
        epoch: Epoch,
        result: Result<(SlotReport, F), SourceError>,
        now: impl Into<Now>,
    ) {
        let now = now.into();
        let result = match result {
            Ok((report, feedback)) => {
                if !self.feeds.connected(&origin, epoch, feedback) {
                    // Superseded or closed while connecting.
                    self.work.push_back(Work::Feed(FeedCommand::Close { origin: origin.clone(), epoch }));
                }
                Ok(report)
            }
            Err(e) => {
                self.feeds.close(&origin, Some(epoch));
                Err(e)
            }
        };
        self.input(Input::Subscribed { origin, epoch, result }, now);
    }

    /// The next event of the feed of `epoch`. Events of a feed that is no
    /// longer wanted are dropped.
    pub fn feed_event(&mut self, origin: &OriginId, epoch: Epoch, event: StreamEvent, now: impl Into<Now>) {
        let now = now.into();
        if self.feeds.is_current(origin, epoch) {
            self.input(Input::Feed { origin: origin.clone(), epoch, event }, now);
        }
    }

    /// The feed of `epoch` broke (or ended).
    pub fn feed_lost(&mut self, origin: OriginId, epoch: Epoch, error: SourceError, now: impl Into<Now>) {
        let now = now.into();
        self.feeds.close(&origin, Some(epoch));
        self.input(Input::FeedLost { origin, epoch, error }, now);
    }

    /// The deadline from [`Executor::poll_timeout`] passed.
    pub fn timer(&mut self, now: impl Into<Now>) {
        let now = now.into();
        self.input(Input::Timer, now);
    }

    /// When to call [`Executor::timer`], on the monotonic clock of [`Now::mono`].
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.machine.poll_timeout()
    }

    /// The next thing for the driver to do.
    pub fn poll_work(&mut self) -> Option<Work<W, G>> {
        self.work.pop_front()
    }

    /// The acknowledgement handle of the feed of `epoch`, if it is open.
    pub fn feedback(&self, origin: &OriginId, epoch: Epoch) -> Option<&F> {
        self.feeds.feedback(origin, epoch)
    }

    /// Whether the driver should hold off reading `origin`'s feed.
    pub fn is_feed_paused(&self, origin: &OriginId) -> bool {
        self.feeds.is_paused(origin)
    }

    /// Whether batches are queued for or running in the store.
    pub fn has_applies_pending(&self) -> bool {
        self.store.has_applies_pending()
    }

    /// Row operations handed to the store and not yet applied.
    pub fn ops_in_flight(&self) -> usize {
        self.store.ops_in_flight()
    }

    /// Callers still waiting for a reply.
    pub fn waiting(&self) -> usize {
        self.requests.len()
    }

    /// Shut down, drained and persisted: nothing more will happen.
    pub fn is_finished(&self) -> bool {
        matches!(self.life, Life::Finished)
    }

    fn input(&mut self, input: Input, now: Now) {
        self.machine.handle(input, now);
        self.pump(now);
    }

    /// Routes what the machine produced and starts store work if the store
    /// is idle, until nothing moves.
    fn pump(&mut self, now: Now) {
        loop {
            while let Some(out) = self.machine.poll_output() {
                self.route(out);
            }
            match self.store.next() {
                Some(Next::Refused(answered)) => self.answered(answered, now),
                Some(Next::Step(mut step)) => {
                    if let StoreStep::Apply(batches) = &mut step {
                        let capture = self.capture_mode();
                        for b in batches {
                            b.capture = capture;
                        }
                    }
                    self.work.push_back(Work::Store(step));
                    break;
                }
                None => break,
            }
        }
        let mut commands = Vec::new();
        let hold = Hold { store_behind: self.store.ops_in_flight() > self.max_ops_in_flight };
        self.feeds.reconcile(hold, &mut commands);
        self.work.extend(commands.into_iter().map(Work::Feed));
        self.drain_step();
    }

    fn capture_mode(&self) -> Capture {
        #[cfg(feature = "planted-bugs")]
        if self.bugs.drop_captured_removals && self.capture.is_on() {
            return Capture::DropRemovals;
        }
        self.capture
    }

    fn answered(&mut self, answered: Answered, now: Now) {
        for input in answered.inputs {
            self.machine.handle(input, now);
        }
        if answered.applied {
            #[cfg(feature = "planted-bugs")]
            if self.bugs.durable_before_persist {
                if let Some(through) = answered.applied_through {
                    self.machine.handle(Input::Durable { through }, now);
                }
            }
            if self.persist.want() {
                self.work.push_back(Work::Persist);
            }
        }
    }

    fn route(&mut self, out: Output) {
        if let Some(tap) = &mut self.tap {
            tap.push(out.clone());
        }
        match out {
            Output::Store(action) => {
                self.store.push(action);
                #[cfg(feature = "planted-bugs")]
                if self.bugs.reorder_store {
                    self.store.swap_head();
                }
            }
            Output::Source(action) => self.source_action(action),
            Output::Event(event) => self.work.push_back(Work::Event(event)),
            Output::Reply { request, reply: Reply::ShutDown } => {
                let waiter = self.requests.take(request);
                for (origin, epoch) in self.feeds.close_all() {
                    self.work.push_back(Work::Feed(FeedCommand::Close { origin, epoch }));
                }
                if matches!(self.life, Life::Running) {
                    self.life = Life::Draining { waiter, stage: Drain::Store };
                } else if let Some(w) = waiter {
                    self.work.push_back(Work::Reply(w, Reply::ShutDown));
                }
            }
            Output::Reply { request, reply } => {
                if let Some(w) = self.requests.take(request) {
                    self.work.push_back(Work::Reply(w, reply));
                }
            }
        }
    }

    fn source_action(&mut self, action: SourceAction) {
        let call = match action {
            SourceAction::Prepare { op, origin, relation, feed } => SourceCall::Prepare { op, origin, relation, feed },
            SourceAction::Snapshot { op, origin, relation_id, relation, shape, chunk } => {
                let continues = chunk.as_ref().is_some_and(|c| c.after.is_some());
                let call = SourceCall::Snapshot { op, origin, relation_id, relation, shape, chunk };
                if continues {
                    let generation = self.store.take_generation(op);
                    self.work.push_back(Work::Chunk { call, generation });
                    return;
                }
                call
            }
            SourceAction::Release { op, origin, relation } => SourceCall::Release { op, origin, relation },
            SourceAction::DropFeed { op, origin } => {
                if let Some(epoch) = self.feeds.close(&origin, None) {
                    self.work.push_back(Work::Feed(FeedCommand::Close { origin: origin.clone(), epoch }));
                }
                SourceCall::DropFeed { op, origin }
            }
            SourceAction::Subscribe { origin, epoch, resume } => {
                let mut commands = Vec::new();
                self.feeds.open(origin.clone(), epoch, &mut commands);
                self.work.extend(commands.into_iter().map(Work::Feed));
                self.work.push_back(Work::Feed(FeedCommand::Open { origin, epoch, resume }));
                return;
            }
            SourceAction::Unsubscribe { origin, epoch } => {
                if let Some(epoch) = self.feeds.close(&origin, Some(epoch)) {
                    self.work.push_back(Work::Feed(FeedCommand::Close { origin, epoch }));
                }
                return;
            }
            SourceAction::Flow { origin, epoch, paused } => {
                self.feeds.set_machine_pause(&origin, epoch, paused);
                return;
            }
            SourceAction::Ack { origin, epoch, lsn } => {
                if self.feeds.is_open(&origin, epoch) {
                    self.work.push_back(Work::Ack { origin, epoch, lsn });
                }
                return;
            }
        };
        self.work.push_back(Work::Source(call));
    }

    /// Moves a shutdown along: store drained, then a final persist, then
    /// the reply.
    fn drain_step(&mut self) {
        let Life::Draining { stage, .. } = &mut self.life else { return };
        if *stage == Drain::Store && self.store.is_idle() {
            *stage = Drain::Persist;
            if self.persist.want() {
                self.work.push_back(Work::Persist);
            }
            return;
        }
        if *stage == Drain::Persist && !self.persist.is_running() {
            if let Life::Draining { waiter: Some(w), .. } = std::mem::replace(&mut self.life, Life::Finished) {
                self.work.push_back(Work::Reply(w, Reply::ShutDown));
            }
            // Anyone still waiting will not hear otherwise.
            for w in self.requests.drain() {
                self.work.push_back(Work::Reply(w, Reply::Failed(ControlError::ShutDown)));
            }
        }
    }
}
