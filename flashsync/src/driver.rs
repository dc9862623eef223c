//! The tokio driver: tasks around the core [`Executor`].
//!
//! The executor (`flashsync_core::exec`) says what each machine action
//! means; this module only does the I/O, in tasks:
//! - the **machine task** owns the [`Executor`] (and through it the
//!   machine): it hands it every control call, result and feed event, fires
//!   its timer, and carries out the work it asks for;
//! - the **store worker** runs the store steps it is handed, one at a time;
//! - the **persister** makes applied batches durable when asked (after
//!   `persist_interval`, so commits are grouped; fsync never blocks applying);
//! - one task per source call (prepare, snapshot, release) and one per feed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flashsync_core::exec::{Call, Executor, FeedCommand, SourceAnswer, SourceCall, StoreAnswer, StoreStep, Work};
use flashsync_core::KeyRange;

use crate::changes::{Changes, Happened, Position, Published, ReadTarget, ReadView, RowsRead, ViewRowChanges};
use flashsync_core::machine::{Epoch, Stats};
use flashsync_core::{
    BatchSeq, Event, Feedback, Generation, JobRecord, Machine, Millis, Now, OpId, OriginId, RelationId, Reply,
    Selector, SlotReport, Source, SourceError, SourceErrorKind, Store, StoreError, StreamEvent, Timestamp, ViewName,
};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Reads the wall clock: with [`clock`], the one place flashsync does.
pub(crate) fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

/// Both clocks the machine runs on: the wall clock for the records users
/// read, and a monotonic one (milliseconds since the first call in this
/// process) for deadlines, which setting the system clock must not move.
pub(crate) fn clock() -> Now {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    Now { wall: now(), mono: Millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)) }
}

/// A control call, before it gets its request id.
pub(crate) type ControlCall = Call;

type Exec = Executor<oneshot::Sender<Reply>, Box<dyn Generation>, Box<dyn Feedback>>;

/// What the engine handle and the I/O tasks send the machine task.
pub(crate) enum Msg {
    Control {
        input: ControlCall,
        reply: oneshot::Sender<Reply>,
    },
    Status {
        selector: Selector,
        reply: oneshot::Sender<Vec<JobRecord>>,
    },
    Lookup {
        name: ViewName,
        reply: oneshot::Sender<Option<RelationId>>,
    },
    Schema {
        id: RelationId,
        reply: oneshot::Sender<Option<flashsync_core::RelationSchema>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    /// Each origin's acknowledged (durable) position, for lag.
    Progress {
        reply: oneshot::Sender<HashMap<OriginId, Option<flashsync_core::Lsn>>>,
    },
    /// Read views' rows between store steps (a change feed starting).
    ReadRows {
        views: ReadTarget,
        reply: oneshot::Sender<RowsRead>,
    },
    StoreDone(StoreAnswer<Box<dyn Generation>>),
    Persisted(Result<Option<BatchSeq>, StoreError>),
    Source(SourceAnswer<Box<dyn Generation>>),
    Subscribed {
        origin: OriginId,
        epoch: Epoch,
        result: Result<(SlotReport, Box<dyn Feedback>), SourceError>,
    },
    FeedEvents {
        origin: OriginId,
        epoch: Epoch,
        events: Vec<StreamEvent>,
    },
    FeedLost {
        origin: OriginId,
        epoch: Epoch,
        error: SourceError,
    },
}

/// A feed connection's task.
struct FeedHandle {
    epoch: Epoch,
    task: JoinHandle<()>,
    pause: watch::Sender<bool>,
}

/// A snapshot in progress, as [`crate::Engine::snapshots`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotProgress {
    /// The view being copied.
    pub relation_id: RelationId,
    /// The upstream relation.
    pub relation: flashsync_core::UpstreamRelation,
    /// Rows written so far by this process.
    pub rows: u64,
    /// Rows the copy already held when this process continued it from a
    /// checkpoint an earlier one left (not in `rows`); 0 for a copy begun
    /// here.
    pub resumed_rows: u64,
    /// About how many rows the copy will write, from the server's
    /// statistics (`None` until known, or if the source cannot tell). May
    /// be stale; a filtered view copies fewer.
    pub estimated_rows: Option<u64>,
    /// Chunks copied so far, for a copy made in chunks (0 otherwise, and
    /// while the first is copied).
    pub chunks: u32,
    /// When the copy started.
    pub started: std::time::Instant,
}

impl SnapshotProgress {
    /// Rows per second so far.
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.started.elapsed().as_secs_f64().max(0.001)
    }

    /// Time left at the rate so far, if the total is estimated and rows
    /// have arrived (zero once the estimate is passed).
    pub fn eta(&self) -> Option<std::time::Duration> {
        let total = self.estimated_rows?;
        let rate = self.rate();
        if self.rows == 0 || rate <= 0.0 {
            return None;
        }
        Some(std::time::Duration::from_secs_f64(total.saturating_sub(self.done()) as f64 / rate))
    }

    /// Rows the copy holds in all: this process's and what it continued from.
    pub fn done(&self) -> u64 {
        self.rows.saturating_add(self.resumed_rows)
    }
}

pub(crate) type Progress = Arc<Mutex<HashMap<OpId, SnapshotProgress>>>;

/// Writes a snapshot's rows straight into its generation, counting them
/// for progress reports. (A writer task behind a short queue, so the source
/// parsed the next batch while the store wrote this one, measured no faster:
/// the fjall store already loads generations on a thread of its own.)
struct Counting<'a> {
    inner: &'a mut dyn Generation,
    progress: &'a Progress,
    op: OpId,
}

impl Counting<'_> {
    fn count(&self, n: usize) {
        if let Some(p) = self.progress.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&self.op) {
            p.rows += n as u64;
        }
    }
}

#[async_trait::async_trait]
impl flashsync_core::RowSink for Counting<'_> {
    async fn write(&mut self, rows: Vec<flashsync_core::Row>) -> Result<(), StoreError> {
        let n = rows.len();
        self.inner.write(rows).await?;
        self.count(n);
        Ok(())
    }

    async fn write_encoded(&mut self, rows: flashsync_core::EncodedRows) -> Result<(), StoreError> {
        let n = rows.len();
        self.inner.write_encoded(rows).await?;
        self.count(n);
        Ok(())
    }
}

/// Shared by the tasks that do I/O.
#[derive(Clone)]
pub(crate) struct Io {
    pub store: Arc<dyn Store>,
    pub sources: Arc<HashMap<OriginId, Arc<dyn Source>>>,
    pub to_machine: mpsc::UnboundedSender<Msg>,
    pub progress: Progress,
}

pub(crate) struct Driver {
    exec: Exec,
    rx: mpsc::UnboundedReceiver<Msg>,
    io: Io,
    store_tx: mpsc::UnboundedSender<WorkerJob>,
    persist_tx: mpsc::UnboundedSender<()>,
    feeds: HashMap<OriginId, FeedHandle>,
    events: broadcast::Sender<Event>,
    changes: ChangeHub,
}

/// What the store worker is handed. (Steps dominate; boxing them would
/// cost an allocation per step to shrink the rare read.)
#[allow(clippy::large_enum_variant)]
enum WorkerJob {
    /// A store step of the executor's.
    Step(StoreStep<Box<dyn Generation>>),
    /// Read views' rows now, between two steps.
    Read { views: Vec<(RelationId, Option<ViewName>)>, reply: oneshot::Sender<RowsRead> },
}

/// What a step handed to the store worker means for change feeds, kept
/// until its answer comes back (the worker answers in order).
enum StepMeta {
    /// An apply run: each batch's origin, progress and commit time.
    Apply(Vec<(OriginId, flashsync_core::Progress, Option<Timestamp>)>),
    Publish {
        id: RelationId,
        view: ViewName,
    },
    Forget(RelationId),
    Other,
}

/// The change feeds' side of the machine task: see [`crate::changes`].
pub(crate) struct ChangeHub {
    pub tx: broadcast::Sender<Arc<Published>>,
    /// Steps handed to the store worker, not answered yet.
    sent: std::collections::VecDeque<StepMeta>,
    /// Steps answered so far (the number of the last one).
    done: u64,
    /// View names by id, for views that were forgotten since too.
    names: HashMap<RelationId, ViewName>,
}

impl ChangeHub {
    pub(crate) fn new(tx: broadcast::Sender<Arc<Published>>) -> Self {
        ChangeHub { tx, sent: Default::default(), done: 0, names: HashMap::new() }
    }
}

impl Driver {
    pub(crate) fn spawn(
        machine: Machine,
        store: Arc<dyn Store>,
        sources: HashMap<OriginId, Arc<dyn Source>>,
        events: broadcast::Sender<Event>,
        changes: broadcast::Sender<Arc<Published>>,
        persist_interval: Duration,
        progress: Progress,
    ) -> mpsc::UnboundedSender<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let io = Io { store, sources: Arc::new(sources), to_machine: tx.clone(), progress };
        let (store_tx, store_rx) = mpsc::unbounded_channel();
        let (persist_tx, persist_rx) = mpsc::unbounded_channel();
        tokio::spawn(store_worker(io.clone(), store_rx));
        tokio::spawn(persister(io.clone(), persist_rx, persist_interval));
        let mut changes = ChangeHub::new(changes);
        for record in machine.definitions(&Selector::All) {
            changes.names.insert(record.relation_id, record.def.name);
        }
        let driver = Driver {
            exec: Executor::new(machine, clock()),
            rx,
            io,
            store_tx,
            persist_tx,
            feeds: HashMap::new(),
            events,
            changes,
        };
        tokio::spawn(driver.run());
        tx
    }

    async fn run(mut self) {
        self.dispatch();
        loop {
            let msg = match self.exec.poll_timeout() {
                Some(deadline) => {
                    let wait = Duration::from_millis(deadline.0.saturating_sub(clock().mono.0));
                    tokio::select! {
                        m = self.rx.recv() => m,
                        () = tokio::time::sleep(wait) => {
                            self.exec.timer(clock());
                            self.dispatch();
                            continue;
                        }
                    }
                }
                None => self.rx.recv().await,
            };
            let Some(msg) = msg else { break };
            self.on_msg(msg);
            // Take whatever else is already queued before waiting again, so a
            // burst of feed events is handled in one go.
            for _ in 0..64 {
                match self.rx.try_recv() {
                    Ok(m) => self.on_msg(m),
                    Err(_) => break,
                }
            }
            if self.exec.is_finished() {
                break;
            }
        }
        for (_, f) in self.feeds.drain() {
            f.task.abort();
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        let t = clock();
        // Batches ask the store for their changes only while a feed listens.
        self.exec.set_capture(self.changes.tx.receiver_count() > 0);
        match msg {
            Msg::Control { input, reply } => {
                self.exec.call(input, reply, t);
            }
            Msg::Status { selector, reply } => {
                let _ = reply.send(self.exec.machine().status(&selector));
            }
            Msg::Lookup { name, reply } => {
                let _ = reply.send(self.exec.machine().relation_id(&name));
            }
            Msg::Schema { id, reply } => {
                let _ = reply.send(self.exec.machine().schema(id).cloned());
            }
            Msg::Stats { reply } => {
                let _ = reply.send(self.exec.machine().stats().clone());
            }
            Msg::Progress { reply } => {
                let machine = self.exec.machine();
                let progress = self
                    .io
                    .sources
                    .keys()
                    .map(|o| (o.clone(), machine.origin_progress(o).and_then(|(_, acked)| acked)))
                    .collect();
                let _ = reply.send(progress);
            }
            Msg::ReadRows { views, reply } => {
                // Every step handed out from now on captures its changes;
                // those handed out before run before this read.
                self.exec.set_capture(true);
                let views = match views {
                    ReadTarget::Ids(ids) => ids.into_iter().map(|id| (id, None)).collect(),
                    ReadTarget::Selector(selector) => self
                        .exec
                        .machine()
                        .definitions(&selector)
                        .into_iter()
                        .map(|r| (r.relation_id, Some(r.def.name)))
                        .collect(),
                };
                let _ = self.store_tx.send(WorkerJob::Read { views, reply });
            }
            Msg::StoreDone(mut answer) => {
                self.publish_changes(&mut answer);
                self.exec.store_done(answer, t)
            }
            Msg::Persisted(result) => self.exec.persisted(result, t),
            Msg::Source(answer) => self.exec.source_done(answer, t),
            Msg::Subscribed { origin, epoch, result } => self.exec.subscribed(origin, epoch, result, t),
            Msg::FeedEvents { origin, epoch, events } => {
                for event in events {
                    self.exec.feed_event(&origin, epoch, event, t);
                    // Hand store work out as soon as it exists.
                    self.dispatch();
                }
            }
            Msg::FeedLost { origin, epoch, error } => self.exec.feed_lost(origin, epoch, error, t),
        }
        self.dispatch();
    }

    fn dispatch(&mut self) {
        while let Some(work) = self.exec.poll_work() {
            match work {
                Work::Store(step) => {
                    if let StoreStep::PutView(record) = &step {
                        // Remembered now: by the time a Forget step answers,
                        // the machine has let go of the definition.
                        self.changes.names.insert(record.relation_id, record.def.name.clone());
                    }
                    if let StoreStep::Publish { op, .. } | StoreStep::Discard { op, .. } = &step {
                        // A copy in chunks keeps its progress entry between
                        // chunks; it ends here.
                        self.io.progress.lock().unwrap_or_else(|e| e.into_inner()).remove(op);
                    }
                    self.changes.sent.push_back(StepMeta::of(&step));
                    let _ = self.store_tx.send(WorkerJob::Step(step));
                }
                Work::Persist => {
                    let _ = self.persist_tx.send(());
                }
                Work::Source(call) => self.source_call(call, None),
                Work::Chunk { call, generation } => match generation {
                    Some(g) => self.source_call(call, Some(g)),
                    None => {
                        // Cannot happen: the executor keeps every copy's
                        // generation until its publish or discard. Answered
                        // through the machine task's channel all the same.
                        if let SourceCall::Snapshot { op, .. } = call {
                            let e = SourceError::new(
                                SourceErrorKind::Other,
                                "the copy's generation was lost between two chunks",
                            );
                            let answer = SourceAnswer::ChunkCopied { op, result: Err(e) };
                            let _ = self.io.to_machine.send(Msg::Source(answer));
                        }
                    }
                },
                Work::Feed(command) => self.feed_command(command),
                Work::Ack { origin, epoch, lsn } => {
                    if let Some(feedback) = self.exec.feedback(&origin, epoch) {
                        feedback.ack(lsn);
                    }
                }
                Work::Event(event) => {
                    log_event(&event);
                    let _ = self.events.send(event);
                }
                Work::Reply(tx, reply) => {
                    let _ = tx.send(reply);
                }
            }
        }
    }

    fn source_call(&mut self, call: SourceCall, kept: Option<Box<dyn Generation>>) {
        let io = self.io.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let answer = match call {
                SourceCall::Prepare { op, origin, relation, feed } => {
                    let result = match io.source(&origin) {
                        Ok(s) => s.prepare(&relation, feed).await,
                        Err(e) => Err(e),
                    };
                    tracing::debug!(%relation, ok = result.is_ok(), "prepare took {:?}", t.elapsed());
                    SourceAnswer::Prepared { op, result }
                }
                SourceCall::Snapshot { op, origin, relation_id, relation, shape, chunk: Some(chunk) } => {
                    let result = io.copy_chunk(op, &origin, relation_id, &relation, &shape, &chunk, kept).await;
                    match &result {
                        // The whole copy is worth a line, as a copy in one
                        // piece is; each chunk only at debug level.
                        Ok((c, _)) if c.end == flashsync_core::ChunkEnd::Done => {
                            let (rows, chunks, took) = io.copy_totals(op).unwrap_or((c.point.rows, 1, t.elapsed()));
                            tracing::info!(
                                %relation,
                                rows,
                                chunks,
                                "copied {relation} in {chunks} chunk(s) in {took:?}"
                            )
                        }
                        Ok((c, _)) => tracing::debug!(
                            %relation,
                            rows = c.point.rows,
                            "copied a chunk of {relation} in {:?}",
                            t.elapsed()
                        ),
                        Err(e) => tracing::debug!(%relation, "chunk failed after {:?}: {e}", t.elapsed()),
                    }
                    SourceAnswer::ChunkCopied { op, result }
                }
                SourceCall::Snapshot { op, origin, relation_id, relation, shape, chunk: None } => {
                    let result = io.snapshot(op, &origin, relation_id, &relation, &shape).await;
                    match &result {
                        // Every copy is worth a line: a copy that happens when
                        // it should not (after a restart, say) is how an
                        // operator notices the mirror was not trusted.
                        Ok((p, _)) => {
                            tracing::info!(%relation, rows = p.rows, "copied {relation} in {:?}", t.elapsed())
                        }
                        Err(e) => tracing::debug!(%relation, "snapshot failed after {:?}: {e}", t.elapsed()),
                    }
                    SourceAnswer::Snapshotted { op, result }
                }
                SourceCall::Release { op, origin, relation } => {
                    let result = match io.source(&origin) {
                        Ok(s) => s.release(&relation).await,
                        Err(e) => Err(e),
                    };
                    SourceAnswer::Released { op, result }
                }
                SourceCall::DropFeed { op, origin } => {
                    let result = match io.source(&origin) {
                        Ok(s) => s.drop_feed().await,
                        Err(e) => Err(e),
                    };
                    SourceAnswer::Released { op, result }
                }
            };
            let _ = io.to_machine.send(Msg::Source(answer));
        });
    }

    fn feed_command(&mut self, command: FeedCommand) {
        match command {
            FeedCommand::Open { origin, epoch, resume } => {
                if let Some(old) = self.feeds.remove(&origin) {
                    old.task.abort();
                }
                let (pause_tx, pause_rx) = watch::channel(false);
                let io = self.io.clone();
                let o = origin.clone();
                let chunk = self.exec.machine().config().feed_chunk.max(1);
                let task = tokio::spawn(async move { io.run_feed(o, epoch, resume, pause_rx, chunk).await });
                self.feeds.insert(origin, FeedHandle { epoch, task, pause: pause_tx });
            }
            FeedCommand::Close { origin, epoch } => {
                if self.feeds.get(&origin).is_some_and(|f| f.epoch == epoch) {
                    if let Some(f) = self.feeds.remove(&origin) {
                        f.task.abort();
                    }
                }
            }
            FeedCommand::Pause { origin, epoch, paused } => {
                if let Some(f) = self.feeds.get(&origin).filter(|f| f.epoch == epoch) {
                    let _ = f.pause.send(paused);
                }
            }
        }
    }
}

impl StepMeta {
    fn of(step: &StoreStep<Box<dyn Generation>>) -> StepMeta {
        match step {
            StoreStep::Apply(batches) => {
                StepMeta::Apply(batches.iter().map(|b| (b.origin.clone(), b.progress, b.commit_time)).collect())
            }
            StoreStep::Publish { job, .. } => match ViewName::new(job.namespace.as_str(), job.name.as_str()) {
                Ok(view) => StepMeta::Publish { id: job.relation_id, view },
                Err(_) => StepMeta::Other,
            },
            StoreStep::Forget(id) => StepMeta::Forget(*id),
            _ => StepMeta::Other,
        }
    }
}

impl Driver {
    /// Numbers a store step's answer and publishes what it did to views'
    /// rows to the change feeds (taking the changes out of the answer: the
    /// machine has no use for them).
    fn publish_changes(&mut self, answer: &mut StoreAnswer<Box<dyn Generation>>) {
        let hub = &mut self.changes;
        hub.done += 1;
        let step = hub.done;
        let Some(meta) = hub.sent.pop_front() else { return };
        if hub.tx.receiver_count() == 0 {
            return;
        }
        let what = match (meta, answer) {
            (StepMeta::Apply(metas), StoreAnswer::Applied(results)) => {
                let mut groups = Vec::new();
                for ((origin, progress, time), result) in metas.into_iter().zip(results.iter_mut()) {
                    let Ok(report) = result else { continue };
                    let mut views = Vec::new();
                    for vc in std::mem::take(&mut report.changes) {
                        if let Some(view) = name_of(hub, self.exec.machine(), vc.relation_id) {
                            views.push(ViewRowChanges { view, changes: vc.changes });
                        }
                    }
                    if views.is_empty() {
                        continue;
                    }
                    let position = match progress {
                        flashsync_core::Progress::Commit { end_lsn } => Position::Commit { lsn: end_lsn, time },
                        // Staged parts change no row: their changes come
                        // with the commit that applies them.
                        flashsync_core::Progress::Stage { .. } => continue,
                        flashsync_core::Progress::Replay => Position::Replay,
                    };
                    groups.push(Changes { origin, position, views });
                }
                if groups.is_empty() {
                    return;
                }
                Happened::Applied(groups)
            }
            (StepMeta::Publish { id, view }, StoreAnswer::Done(Ok(()))) => {
                hub.names.insert(id, view.clone());
                Happened::Replaced { id, view }
            }
            (StepMeta::Forget(id), StoreAnswer::Done(Ok(()))) => match name_of(hub, self.exec.machine(), id) {
                Some(view) => Happened::Forgotten { view },
                None => return,
            },
            _ => return,
        };
        let _ = hub.tx.send(Arc::new(Published { step, what }));
    }
}

/// A view's name, from the hub's memory or the machine's definitions.
fn name_of(hub: &mut ChangeHub, machine: &Machine, id: RelationId) -> Option<ViewName> {
    if let Some(name) = hub.names.get(&id) {
        return Some(name.clone());
    }
    for record in machine.definitions(&Selector::All) {
        hub.names.insert(record.relation_id, record.def.name.clone());
    }
    hub.names.get(&id).cloned()
}

fn log_event(event: &Event) {
    use flashsync_core::EventKind;
    let view = event.view.as_ref().map(ToString::to_string).unwrap_or_default();
    match &event.kind {
        EventKind::StateChanged { from, to } => {
            tracing::info!(view, phase = %event.phase, "{from} -> {to}")
        }
        EventKind::Error { message } => tracing::warn!(view, phase = %event.phase, "{message}"),
        EventKind::Conflict { message } => {
            tracing::warn!(view, phase = %event.phase, "conflict: {message}")
        }
    }
}

impl Io {
    fn source(&self, origin: &OriginId) -> Result<Arc<dyn Source>, SourceError> {
        self.sources
            .get(origin)
            .cloned()
            .ok_or_else(|| SourceError::new(SourceErrorKind::Refused, format!("origin {origin} is not configured")))
    }

    async fn snapshot(
        &self,
        op: OpId,
        origin: &OriginId,
        id: RelationId,
        relation: &flashsync_core::UpstreamRelation,
        shape: &flashsync_core::ViewShape,
    ) -> Result<(flashsync_core::SnapshotPoint, Box<dyn Generation>), SourceError> {
        let source = self.source(origin)?;
        let generation = self.store.begin_generation(id, shape.local()).await?;
        let estimate = self.track(op, id, relation, &source, 0);
        let mut generation = generation;
        let result = {
            let mut sink = Counting { inner: &mut *generation, progress: &self.progress, op };
            source.snapshot(relation, shape, &mut sink).await
        };
        // The store's pending work for these rows is done here, in this
        // task, rather than in the publish step, where it would hold back
        // every other view's batches (`Generation::settle`).
        let result = match result {
            Ok(point) => generation.settle().await.map(|()| point).map_err(SourceError::from),
            Err(e) => Err(e),
        };
        if let Some(estimate) = estimate {
            estimate.abort();
        }
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).remove(&op);
        match result {
            Ok(point) => Ok((point, generation)),
            Err(e) => {
                let _ = generation.discard().await;
                Err(e)
            }
        }
    }

    /// Starts the progress entry of copy `op` unless it has one (a later
    /// chunk), and asks for the row estimate beside the copy — never in
    /// front of it; the task, when one was started.
    fn track(
        &self,
        op: OpId,
        id: RelationId,
        relation: &flashsync_core::UpstreamRelation,
        source: &Arc<dyn Source>,
        resumed_rows: u64,
    ) -> Option<tokio::task::JoinHandle<()>> {
        {
            let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            if progress.contains_key(&op) {
                return None;
            }
            let entry = SnapshotProgress {
                relation_id: id,
                relation: relation.clone(),
                rows: 0,
                resumed_rows,
                estimated_rows: None,
                chunks: 0,
                started: Instant::now(),
            };
            progress.insert(op, entry);
        }
        let (source, relation, progress) = (source.clone(), relation.clone(), self.progress.clone());
        Some(tokio::spawn(async move {
            let estimate = source.estimate_rows(&relation).await;
            if let Some(p) = progress.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&op) {
                p.estimated_rows = estimate;
            }
        }))
    }

    /// Rows, chunks and time so far of the copy `op` (in chunks).
    fn copy_totals(&self, op: OpId) -> Option<(u64, u32, std::time::Duration)> {
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.get(&op).map(|p| (p.rows, p.chunks, p.started.elapsed()))
    }

    /// One chunk of a copy in chunks: the first begins the generation,
    /// later ones write into the one they are given. Progress adds up over
    /// the chunks (the entry is dropped at the copy's publish or discard).
    #[allow(clippy::too_many_arguments)]
    async fn copy_chunk(
        &self,
        op: OpId,
        origin: &OriginId,
        id: RelationId,
        relation: &flashsync_core::UpstreamRelation,
        shape: &flashsync_core::ViewShape,
        chunk: &flashsync_core::machine::ChunkRequest,
        kept: Option<Box<dyn Generation>>,
    ) -> Result<(flashsync_core::CopiedChunk, Box<dyn Generation>), SourceError> {
        let source = self.source(origin)?;
        let resumed = kept.is_some() && !self.progress.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&op);
        let mut generation = match kept {
            Some(g) => g,
            None => self.store.begin_generation(id, shape.local()).await?,
        };
        if resumed {
            // A later chunk with no progress in this process: the copy
            // continues from a checkpoint an earlier process left.
            tracing::info!(
                %relation,
                rows = chunk.copied,
                "continuing the copy of {relation} from its last checkpoint ({} rows)",
                chunk.copied
            );
        }
        // The estimate outlives the chunk: it serves the whole copy.
        drop(self.track(op, id, relation, &source, if resumed { chunk.copied } else { 0 }));
        let result = {
            let mut sink = Counting { inner: &mut *generation, progress: &self.progress, op };
            source.copy_chunk(relation, shape, chunk.after.as_ref(), chunk.rows, &mut sink).await
        };
        // As for a copy in one piece: the amendment or checkpoint step that
        // follows the chunk finds nothing pending.
        let result = match result {
            Ok(c) => generation.settle().await.map(|()| c).map_err(SourceError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(c) => {
                if let Some(p) = self.progress.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&op) {
                    p.chunks = p.chunks.saturating_add(1);
                }
                Ok((c, generation))
            }
            Err(e) => {
                self.progress.lock().unwrap_or_else(|e| e.into_inner()).remove(&op);
                // Dropped, not discarded: a store keeps a checkpointed copy
                // for a later start to continue (and reclaims any other).
                drop(generation);
                Err(e)
            }
        }
    }

    async fn run_feed(
        self,
        origin: OriginId,
        epoch: Epoch,
        resume: Option<flashsync_core::Lsn>,
        mut pause: watch::Receiver<bool>,
        chunk: usize,
    ) {
        let source = match self.source(&origin) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.to_machine.send(Msg::Subscribed { origin, epoch, result: Err(e) });
                return;
            }
        };
        let t = Instant::now();
        let subscribed = source.subscribe(resume).await;
        tracing::debug!(%origin, ok = subscribed.is_ok(), "subscribe took {:?}", t.elapsed());
        let sub = match subscribed {
            Ok(sub) => sub,
            Err(e) => {
                let _ = self.to_machine.send(Msg::Subscribed { origin, epoch, result: Err(e) });
                return;
            }
        };
        let mut events = sub.events;
        let _ = self.to_machine.send(Msg::Subscribed {
            origin: origin.clone(),
            epoch,
            result: Ok((sub.report, sub.feedback)),
        });
        loop {
            // Back-pressure (the machine's, or the store's: the executor
            // decides): while paused, do not read (the source keeps its
            // connection alive on its own).
            while *pause.borrow() {
                if pause.changed().await.is_err() {
                    return;
                }
            }
            let first = events.next().await;
            let mut batch = Vec::new();
            let mut end: Option<SourceError> = None;
            match first {
                Some(Ok(e)) => batch.push(e),
                Some(Err(e)) => end = Some(e),
                None => end = Some(SourceError::connection("the feed ended")),
            }
            while end.is_none() && batch.len() < chunk {
                match futures::FutureExt::now_or_never(events.next()) {
                    Some(Some(Ok(e))) => batch.push(e),
                    Some(Some(Err(e))) => end = Some(e),
                    Some(None) => end = Some(SourceError::connection("the feed ended")),
                    None => break,
                }
            }
            if !batch.is_empty() {
                let _ = self.to_machine.send(Msg::FeedEvents { origin: origin.clone(), epoch, events: batch });
            }
            if let Some(error) = end {
                let _ = self.to_machine.send(Msg::FeedLost { origin, epoch, error });
                return;
            }
        }
    }
}

/// Runs the store steps the executor hands out, one at a time, and the
/// change feeds' reads between them.
async fn store_worker(io: Io, mut rx: mpsc::UnboundedReceiver<WorkerJob>) {
    let mut done = 0u64;
    while let Some(job) = rx.recv().await {
        let step = match job {
            WorkerJob::Step(step) => step,
            WorkerJob::Read { views, reply } => {
                let mut read = Vec::with_capacity(views.len());
                for (id, name) in views {
                    let rows = match io.store.scan(id, &KeyRange::default(), usize::MAX).await {
                        Err(e) if e.kind == flashsync_core::StoreErrorKind::NotFound => Ok(Vec::new()),
                        other => other,
                    };
                    read.push(ReadView { name, rows });
                }
                let _ = reply.send(RowsRead { views: read, through: done });
                continue;
            }
        };
        done += 1;
        let answer = step.run(&*io.store).await;
        if let StoreAnswer::Discarded(Err(e)) = &answer {
            tracing::warn!("could not discard a snapshot generation: {e}");
        }
        if io.to_machine.send(Msg::StoreDone(answer)).is_err() {
            return;
        }
    }
}

/// Makes applied batches durable when asked, waiting `interval` first so
/// the batches applied meanwhile share the fsync.
async fn persister(io: Io, mut rx: mpsc::UnboundedReceiver<()>, interval: Duration) {
    while rx.recv().await.is_some() {
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        let result = io.store.persist().await;
        if let Err(e) = &result {
            tracing::error!("could not make the store durable: {e}");
        }
        if io.to_machine.send(Msg::Persisted(result)).is_err() {
            return;
        }
    }
}
