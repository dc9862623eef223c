//! Filtered views: K realtime views of one table, each keeping 1/K of its
//! rows (`where tenant = k`), vs one unfiltered view of the same table.
//!
//! Both setups replay the same N single-row update transactions from their
//! slot (committed while the engine was down, as in `bench stream`), so the
//! figure is the apply rate, not the commit rate. Every view shares the
//! origin's one slot, so the server decodes the same WAL either way; what
//! the K views add is flashsync's own work: one change routed to K views,
//! each deciding whether the row is in it. Measured: replay rate (ratio
//! K-filtered / unfiltered, target >= 0.9) and the walsender's CPU time
//! (ratio, target <= 1.2).

use std::time::{Duration, Instant};

use flashsync::{Persistence, ViewDef};
use serde_json::{json, Value as Json};

use super::common::{self, err, pg_err, BenchStore};
use super::fanout::cpu_ticks;
use crate::{pg, CliError};

/// Rows of the table: tenants are `id % K`.
const ROWS: i64 = 20_000;

struct Replay {
    /// From opening the engine until every update is in the views.
    secs: f64,
    /// Updates applied per second once `sync()` returned: attaching K views
    /// costs K describes, which is not the apply rate.
    apply_rate: f64,
    cpu_ticks: Option<u64>,
    /// This process's CPU time while replaying (every thread: decoding,
    /// the machine, the store), per 10,000 updates.
    engine_ticks: Option<f64>,
}

/// What the filters read.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FilterOn {
    /// `tenant = k`: a column outside the key. Under the default replica
    /// identity an update of a row of another tenant may be a move-out for
    /// all the flashsync knows (the old row is not sent), so each view
    /// checks whether it holds the key; under `REPLICA IDENTITY FULL` the
    /// old row says.
    Column,
    /// `id BETWEEN a AND b`: the key alone decides, so a view never looks
    /// at rows outside its range.
    Key,
}

/// The table's `REPLICA IDENTITY`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Identity {
    /// The primary key: an update sends its old key only when it changed.
    Default,
    /// Every update and delete sends the whole old row: more WAL, but a
    /// filtered view knows whether the old row was in it.
    Full,
}

/// What both setups share.
struct Setup {
    txns: u64,
    on: FilterOn,
    identity: Identity,
    store: BenchStore,
}

async fn measure(server: &pg::Server, setup: &Setup, views: usize, round: usize) -> Result<Replay, CliError> {
    let Setup { txns, on, identity, store } = *setup;
    let filtered = views > 1;
    let db = server
        ._cluster
        .as_ref()
        .ok_or_else(|| CliError("the filtered bench needs a local cluster".into()))?
        .create_db(&format!("filtered{views}_{on:?}_{identity:?}_{round}").to_lowercase())
        .await
        .map_err(err)?;
    let client = db.client().await;
    let ident = match identity {
        Identity::Default => "DEFAULT",
        Identity::Full => "FULL",
    };
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, tenant int NOT NULL, v bigint NOT NULL, note text);
             ALTER TABLE t REPLICA IDENTITY {ident};
             INSERT INTO t SELECT g, g % {views}, 0, 'row ' || g FROM generate_series(1, {ROWS}) g;
             CREATE PROCEDURE bench_updates(n int) LANGUAGE plpgsql AS $$
             BEGIN
               FOR i IN 1..n LOOP
                 UPDATE t SET v = v + 1 WHERE id = 1 + (i * 7919) % {ROWS};
                 COMMIT;
               END LOOP;
             END $$;"
        ))
        .await
        .map_err(pg_err)?;
    let dir = tempfile::Builder::new().prefix("flashsync-bench-").tempdir().map_err(err)?;
    let open = || async {
        let store = store.open(dir.path())?;
        common::engine_with(&db.conninfo, store, Duration::from_millis(100)).await
    };
    let engine = open().await?;
    for k in 0..views {
        let mut def = ViewDef::new("public", &format!("t{k}"), Persistence::Realtime, common::ORIGIN, "public", "t")
            .map_err(err)?;
        if filtered {
            let per = ROWS / views as i64;
            let filter = match on {
                FilterOn::Column => format!("tenant = {k}"),
                FilterOn::Key if k + 1 == views => format!("id >= {}", 1 + k as i64 * per),
                FilterOn::Key => format!("id BETWEEN {} AND {}", 1 + k as i64 * per, (k as i64 + 1) * per),
            };
            def = def.with_filter(&filter).map_err(err)?;
        }
        engine.define(def).await.map_err(err)?;
    }
    let s = engine.sync("*").await.map_err(err)?;
    if s.realtime.len() != views {
        return Err(CliError(format!("bootstrap failed: {s:?}")));
    }
    engine.shutdown().await.map_err(err)?;
    drop(engine);
    client.batch_execute(&format!("CALL bench_updates({txns})")).await.map_err(pg_err)?;
    let end: String = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.map_err(pg_err)?.get(0);
    let end: flashsync::Lsn = end.parse().map_err(err)?;

    let t = Instant::now();
    let engine = open().await?;
    engine.sync("*").await.map_err(err)?;
    let slot = common::source_config(&db.conninfo)?.slot_name;
    let pid: Option<i32> = client
        .query_one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .map_err(pg_err)?
        .get(0);
    // Caught up when every update is in the views: their `v` add up to N.
    let applied = || async {
        let mut sum = 0i64;
        for k in 0..views {
            for r in engine.scan_all(&format!("public.t{k}")).await.map_err(err)? {
                if let Some(flashsync::Value::Int(x)) = r.0.get(2) {
                    sum += x;
                }
            }
        }
        Ok::<i64, CliError>(sum)
    };
    let me = std::process::id() as i32;
    let (t0, at_sync, cpu0) = (Instant::now(), applied().await?, cpu_ticks(me));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // Scanning every view is the expensive check, and it competes with
        // the apply path for the CPU: only once the views say they reached
        // the end of the WAL (cheap) are their rows added up.
        let statuses = engine.status("*").await.map_err(err)?;
        let reached = statuses.iter().all(|s| s.last_seen_commit.is_some_and(|l| l >= end));
        if reached && applied().await? == txns as i64 {
            break;
        }
        if Instant::now() > deadline {
            let sum = applied().await?;
            return Err(CliError(format!("the views did not catch up ({sum} of {txns} updates)")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let steady = t0.elapsed().as_secs_f64();
    let replayed = (txns as i64 - at_sync).max(1) as f64;
    let engine_ticks = cpu0.zip(cpu_ticks(me)).map(|(a, b)| b.saturating_sub(a) as f64 * 10_000.0 / replayed);
    if (txns as i64 - at_sync) < txns as i64 / 2 {
        eprintln!("  (note: {at_sync} of {txns} updates were applied before sync() returned)");
    }
    let apply_rate = (txns as i64 - at_sync) as f64 / steady.max(1e-6);
    let secs = t.elapsed().as_secs_f64();
    let cpu = pid.and_then(cpu_ticks);
    let stats = engine.stats().await.map_err(err)?;
    if stats.snapshots != 0 {
        return Err(CliError("catching up took a snapshot instead of replaying".into()));
    }
    // Slot names are cluster-wide: forgetting every view drops the feed.
    engine.forget("*").await.map_err(err)?;
    engine.shutdown().await.map_err(err)?;
    Ok(Replay { secs, apply_rate, cpu_ticks: cpu, engine_ticks })
}

/// Runs of each setup, alternated; the fastest counts.
const ROUNDS: usize = 3;

/// Runs the filtered-views bench on `store` and returns its JSON report.
pub async fn run(
    views: usize,
    txns: u64,
    on: FilterOn,
    identity: Identity,
    store: BenchStore,
) -> Result<Json, CliError> {
    let views = views.max(2);
    let setup = Setup { txns, on, identity, store };
    let server = pg::start(None, pg::default_options(), "bench_filtered").await?;
    let fastest = |best: Option<Replay>, run: Replay| match best {
        Some(b) if b.apply_rate >= run.apply_rate => Some(b),
        _ => Some(run),
    };
    let (mut one, mut many) = (None, None);
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}: 1 unfiltered view, replaying {txns} transactions...", round + 1);
        one = fastest(one, measure(&server, &setup, 1, round).await?);
        eprintln!("round {}/{ROUNDS}: {views} filtered views (1/{views} of the rows each)...", round + 1);
        many = fastest(many, measure(&server, &setup, views, round).await?);
    }
    let (Some(one), Some(many)) = (one, many) else {
        return Err(CliError("no run completed".into()));
    };
    let rate = |r: &Replay| r.apply_rate;
    let ratio = rate(&many) / rate(&one);
    let cpu_ratio = match (one.cpu_ticks, many.cpu_ticks) {
        (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
        _ => None,
    };
    let engine_ratio = match (one.engine_ticks, many.engine_ticks) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    eprintln!(
        "engine CPU per 10,000 updates: {:?} vs {:?} ticks: ratio {}",
        one.engine_ticks,
        many.engine_ticks,
        engine_ratio.map_or("n/a".into(), |r| format!("{r:.2}"))
    );
    eprintln!(
        "replay into {}: 1 view {:.0} txns/s, {views} filtered views {:.0} txns/s: ratio {ratio:.2} (target >= 0.9); \
         walsender CPU ticks {:?} vs {:?}: ratio {} (target <= 1.2)",
        store.name(),
        rate(&one),
        rate(&many),
        one.cpu_ticks,
        many.cpu_ticks,
        cpu_ratio.map_or("n/a".into(), |r| format!("{r:.2}"))
    );
    Ok(super::with_rss(json!({
        "bench": "filtered",
        "store": store.name(),
        "views": views,
        "filter_on": format!("{on:?}").to_lowercase(),
        "replica_identity": format!("{identity:?}").to_lowercase(),
        "txns": txns,
        "unfiltered_txns_per_s": rate(&one).round(),
        "filtered_txns_per_s": rate(&many).round(),
        "unfiltered_total_secs": common::round3(one.secs),
        "filtered_total_secs": common::round3(many.secs),
        "ratio": common::round3(ratio),
        "target": 0.9,
        "walsender_cpu_ticks_1": one.cpu_ticks,
        "walsender_cpu_ticks_k": many.cpu_ticks,
        "walsender_cpu_ratio": cpu_ratio.map(common::round3),
        "walsender_cpu_target": 1.2,
        "engine_cpu_ratio": engine_ratio.map(common::round3),
    })))
}
