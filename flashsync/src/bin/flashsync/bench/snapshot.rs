//! Snapshot throughput: materializing a table into a store (fjall or SQLite)
//! vs the raw rate at which this process can drain the same
//! `COPY … TO STDOUT`.

use std::time::{Duration, Instant};

use flashsync::postgres::{PgSource, PgSourceConfig};
use flashsync::{Engine, Persistence, ViewDef};
use flashsync_core::OriginId;
use futures::StreamExt;
use serde_json::{json, Value as Json};

use super::common::BenchStore;
use crate::{pg, CliError};

fn err(e: impl std::error::Error) -> CliError {
    CliError(crate::chain(&e))
}

/// What the bench copies into.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// A materialized view (one snapshot, no feed).
    Materialized,
    /// A realtime view's first copy, with its origin's feed up, in chunks
    /// of this many rows (0: in one piece).
    Realtime {
        /// Rows per chunk.
        chunk_rows: u64,
    },
}

/// Runs the snapshot bench into `kind` and returns its JSON report.
pub async fn run(rows: u64, kind: BenchStore, url: Option<&str>, mode: Mode) -> Result<Json, CliError> {
    let server = pg::start(url, pg::default_options(), "bench_snapshot").await?;
    let client = server.db.client().await;
    eprintln!("loading {rows} rows...");
    client
        .batch_execute(&format!(
            "CREATE TABLE bench (id bigint PRIMARY KEY, name text NOT NULL, qty int, price numeric(12,2),
                                 ts timestamptz, flag bool, note text);
             INSERT INTO bench SELECT g, 'name ' || g, g % 1000, (g % 100000) / 100.0,
                                      timestamptz '2026-01-01' + g * interval '1 second', g % 2 = 0,
                                      CASE WHEN g % 3 = 0 THEN NULL ELSE md5(g::text) END
                               FROM generate_series(1, {rows}) g;"
        ))
        .await
        .map_err(err)?;
    // Set hint bits and freeze now, so neither measured scan pays for it.
    client.batch_execute("VACUUM (FREEZE, ANALYZE) bench").await.map_err(err)?;

    // Baseline: drain the same COPY statement the source issues.
    let copy = "COPY (SELECT \"id\", \"name\", \"qty\", \"price\", \"ts\", \"flag\", \"note\" FROM \"public\".\"bench\") TO STDOUT";
    let mut baseline = Duration::MAX;
    let mut bytes = 0u64;
    for _ in 0..2 {
        let t = Instant::now();
        let stream = client.copy_out(copy).await.map_err(err)?;
        futures::pin_mut!(stream);
        bytes = 0;
        while let Some(chunk) = stream.next().await {
            bytes += chunk.map_err(err)?.len() as u64;
        }
        baseline = baseline.min(t.elapsed());
    }
    eprintln!("baseline: drained COPY ({} MiB) in {:.2?}", bytes >> 20, baseline);

    let dir = tempfile::Builder::new().prefix("flashsync-bench-").tempdir().map_err(err)?;
    let store = kind.open(dir.path())?;
    let origin = OriginId::new("postgres:bench").map_err(err)?;
    let source = PgSource::new(PgSourceConfig::new(&origin, server.db.conninfo.clone())).map_err(err)?;
    let (persistence, config) = match mode {
        Mode::Materialized => (Persistence::Materialized, flashsync::Config::default()),
        Mode::Realtime { chunk_rows } => {
            (Persistence::Realtime, flashsync::Config { snapshot_chunk_rows: chunk_rows, ..Default::default() })
        }
    };
    let engine = Engine::builder()
        .shared_store(store)
        .origin("postgres:bench", source)
        .config(config)
        .open()
        .await
        .map_err(err)?;
    let def = ViewDef::new("public", "bench_copy", persistence, "postgres:bench", "public", "bench")
        .map_err(|e| CliError(e.to_string()))?;
    let mut ours = Duration::MAX;
    for i in 0..2 {
        if i == 0 || matches!(mode, Mode::Realtime { .. }) {
            // A realtime view copies once: forget it and define it again.
            if i > 0 {
                engine.forget("*").await.map_err(|e| CliError(e.to_string()))?;
            }
            engine.define(def.clone()).await.map_err(|e| CliError(e.to_string()))?;
        }
        let t = Instant::now();
        let s = if i == 0 || matches!(mode, Mode::Realtime { .. }) {
            engine.sync("*").await
        } else {
            engine.sync_forced("*").await
        }
        .map_err(|e| CliError(e.to_string()))?;
        if !s.failed.is_empty() {
            return Err(CliError(format!("copy failed: {:?}", s.failed)));
        }
        let took = t.elapsed();
        eprintln!("run {}: copied in {took:.2?}", i + 1);
        ours = ours.min(took);
    }
    let local = engine.count("public.bench_copy").await.map_err(err)?;
    engine.shutdown().await.map_err(err)?;
    if local != rows {
        return Err(CliError(format!("materialized {local} rows, expected {rows}")));
    }
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let ratio = rate(ours) / rate(baseline);
    // SQLite writes typed tables through one connection (and builds each
    // row's key and SQL values): a lower bar than fjall's key-value writes.
    let target = match kind {
        BenchStore::Fjall => 0.70,
        BenchStore::Sqlite => 0.30,
    };
    eprintln!(
        "flashsync: copied {rows} rows ({mode:?}) into {} in {:.2?} ({:.0} rows/s) vs COPY drain {:.0} rows/s: ratio {ratio:.2} (target >= {target:.2})",
        kind.name(),
        ours,
        rate(ours),
        rate(baseline)
    );
    Ok(super::with_rss(json!({
        "bench": "snapshot",
        "store": kind.name(),
        "mode": format!("{mode:?}"),
        "rows": rows,
        "copy_bytes": bytes,
        "baseline_secs": baseline.as_secs_f64(),
        "baseline_rows_per_s": rate(baseline).round(),
        "flashsync_secs": ours.as_secs_f64(),
        "flashsync_rows_per_s": rate(ours).round(),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "target": target,
    })))
}
