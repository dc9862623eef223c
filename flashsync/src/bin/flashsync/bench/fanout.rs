//! Fan-out: what K realtime views of one origin cost the server, vs one.
//!
//! Both runs commit the same number of single-row transactions: with one
//! view they all go to its table; with K views they are spread over the K
//! tables. The server decodes the same WAL and delivers the same number of
//! changes; what differs is only how many views (and published tables) share
//! the origin. flashsync keeps one slot and one publication per origin, so
//! decoding cost should not grow with K (a slot per view would multiply it by
//! K). Measured: the walsender's CPU time (from /proc, local cluster only) and
//! the bytes the slot decoded (`pg_stat_replication_slots.total_bytes`).

use std::time::{Duration, Instant};

use flashsync::{Persistence, ViewDef};
use serde_json::{json, Value as Json};

use super::common::{self, err, pg_err};
use crate::{pg, CliError};

struct Cost {
    cpu_ticks: Option<u64>,
    decoded_bytes: i64,
    secs: f64,
}

/// The CPU time (user + system, in clock ticks) process `pid` used so far.
pub(super) fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

async fn measure(server: &pg::Server, views: usize, commits: u64, round: usize) -> Result<Cost, CliError> {
    let db = server
        ._cluster
        .as_ref()
        .ok_or_else(|| CliError("fanout needs a local cluster".into()))?
        .create_db(&format!("fanout{views}_{round}"))
        .await
        .map_err(err)?;
    let client = db.client().await;
    let mut ddl = String::new();
    for t in 1..=views {
        ddl.push_str(&format!(
            "CREATE TABLE t{t} (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO t{t} SELECT g, 0 FROM generate_series(1, 1000) g;"
        ));
    }
    ddl.push_str(
        "CREATE PROCEDURE fan(n int, k int) LANGUAGE plpgsql AS $$
         BEGIN
           FOR i IN 1..n LOOP
             EXECUTE format('UPDATE t%s SET v = v + 1 WHERE id = $1', 1 + i % k) USING 1 + (i / k) % 1000;
             COMMIT;
           END LOOP;
         END $$;",
    );
    client.batch_execute(&ddl).await.map_err(pg_err)?;
    let dir = tempfile::Builder::new().prefix("flashsync-bench-").tempdir().map_err(err)?;
    // What is measured is the server's decoding, so the store is fixed.
    let store = common::BenchStore::Fjall.open(dir.path())?;
    let engine = common::engine_with(&db.conninfo, store, Duration::from_millis(100)).await?;
    for t in 1..=views {
        let def = ViewDef::new(
            "public",
            &format!("t{t}_live"),
            Persistence::Realtime,
            common::ORIGIN,
            "public",
            &format!("t{t}"),
        )
        .map_err(err)?;
        engine.define(def).await.map_err(err)?;
    }
    let s = engine.sync("*").await.map_err(err)?;
    if s.realtime.len() != views {
        return Err(CliError(format!("bootstrap failed: {s:?}")));
    }
    let slot = common::source_config(&db.conninfo)?.slot_name;
    let pid: i32 = client
        .query_one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .map_err(pg_err)?
        .get::<_, Option<i32>>(0)
        .ok_or_else(|| CliError("the slot has no active walsender".into()))?;
    let before_bytes: i64 = client
        .query_one(
            "SELECT coalesce((SELECT total_bytes FROM pg_stat_replication_slots WHERE slot_name = $1), 0)",
            &[&slot],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    let before_cpu = cpu_ticks(pid);
    let t = Instant::now();
    client.batch_execute(&format!("CALL fan({commits}, {views})")).await.map_err(pg_err)?;
    // Wait until every view holds exactly what upstream holds.
    for v in 1..=views {
        let view = format!("public.t{v}_live");
        let expected: i64 = client
            .query_one(&format!("SELECT coalesce(sum(v), 0)::bigint FROM t{v}"), &[])
            .await
            .map_err(pg_err)?
            .get(0);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let local: i64 = engine
                .scan_all(&view)
                .await
                .map_err(err)?
                .iter()
                .map(|r| if let Some(flashsync::Value::Int(x)) = r.0.get(1) { *x } else { 0 })
                .sum();
            if local == expected {
                break;
            }
            if Instant::now() > deadline {
                return Err(CliError(format!("{view} did not catch up ({local} of {expected})")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let after_cpu = cpu_ticks(pid);
    // Statistics are flushed by the walsender periodically; give it a moment.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_bytes: i64 = client
        .query_one(
            "SELECT coalesce((SELECT total_bytes FROM pg_stat_replication_slots WHERE slot_name = $1), 0)",
            &[&slot],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    // Slot names are cluster-wide: forgetting every view drops the feed, so the
    // next run can create its own.
    let forgotten = engine.forget("*").await.map_err(err)?;
    if !forgotten.warnings.is_empty() {
        return Err(CliError(format!("could not release upstream resources: {:?}", forgotten.warnings)));
    }
    engine.shutdown().await.map_err(err)?;
    Ok(Cost {
        cpu_ticks: before_cpu.zip(after_cpu).map(|(a, b)| b.saturating_sub(a)),
        decoded_bytes: after_bytes - before_bytes,
        secs,
    })
}

/// Runs of each setup; the cheapest counts.
const ROUNDS: usize = 3;

pub async fn run(views: usize, commits: u64) -> Result<Json, CliError> {
    let views = views.max(1);
    let server = pg::start(None, pg::default_options().set("synchronous_commit", "on"), "bench_fanout").await?;
    // The walsender's CPU is read in 10 ms ticks, and anything else on the
    // machine only adds to it: alternate the two setups and keep each one's
    // cheapest run.
    let cheapest = |best: Option<Cost>, run: Cost| match best {
        Some(b) if b.cpu_ticks.unwrap_or(u64::MAX) <= run.cpu_ticks.unwrap_or(u64::MAX) => Some(b),
        _ => Some(run),
    };
    let (mut one, mut many) = (None, None);
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}: 1 view, {commits} commits...", round + 1);
        one = cheapest(one, measure(&server, 1, commits, round).await?);
        eprintln!("round {}/{ROUNDS}: {views} views, {commits} commits...", round + 1);
        many = cheapest(many, measure(&server, views, commits, round).await?);
    }
    let (Some(one), Some(many)) = (one, many) else {
        return Err(CliError("no fanout run completed".into()));
    };
    let ratio = match (one.cpu_ticks, many.cpu_ticks) {
        (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
        _ => None,
    };
    let bytes_ratio =
        if one.decoded_bytes > 0 { Some(many.decoded_bytes as f64 / one.decoded_bytes as f64) } else { None };
    eprintln!(
        "walsender CPU: 1 view {:?} ticks, {views} views {:?} ticks: ratio {} (target <= 1.2); decoded bytes ratio {}",
        one.cpu_ticks,
        many.cpu_ticks,
        ratio.map_or("n/a".into(), |r| format!("{r:.2}")),
        bytes_ratio.map_or("n/a".into(), |r| format!("{r:.2}")),
    );
    Ok(super::with_rss(json!({
        "bench": "fanout",
        "views": views,
        "commits": commits,
        "walsender_cpu_ticks_1": one.cpu_ticks,
        "walsender_cpu_ticks_k": many.cpu_ticks,
        "decoded_bytes_1": one.decoded_bytes,
        "decoded_bytes_k": many.decoded_bytes,
        "secs_1": one.secs,
        "secs_k": many.secs,
        "ratio": ratio.map(common::round3),
        "decoded_bytes_ratio": bytes_ratio.map(common::round3),
        "target": 1.2,
    })))
}
