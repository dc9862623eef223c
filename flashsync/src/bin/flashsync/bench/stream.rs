//! Stream throughput: applying N single-row update transactions already in
//! the slot vs `pg_recvlogical` draining the same WAL from a twin slot.

use std::time::{Duration, Instant};

use flashsync::{Persistence, ViewDef};
use flashsync_core::Lsn;
use serde_json::{json, Value as Json};

use super::common::{self, err, pg_err, BenchStore};
use crate::{pg, CliError};

/// Runs the stream bench into `kind` and returns its JSON report.
pub async fn run(txns: u64, kind: BenchStore, url: Option<&str>) -> Result<Json, CliError> {
    let server = pg::start(url, pg::default_options(), "bench_stream").await?;
    let conn = server.db.conninfo.clone();
    let client = server.db.client().await;
    client
        .batch_execute(
            "CREATE TABLE bench_stream (id bigint PRIMARY KEY, v bigint NOT NULL, note text);
             INSERT INTO bench_stream SELECT g, 0, 'row ' || g FROM generate_series(1, 10000) g;
             CREATE PROCEDURE bench_updates(n int) LANGUAGE plpgsql AS $$
             BEGIN
               FOR i IN 1..n LOOP
                 UPDATE bench_stream SET v = v + 1 WHERE id = 1 + (i % 10000);
                 COMMIT;
               END LOOP;
             END $$;",
        )
        .await
        .map_err(pg_err)?;

    // Bootstrap the realtime view, then stop the engine: the slot keeps its place.
    let dir = tempfile::Builder::new().prefix("flashsync-bench-").tempdir().map_err(err)?;
    let store = kind.open(dir.path())?;
    let engine = common::engine_with(&conn, store.clone(), Duration::from_millis(100)).await?;
    let def = ViewDef::new("public", "stream_live", Persistence::Realtime, common::ORIGIN, "public", "bench_stream")
        .map_err(err)?;
    engine.define(def).await.map_err(err)?;
    let s = engine.sync("*").await.map_err(err)?;
    if s.realtime.len() != 1 {
        return Err(CliError(format!("bootstrap failed: {s:?}")));
    }
    engine.shutdown().await.map_err(err)?;
    drop(engine);
    drop(store);

    // A twin slot at the same place, for the baseline.
    let publication = common::source_config(&conn)?.publication_name;
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('bench_twin', 'pgoutput')")
        .await
        .map_err(pg_err)?;
    eprintln!("committing {txns} single-row update transactions...");
    let t = Instant::now();
    client.batch_execute(&format!("CALL bench_updates({txns})")).await.map_err(pg_err)?;
    let end: String = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.map_err(pg_err)?.get(0);
    let end: Lsn = end.parse().map_err(err)?;
    eprintln!("committed in {:.2?}; WAL end {end}", t.elapsed());

    // Baseline: pg_recvlogical drains the twin slot to the end position.
    let recvlogical = common::pg_tool("pg_recvlogical")?;
    let t = Instant::now();
    let out = tokio::process::Command::new(&recvlogical)
        .arg("-d")
        .arg(common::keywords(&conn))
        .args(["--slot", "bench_twin", "--start", "--no-loop", "-f", "/dev/null"])
        .args(["-o", "proto_version=1", "-o", &format!("publication_names={publication}")])
        .arg(format!("--endpos={end}"))
        .output()
        .await
        .map_err(|e| CliError(format!("running pg_recvlogical: {e}")))?;
    let baseline = t.elapsed();
    if !out.status.success() {
        return Err(CliError(format!("pg_recvlogical failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    eprintln!("baseline: pg_recvlogical drained {txns} transactions in {baseline:.2?}");

    // flashsync: reopen the store; sync() resumes the slot and replays.
    let t = Instant::now();
    let store = kind.open(dir.path())?;
    let engine = common::engine_with(&conn, store, Duration::from_millis(100)).await?;
    engine.sync("*").await.map_err(err)?;
    // The WAL write position read after the last commit may fall short of
    // it (the server commits asynchronously here), so "caught up" is proven
    // by the data itself: every update is in the local copy.
    common::caught_up(&engine, "public.stream_live", end, Duration::from_secs(600)).await?;
    let sum = |rows: &[flashsync::Row]| -> i64 {
        rows.iter().map(|r| if let Some(flashsync::Value::Int(v)) = r.0.get(1) { *v } else { 0 }).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while sum(&engine.scan_all("public.stream_live").await.map_err(err)?) != txns as i64 {
        if Instant::now() > deadline {
            return Err(CliError("the last updates never arrived".into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ours = t.elapsed();
    let stats = engine.stats().await.map_err(err)?;
    if stats.snapshots != 0 {
        return Err(CliError("catching up took a snapshot instead of replaying".into()));
    }
    engine.shutdown().await.map_err(err)?;
    let rate = |d: Duration| txns as f64 / d.as_secs_f64();
    let ratio = baseline.as_secs_f64() / ours.as_secs_f64();
    eprintln!(
        "flashsync: replayed {txns} transactions into {} in {ours:.2?} ({:.0} txns/s) vs pg_recvlogical {:.0} txns/s: ratio {ratio:.2} (target >= 0.80)",
        kind.name(),
        rate(ours),
        rate(baseline)
    );
    Ok(super::with_rss(json!({
        "bench": "stream",
        "store": kind.name(),
        "txns": txns,
        "baseline_secs": baseline.as_secs_f64(),
        "baseline_txns_per_s": rate(baseline).round(),
        "flashsync_secs": ours.as_secs_f64(),
        "flashsync_txns_per_s": rate(ours).round(),
        "ratio": common::round3(ratio),
        "target": 0.8,
        "batches": stats.batches,
    })))
}
