//! A recording [`Source`] wrapper: snapshot points, subscription starts, gates and hooks.

use super::*;

/// A [`Source`] that delegates to a [`PgSource`] and records what happens:
/// snapshot points, subscription starts. Tests can hold snapshots at a gate
/// and run hooks right after `prepare` and `snapshot`.
pub struct Probe {
    inner: PgSource,
    /// Visibility points of finished snapshots, in order.
    pub snapshots: Mutex<Vec<(UpstreamRelation, SnapshotPoint)>>,
    /// How each subscription started.
    pub subscribes: Mutex<Vec<FeedStart>>,
    /// Snapshots wait for a permit here when set.
    gate: Mutex<Option<Arc<Semaphore>>>,
    after_prepare: Mutex<Option<Hook>>,
    before_snapshot: Mutex<Option<Hook>>,
    after_snapshot: Mutex<Option<Hook>>,
    /// While true, the engine gets no feed events (as if it were stuck).
    paused: Arc<tokio::sync::watch::Sender<bool>>,
    /// When set, the feed pauses itself once a transaction has delivered
    /// this many changes.
    pause_after: Arc<Mutex<Option<usize>>>,
    /// `prepare` calls so far (each one logs in to the server).
    prepares: AtomicU64,
}

/// A one-shot test hook.
pub type Hook = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

impl Probe {
    /// Before a snapshot or chunk: the gate, then the hook.
    async fn before_copy(&self) {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            g.acquire().await.unwrap().forget();
        }
        let hook = self.before_snapshot.lock().unwrap().take();
        if let Some(h) = hook {
            h().await;
        }
    }

    /// After one: record its point, then the hook.
    async fn after_copy(&self, relation: &UpstreamRelation, point: &SnapshotPoint) {
        self.snapshots.lock().unwrap().push((relation.clone(), point.clone()));
        let hook = self.after_snapshot.lock().unwrap().take();
        if let Some(h) = hook {
            h().await;
        }
    }

    /// A probe over a new source with `config`.
    pub fn new(config: PgSourceConfig) -> Arc<Probe> {
        Arc::new(Probe {
            inner: PgSource::new(config).unwrap(),
            snapshots: Mutex::default(),
            subscribes: Mutex::default(),
            gate: Mutex::default(),
            after_prepare: Mutex::default(),
            before_snapshot: Mutex::default(),
            after_snapshot: Mutex::default(),
            paused: Arc::new(tokio::sync::watch::Sender::new(false)),
            pause_after: Arc::default(),
            prepares: AtomicU64::new(0),
        })
    }

    /// How many times the engine called `prepare` (each call logs in).
    pub fn prepare_count(&self) -> u64 {
        self.prepares.load(Ordering::SeqCst)
    }

    /// Number of snapshots taken through this source.
    pub fn snapshot_count(&self) -> usize {
        self.snapshots.lock().unwrap().len()
    }

    /// How the subscriptions so far started.
    pub fn starts(&self) -> Vec<FeedStart> {
        self.subscribes.lock().unwrap().clone()
    }

    /// From now on, snapshots wait for a permit of the returned semaphore.
    pub fn close_gate(&self) -> Arc<Semaphore> {
        let s = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(s.clone());
        s
    }

    /// Runs `hook` once, after the next `prepare` succeeded.
    pub fn after_prepare(&self, hook: Hook) {
        *self.after_prepare.lock().unwrap() = Some(hook);
    }

    /// Runs `hook` once, when the next snapshot starts (the engine is
    /// already holding back the stream for it), before it is taken.
    pub fn before_snapshot(&self, hook: Hook) {
        *self.before_snapshot.lock().unwrap() = Some(hook);
    }

    /// Runs `hook` once, after the next snapshot finished (before the engine
    /// hears of it).
    pub fn after_snapshot(&self, hook: Hook) {
        *self.after_snapshot.lock().unwrap() = Some(hook);
    }

    /// Stops (or resumes) handing feed events to the engine: it then reads,
    /// applies and acknowledges nothing, as if it were stuck.
    pub fn pause_feed(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Pauses the feed (see [`Probe::pause_feed`]) right after the next
    /// transaction has delivered `changes` changes: a transaction larger than
    /// every buffer between the walsender and the engine is then stuck
    /// half-sent, however fast or loaded the machine is.
    pub fn pause_mid_transaction(&self, changes: usize) {
        *self.pause_after.lock().unwrap() = Some(changes);
    }

    /// Whether the feed is paused.
    pub fn feed_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// As a source for the engine builder.
    pub fn source(self: &Arc<Self>) -> Arc<dyn Source> {
        self.clone()
    }
}

#[async_trait]
impl Source for Probe {
    async fn prepare(&self, relation: &UpstreamRelation, feed: bool) -> Result<RelationSchema, SourceError> {
        self.prepares.fetch_add(1, Ordering::SeqCst);
        let r = self.inner.prepare(relation, feed).await?;
        let hook = self.after_prepare.lock().unwrap().take();
        if let Some(h) = hook {
            h().await;
        }
        Ok(r)
    }

    async fn snapshot(
        &self,
        relation: &UpstreamRelation,
        shape: &flashsync_core::ViewShape,
        sink: &mut dyn RowSink,
    ) -> Result<SnapshotPoint, SourceError> {
        self.before_copy().await;
        let point = self.inner.snapshot(relation, shape, sink).await?;
        self.after_copy(relation, &point).await;
        Ok(point)
    }

    /// Each chunk passes the gate and the hooks as a snapshot does.
    async fn copy_chunk(
        &self,
        relation: &UpstreamRelation,
        shape: &flashsync_core::ViewShape,
        after: Option<&flashsync::Key>,
        rows: u64,
        sink: &mut dyn RowSink,
    ) -> Result<flashsync_core::CopiedChunk, SourceError> {
        self.before_copy().await;
        let chunk = self.inner.copy_chunk(relation, shape, after, rows, sink).await?;
        self.after_copy(relation, &chunk.point).await;
        Ok(chunk)
    }

    async fn subscribe(&self, resume: Option<Lsn>) -> Result<Subscription, SourceError> {
        let mut sub = self.inner.subscribe(resume).await?;
        self.subscribes.lock().unwrap().push(sub.report.start.clone());
        let paused = self.paused.subscribe();
        let (pauser, trip) = (self.paused.clone(), self.pause_after.clone());
        sub.events = Box::pin(futures::stream::unfold(
            (sub.events, paused, 0usize),
            move |(mut events, mut paused, mut changes)| {
                let (pauser, trip) = (pauser.clone(), trip.clone());
                async move {
                    while *paused.borrow_and_update() {
                        if paused.changed().await.is_err() {
                            break;
                        }
                    }
                    let item = futures::StreamExt::next(&mut events).await?;
                    match &item {
                        Ok(StreamEvent::Begin { .. }) => changes = 0,
                        Ok(StreamEvent::Change(_)) => {
                            changes += 1;
                            let mut trip = trip.lock().unwrap();
                            if trip.is_some_and(|n| changes >= n) {
                                *trip = None;
                                pauser.send_replace(true);
                            }
                        }
                        _ => {}
                    }
                    Some((item, (events, paused, changes)))
                }
            },
        ));
        Ok(sub)
    }

    async fn release(&self, relation: &UpstreamRelation) -> Result<(), SourceError> {
        self.inner.release(relation).await
    }

    async fn drop_feed(&self) -> Result<(), SourceError> {
        self.inner.drop_feed().await
    }

    async fn estimate_rows(&self, relation: &UpstreamRelation) -> Option<u64> {
        self.inner.estimate_rows(relation).await
    }

    async fn server_position(&self) -> Result<flashsync_core::ServerPosition, SourceError> {
        self.inner.server_position().await
    }
}
