//! The engine handle: what applications hold.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flashsync_core::machine::Stats;
use flashsync_core::{
    Config, DefinitionError, Event, JobRecord, Key, KeyRange, Machine, OriginId, RelationId, Reply, Row, Source, Store,
    StoreErrorKind, SyncSummary, ViewDef, ViewName,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::changes::{read_rows, ChangeFeed, Published, ReadTarget, ViewRows};
use crate::driver::{now, ControlCall, Driver, Msg, Progress, SnapshotProgress};
use crate::error::EngineError;
use crate::lag::{LagTable, OriginLag};
use crate::rows::Rows;
use crate::selection::IntoSelector;

/// What `forget()` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forgotten {
    /// The views removed.
    pub views: Vec<ViewName>,
    /// Upstream resources that could not be released (e.g. the origin was
    /// unreachable); release them by hand.
    pub warnings: Vec<String>,
}

/// Configures and opens an [`Engine`].
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    sources: HashMap<OriginId, Arc<dyn Source>>,
    bad_origin: Option<DefinitionError>,
    config: Config,
    seed: Option<u64>,
    persist_interval: Duration,
    change_feed_capacity: usize,
}

impl EngineBuilder {
    /// The store that holds views, jobs, progress and rows.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The store, already shared.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds an origin (e.g. `postgres:main`) and its source.
    pub fn origin(self, id: &str, source: impl Source) -> Self {
        self.shared_origin(id, Arc::new(source))
    }

    /// Adds an origin with an already shared source.
    pub fn shared_origin(mut self, id: &str, source: Arc<dyn Source>) -> Self {
        match OriginId::new(id) {
            Ok(id) => {
                self.sources.insert(id, source);
            }
            Err(e) => self.bad_origin = Some(e),
        }
        self
    }

    /// Machine tunables (retry back-off, snapshot concurrency, limits).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Seeds back-off jitter (default: from the clock and process id).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How long applied changes may wait before they are made durable (and
    /// then acknowledged upstream). Default 100 ms: visibility does not wait
    /// for it, and fewer fsyncs mean fewer stalls of concurrent applies (on
    /// fjall, an fsync holds the journal lock). Zero persists whenever the
    /// persister is free.
    pub fn persist_interval(mut self, interval: Duration) -> Self {
        self.persist_interval = interval;
        self
    }

    /// How many store steps' worth of changes a [change feed](Engine::changes)
    /// may fall behind before it gets [`FeedError::Lagged`](crate::FeedError::Lagged)
    /// (default 4096; an apply run is one step, and may hold many upstream
    /// transactions). A lagging feed never slows sync down.
    pub fn change_feed_capacity(mut self, steps: usize) -> Self {
        self.change_feed_capacity = steps.max(1);
        self
    }

    /// Loads the store's state and starts the engine. Must be called inside a
    /// tokio runtime. Nothing syncs until [`Engine::sync`].
    pub async fn open(self) -> Result<Engine, EngineError> {
        if let Some(e) = self.bad_origin {
            return Err(e.into());
        }
        let store = self.store.unwrap_or_else(|| Arc::new(flashsync_core::memory::MemoryStore::new()));
        let state = store.load().await?;
        let seed = self.seed.unwrap_or_else(|| now().0 ^ (u64::from(std::process::id()) << 32));
        let mut config = self.config;
        if !store.amends_generations() {
            // Chunks need the feed's changes to go into the copy being made.
            config.snapshot_chunk_rows = 0;
        }
        // Checkpoints need a store that keeps a copy across restarts.
        config.checkpoint_copies &= store.resumes_generations();
        let machine = Machine::new(config, seed, state, crate::driver::clock());
        let (events, _) = broadcast::channel(4096);
        let (changes, _) = broadcast::channel(self.change_feed_capacity);
        let origins = self.sources.keys().cloned().collect();
        let sources: Vec<_> = self.sources.iter().map(|(o, s)| (o.clone(), s.clone())).collect();
        let progress = Progress::default();
        let tx = Driver::spawn(
            machine,
            store.clone(),
            self.sources,
            events.clone(),
            changes.clone(),
            self.persist_interval,
            progress.clone(),
        );
        // Only the machine task holds the feed's sender: feeds end when it does.
        let changes = changes.downgrade();
        let lag = LagTable::default();
        tokio::spawn(crate::lag::track(sources, tx.downgrade(), lag.clone()));
        Ok(Engine { inner: Arc::new(Inner { tx, store, events, changes, origins, progress, lag }) })
    }
}

struct Inner {
    tx: mpsc::UnboundedSender<Msg>,
    store: Arc<dyn Store>,
    events: broadcast::Sender<Event>,
    changes: broadcast::WeakSender<Arc<Published>>,
    origins: Vec<OriginId>,
    progress: Progress,
    lag: LagTable,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop the engine (feeds close, the store
        // finishes what is queued and persists).
        let (reply, _) = oneshot::channel();
        let _ = self.tx.send(Msg::Control { input: ControlCall::Shutdown, reply });
    }
}

/// A running sync engine. Cheap to clone; clones share the engine.
///
/// ```
/// use flashsync::{Engine, Persistence, ViewDef};
/// use flashsync_core::memory::{MemoryStore, MemoryUpstream, TableIdentity};
/// use flashsync_core::row;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let upstream = MemoryUpstream::new();
/// upstream.create_table("public", "users", &[("id", "int8"), ("name", "text")], TableIdentity::PrimaryKey(vec![0]));
/// upstream.insert("public", "users", row![1, "ada"]);
///
/// let engine = Engine::builder().store(MemoryStore::new()).origin("postgres:main", upstream.source()).open().await?;
/// engine.define(ViewDef::new("public", "users_cache", Persistence::Materialized, "postgres:main", "public", "users")?).await?;
/// let summary = engine.sync("*").await?;
/// assert_eq!(summary.materialized.len(), 1);
/// assert_eq!(engine.scan_all("public.users_cache").await?, vec![row![1, "ada"]]);
/// engine.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("origins", &self.inner.origins).finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts configuring an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            store: None,
            sources: HashMap::new(),
            bad_origin: None,
            config: Config::default(),
            seed: None,
            persist_interval: Duration::from_millis(100),
            change_feed_capacity: 4096,
        }
    }

    async fn control(&self, input: ControlCall) -> Result<Reply, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.inner.tx.send(Msg::Control { input, reply }).map_err(|_| EngineError::ShutDown)?;
        match rx.await.map_err(|_| EngineError::ShutDown)? {
            Reply::Failed(e) => Err(e.into()),
            other => Ok(other),
        }
    }

    /// Defines a view (or changes its definition, which re-copies it on the
    /// next sync). The origin must be configured.
    pub async fn define(&self, def: ViewDef) -> Result<RelationId, EngineError> {
        def.validate()?;
        if !self.inner.origins.contains(&def.origin) {
            return Err(
                DefinitionError::UnknownOrigin { view: def.name.to_string(), origin: def.origin.to_string() }.into()
            );
        }
        match self.control(ControlCall::Define(def)).await? {
            Reply::Defined(id) => Ok(id),
            _ => Err(EngineError::ShutDown),
        }
    }

    /// The one idempotent entry point: makes the selected views current —
    /// materializes what needs it, bootstraps and starts realtime views,
    /// resumes after reconnects. Safe to call on startup, on reconnect, and
    /// whenever unsure; overlapping calls coalesce.
    pub async fn sync(&self, selector: impl IntoSelector) -> Result<SyncSummary, EngineError> {
        self.sync_with(selector, false).await
    }

    /// Like [`sync`](Self::sync), but copies the selected views again and
    /// retries failed views now instead of waiting for their back-off.
    ///
    /// A materialized view is re-materialized. A running realtime view is
    /// copied again into a new generation (in chunks, when it can be) while
    /// its current copy keeps mirroring the feed — readers never see it
    /// fall behind, and status keeps saying `running` — then the new copy
    /// replaces it atomically; the call returns once the new copy is live.
    /// If that copy fails, the view goes on on its old copy and the summary
    /// lists it as failed. A restart in the middle re-attaches the old copy
    /// (the view runs at once) and continues the new one from its last
    /// checkpoint, with stores that keep copies across restarts (fjall and
    /// SQLite do); like any copy in chunks, it holds the slot's
    /// acknowledgements back to that checkpoint while it runs. A running
    /// view whose feed is down is reconnected instead. One whose copy was
    /// made a moment ago is copied again once that copy's hand-off is
    /// durable (a crash before then would copy it again anyway).
    pub async fn sync_forced(&self, selector: impl IntoSelector) -> Result<SyncSummary, EngineError> {
        self.sync_with(selector, true).await
    }

    async fn sync_with(&self, selector: impl IntoSelector, force: bool) -> Result<SyncSummary, EngineError> {
        let selector = selector.into_selector()?;
        match self.control(ControlCall::Sync { selector, force }).await? {
            Reply::Synced(s) => Ok(s),
            _ => Err(EngineError::ShutDown),
        }
    }

    /// One status record per selected view.
    pub async fn status(&self, selector: impl IntoSelector) -> Result<Vec<JobRecord>, EngineError> {
        let selector = selector.into_selector()?;
        let (reply, rx) = oneshot::channel();
        self.inner.tx.send(Msg::Status { selector, reply }).map_err(|_| EngineError::ShutDown)?;
        rx.await.map_err(|_| EngineError::ShutDown)
    }

    /// Halts the selected jobs and disables them until [`resume`](Self::resume):
    /// `sync()` leaves them alone meanwhile.
    pub async fn stop(&self, selector: impl IntoSelector) -> Result<Vec<ViewName>, EngineError> {
        let selector = selector.into_selector()?;
        match self.control(ControlCall::Stop(selector)).await? {
            Reply::Stopped(v) => Ok(v),
            _ => Err(EngineError::ShutDown),
        }
    }

    /// Re-enables the selected jobs, then syncs them.
    pub async fn resume(&self, selector: impl IntoSelector) -> Result<SyncSummary, EngineError> {
        let selector = selector.into_selector()?;
        match self.control(ControlCall::Resume(selector)).await? {
            Reply::Resumed(s) => Ok(s),
            _ => Err(EngineError::ShutDown),
        }
    }

    /// Removes the selected views entirely: definition, job, local rows, and
    /// upstream resources only they held.
    pub async fn forget(&self, selector: impl IntoSelector) -> Result<Forgotten, EngineError> {
        let selector = selector.into_selector()?;
        match self.control(ControlCall::Forget(selector)).await? {
            Reply::Forgotten { views, warnings } => Ok(Forgotten { views, warnings }),
            _ => Err(EngineError::ShutDown),
        }
    }

    /// Stops every feed cleanly, finishes queued store work and makes it
    /// durable. Later calls fail with [`EngineError::ShutDown`].
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        match self.control(ControlCall::Shutdown).await {
            Ok(_) | Err(EngineError::ShutDown) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Subscribes to events (state changes, errors, conflicts). A receiver
    /// that falls more than 4096 events behind skips the oldest.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Snapshots running right now, with rows copied so far (for progress
    /// displays: rows / elapsed gives the rate).
    pub fn snapshots(&self) -> Vec<SnapshotProgress> {
        let mut v: Vec<_> = self.inner.progress.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by_key(|p| p.relation_id);
        v
    }

    /// How far each origin's mirror is behind its server (bytes, seconds,
    /// the WAL its slot retains), measured once a second; empty until the
    /// first measurement.
    pub fn lag(&self) -> Vec<OriginLag> {
        let table = self.inner.lag.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<OriginLag> = table.values().cloned().collect();
        out.sort_by(|a, b| a.origin.cmp(&b.origin));
        out
    }

    /// The configured origins.
    pub fn origins(&self) -> &[OriginId] {
        &self.inner.origins
    }

    /// Engine counters (passes, snapshots, batches, acks, ...).
    pub async fn stats(&self) -> Result<Stats, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.inner.tx.send(Msg::Stats { reply }).map_err(|_| EngineError::ShutDown)?;
        rx.await.map_err(|_| EngineError::ShutDown)
    }

    async fn lookup(&self, view: &str) -> Result<(ViewName, RelationId), EngineError> {
        let name = parse_view_name(view)?;
        let (reply, rx) = oneshot::channel();
        self.inner.tx.send(Msg::Lookup { name: name.clone(), reply }).map_err(|_| EngineError::ShutDown)?;
        let id = rx.await.map_err(|_| EngineError::ShutDown)?.ok_or_else(|| EngineError::UnknownView(name.clone()))?;
        Ok((name, id))
    }

    fn read_error(name: ViewName, e: flashsync_core::StoreError) -> EngineError {
        if e.kind == StoreErrorKind::NotFound {
            EngineError::NoCopy(name)
        } else {
            EngineError::Store(e)
        }
    }

    /// The columns, key and identity of a view's local copy.
    pub async fn schema(&self, view: &str) -> Result<flashsync_core::RelationSchema, EngineError> {
        let (name, id) = self.lookup(view).await?;
        let (reply, rx) = oneshot::channel();
        self.inner.tx.send(Msg::Schema { id, reply }).map_err(|_| EngineError::ShutDown)?;
        rx.await.map_err(|_| EngineError::ShutDown)?.ok_or(EngineError::NoCopy(name))
    }

    /// One row of a view's local copy, by key.
    pub async fn get(&self, view: &str, key: &Key) -> Result<Option<Row>, EngineError> {
        let (name, id) = self.lookup(view).await?;
        self.inner.store.get(id, key).await.map_err(|e| Self::read_error(name, e))
    }

    /// Up to `limit` rows of a view's local copy in key order within `range`.
    pub async fn scan(&self, view: &str, range: &KeyRange, limit: usize) -> Result<Vec<Row>, EngineError> {
        let (name, id) = self.lookup(view).await?;
        self.inner.store.scan(id, range, limit).await.map_err(|e| Self::read_error(name, e))
    }

    /// Every row of a view's local copy in key order.
    pub async fn scan_all(&self, view: &str) -> Result<Vec<Row>, EngineError> {
        self.scan(view, &KeyRange::default(), usize::MAX).await
    }

    /// A [change feed](crate::changes) of the selected views (also views
    /// defined later that the selector matches), from now on: every change
    /// visible locally after this call returns, none before.
    pub async fn changes(&self, selector: impl IntoSelector) -> Result<ChangeFeed, EngineError> {
        let selector = selector.into_selector()?;
        let rx = self.inner.changes.upgrade().ok_or(EngineError::ShutDown)?.subscribe();
        let read = read_rows(&self.inner.tx, ReadTarget::Ids(Vec::new()))?.await.map_err(|_| EngineError::ShutDown)?;
        Ok(ChangeFeed::new(rx, self.inner.tx.clone(), selector, read.through))
    }

    /// The selected views' rows now, and a [change feed](crate::changes) of
    /// everything after them: applied in order to these rows, its changes
    /// give each view's rows at any later point, with no change missed or
    /// seen twice. The rows are read between two store writes, so the
    /// store's writes wait for the read (for a large view, a while).
    pub async fn changes_with_rows(
        &self,
        selector: impl IntoSelector,
    ) -> Result<(Vec<ViewRows>, ChangeFeed), EngineError> {
        let selector = selector.into_selector()?;
        let feed_rx = self.inner.changes.upgrade().ok_or(EngineError::ShutDown)?.subscribe();
        // The machine task resolves the selector when it takes the read:
        // the views and their rows are of one moment.
        let read = read_rows(&self.inner.tx, ReadTarget::Selector(selector.clone()))?
            .await
            .map_err(|_| EngineError::ShutDown)?;
        let mut start = Vec::with_capacity(read.views.len());
        for v in read.views {
            let Some(view) = v.name else { continue };
            start.push(ViewRows { view, rows: v.rows.map_err(EngineError::Store)? });
        }
        Ok((start, ChangeFeed::new(feed_rx, self.inner.tx.clone(), selector, read.through)))
    }

    /// One row of a view's local copy, by key, read into `T` (by column
    /// name: see [`flashsync_core::typed`]).
    ///
    /// ```
    /// # use flashsync::{Engine, Persistence, ViewDef};
    /// # use flashsync_core::memory::{MemoryStore, MemoryUpstream, TableIdentity};
    /// # use flashsync_core::{key, row};
    /// #[derive(Debug, PartialEq, serde::Deserialize)]
    /// struct User {
    ///     id: i64,
    ///     name: String,
    /// }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let upstream = MemoryUpstream::new();
    /// # upstream.create_table("public", "users", &[("id", "int8"), ("name", "text")], TableIdentity::PrimaryKey(vec![0]));
    /// # upstream.insert("public", "users", row![1, "ada"]);
    /// # let engine = Engine::builder().store(MemoryStore::new()).origin("postgres:main", upstream.source()).open().await?;
    /// # engine.define(ViewDef::new("public", "users", Persistence::Materialized, "postgres:main", "public", "users")?).await?;
    /// # engine.sync("*").await?;
    /// let ada: Option<User> = engine.get_as("public.users", &key![1]).await?;
    /// assert_eq!(ada, Some(User { id: 1, name: "ada".into() }));
    /// # engine.shutdown().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        view: &str,
        key: &Key,
    ) -> Result<Option<T>, EngineError> {
        let schema = self.schema(view).await?;
        match self.get(view, key).await? {
            Some(row) => Ok(Some(flashsync_core::typed::from_row(&schema, &row)?)),
            None => Ok(None),
        }
    }

    /// A cursor over a view's rows within `range`, in key order, a page at
    /// a time (bounded memory for any size; see [`Rows`]).
    pub async fn rows(&self, view: &str, range: KeyRange) -> Result<Rows, EngineError> {
        let schema = self.schema(view).await?;
        let (name, id) = self.lookup(view).await?;
        Ok(Rows::new(self.inner.store.clone(), name, id, schema, range))
    }

    /// Number of rows in a view's local copy.
    pub async fn count(&self, view: &str) -> Result<u64, EngineError> {
        let (name, id) = self.lookup(view).await?;
        self.inner.store.count(id).await.map_err(|e| Self::read_error(name, e))
    }
}

/// Parses `namespace.name` (parts may be double-quoted, as in selectors).
fn parse_view_name(text: &str) -> Result<ViewName, EngineError> {
    match text.parse::<flashsync_core::Selector>()? {
        flashsync_core::Selector::Map(map) if map.len() == 1 => {
            let (ns, names) = map.into_iter().next().ok_or(EngineError::ShutDown)?;
            match names.as_slice() {
                [name] if !ns.as_str().contains('*') && !name.as_str().contains('*') => {
                    Ok(ViewName::new(ns.as_str(), name.as_str())?)
                }
                _ => {
                    Err(flashsync_core::SelectorError::Unexpected { at: 0, found: '*', expected: "a single view name" }
                        .into())
                }
            }
        }
        _ => {
            Err(flashsync_core::SelectorError::Unexpected { at: 0, found: '*', expected: "a single view name" }.into())
        }
    }
}
