//! A hand-driven driver for tests: the [`Executor`] over the memory
//! reference store and upstream, where the test decides what completes next.
//!
//! Every piece of work the executor hands out is held until the test
//! completes it ([`Harness::complete`], or the named shortcuts), so a test
//! can hold a store step while batches pile up, answer a persist late, or
//! crash in between. The harness checks the executor's promises as it goes
//! and panics (this is test code) when one breaks:
//!
//! - store steps are handed out one at a time, in the order the machine
//!   emitted the actions (batches refused behind a failed one may be
//!   missing);
//! - at most one persist is outstanding;
//! - no acknowledgement is ahead of what a persist made durable.
//!
//! [`Harness::settle`] plays a well-behaved driver until everything is at
//! rest; [`Harness::verify_running`] then compares every running realtime
//! view with its upstream table. The `core_executor` fuzz target and the
//! executor's unit tests both drive it.
//!
//! ```
//! use flashsync_core::exec::{harness::Harness, Call};
//! use flashsync_core::memory::{MemoryUpstream, TableIdentity};
//! use flashsync_core::{row, Config, Persistence, Selector, ViewDef};
//!
//! let up = MemoryUpstream::new();
//! up.create_table("public", "t", &[("id", "int8"), ("v", "text")], TableIdentity::PrimaryKey(vec![0]));
//! up.insert("public", "t", row![1_i64, "one"]);
//! let mut h = Harness::new(up, Config::default());
//! let def = ViewDef::new("public", "t_live", Persistence::Realtime, "postgres:main", "public", "t")?;
//! h.call(Call::Define(def));
//! h.call(Call::Sync { selector: Selector::All, force: false });
//! h.up.insert("public", "t", row![2_i64, "two"]);
//! assert!(h.settle(), "the engine comes to rest");
//! assert_eq!(h.verify_running(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::{Call, Executor, FeedCommand, SourceAnswer, SourceCall, StoreStep, Work};
use crate::change::StreamEvent;
use crate::error::SourceError;
use crate::invariants::Acks;
use crate::job::JobState;
use crate::lsn::Lsn;
use crate::machine::{Epoch, Machine, Output, Reply, StoreAction};
use crate::memory::{MemorySource, MemoryStore, MemoryUpstream};
use crate::selector::Selector;
use crate::source::{Feedback, Source};
use crate::store::{Generation, Store};
use crate::time::Timestamp;
use crate::view::{OriginId, Persistence};
use crate::Config;

mod order;

/// Rounds [`Harness::settle`] takes at most.
const SETTLE_ROUNDS: usize = 2000;

type Exec = Executor<u32, Box<dyn Generation>, Box<dyn Feedback>>;

/// Work the harness holds, which a test may complete next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// The store step handed out.
    Store,
    /// The persist asked for.
    Persist,
    /// The source call at this index.
    Source(usize),
    /// The feed connection being opened.
    Connect,
    /// Events waiting on the open feed (if any).
    Pump,
    /// Acknowledgements not yet sent.
    Acks,
}

/// The feed connection, as the network holds it.
enum Conn {
    Connecting { epoch: Epoch, resume: Option<Lsn> },
    Open { epoch: Epoch, events: BoxStream<'static, Result<StreamEvent, SourceError>> },
}

impl Conn {
    fn epoch(&self) -> Epoch {
        match self {
            Conn::Connecting { epoch, .. } | Conn::Open { epoch, .. } => *epoch,
        }
    }
}

/// The executor over the memory store and upstream, driven by hand: see
/// the [module docs](self).
pub struct Harness {
    /// The upstream: write to it to make changes.
    pub up: MemoryUpstream,
    /// The store.
    pub store: Arc<MemoryStore>,
    source: MemorySource,
    config: Config,
    #[cfg(feature = "planted-bugs")]
    bugs: super::PlantedBugs,
    exec: Exec,
    origin: Option<OriginId>,
    now: u64,
    /// Store actions the machine emitted and the executor has not handed out.
    emitted: VecDeque<StoreAction>,
    store_step: Option<StoreStep<Box<dyn Generation>>>,
    persist: bool,
    /// Source calls handed out, with the generation a later chunk of a
    /// copy goes into.
    sources: Vec<(SourceCall, Option<Box<dyn Generation>>)>,
    conn: Option<Conn>,
    acks: Vec<(Epoch, Lsn)>,
    /// The shared ack rule ([`Acks`]), fed with batches and persists.
    ack_rule: Acks,
    replies: BTreeMap<u32, Reply>,
    feed_commands: Vec<FeedCommand>,
    next_tag: u32,
    /// Work items taken and events read, to tell whether a round moved.
    moves: u64,
}

/// Runs a memory store or source call, which never waits.
fn ready<T>(f: impl Future<Output = T>) -> T {
    match f.now_or_never() {
        Some(v) => v,
        None => panic!("a memory store or source call waited"),
    }
}

impl Harness {
    /// A harness over `up` and an empty memory store.
    pub fn new(up: MemoryUpstream, config: Config) -> Harness {
        let store = Arc::new(MemoryStore::new());
        let source = up.source();
        let exec = start(&store, &config, 0);
        let mut h = Harness {
            up,
            store,
            source,
            config,
            #[cfg(feature = "planted-bugs")]
            bugs: super::PlantedBugs::default(),
            exec,
            origin: None,
            now: 0,
            emitted: VecDeque::new(),
            store_step: None,
            persist: false,
            sources: Vec::new(),
            conn: None,
            acks: Vec::new(),
            ack_rule: Acks::default(),
            replies: BTreeMap::new(),
            feed_commands: Vec::new(),
            next_tag: 1,
            moves: 0,
        };
        h.after();
        h
    }

    /// Plants executor bugs (from now on, and in every restart).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bugs: super::PlantedBugs) {
        self.bugs = bugs;
        self.exec.plant(bugs);
    }

    /// The executor.
    pub fn exec(&self) -> &Exec {
        &self.exec
    }

    /// The machine.
    pub fn machine(&self) -> &Machine {
        self.exec.machine()
    }

    /// The store step handed out and not yet run.
    pub fn held_step(&self) -> Option<&StoreStep<Box<dyn Generation>>> {
        self.store_step.as_ref()
    }

    /// Every feed command the executor gave so far.
    pub fn feed_commands(&self) -> &[FeedCommand] {
        &self.feed_commands
    }

    /// Whether a persist has been asked for and not yet run.
    pub fn persist_pending(&self) -> bool {
        self.persist
    }

    /// The reply to the call tagged `tag`, once it came.
    pub fn reply(&self, tag: u32) -> Option<&Reply> {
        self.replies.get(&tag)
    }

    fn at(&self) -> Timestamp {
        Timestamp(self.now)
    }

    /// Makes a control call; returns its tag (see [`Harness::reply`]).
    pub fn call(&mut self, call: Call) -> u32 {
        if let Call::Define(def) = &call {
            self.origin.get_or_insert_with(|| def.origin.clone());
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let at = self.at();
        self.exec.call(call, tag, at);
        self.after();
        tag
    }

    /// After every call into the executor: observe, check, take the work.
    fn after(&mut self) {
        for out in self.exec.drain_tap() {
            if let Output::Store(action) = out {
                if let StoreAction::Apply(b) = &action {
                    self.ack_rule.applied(b);
                }
                self.emitted.push_back(action);
            }
        }
        while let Some(work) = self.exec.poll_work() {
            self.moves += 1;
            match work {
                Work::Store(step) => {
                    assert!(self.store_step.is_none(), "a second store step before the first was answered");
                    self.check_order(&step);
                    self.store_step = Some(step);
                }
                Work::Persist => {
                    assert!(!self.persist, "a second persist before the first was answered");
                    self.persist = true;
                }
                Work::Source(call) => self.sources.push((call, None)),
                Work::Chunk { call, generation } => match generation {
                    Some(g) => self.sources.push((call, Some(g))),
                    None => panic!("a later chunk of a copy was handed out without its generation: {call:?}"),
                },
                Work::Feed(command) => {
                    match &command {
                        FeedCommand::Open { epoch, resume, .. } => {
                            self.conn = Some(Conn::Connecting { epoch: *epoch, resume: *resume });
                        }
                        FeedCommand::Close { epoch, .. } => {
                            if self.conn.as_ref().is_some_and(|c| c.epoch() == *epoch) {
                                self.conn = None;
                            }
                        }
                        FeedCommand::Pause { .. } => {}
                    }
                    self.feed_commands.push(command);
                }
                Work::Ack { origin, epoch, lsn } => {
                    if let Err(e) = self.ack_rule.ack(&origin, epoch, lsn) {
                        panic!("{e}");
                    }
                    self.acks.push((epoch, lsn));
                }
                Work::Event(_) => {}
                Work::Reply(tag, reply) => {
                    assert!(self.replies.insert(tag, reply).is_none(), "call {tag} answered twice");
                }
            }
        }
    }

    /// What may complete next.
    pub fn pending(&self) -> Vec<Pending> {
        let mut p = Vec::new();
        if self.store_step.is_some() {
            p.push(Pending::Store);
        }
        if self.persist {
            p.push(Pending::Persist);
        }
        p.extend((0..self.sources.len()).map(Pending::Source));
        match self.conn {
            Some(Conn::Connecting { .. }) => p.push(Pending::Connect),
            Some(Conn::Open { .. }) => p.push(Pending::Pump),
            None => {}
        }
        if !self.acks.is_empty() {
            p.push(Pending::Acks);
        }
        p
    }

    /// Completes one piece of pending work (`Pump` reads up to `events`).
    pub fn complete(&mut self, pending: Pending, events: usize) {
        match pending {
            Pending::Store => self.run_store(),
            Pending::Persist => self.run_persist(),
            Pending::Source(i) => self.run_source(i),
            Pending::Connect => self.connect(),
            Pending::Pump => self.pump(events),
            Pending::Acks => self.run_acks(),
        }
    }

    /// Runs the held store step against the store.
    pub fn run_store(&mut self) {
        let Some(step) = self.store_step.take() else { return };
        let answer = ready(step.run(&*self.store));
        let at = self.at();
        self.exec.store_done(answer, at);
        self.after();
    }

    /// Runs the persist asked for.
    pub fn run_persist(&mut self) {
        if !std::mem::take(&mut self.persist) {
            return;
        }
        let result = ready(self.store.persist());
        if let Ok(Some(through)) = &result {
            self.ack_rule.durable_through(*through);
        }
        let at = self.at();
        self.exec.persisted(result, at);
        self.after();
    }

    /// Completes the source call at `i` (modulo how many there are).
    pub fn run_source(&mut self, i: usize) {
        if self.sources.is_empty() {
            return;
        }
        let (call, kept) = self.sources.remove(i % self.sources.len());
        let (source, store) = (&self.source, &*self.store);
        let answer = ready(async {
            match call {
                SourceCall::Prepare { op, relation, feed, .. } => {
                    SourceAnswer::Prepared { op, result: source.prepare(&relation, feed).await }
                }
                SourceCall::Release { op, relation, .. } => {
                    SourceAnswer::Released { op, result: source.release(&relation).await }
                }
                SourceCall::DropFeed { op, .. } => SourceAnswer::Released { op, result: source.drop_feed().await },
                SourceCall::Snapshot { op, relation_id, relation, shape, chunk: Some(chunk), .. } => {
                    let generation = match kept {
                        Some(g) => Ok(g),
                        None => store.begin_generation(relation_id, shape.local()).await,
                    };
                    let result = match generation {
                        Ok(mut g) => {
                            match source.copy_chunk(&relation, &shape, chunk.after.as_ref(), chunk.rows, &mut *g).await
                            {
                                Ok(c) => Ok((c, g)),
                                Err(e) => {
                                    let _ = g.discard().await;
                                    Err(e)
                                }
                            }
                        }
                        Err(e) => Err(e.into()),
                    };
                    SourceAnswer::ChunkCopied { op, result }
                }
                SourceCall::Snapshot { op, relation_id, relation, shape, chunk: None, .. } => {
                    let result = match store.begin_generation(relation_id, shape.local()).await {
                        Ok(mut g) => match source.snapshot(&relation, &shape, &mut *g).await {
                            Ok(point) => Ok((point, g)),
                            Err(e) => {
                                let _ = g.discard().await;
                                Err(e)
                            }
                        },
                        Err(e) => Err(e.into()),
                    };
                    SourceAnswer::Snapshotted { op, result }
                }
            }
        });
        let at = self.at();
        self.exec.source_done(answer, at);
        self.after();
    }

    /// Opens the feed connection asked for.
    pub fn connect(&mut self) {
        let (Some(Conn::Connecting { epoch, resume }), Some(origin)) = (&self.conn, self.origin.clone()) else {
            return;
        };
        let (epoch, resume) = (*epoch, *resume);
        let at = self.at();
        match ready(self.source.subscribe(resume)) {
            Ok(sub) => {
                self.conn = Some(Conn::Open { epoch, events: sub.events });
                self.exec.subscribed(origin, epoch, Ok((sub.report, sub.feedback)), at);
            }
            Err(e) => self.exec.subscribed(origin, epoch, Err(e), at),
        }
        self.after();
    }

    /// Reads up to `n` events from the open feed (none while it is paused).
    pub fn pump(&mut self, n: usize) {
        let Some(origin) = self.origin.clone() else { return };
        for _ in 0..n {
            if self.exec.is_feed_paused(&origin) {
                return;
            }
            let at = self.at();
            let Some(Conn::Open { epoch, events }) = self.conn.as_mut() else { return };
            let epoch = *epoch;
            let Some(next) = events.next().now_or_never() else { return };
            self.moves += 1;
            match next {
                Some(Ok(event)) => self.exec.feed_event(&origin, epoch, event, at),
                Some(Err(error)) => {
                    self.conn = None;
                    self.exec.feed_lost(origin.clone(), epoch, error, at);
                }
                None => {
                    self.conn = None;
                    self.exec.feed_lost(origin.clone(), epoch, SourceError::connection("the feed ended"), at);
                }
            }
            self.after();
        }
    }

    /// Sends the acknowledgements asked for.
    pub fn run_acks(&mut self) {
        let Some(origin) = self.origin.clone() else { return };
        for (epoch, lsn) in std::mem::take(&mut self.acks) {
            if let Some(f) = self.exec.feedback(&origin, epoch) {
                f.ack(lsn);
            }
        }
    }

    /// Moves time on by `ms` and fires the timer if it is due.
    pub fn timer(&mut self, ms: u64) {
        self.now += ms;
        if self.exec.poll_timeout().is_some_and(|t| t.0 <= self.now) {
            let at = self.at();
            self.exec.timer(at);
            self.after();
        }
    }

    /// The process dies: everything in flight is lost, the store keeps what
    /// was persisted, and a new executor starts over what it loads, then
    /// calls `sync()` as an application would.
    pub fn crash(&mut self) {
        self.store.crash();
        self.store_step = None;
        self.persist = false;
        self.sources.clear();
        self.conn = None;
        self.acks.clear();
        self.emitted.clear();
        self.ack_rule.crashed();
        self.exec = start(&self.store, &self.config, self.now);
        #[cfg(feature = "planted-bugs")]
        self.exec.plant(self.bugs);
        self.after();
        self.call(Call::Sync { selector: Selector::All, force: false });
    }

    /// Plays a well-behaved driver (everything completes in order, timers
    /// fire when nothing else moves) until the machine is at rest and every
    /// realtime view has read to the end of the log; `false` if it never
    /// got there.
    pub fn settle(&mut self) -> bool {
        for _ in 0..SETTLE_ROUNDS {
            let before = self.marker();
            self.run_store();
            self.run_persist();
            while !self.sources.is_empty() {
                self.run_source(0);
            }
            self.connect();
            self.pump(64);
            self.run_acks();
            if self.quiet() {
                return true;
            }
            if self.marker() == before {
                match self.exec.poll_timeout() {
                    Some(t) => {
                        self.now = self.now.max(t.0);
                        let at = self.at();
                        self.exec.timer(at);
                        self.after();
                    }
                    None => return false,
                }
            }
        }
        false
    }

    /// Compares every running, enabled realtime view with its upstream
    /// table (panics on a difference); returns how many it compared. Call
    /// after [`Harness::settle`] returned `true`.
    pub fn verify_running(&self) -> usize {
        let mut verified = 0;
        for job in self.exec.machine().status(&Selector::All) {
            if job.persistence != Persistence::Realtime || job.state != JobState::Running || !job.enabled {
                continue;
            }
            let Some(def) =
                self.exec.machine().definitions(&Selector::All).into_iter().find(|v| v.relation_id == job.relation_id)
            else {
                continue;
            };
            let want = self.up.rows(&def.def.upstream.schema, &def.def.upstream.table);
            let got = self.store.rows(job.relation_id);
            assert_eq!(got, want, "view {} is running but its copy differs from upstream", job.name);
            verified += 1;
        }
        verified
    }

    fn marker(&self) -> (bool, bool, usize, u64) {
        (self.store_step.is_some(), self.persist, self.sources.len(), self.moves)
    }

    /// Nothing pending and every realtime view has read to the end of the log.
    fn quiet(&self) -> bool {
        let caught_up = match &self.origin {
            Some(o) => self
                .exec
                .machine()
                .origin_progress(o)
                .and_then(|(at, _)| at)
                .is_some_and(|at| at >= self.up.current_lsn()),
            None => true,
        };
        let feed_up = match self.conn {
            Some(Conn::Open { .. }) => true,
            Some(Conn::Connecting { .. }) => false,
            // Fine only if no view wants a feed.
            None => !self
                .exec
                .machine()
                .status(&Selector::All)
                .iter()
                .any(|j| j.enabled && j.persistence == Persistence::Realtime),
        };
        self.store_step.is_none()
            && !self.persist
            && self.sources.is_empty()
            && !self.exec.has_applies_pending()
            && self.exec.machine().is_quiescent()
            && feed_up
            && caught_up
    }
}

fn start(store: &MemoryStore, config: &Config, now: u64) -> Exec {
    let state = match ready(store.load()) {
        Ok(s) => s,
        Err(e) => panic!("the memory store could not load: {e}"),
    };
    let machine = Machine::new(config.clone(), 7, state, Timestamp(now));
    let mut exec = Executor::new(machine, Timestamp(now));
    exec.set_tap(true);
    exec
}
