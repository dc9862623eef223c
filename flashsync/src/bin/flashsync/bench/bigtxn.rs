//! Memory while streaming one very large transaction: a realtime view is
//! running, then one transaction inserts N rows upstream. The process's peak
//! resident memory stays bounded: the machine hands such a transaction to
//! the store in staged parts (which the fjall store spills to a file), and
//! the feed pauses while the store catches up.

use std::time::{Duration, Instant};

use flashsync::{Persistence, ViewDef};
use serde_json::{json, Value as Json};

use super::common::{self, err, pg_err, BenchStore};
use crate::{pg, CliError};

/// Runs the big-transaction bench into `kind` and returns its JSON report.
pub async fn run(rows: u64, kind: BenchStore, url: Option<&str>) -> Result<Json, CliError> {
    let server = pg::start(url, pg::default_options(), "bench_bigtxn").await?;
    let conn = server.db.conninfo.clone();
    let client = server.db.client().await;
    client
        .batch_execute("CREATE TABLE bench_big (id bigint PRIMARY KEY, payload text NOT NULL)")
        .await
        .map_err(pg_err)?;
    let dir = tempfile::Builder::new().prefix("flashsync-bench-").tempdir().map_err(err)?;
    let store = kind.open(dir.path())?;
    let engine = common::engine_with(&conn, store, Duration::from_millis(100)).await?;
    let def = ViewDef::new("public", "big_live", Persistence::Realtime, common::ORIGIN, "public", "bench_big")
        .map_err(err)?;
    engine.define(def).await.map_err(err)?;
    let s = engine.sync("*").await.map_err(err)?;
    if s.realtime.len() != 1 {
        return Err(CliError(format!("bootstrap failed: {s:?}")));
    }
    let rss_before = crate::output::peak_rss_bytes().unwrap_or(0);
    eprintln!("one transaction inserting {rows} rows (~100-byte payloads)...");
    let t = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO bench_big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, {rows}) g"
        ))
        .await
        .map_err(pg_err)?;
    let committed = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(900);
    while engine.count("public.big_live").await.map_err(err)? != rows {
        if Instant::now() > deadline {
            return Err(CliError("the transaction never arrived in full".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = t.elapsed();
    common::finish(engine, kind, dir.path()).await?;
    let peak = crate::output::peak_rss_bytes().unwrap_or(0);
    let mib = |b: u64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;
    eprintln!(
        "a {rows}-row transaction (committed in {committed:.2?}) mirrored into {} {total:.2?} after it began; peak RSS {} MiB (target < 256 MiB)",
        kind.name(),
        mib(peak)
    );
    Ok(json!({
        "bench": "bigtxn",
        "store": kind.name(),
        "rows": rows,
        "commit_secs": committed.as_secs_f64(),
        "mirrored_secs": total.as_secs_f64(),
        "rows_per_s": (rows as f64 / total.as_secs_f64()).round(),
        "peak_rss_before_mib": mib(rss_before),
        "peak_rss_mib": mib(peak),
        "peak_rss_bytes": peak,
        "target_rss_mib": 256,
    }))
}
