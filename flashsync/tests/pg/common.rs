//! Shared setup for the engine-level acceptance tests on a real Postgres
//! (the modules of `tests/pg/`): engines over the fjall store and the Postgres source, a
//! recording source wrapper, upstream/local comparison, writers.
//!
//! Every test gets its own database (or dedicated cluster) and its own
//! replication slot name: slots are per cluster, and tests of one binary
//! share a cluster.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flashsync::{Config, Engine, Event, EventKind, JobRecord, Persistence, Row, Value, ViewDef};
use flashsync_core::{
    FeedStart, Lsn, Millis, OriginId, RelationSchema, RowSink, SnapshotPoint, Source, SourceError, StoreErrorKind,
    StreamEvent, Subscription, UpstreamRelation,
};
use flashsync_source_pg::ident::qualified;
use flashsync_source_pg::testkit::TestDb;
use flashsync_source_pg::{PgSource, PgSourceConfig};
use flashsync_store_fjall::{FjallStore, Options};
use tokio::sync::Semaphore;

/// The origin every test uses.
pub const ORIGIN: &str = "postgres:main";

/// Generous bound for convergence and state waits.
pub const WAIT: Duration = Duration::from_secs(60);

pub use flashsync_source_pg::testkit::wait_for;

/// Retry quickly: the tests break connections on purpose.
pub fn fast_config() -> Config {
    Config { retry_base: Millis(50), retry_max: Millis(1000), retry_permanent: Millis(1000), ..Config::default() }
}

/// Source settings for `db` with slot and publication named after the
/// database (unique per test) and frequent status updates.
pub fn source_config(db: &TestDb) -> PgSourceConfig {
    let origin = OriginId::new(ORIGIN).unwrap();
    PgSourceConfig::new(&origin, db.conninfo.clone())
        .with_feed_name(feed_name(db))
        .with_status_interval(Duration::from_millis(200))
        .with_relation_check_interval(Duration::from_millis(200))
}

/// The slot (and publication) name the tests use for `db`.
pub fn feed_name(db: &TestDb) -> String {
    db.name.clone()
}

/// Opens the fjall store in `dir`, waiting while an engine that was just
/// shut down still releases it.
pub async fn open_store(dir: &Path) -> FjallStore {
    wait_for("the store to be released by the previous engine", Duration::from_secs(30), move || async move {
        match FjallStore::open(dir, Options::default()) {
            Ok(s) => Some(s),
            Err(e) if e.kind == StoreErrorKind::Locked => None,
            Err(e) => panic!("opening the store: {e}"),
        }
    })
    .await
}

/// An engine over the store in `dir` and `source` for [`ORIGIN`].
pub async fn open_engine(dir: &Path, source: Arc<dyn Source>) -> Engine {
    open_engine_with(dir, source, fast_config()).await
}

/// Like [`open_engine`], with machine settings.
pub async fn open_engine_with(dir: &Path, source: Arc<dyn Source>, config: Config) -> Engine {
    let store = open_store(dir).await;
    Engine::builder().store(store).shared_origin(ORIGIN, source).config(config).seed(0x5eed).open().await.unwrap()
}

/// A view of `ORIGIN`'s `schema.table`.
pub fn view(namespace: &str, name: &str, persistence: Persistence, schema: &str, table: &str) -> ViewDef {
    ViewDef::new(namespace, name, persistence, ORIGIN, schema, table).unwrap()
}

/// A view name as selector text (both parts quoted).
pub fn sel(namespace: &str, name: &str) -> String {
    format!("{}.{}", quote_sel(namespace), quote_sel(name))
}

fn quote_sel(part: &str) -> String {
    format!("\"{}\"", part.replace('"', "\"\""))
}

// ----- the recording source ---------------------------------------------------

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
}

/// A one-shot test hook.
pub type Hook = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

impl Probe {
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
        })
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
        schema: &RelationSchema,
        sink: &mut dyn RowSink,
    ) -> Result<SnapshotPoint, SourceError> {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            g.acquire().await.unwrap().forget();
        }
        let hook = self.before_snapshot.lock().unwrap().take();
        if let Some(h) = hook {
            h().await;
        }
        let point = self.inner.snapshot(relation, schema, sink).await?;
        self.snapshots.lock().unwrap().push((relation.clone(), point.clone()));
        let hook = self.after_snapshot.lock().unwrap().take();
        if let Some(h) = hook {
            h().await;
        }
        Ok(point)
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
}

// ----- comparing local and upstream ---------------------------------------------

/// A row as comparable text: `None` is NULL. Floats are normalised to their
/// exact binary value, everything else is Postgres' text output (pinned
/// session settings: ISO dates, UTC, hex bytea).
pub type TextRow = Vec<Option<String>>;

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:?}")
    }
}

/// A local value as text, comparable with the upstream `::text` form.
pub fn local_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(float_text(*f)),
        Value::Text(s) => Some(s.clone()),
        Value::Bytes(b) => Some(format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())),
    }
}

fn upstream_text(type_name: &str, text: Option<String>) -> Option<String> {
    let text = text?;
    Some(match type_name {
        "float4" => float_text(f64::from(text.parse::<f32>().unwrap_or_else(|e| panic!("float4 {text:?}: {e}")))),
        "float8" => float_text(text.parse::<f64>().unwrap_or_else(|e| panic!("float8 {text:?}: {e}"))),
        _ => text,
    })
}

/// The local rows of `view`, as sorted text rows.
pub fn local_text_rows(rows: &[Row]) -> Vec<TextRow> {
    let mut out: Vec<TextRow> = rows.iter().map(|r| r.0.iter().map(local_text).collect()).collect();
    out.sort();
    out
}

/// Every row of upstream `schema.table`, the columns of `columns` cast to
/// text, sorted.
pub async fn upstream_text_rows(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    columns: &[flashsync_core::Column],
) -> Vec<TextRow> {
    let cols = if columns.is_empty() {
        "1".to_owned()
    } else {
        columns
            .iter()
            .map(|c| {
                let col = flashsync_source_pg::ident::quote_ident(&c.name);
                // `::text` trims char(n)'s padding; its output form keeps it.
                if c.type_name == "bpchar" {
                    format!("CASE WHEN {col} IS NULL THEN NULL ELSE concat({col}) END")
                } else {
                    format!("{col}::text")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = client
        .query(&format!("SELECT {cols} FROM {}", qualified(schema, table)), &[])
        .await
        .unwrap_or_else(|e| panic!("reading upstream {schema}.{table}: {e}"));
    let mut out: Vec<TextRow> = rows
        .iter()
        .map(|r| columns.iter().enumerate().map(|(i, c)| upstream_text(&c.type_name, r.get(i))).collect())
        .collect();
    out.sort();
    out
}

/// A short description of how two sorted row multisets differ.
pub fn diff(local: &[TextRow], upstream: &[TextRow]) -> String {
    let mut count: BTreeMap<&TextRow, i64> = BTreeMap::new();
    for r in upstream {
        *count.entry(r).or_default() += 1;
    }
    for r in local {
        *count.entry(r).or_default() -= 1;
    }
    let show = |r: &TextRow, n: i64| {
        let cells: Vec<String> = r
            .iter()
            .map(|c| match c {
                None => "NULL".to_owned(),
                Some(t) if t.chars().count() > 80 => format!("{:?}…", t.chars().take(80).collect::<String>()),
                Some(t) => format!("{t:?}"),
            })
            .collect();
        format!("({}) x{}", cells.join(", "), n.abs())
    };
    let missing: Vec<_> = count.iter().filter(|(_, n)| **n > 0).take(5).map(|(r, n)| show(r, *n)).collect();
    let extra: Vec<_> = count.iter().filter(|(_, n)| **n < 0).take(5).map(|(r, n)| show(r, *n)).collect();
    let (nm, ne): (i64, i64) = count.values().fold((0, 0), |(m, e), n| if *n > 0 { (m + n, e) } else { (m, e - n) });
    format!(
        "local has {} rows, upstream {}; {nm} upstream rows missing locally (first: {missing:?}), \
         {ne} local rows not upstream (first: {extra:?})",
        local.len(),
        upstream.len()
    )
}

/// Waits until the local copy of view `name` equals upstream `schema.table`
/// exactly (as a multiset: doubled rows count). Upstream must be quiet.
pub async fn assert_converges(
    engine: &Engine,
    name: &str,
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    timeout: Duration,
) -> Vec<TextRow> {
    let cols = engine.schema(name).await.unwrap_or_else(|e| panic!("schema of {name}: {e}")).columns;
    let upstream = upstream_text_rows(client, schema, table, &cols).await;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let local = local_text_rows(&engine.scan_all(name).await.unwrap_or_else(|e| panic!("scan {name}: {e}")));
        if local == upstream {
            return upstream;
        }
        if tokio::time::Instant::now() >= deadline {
            let status = engine.status(name).await.ok();
            panic!(
                "view {name} did not converge to upstream {schema}.{table} within {timeout:?}: {}\nstatus: {status:#?}",
                diff(&local, &upstream)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The status record of one view.
pub async fn status(engine: &Engine, name: &str) -> JobRecord {
    let mut s = engine.status(name).await.unwrap();
    assert_eq!(s.len(), 1, "status of {name}: {s:?}");
    s.remove(0)
}

/// Waits until view `name` is in `state`.
pub async fn wait_state(engine: &Engine, name: &str, state: flashsync::JobState) -> JobRecord {
    let e = engine.clone();
    wait_for(&format!("{name} to be {state}"), WAIT, move || {
        let e = e.clone();
        async move {
            let s = status(&e, name).await;
            (s.state == state).then_some(s)
        }
    })
    .await
}

/// Collects engine events in the background.
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    /// Starts collecting `engine`'s events.
    pub fn collect(engine: &Engine) -> Events {
        let mut rx = engine.events();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => s.lock().unwrap().push(e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Events(seen)
    }

    /// Error messages seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Error { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Conflict messages seen so far.
    pub fn conflicts(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Conflict { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Waits for an error event containing `text`.
    pub async fn wait_error(&self, text: &str) -> String {
        let me = self;
        wait_for(&format!("an error event containing {text:?}"), WAIT, move || async move {
            me.errors().into_iter().find(|m| m.contains(text))
        })
        .await
    }
}

// ----- upstream inspection ------------------------------------------------------

/// Replication slots of database `db`.
pub async fn slots(client: &tokio_postgres::Client, db: &str) -> Vec<String> {
    client
        .query("SELECT slot_name::text FROM pg_replication_slots WHERE database = $1 ORDER BY 1", &[&db])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The slot's `confirmed_flush_lsn`.
pub async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
    let row = client
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .unwrap();
    row.and_then(|r| r.get::<_, Option<String>>(0)).map(|s| s.parse().unwrap())
}

/// The walsender serving `slot`, if one is connected.
pub async fn walsender_pid(client: &tokio_postgres::Client, slot: &str) -> Option<i32> {
    client
        .query_opt("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .unwrap()
        .and_then(|r| r.get(0))
}

/// The current WAL insert position.
/// Writes WAL past `slot`'s restart point and checkpoints until the server
/// invalidates the slot (`wal_status = 'lost'`); the cluster must run with a
/// small `max_slot_wal_keep_size` and the slot must be inactive.
pub async fn invalidate_slot(c: &tokio_postgres::Client, slot: &str) {
    wait_for("the slot to be invalidated", WAIT, move || async move {
        c.batch_execute(
            "INSERT INTO side (x) VALUES (1); SELECT pg_switch_wal();
             INSERT INTO side (x) VALUES (2); SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .await
        .unwrap();
        let status: Option<String> = c
            .query_one("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .unwrap()
            .get(0);
        (status.as_deref() == Some("lost")).then_some(())
    })
    .await;
}

pub async fn current_lsn(client: &tokio_postgres::Client) -> Lsn {
    let s: String = client.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.unwrap().get(0);
    s.parse().unwrap()
}

// ----- writers -------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), seeded per writer.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; never zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Shared state of a set of writer tasks.
#[derive(Clone, Default)]
pub struct Writers {
    stop: Arc<AtomicBool>,
    /// Transactions committed (as reported by the server).
    pub commits: Arc<AtomicU64>,
    /// Transactions that failed (conflicts, lost connections) and were
    /// rolled back or lost.
    pub failures: Arc<AtomicU64>,
    /// The first few failure messages.
    pub errors: Arc<Mutex<Vec<String>>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// One writer's transaction: statements and parameters.
pub type Txn = Vec<(String, Vec<i64>)>;

impl Writers {
    /// Starts a writer that repeatedly runs the transaction `make` builds
    /// (with `hold` milliseconds of idleness before COMMIT when it says so),
    /// reconnecting to `db` when the connection breaks.
    pub fn spawn(&self, db: &TestDb, seed: u64, make: impl Fn(&mut Rng) -> (Txn, u64) + Send + 'static) {
        let (stop, commits, failures) = (self.stop.clone(), self.commits.clone(), self.failures.clone());
        let errors = self.errors.clone();
        let db = db.clone();
        let task = tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut client: Option<tokio_postgres::Client> = None;
            while !stop.load(Ordering::SeqCst) {
                let c = match &client {
                    Some(c) if !c.is_closed() => c,
                    _ => {
                        match db.try_client().await {
                            Ok(c) => client = Some(c),
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                        continue;
                    }
                };
                let (txn, hold) = make(&mut rng);
                let ok = async {
                    c.batch_execute("BEGIN").await?;
                    for (sql, params) in &txn {
                        let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                            params.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                        c.execute(sql.as_str(), &p).await?;
                    }
                    if hold > 0 {
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                    }
                    c.batch_execute("COMMIT").await
                }
                .await;
                match ok {
                    Ok(()) => {
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        {
                            let mut errors = errors.lock().unwrap();
                            if errors.len() < 10 {
                                errors.push(format!("{e:?}"));
                            }
                        }
                        let _ = c.batch_execute("ROLLBACK").await;
                    }
                }
            }
        });
        self.tasks.lock().unwrap().push(task);
    }

    /// Commits so far.
    pub fn committed(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more transactions committed than now.
    pub async fn wait_commits(&self, n: u64) {
        let target = self.committed() + n;
        let me = self;
        wait_for(&format!("writers to commit {n} more transactions"), WAIT, move || async move {
            (me.committed() >= target).then_some(())
        })
        .await;
    }

    /// Stops every writer and waits for them to finish their transaction.
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in tasks {
            tokio::time::timeout(WAIT, t).await.expect("a writer did not stop").unwrap();
        }
    }
}

// ----- a write-heavy workload ------------------------------------------------------

/// Keys the `acct` workload touches.
pub const ACCT_KEYS: u64 = 12_000;

/// Creates `acct` (primary key, `acct_rows` rows), `bag` (no key, REPLICA
/// IDENTITY FULL, many identical rows) and `side` (never mirrored).
pub async fn create_load_tables(client: &tokio_postgres::Client, acct_rows: i64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE acct (id bigint PRIMARY KEY, v bigint NOT NULL, note text);
             INSERT INTO acct SELECT g, g % 100, 'n' || g FROM generate_series(1, {acct_rows}) g;
             CREATE TABLE bag (k bigint, v bigint);
             ALTER TABLE bag REPLICA IDENTITY FULL;
             CREATE INDEX bag_k ON bag (k);
             INSERT INTO bag SELECT g % 40, g % 3 FROM generate_series(1, 3000) g;
             CREATE TABLE side (id bigserial PRIMARY KEY, x bigint);"
        ))
        .await
        .unwrap();
}

/// One random statement on `acct`: upserts, updates, deletes, key changes.
pub fn acct_op(rng: &mut Rng) -> (String, Vec<i64>) {
    let k = rng.below(ACCT_KEYS) as i64 + 1;
    let x = rng.below(1000) as i64;
    let sql = match rng.below(8) {
        0 | 1 => "INSERT INTO acct VALUES ($1::bigint, $2::bigint, 'ins') ON CONFLICT (id) DO UPDATE SET v = acct.v + excluded.v",
        2 | 3 => "UPDATE acct SET v = v + 1, note = 'u' || $2::bigint::text WHERE id = $1::bigint",
        4 => "DELETE FROM acct WHERE id = $1::bigint AND $2::bigint >= 0",
        5 => {
            "UPDATE acct SET id = id + 20000 WHERE id = $1::bigint AND $2::bigint >= 0 \
             AND NOT EXISTS (SELECT 1 FROM acct WHERE id = $1::bigint + 20000)"
        }
        6 => {
            "UPDATE acct SET id = id - 20000, note = 'back' || $2::bigint::text WHERE id = $1::bigint + 20000 \
             AND NOT EXISTS (SELECT 1 FROM acct WHERE id = $1::bigint)"
        }
        _ => "UPDATE acct SET v = v * 2 % 1000003 WHERE id BETWEEN $1::bigint AND $1::bigint + 4 AND $2::bigint >= 0",
    };
    (sql.to_owned(), vec![k, x])
}

/// One random statement on `bag`: identical rows inserted, and single
/// copies deleted or changed.
pub fn bag_op(rng: &mut Rng) -> (String, Vec<i64>) {
    let k = rng.below(40) as i64;
    let sql = match rng.below(4) {
        0 | 1 => "INSERT INTO bag VALUES ($1::bigint, $2::bigint % 3)",
        2 => "DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE k = $1::bigint AND $2::bigint >= 0 LIMIT 1)",
        _ => "UPDATE bag SET v = v + 1 WHERE ctid = (SELECT ctid FROM bag WHERE k = $1::bigint AND v < $2::bigint % 5 LIMIT 1)",
    };
    (sql.to_owned(), vec![k, rng.below(1000) as i64])
}

/// Starts the writers of the load: short transactions on `acct` and `bag`,
/// and transactions held open for a while (so snapshots see transactions in
/// progress, and transactions commit with xmin < xid < xmax of a snapshot).
pub fn start_load(writers: &Writers, db: &TestDb, seed: u64) {
    for w in 0..2 {
        writers.spawn(db, seed + w, |rng| {
            let n = 1 + rng.below(3);
            ((0..n).map(|_| acct_op(rng)).collect(), 0)
        });
    }
    writers.spawn(db, seed + 10, |rng| {
        let n = 1 + rng.below(2);
        ((0..n).map(|_| bag_op(rng)).collect(), 0)
    });
    for w in 0..2 {
        writers.spawn(db, seed + 20 + w, |rng| {
            let hold = 20 + rng.below(200);
            (vec![acct_op(rng), bag_op(rng), acct_op(rng)], hold)
        });
    }
}
