//! One very large transaction: a realtime view is running, then one
//! transaction inserts N rows upstream. Reports how long from its `BEGIN`
//! until every row is readable, the slowest of the point reads a reader
//! makes every 10 ms meanwhile (the store holds readers while it applies
//! the transaction's staged parts), and the process's peak resident
//! memory, which stays bounded: the machine hands such a transaction to the store in
//! staged parts (which the fjall store spills to a file), and the feed
//! pauses while the store catches up.
//!
//! The baseline, measured first in the same run against the same server:
//! `pg_recvlogical` receiving a transaction of the same size on a slot of
//! its own, from `BEGIN` until the walsender has sent its commit
//! (`pg_stat_replication.sent_lsn`). A logical walsender sends a
//! transaction only once it commits, replaying it from its reorder buffer
//! (spilled to disk past `logical_decoding_work_mem`) one message at a
//! time, so on a small machine the server, not the client, sets the pace;
//! the ratio says how close flashsync comes to it. The same with protocol 2
//! and `streaming = on` (the server sends the transaction while it is still
//! open) is reported beside it, for what streaming could gain.

use std::time::{Duration, Instant};

use flashsync::{Persistence, ViewDef};
use flashsync_core::Lsn;
use serde_json::{json, Value as Json};

use super::common::{self, err, pg_err, BenchStore};
use crate::{pg, CliError};

/// The insert both the baseline and flashsync receive.
fn insert(table: &str, rows: u64) -> String {
    format!("INSERT INTO {table} SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, {rows}) g")
}

/// How far the walsender of the connection named `name` has sent.
async fn sent_lsn(client: &tokio_postgres::Client, name: &str) -> Result<Option<Lsn>, CliError> {
    let row = client
        .query_opt("SELECT sent_lsn::text FROM pg_stat_replication WHERE application_name = $1", &[&name])
        .await
        .map_err(pg_err)?;
    match row.and_then(|r| r.get::<_, Option<String>>(0)) {
        Some(lsn) => lsn.parse::<Lsn>().map(Some).map_err(err),
        None => Ok(None),
    }
}

/// `pg_recvlogical` receiving one `rows`-row transaction (options `opts`):
/// the time from its `BEGIN` until the walsender has sent its commit.
async fn baseline(
    client: &tokio_postgres::Client,
    conn: &flashsync::postgres::ConnInfo,
    rows: u64,
    name: &str,
    opts: &[&str],
) -> Result<Duration, CliError> {
    let table = format!("bench_{name}");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, payload text NOT NULL);
             CREATE PUBLICATION {table} FOR TABLE {table};"
        ))
        .await
        .map_err(pg_err)?;
    // On its own: a slot cannot be made in a transaction that wrote.
    client
        .batch_execute(&format!("SELECT pg_create_logical_replication_slot('{table}', 'pgoutput')"))
        .await
        .map_err(pg_err)?;
    let recvlogical = common::pg_tool("pg_recvlogical")?;
    let mut receiver = tokio::process::Command::new(&recvlogical)
        .arg("-d")
        .arg(common::keywords(conn))
        .args(["--slot", &table, "--start", "--no-loop", "-f", "/dev/null"])
        .args(opts.iter().flat_map(|o| ["-o", o]))
        .arg("-o")
        .arg(format!("publication_names={table}"))
        .env("PGAPPNAME", &table)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError(format!("running pg_recvlogical: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent_lsn(client, &table).await?.is_none() {
        if Instant::now() > deadline {
            return Err(CliError("pg_recvlogical never connected".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    client.batch_execute(&insert(&table, rows)).await.map_err(pg_err)?;
    // The insert position, not the write position: the bench server
    // commits asynchronously, so the commit record may not be written yet.
    let end: String = client.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.map_err(pg_err)?.get(0);
    let end: Lsn = end.parse().map_err(err)?;
    let deadline = Instant::now() + Duration::from_secs(900);
    while sent_lsn(client, &table).await?.is_none_or(|s| s < end) {
        if Instant::now() > deadline {
            return Err(CliError(format!("pg_recvlogical ({}) never received the transaction", opts.join(" "))));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t.elapsed();
    let _ = receiver.kill().await;
    // Nothing may decode this table's WAL while flashsync is measured.
    client
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot('{table}') FROM pg_replication_slots
               WHERE slot_name = '{table}' AND NOT active;
             DROP TABLE {table};"
        ))
        .await
        .map_err(pg_err)?;
    Ok(took)
}

/// Runs the big-transaction bench into `kind` and returns its JSON report.
pub async fn run(rows: u64, kind: BenchStore, url: Option<&str>) -> Result<Json, CliError> {
    let server = pg::start(url, pg::default_options(), "bench_bigtxn").await?;
    let conn = server.db.conninfo.clone();
    let client = server.db.client().await;
    client
        .batch_execute("CREATE TABLE bench_big (id bigint PRIMARY KEY, payload text NOT NULL)")
        .await
        .map_err(pg_err)?;
    eprintln!("baseline: pg_recvlogical receiving a {rows}-row transaction...");
    let base = baseline(&client, &conn, rows, "twin", &["proto_version=1"]).await?;
    eprintln!("  protocol 1: sent {base:.2?} after BEGIN");
    let streamed = baseline(&client, &conn, rows, "twin_streamed", &["proto_version=2", "streaming=on"]).await?;
    eprintln!("  protocol 2, streaming on: sent {streamed:.2?} after BEGIN");
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
    // A reader asking for one row every 10 ms throughout: how long the
    // slowest answer took says whether readers wait for the transaction.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (engine, done) = (engine.clone(), done.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let key = flashsync::Key(vec![flashsync::Value::Int(1)]);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                engine.get("public.big_live", &key).await.map_err(err)?;
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, CliError>(slowest)
        })
    };
    eprintln!("one transaction inserting {rows} rows (~100-byte payloads)...");
    let t = Instant::now();
    client.batch_execute(&insert("bench_big", rows)).await.map_err(pg_err)?;
    let committed = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(900);
    let arrived = async {
        while engine.count("public.big_live").await.map_err(err)? != rows {
            if Instant::now() > deadline {
                return Err(CliError("the transaction never arrived in full".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
    .await;
    let total = t.elapsed();
    // Stop the reader however the wait ended.
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    arrived?;
    let slowest_read = reader.await.map_err(|e| CliError(format!("the reader task failed: {e}")))??;
    common::finish(engine, kind, dir.path()).await?;
    let peak = crate::output::peak_rss_bytes().unwrap_or(0);
    let mib = |b: u64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;
    let ratio = base.as_secs_f64() / total.as_secs_f64();
    eprintln!(
        "a {rows}-row transaction (committed in {committed:.2?}) mirrored into {} {total:.2?} after it began \
         ({:.0} rows/s); pg_recvlogical received it in {base:.2?}: ratio {ratio:.2}; peak RSS {} MiB (target < 256 MiB); \
         slowest point read meanwhile {slowest_read:.2?}",
        kind.name(),
        rows as f64 / total.as_secs_f64(),
        mib(peak)
    );
    Ok(json!({
        "bench": "bigtxn",
        "store": kind.name(),
        "rows": rows,
        "commit_secs": committed.as_secs_f64(),
        "mirrored_secs": total.as_secs_f64(),
        "rows_per_s": (rows as f64 / total.as_secs_f64()).round(),
        "baseline_secs": base.as_secs_f64(),
        "baseline_rows_per_s": (rows as f64 / base.as_secs_f64()).round(),
        "baseline_streaming_secs": streamed.as_secs_f64(),
        "ratio": common::round3(ratio),
        "peak_rss_before_mib": mib(rss_before),
        "peak_rss_mib": mib(peak),
        "peak_rss_bytes": peak,
        "target_rss_mib": 256,
        "slowest_read_ms": common::round3(slowest_read.as_secs_f64() * 1000.0),
    }))
}
