//! Large upstream transactions, applied in several store batches before
//! their commit arrives: they arrive whole, and a feed that breaks (or an
//! engine that stops) in the middle of one leaves no half transaction
//! behind.

#![allow(clippy::unwrap_used)]

mod pg_common;

use std::sync::Arc;

use flashsync::{Config, Engine, JobState, Persistence};
use flashsync_source_pg::testkit::{self, TestDb};
use pg_common::*;

/// Small partial batches, so a transaction of a few thousand rows spans
/// many of them.
fn small_batches() -> Config {
    Config { max_batch_ops: 200, ..fast_config() }
}

async fn setup(db: &TestDb, dir: &std::path::Path) -> (tokio_postgres::Client, Engine, Arc<Probe>) {
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);
         INSERT INTO big SELECT g, 'init' FROM generate_series(1, 1000) g;",
    )
    .await
    .unwrap();
    let probe = Probe::new(source_config(db));
    let engine = open_engine_with(dir, probe.source(), small_batches()).await;
    engine.define(view("public", "big_live", Persistence::Realtime, "public", "big")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    (c, engine, probe)
}

/// A transaction that inserts, updates and deletes tens of thousands of rows
/// arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_arrives_whole() {
    let Some(db) = testkit::test_db("bigtxn_whole").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c, engine, _probe) = setup(&db, dir.path()).await;
    c.batch_execute(
        "BEGIN;
         INSERT INTO big SELECT g, 'big' FROM generate_series(1001, 21000) g;
         UPDATE big SET v = 'updated' WHERE id % 3 = 0;
         UPDATE big SET id = id + 100000 WHERE id % 7 = 0;
         DELETE FROM big WHERE id % 5 = 0;
         COMMIT;",
    )
    .await
    .unwrap();
    assert_converges(&engine, "public.big_live", &c, "public", "big", WAIT).await;
    engine.shutdown().await.unwrap();
}

/// Rows of the large transactions below, each ~2 KB wide: ~20 MB of stream,
/// more than the socket buffers hold, so the walsender is still sending
/// when the interruption comes.
const ROWS: i64 = 10_000;

/// Commits a large transaction upstream and runs `interrupt` once part of
/// it is in the local copy. Returns the row count before it.
async fn interrupt_mid_transaction(
    c: &tokio_postgres::Client,
    engine: &Engine,
    round: i64,
    interrupt: impl std::future::Future<Output = ()>,
) -> u64 {
    let before = engine.count("public.big_live").await.unwrap();
    let lo = 1_000_000 * (round + 1);
    c.execute(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 64) FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) g",
        &[&lo, &ROWS],
    )
    .await
    .unwrap();
    let e = engine.clone();
    wait_for("part of the large transaction to be applied", WAIT, move || {
        let e = e.clone();
        async move { e.count("public.big_live").await.ok().filter(|n| *n != before) }
    })
    .await;
    interrupt.await;
    before
}

/// The walsender is killed while a large transaction is half applied: the
/// view cannot trust its copy, copies again, and converges. (Repeated until
/// the kill lands in the middle of a transaction, at most 12 times: under
/// load the whole transaction can land before the interruption does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_broken_in_the_middle_of_a_large_transaction() {
    let Some(db) = testkit::test_db("bigtxn_kill").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c, engine, probe) = setup(&db, dir.path()).await;
    let events = Events::collect(&engine);
    let slot = feed_name(&db);
    let cut = "the feed broke in the middle of a large transaction";
    for round in 0..12 {
        let pid = walsender_pid(&c, &slot).await.unwrap();
        let kill = async {
            c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
        };
        interrupt_mid_transaction(&c, &engine, round, kill).await;
        assert_converges(&engine, "public.big_live", &c, "public", "big", WAIT).await;
        wait_state(&engine, "public.big_live", JobState::Running).await;
        if events.errors().iter().any(|m| m.contains(cut)) {
            break;
        }
    }
    assert!(events.errors().iter().any(|m| m.contains(cut)), "never cut a transaction: {:?}", events.errors());
    assert!(probe.snapshot_count() > 1, "the half-applied copy was not copied again");
    engine.shutdown().await.unwrap();
}

/// The engine shuts down while a large transaction is half applied; the
/// reopened engine does not keep the half transaction. (Repeated until the
/// store holds half a transaction, at most 12 times: under load the whole
/// transaction can land before the interruption does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_stopped_in_the_middle_of_a_large_transaction() {
    let Some(db) = testkit::test_db("bigtxn_stop").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c, engine, _probe) = setup(&db, dir.path()).await;
    let mut engine = Some(engine);
    let mut caught = false;
    for round in 0..12 {
        let e = engine.take().unwrap();
        let stop = {
            let e = e.clone();
            async move { e.shutdown().await.unwrap() }
        };
        let before = interrupt_mid_transaction(&c, &e, round, stop).await;
        drop(e);
        let probe = Probe::new(source_config(&db));
        let e = open_engine_with(dir.path(), probe.source(), small_batches()).await;
        // What the store kept: all of the transaction, or half of it.
        let kept = e.count("public.big_live").await.unwrap();
        let half = kept != before && kept != before + ROWS as u64;
        let summary = e.sync("*").await.unwrap();
        assert_eq!(summary.realtime.len(), 1, "round {round}: {summary:?}");
        assert_converges(&e, "public.big_live", &c, "public", "big", WAIT).await;
        if half {
            assert!(probe.snapshot_count() >= 1, "round {round}: a half-applied copy was kept, not copied again");
            caught = true;
        }
        engine = Some(e);
        if caught {
            break;
        }
    }
    assert!(caught, "never stopped in the middle of a transaction");
    engine.unwrap().shutdown().await.unwrap();
}
