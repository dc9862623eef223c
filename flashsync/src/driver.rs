//! The tokio driver: runs the core machine and carries out its actions.
//!
//! Tasks:
//! - the **machine task** owns the [`Machine`]: it feeds it every input
//!   (control calls, operation results, feed events, timers) and dispatches
//!   what comes out;
//! - the **store worker** executes store actions strictly in emission order
//!   (the machine relies on it: a job record written after a batch lands
//!   after it);
//! - the **persister** makes applied batches durable in the background and
//!   reports how far (group commit: fsync never blocks applying);
//! - one task per source call (prepare, snapshot, release) and one per feed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flashsync_core::machine::{BatchGate, Epoch, Stats};
use flashsync_core::{
    Event, Feedback, Generation, Input, JobRecord, Machine, OpId, OriginId, Output, RelationId, Reply, RequestId,
    Selector, SlotReport, Source, SourceAction, SourceError, SourceErrorKind, Store, StoreAction, StoreError,
    StoreErrorKind, StreamEvent, Timestamp, ViewName,
};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

/// Reads the wall clock: the one place flashsync does.
pub(crate) fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

/// What the engine handle and the executor tasks send the machine task.
pub(crate) enum Msg {
    Control { input: ControlCall, reply: oneshot::Sender<Reply> },
    Status { selector: Selector, reply: oneshot::Sender<Vec<JobRecord>> },
    Lookup { name: ViewName, reply: oneshot::Sender<Option<RelationId>> },
    Schema { id: RelationId, reply: oneshot::Sender<Option<flashsync_core::RelationSchema>> },
    Stats { reply: oneshot::Sender<Stats> },
    Input(Input),
    Subscribed { origin: OriginId, epoch: Epoch, result: Result<(SlotReport, Box<dyn Feedback>), SourceError> },
    FeedEvents { origin: OriginId, epoch: Epoch, events: Vec<StreamEvent> },
}

/// A control call, before it gets its request id.
pub(crate) enum ControlCall {
    Define(flashsync_core::ViewDef),
    Sync { selector: Selector, force: bool },
    Stop(Selector),
    Resume(Selector),
    Forget(Selector),
    Shutdown,
}

// Nearly every job is an Action; boxing it would allocate per store action
// to save space in the rare Drain.
#[allow(clippy::large_enum_variant)]
enum StoreJob {
    Action(StoreAction),
    /// Finish everything queued, persist, then answer.
    Drain(oneshot::Sender<()>),
}

struct FeedHandle {
    epoch: Epoch,
    task: JoinHandle<()>,
    pause: watch::Sender<bool>,
    feedback: Option<Box<dyn Feedback>>,
}

type Generations = Arc<Mutex<HashMap<OpId, Box<dyn Generation>>>>;

/// A snapshot in progress, as [`crate::Engine::snapshots`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotProgress {
    /// The view being copied.
    pub relation_id: RelationId,
    /// The upstream relation.
    pub relation: flashsync_core::UpstreamRelation,
    /// Rows written so far.
    pub rows: u64,
    /// When the copy started.
    pub started: std::time::Instant,
}

pub(crate) type Progress = Arc<Mutex<HashMap<OpId, SnapshotProgress>>>;

/// A snapshot batch on its way to the writer task.
enum Batch {
    Rows(Vec<flashsync_core::Row>),
    Encoded(flashsync_core::EncodedRows),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Rows(rows) => rows.len(),
            Batch::Encoded(rows) => rows.len(),
        }
    }
}

/// Hands snapshot batches to the writer task.
struct Queued {
    tx: Option<mpsc::Sender<Batch>>,
}

impl Queued {
    async fn send(&mut self, batch: Batch) -> Result<(), StoreError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(batch).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped on a store error; its error is reported when
            // the snapshot ends.
            self.tx = None;
            Err(StoreError::new(
                StoreErrorKind::Io,
                "snapshot write",
                "the store refused an earlier batch of this copy",
            ))
        }
    }
}

#[async_trait::async_trait]
impl flashsync_core::RowSink for Queued {
    async fn write(&mut self, rows: Vec<flashsync_core::Row>) -> Result<(), StoreError> {
        self.send(Batch::Rows(rows)).await
    }

    async fn write_encoded(&mut self, rows: flashsync_core::EncodedRows) -> Result<(), StoreError> {
        self.send(Batch::Encoded(rows)).await
    }
}

/// Writes batches into a generation, counting rows for progress reports.
struct Counting<'a> {
    inner: &'a mut dyn Generation,
    progress: &'a Progress,
    op: OpId,
}

impl Counting<'_> {
    async fn write(&mut self, batch: Batch) -> Result<(), StoreError> {
        let n = batch.len() as u64;
        match batch {
            Batch::Rows(rows) => self.inner.write(rows).await?,
            Batch::Encoded(rows) => self.inner.write_encoded(rows).await?,
        }
        if let Some(p) = self.progress.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&self.op) {
            p.rows += n;
        }
        Ok(())
    }
}

/// Shared by the tasks that carry out actions.
#[derive(Clone)]
pub(crate) struct Executors {
    pub store: Arc<dyn Store>,
    pub sources: Arc<HashMap<OriginId, Arc<dyn Source>>>,
    pub to_machine: mpsc::UnboundedSender<Msg>,
    generations: Generations,
    pub progress: Progress,
    inflight: Arc<InFlightOps>,
}

/// Feed events forwarded per message at most (amortizes channel overhead).
const FEED_CHUNK: usize = 1024;

/// Row operations handed to the store but not yet applied, above which feeds
/// stop forwarding events: the store sets the pace, and memory stays bounded
/// however large a transaction is (the source's TCP back-pressure then
/// reaches the server).
const MAX_OPS_IN_FLIGHT: usize = 50_000;

/// Row operations dispatched to the store and not yet applied.
#[derive(Default)]
pub(crate) struct InFlightOps {
    ops: std::sync::atomic::AtomicUsize,
    drained: Notify,
}

impl InFlightOps {
    fn add(&self, n: usize) {
        self.ops.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }

    fn done(&self, n: usize) {
        self.ops.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    async fn wait_below(&self, limit: usize) {
        loop {
            let drained = self.drained.notified();
            if self.ops.load(std::sync::atomic::Ordering::Acquire) <= limit {
                return;
            }
            drained.await;
        }
    }
}

fn batch_ops(b: &flashsync_core::ApplyBatch) -> usize {
    b.views.iter().map(|v| v.ops.len()).sum::<usize>().max(1)
}

pub(crate) struct Driver {
    machine: Machine,
    rx: mpsc::UnboundedReceiver<Msg>,
    exec: Executors,
    store_tx: mpsc::UnboundedSender<StoreJob>,
    feeds: HashMap<OriginId, FeedHandle>,
    waiting: HashMap<RequestId, oneshot::Sender<Reply>>,
    next_request: u64,
    events: broadcast::Sender<Event>,
    shutdown_reply: Option<oneshot::Sender<Reply>>,
}

impl Driver {
    pub(crate) fn spawn(
        machine: Machine,
        store: Arc<dyn Store>,
        sources: HashMap<OriginId, Arc<dyn Source>>,
        events: broadcast::Sender<Event>,
        persist_interval: Duration,
        progress: Progress,
    ) -> mpsc::UnboundedSender<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let exec = Executors {
            store,
            sources: Arc::new(sources),
            to_machine: tx.clone(),
            generations: Arc::default(),
            progress,
            inflight: Arc::default(),
        };
        let (store_tx, store_rx) = mpsc::unbounded_channel();
        let dirty = Arc::new(Wake::default());
        tokio::spawn(store_worker(exec.clone(), store_rx, dirty.clone()));
        tokio::spawn(persister(exec.clone(), dirty, persist_interval));
        let driver = Driver {
            machine,
            rx,
            exec,
            store_tx,
            feeds: HashMap::new(),
            waiting: HashMap::new(),
            next_request: 1,
            events,
            shutdown_reply: None,
        };
        tokio::spawn(driver.run());
        tx
    }

    async fn run(mut self) {
        loop {
            let msg = match self.machine.poll_timeout() {
                Some(deadline) => {
                    let wait = Duration::from_millis(deadline.0.saturating_sub(now().0));
                    tokio::select! {
                        m = self.rx.recv() => m,
                        () = tokio::time::sleep(wait) => Some(Msg::Input(Input::Timer)),
                    }
                }
                None => self.rx.recv().await,
            };
            let Some(msg) = msg else { break };
            self.on_msg(msg);
            // Take whatever else is already queued before dispatching, so a
            // burst of feed events is handled in one go.
            for _ in 0..64 {
                match self.rx.try_recv() {
                    Ok(m) => self.on_msg(m),
                    Err(_) => break,
                }
            }
            if self.shutdown_reply.is_some() && self.machine.is_shut_down() {
                self.finish_shutdown().await;
                break;
            }
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Control { input, reply } => {
                let request = RequestId(self.next_request);
                self.next_request += 1;
                let input = match input {
                    ControlCall::Define(def) => Input::Define { request, def },
                    ControlCall::Sync { selector, force } => Input::Sync { request, selector, force },
                    ControlCall::Stop(selector) => Input::Stop { request, selector },
                    ControlCall::Resume(selector) => Input::Resume { request, selector },
                    ControlCall::Forget(selector) => Input::Forget { request, selector },
                    ControlCall::Shutdown => Input::Shutdown { request },
                };
                self.waiting.insert(request, reply);
                self.machine.handle(input, now());
            }
            Msg::Status { selector, reply } => {
                let _ = reply.send(self.machine.status(&selector));
            }
            Msg::Lookup { name, reply } => {
                let _ = reply.send(self.machine.relation_id(&name));
            }
            Msg::Schema { id, reply } => {
                let _ = reply.send(self.machine.schema(id).cloned());
            }
            Msg::Stats { reply } => {
                let _ = reply.send(self.machine.stats().clone());
            }
            Msg::Input(input) => self.machine.handle(input, now()),
            Msg::Subscribed { origin, epoch, result } => {
                let result = result.map(|(report, feedback)| {
                    if let Some(f) = self.feeds.get_mut(&origin).filter(|f| f.epoch == epoch) {
                        f.feedback = Some(feedback);
                    }
                    report
                });
                self.machine.handle(Input::Subscribed { origin, epoch, result }, now());
            }
            Msg::FeedEvents { origin, epoch, events } => {
                for event in events {
                    self.machine.handle(Input::Feed { origin: origin.clone(), epoch, event }, now());
                    self.dispatch();
                }
            }
        }
        self.dispatch();
    }

    fn dispatch(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Store(action) => {
                    if let StoreAction::Apply(b) = &action {
                        self.exec.inflight.add(batch_ops(b));
                    }
                    let _ = self.store_tx.send(StoreJob::Action(action));
                }
                Output::Source(action) => self.source_action(action),
                Output::Event(event) => {
                    log_event(&event);
                    let _ = self.events.send(event);
                }
                Output::Reply { request, reply } => {
                    if let Some(tx) = self.waiting.remove(&request) {
                        if reply == Reply::ShutDown {
                            self.shutdown_reply = Some(tx);
                        } else {
                            let _ = tx.send(reply);
                        }
                    }
                }
            }
        }
    }

    fn source_action(&mut self, action: SourceAction) {
        match action {
            SourceAction::Prepare { op, origin, relation, feed } => {
                let exec = self.exec.clone();
                tokio::spawn(async move {
                    let t = std::time::Instant::now();
                    let result = match exec.source(&origin) {
                        Ok(s) => s.prepare(&relation, feed).await,
                        Err(e) => Err(e),
                    };
                    tracing::debug!(%relation, ok = result.is_ok(), "prepare took {:?}", t.elapsed());
                    exec.input(Input::Prepared { op, result });
                });
            }
            SourceAction::Snapshot { op, origin, relation_id, relation, schema } => {
                let exec = self.exec.clone();
                tokio::spawn(async move {
                    let t = std::time::Instant::now();
                    let result = exec.snapshot(op, &origin, relation_id, &relation, &schema).await;
                    match &result {
                        Ok(p) => tracing::debug!(%relation, rows = p.rows, "snapshot took {:?}", t.elapsed()),
                        Err(e) => tracing::debug!(%relation, "snapshot failed after {:?}: {e}", t.elapsed()),
                    }
                    exec.input(Input::Snapshotted { op, result });
                });
            }
            SourceAction::Subscribe { origin, epoch, resume } => {
                if let Some(old) = self.feeds.remove(&origin) {
                    old.task.abort();
                }
                let (pause_tx, pause_rx) = watch::channel(false);
                let exec = self.exec.clone();
                let o = origin.clone();
                let task = tokio::spawn(async move { exec.run_feed(o, epoch, resume, pause_rx).await });
                self.feeds.insert(origin, FeedHandle { epoch, task, pause: pause_tx, feedback: None });
            }
            SourceAction::Unsubscribe { origin, epoch } => {
                if self.feeds.get(&origin).is_some_and(|f| f.epoch == epoch) {
                    if let Some(f) = self.feeds.remove(&origin) {
                        f.task.abort();
                    }
                }
            }
            SourceAction::Flow { origin, epoch, paused } => {
                if let Some(f) = self.feeds.get(&origin).filter(|f| f.epoch == epoch) {
                    let _ = f.pause.send(paused);
                }
            }
            SourceAction::Ack { origin, epoch, lsn } => {
                if let Some(fb) = self.feeds.get(&origin).filter(|f| f.epoch == epoch).and_then(|f| f.feedback.as_ref())
                {
                    fb.ack(lsn);
                }
            }
            SourceAction::Release { op, origin, relation } => {
                let exec = self.exec.clone();
                tokio::spawn(async move {
                    let result = match exec.source(&origin) {
                        Ok(s) => s.release(&relation).await,
                        Err(e) => Err(e),
                    };
                    exec.input(Input::Released { op, result });
                });
            }
            SourceAction::DropFeed { op, origin } => {
                if let Some(f) = self.feeds.remove(&origin) {
                    f.task.abort();
                }
                let exec = self.exec.clone();
                tokio::spawn(async move {
                    let result = match exec.source(&origin) {
                        Ok(s) => s.drop_feed().await,
                        Err(e) => Err(e),
                    };
                    exec.input(Input::Released { op, result });
                });
            }
        }
    }

    /// After the machine shut down: stop feeds, let the store finish and
    /// persist everything, then answer the caller.
    async fn finish_shutdown(&mut self) {
        for (_, f) in self.feeds.drain() {
            f.task.abort();
        }
        let (tx, rx) = oneshot::channel();
        let _ = self.store_tx.send(StoreJob::Drain(tx));
        let _ = rx.await;
        // Whatever the persister reported after the drain is moot now.
        if let Some(reply) = self.shutdown_reply.take() {
            let _ = reply.send(Reply::ShutDown);
        }
        // Answer anything still waiting so no caller hangs.
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Reply::Failed(flashsync_core::ControlError::ShutDown));
        }
    }
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

impl Executors {
    fn input(&self, input: Input) {
        let _ = self.to_machine.send(Msg::Input(input));
    }

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
        schema: &flashsync_core::RelationSchema,
    ) -> Result<flashsync_core::SnapshotPoint, SourceError> {
        let source = self.source(origin)?;
        let generation = self.store.begin_generation(id, schema).await?;
        let entry = SnapshotProgress {
            relation_id: id,
            relation: relation.clone(),
            rows: 0,
            started: std::time::Instant::now(),
        };
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).insert(op, entry);
        // The source parses the next batch while the store writes this one:
        // a writer task owns the generation and takes batches from a short
        // queue (bounded, so memory stays bounded).
        let (tx, mut rx) = mpsc::channel::<Batch>(2);
        let progress = self.progress.clone();
        let writer = tokio::spawn(async move {
            let mut generation = generation;
            while let Some(rows) = rx.recv().await {
                let mut sink = Counting { inner: &mut *generation, progress: &progress, op };
                if let Err(e) = sink.write(rows).await {
                    return Err((e, generation));
                }
            }
            Ok(generation)
        });
        let mut sink = Queued { tx: Some(tx) };
        let result = source.snapshot(relation, schema, &mut sink).await;
        drop(sink);
        let written = writer.await;
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).remove(&op);
        let generation = match written {
            Ok(Ok(g)) => g,
            Ok(Err((e, g))) => {
                let _ = g.discard().await;
                return Err(result.err().unwrap_or_else(|| e.into()));
            }
            Err(join) => {
                return Err(SourceError::new(SourceErrorKind::Sink, format!("the snapshot writer stopped: {join}")));
            }
        };
        match result {
            Ok(point) => {
                self.generations.lock().unwrap_or_else(|e| e.into_inner()).insert(op, generation);
                Ok(point)
            }
            Err(e) => {
                let _ = generation.discard().await;
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
    ) {
        let source = match self.source(&origin) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.to_machine.send(Msg::Subscribed { origin, epoch, result: Err(e) });
                return;
            }
        };
        let t = std::time::Instant::now();
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
            // Back-pressure: while paused, do not read (the source keeps its
            // connection alive on its own).
            while *pause.borrow() {
                if pause.changed().await.is_err() {
                    return;
                }
            }
            // Let the store catch up before taking more.
            self.inflight.wait_below(MAX_OPS_IN_FLIGHT).await;
            let first = events.next().await;
            let mut batch = Vec::new();
            let mut end: Option<SourceError> = None;
            match first {
                Some(Ok(e)) => batch.push(e),
                Some(Err(e)) => end = Some(e),
                None => end = Some(SourceError::connection("the feed ended")),
            }
            while end.is_none() && batch.len() < FEED_CHUNK {
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
                self.input(Input::FeedLost { origin, epoch, error });
                return;
            }
        }
    }
}

/// Wakes the persister; `closed` tells it to stop.
#[derive(Default)]
struct Wake {
    notify: Notify,
    closed: std::sync::atomic::AtomicBool,
}

/// Most batches handed to the store in one `apply_many`.
const APPLY_RUN: usize = 4096;

async fn store_worker(exec: Executors, mut rx: mpsc::UnboundedReceiver<StoreJob>, dirty: Arc<Wake>) {
    struct Close(Arc<Wake>);
    impl Drop for Close {
        fn drop(&mut self) {
            self.0.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            self.0.notify.notify_one();
        }
    }
    let _close = Close(dirty.clone());
    // A job taken off the queue while gathering a run of batches, handled next.
    let mut next: Option<StoreJob> = None;
    // Refuses batches queued behind a failed one (see `BatchGate`).
    let mut gate = BatchGate::default();
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => break,
            },
        };
        let action = match job {
            StoreJob::Action(a) => a,
            StoreJob::Drain(done) => {
                if let Ok(Some(through)) = exec.store.persist().await {
                    exec.input(Input::Durable { through });
                }
                let _ = done.send(());
                continue;
            }
        };
        match action {
            StoreAction::PutView { op, view } => {
                let result = exec.store.put_view(&view).await;
                exec.input(Input::StoreDone { op, result });
            }
            StoreAction::PutJob { op, job } => {
                let result = exec.store.put_job(&job).await;
                exec.input(Input::StoreDone { op, result });
            }
            StoreAction::Forget { op, relation_id } => {
                let result = exec.store.forget(relation_id).await;
                exec.input(Input::StoreDone { op, result });
            }
            StoreAction::ForgetOrigin { op, origin } => {
                let result = exec.store.forget_origin(&origin).await;
                exec.input(Input::StoreDone { op, result });
            }
            StoreAction::Publish { op, job } => {
                let generation = exec.generations.lock().unwrap_or_else(|e| e.into_inner()).remove(&op);
                let t = std::time::Instant::now();
                let result = match generation {
                    Some(g) => g.publish(&job).await.inspect(|()| tracing::debug!("publish took {:?}", t.elapsed())),
                    None => Err(StoreError::new(
                        StoreErrorKind::NotFound,
                        "publish",
                        format!("no generation for operation {}", op.0),
                    )),
                };
                exec.input(Input::StoreDone { op, result });
            }
            StoreAction::Discard { op } => {
                let generation = exec.generations.lock().unwrap_or_else(|e| e.into_inner()).remove(&op);
                if let Some(g) = generation {
                    if let Err(e) = g.discard().await {
                        tracing::warn!("could not discard a snapshot generation: {e}");
                    }
                }
            }
            StoreAction::Fence { op } => exec.input(Input::StoreDone { op, result: Ok(()) }),
            StoreAction::Apply(batch) => {
                // Gather every batch already queued behind this one: the store
                // applies the run in one go.
                let mut run = vec![batch];
                while run.len() < APPLY_RUN {
                    match rx.try_recv() {
                        Ok(StoreJob::Action(StoreAction::Apply(b))) => run.push(b),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let ops: usize = run.iter().map(batch_ops).sum();
                // Batches behind an earlier failure of their origin are
                // answered without reaching the store; the rest go in one run.
                let mut answers = Vec::with_capacity(run.len());
                let mut admitted = Vec::with_capacity(run.len());
                for batch in run {
                    let refused = gate.admit(&batch).err();
                    answers.push((batch.seq, batch.origin.clone(), batch.chain, refused));
                    if answers.last().is_some_and(|a| a.3.is_none()) {
                        admitted.push(batch);
                    }
                }
                let mut results = exec.store.apply_many(admitted).await.into_iter();
                exec.inflight.done(ops);
                for (seq, origin, chain, refused) in answers {
                    let result = match refused {
                        Some(e) => Err(e),
                        None => results.next().unwrap_or_else(|| {
                            Err(StoreError::new(
                                StoreErrorKind::Invalid,
                                format!("apply batch {}", seq.0),
                                "the store gave fewer answers than batches",
                            ))
                        }),
                    };
                    if result.is_err() {
                        gate.failed(&origin, chain);
                    }
                    exec.input(Input::Applied { seq, result });
                }
                dirty.notify.notify_one();
            }
        }
    }
}

/// Makes applied batches durable, at most once per `interval`, and reports it.
async fn persister(exec: Executors, dirty: Arc<Wake>, interval: Duration) {
    loop {
        dirty.notify.notified().await;
        if dirty.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        match exec.store.persist().await {
            Ok(Some(through)) => exec.input(Input::Durable { through }),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("could not make the store durable: {e}");
                // Try again on the next batch; nothing is acknowledged meanwhile.
            }
        }
    }
}
