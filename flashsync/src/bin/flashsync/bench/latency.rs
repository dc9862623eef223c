//! Commit-to-local-visible latency at a fixed commit rate.
//!
//! A thin store wrapper stamps the moment each inserted row's batch has been
//! applied (visible to readers); the writer stamps the moment each commit
//! returned to the client. Latency is the difference (clamped at zero: the
//! feed can deliver a commit before the client hears back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flashsync::{Persistence, ViewDef};
use flashsync_core::{
    ApplyBatch, ApplyReport, BatchSeq, Generation, Key, KeyRange, OriginId, RelationId, RelationSchema, Row, RowOp,
    Store, StoreError, StoredState, Value, ViewRecord,
};
use serde_json::{json, Value as Json};

use super::common::{self, err, pg_err, BenchStore};
use crate::{pg, CliError};

type Seen = Arc<Mutex<HashMap<i64, Instant>>>;

struct Timed {
    inner: Arc<dyn Store>,
    seen: Seen,
}

impl Timed {
    fn stamp(&self, batches: &[&ApplyBatch]) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for b in batches {
            for v in &b.views {
                for op in &v.ops {
                    if let RowOp::Insert { key: Key(k), .. } = op {
                        if let Some(Value::Int(id)) = k.first() {
                            seen.entry(*id).or_insert(now);
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Store for Timed {
    async fn load(&self) -> Result<StoredState, StoreError> {
        self.inner.load().await
    }
    async fn put_view(&self, view: &ViewRecord) -> Result<(), StoreError> {
        self.inner.put_view(view).await
    }
    async fn put_job(&self, job: &flashsync::JobRecord) -> Result<(), StoreError> {
        self.inner.put_job(job).await
    }
    async fn forget(&self, id: RelationId) -> Result<(), StoreError> {
        self.inner.forget(id).await
    }
    async fn forget_origin(&self, origin: &OriginId) -> Result<(), StoreError> {
        self.inner.forget_origin(origin).await
    }
    fn amends_generations(&self) -> bool {
        self.inner.amends_generations()
    }
    // Forwarded so the copy checkpoints after every chunk, as it does
    // without this wrapper.
    fn resumes_generations(&self) -> bool {
        self.inner.resumes_generations()
    }
    async fn resume_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
        after: &Key,
    ) -> Result<Option<Box<dyn Generation>>, StoreError> {
        self.inner.resume_generation(id, schema, after).await
    }
    async fn begin_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
    ) -> Result<Box<dyn Generation>, StoreError> {
        self.inner.begin_generation(id, schema).await
    }
    async fn apply(&self, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
        let probe = batch.clone();
        let r = self.inner.apply(batch).await;
        if r.is_ok() {
            self.stamp(&[&probe]);
        }
        r
    }
    async fn apply_many(&self, batches: Vec<ApplyBatch>) -> Vec<Result<ApplyReport, StoreError>> {
        let probe = batches.clone();
        let results = self.inner.apply_many(batches).await;
        let ok: Vec<&ApplyBatch> = probe.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(b, _)| b).collect();
        self.stamp(&ok);
        results
    }
    async fn persist(&self) -> Result<Option<BatchSeq>, StoreError> {
        self.inner.persist().await
    }
    async fn get(&self, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError> {
        self.inner.get(id, key).await
    }
    async fn scan(&self, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError> {
        self.inner.scan(id, range, limit).await
    }
    async fn count(&self, id: RelationId) -> Result<u64, StoreError> {
        self.inner.count(id).await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the latency bench on `kind` and returns its JSON report.
pub async fn run(
    rate: u64,
    seconds: u64,
    persist_ms: u64,
    kind: BenchStore,
    url: Option<&str>,
    during_copy: Option<DuringCopy>,
) -> Result<Json, CliError> {
    // Synchronous commit as Postgres ships it: with it off, the walsender only
    // sees WAL when the WAL writer flushes (every wal_writer_delay, 200 ms),
    // which would measure the server's configuration, not flashsync.
    let server = pg::start(url, pg::default_options().set("synchronous_commit", "on"), "bench_latency").await?;
    let conn = server.db.conninfo.clone();
    let client = server.db.client().await;
    client
        .batch_execute("CREATE TABLE bench_latency (id bigint PRIMARY KEY, payload text NOT NULL)")
        .await
        .map_err(pg_err)?;
    if let Some(DuringCopy { rows, .. }) = during_copy {
        eprintln!("loading {rows} rows to copy meanwhile...");
        client
            .batch_execute(&format!(
                "CREATE TABLE bench_big (id bigint PRIMARY KEY, v bigint NOT NULL, note text);
                 INSERT INTO bench_big SELECT g, 0, md5(g::text) FROM generate_series(1, {rows}) g;"
            ))
            .await
            .map_err(pg_err)?;
        client.batch_execute("VACUUM (FREEZE, ANALYZE) bench_big").await.map_err(pg_err)?;
    }
    let dir = tempfile::Builder::new().prefix("flashsync-bench-").tempdir().map_err(err)?;
    let seen: Seen = Arc::default();
    let store: Arc<dyn Store> = Arc::new(Timed { inner: kind.open(dir.path())?, seen: seen.clone() });
    let config = flashsync::Config {
        snapshot_chunk_rows: during_copy.map_or(flashsync::Config::default().snapshot_chunk_rows, |c| c.chunk_rows),
        ..Default::default()
    };
    let engine = common::engine_configured(&conn, store, Duration::from_millis(persist_ms), config).await?;
    let def = ViewDef::new("public", "latency_live", Persistence::Realtime, common::ORIGIN, "public", "bench_latency")
        .map_err(err)?;
    engine.define(def).await.map_err(err)?;
    let s = engine.sync("*").await.map_err(err)?;
    if s.realtime.len() != 1 {
        return Err(CliError(format!("bootstrap failed: {s:?}")));
    }

    // The big copy and its writers start with the measured commits.
    let big = match during_copy {
        Some(DuringCopy { rows, .. }) => Some(BigCopy::start(&engine, &server.db, rows).await?),
        None => None,
    };
    let total = rate * seconds;
    eprintln!("committing {total} single-row transactions at {rate}/s for {seconds} s...");
    let insert = client.prepare("INSERT INTO bench_latency VALUES ($1, $2)").await.map_err(pg_err)?;
    let mut committed: Vec<(i64, Instant)> = Vec::with_capacity(total as usize);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    for id in 0..total as i64 {
        tick.tick().await;
        client.execute(&insert, &[&id, &"x".repeat(64)]).await.map_err(pg_err)?;
        committed.push((id, Instant::now()));
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let copy = match big {
        Some(big) => Some(big.finish(&engine, &client).await?),
        None => None,
    };
    // Wait for the last row to become visible.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&(total as i64 - 1)) {
        if Instant::now() > deadline {
            return Err(CliError("the last commit never became visible locally".into()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    engine.shutdown().await.map_err(err)?;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut lat: Vec<Duration> = committed
        .iter()
        .map(|(id, at)| seen.get(id).map_or(Duration::MAX, |v| v.saturating_duration_since(*at)))
        .collect();
    if lat.contains(&Duration::MAX) {
        return Err(CliError("some commits never became visible".into()));
    }
    // Latency of the commits made while the big copy ran.
    let mut during: Vec<Duration> = match &copy {
        Some(c) => committed
            .iter()
            .zip(&lat)
            .filter(|((_, at), _)| *at >= c.started && *at <= c.ended)
            .map(|(_, l)| *l)
            .collect(),
        None => Vec::new(),
    };
    during.sort();
    lat.sort();
    let (p50, p99, max) = (percentile(&lat, 0.50), percentile(&lat, 0.99), lat[lat.len() - 1]);
    let ms = |d: Duration| common::round3(d.as_secs_f64() * 1000.0);
    let copy_report = match &copy {
        Some(c) if !during.is_empty() => {
            let (d50, d99) = (percentile(&during, 0.50), percentile(&during, 0.99));
            eprintln!(
                "while {} rows copied in {:.2?} under {} writer commits: {} commits, p50 {:.3} ms, p99 {:.3} ms \
                 (target p99 < 50 ms); the copy equals upstream: {}",
                c.rows,
                c.ended - c.started,
                c.writes,
                during.len(),
                ms(d50),
                ms(d99),
                c.exact
            );
            json!({
                "rows": c.rows,
                "copy_secs": (c.ended - c.started).as_secs_f64(),
                "writer_commits": c.writes,
                "commits_during_copy": during.len(),
                "p50_ms_during_copy": ms(d50),
                "p99_ms_during_copy": ms(d99),
                "target_p99_ms_during_copy": 50.0,
                "exact": c.exact,
            })
        }
        Some(c) => {
            eprintln!("the copy of {} rows ended before any measured commit", c.rows);
            json!({ "rows": c.rows, "copy_secs": (c.ended - c.started).as_secs_f64(), "exact": c.exact })
        }
        None => Json::Null,
    };
    eprintln!(
        "latency into {} at {achieved:.0} commits/s: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (target p99 <= 5 ms at 2000/s)",
        kind.name(),
        ms(p50),
        ms(p99),
        ms(max)
    );
    Ok(super::with_rss(json!({
        "bench": "latency",
        "store": kind.name(),
        "commits": total,
        "target_rate": rate,
        "achieved_rate": achieved.round(),
        "p50_ms": ms(p50),
        "p99_ms": ms(p99),
        "max_ms": ms(max),
        "target_p99_ms": 5.0,
        "persist_interval_ms": persist_ms,
        "during_copy": copy_report,
    })))
}

/// What to copy while the measured commits run.
#[derive(Clone, Copy, Debug)]
pub struct DuringCopy {
    /// Rows of the table.
    pub rows: u64,
    /// Rows per chunk (0: in one piece).
    pub chunk_rows: u64,
}

/// A realtime view of a large table copied while the measured commits run,
/// with writers updating random keys of it meanwhile.
struct BigCopy {
    rows: u64,
    started: Instant,
    /// The sync call, and when it returned.
    sync: tokio::task::JoinHandle<(Result<flashsync::SyncSummary, flashsync::EngineError>, Instant)>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    writer: tokio::task::JoinHandle<Result<u64, CliError>>,
}

/// How the big copy went.
struct CopyDone {
    rows: u64,
    started: Instant,
    ended: Instant,
    writes: u64,
    exact: bool,
}

impl BigCopy {
    async fn start(
        engine: &flashsync::Engine,
        db: &flashsync::postgres::testkit::TestDb,
        rows: u64,
    ) -> Result<BigCopy, CliError> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer_client = db.client().await;
        let flag = stop.clone();
        let writer = tokio::spawn(async move {
            let update = writer_client.prepare("UPDATE bench_big SET v = v + 1 WHERE id = $1").await.map_err(pg_err)?;
            let mut writes = 0u64;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // xorshift: random keys all over the table, copied or not.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = i64::try_from(x % rows + 1).unwrap_or(1);
                writer_client.execute(&update, &[&id]).await.map_err(pg_err)?;
                writes += 1;
            }
            Ok(writes)
        });
        let def = ViewDef::new("public", "big_live", Persistence::Realtime, common::ORIGIN, "public", "bench_big")
            .map_err(err)?;
        engine.define(def).await.map_err(err)?;
        let e = engine.clone();
        let started = Instant::now();
        let sync = tokio::spawn(async move {
            let r = e.sync("public.big_live").await;
            (r, Instant::now())
        });
        Ok(BigCopy { rows, started, sync, stop, writer })
    }

    /// Waits for the copy, stops the writers, and compares the copy with
    /// upstream (row count and the sum of `v`) once it has caught up.
    async fn finish(self, engine: &flashsync::Engine, client: &tokio_postgres::Client) -> Result<CopyDone, CliError> {
        let (summary, ended) = self.sync.await.map_err(|e| CliError(e.to_string()))?;
        let summary = summary.map_err(err)?;
        if summary.realtime.len() != 1 {
            return Err(CliError(format!("the big copy failed: {summary:?}")));
        }
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = self.writer.await.map_err(|e| CliError(e.to_string()))??;
        let row = client.query_one("SELECT count(*), sum(v)::bigint FROM bench_big", &[]).await.map_err(pg_err)?;
        let (count, sum): (i64, i64) = (row.get(0), row.get(1));
        let deadline = Instant::now() + Duration::from_secs(120);
        let exact = loop {
            let mut local = (0i64, 0i64);
            let mut rows = engine.rows("public.big_live", KeyRange::default()).await.map_err(err)?;
            while let Some(r) = rows.next().await {
                let r = r.map_err(err)?;
                local.0 += 1;
                if let Some(Value::Int(v)) = r.0.get(1) {
                    local.1 += v;
                }
            }
            if local == (count, sum) {
                break true;
            }
            if Instant::now() > deadline {
                eprintln!("the big copy holds {local:?} (rows, sum), upstream ({count}, {sum})");
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Ok(CopyDone { rows: self.rows, started: self.started, ended, writes, exact })
    }
}
