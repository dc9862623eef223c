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

/// Starts a large transaction upstream and calls `interrupt` once part of it
/// (but not its commit) is in the local copy. Returns whether it was caught
/// in the middle.
async fn interrupt_mid_transaction(
    c: &tokio_postgres::Client,
    engine: &Engine,
    round: i64,
    interrupt: impl std::future::Future<Output = ()>,
) -> bool {
    let before = engine.count("public.big_live").await.unwrap();
    let lo = 1_000_000 * (round + 1);
    c.execute(
        "INSERT INTO big SELECT g, 'round ' || $1::bigint::text FROM generate_series($2::bigint, $2::bigint + 19999) g",
        &[&round, &lo],
    )
    .await
    .unwrap();
    let e = engine.clone();
    let n = wait_for("part of the large transaction to be applied", WAIT, move || {
        let e = e.clone();
        async move { e.count("public.big_live").await.ok().filter(|n| *n != before) }
    })
    .await;
    interrupt.await;
    n < before + 20_000
}

/// The walsender is killed while a large transaction is half applied: the
/// view cannot trust its copy, copies again, and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_broken_in_the_middle_of_a_large_transaction() {
    let Some(db) = testkit::test_db("bigtxn_kill").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c, engine, probe) = setup(&db, dir.path()).await;
    let events = Events::collect(&engine);
    let slot = feed_name(&db);
    let mut caught = 0;
    for round in 0..3 {
        let pid = walsender_pid(&c, &slot).await.unwrap();
        let kill = async {
            c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
        };
        if interrupt_mid_transaction(&c, &engine, round, kill).await {
            caught += 1;
        }
        assert_converges(&engine, "public.big_live", &c, "public", "big", WAIT).await;
        wait_state(&engine, "public.big_live", JobState::Running).await;
    }
    assert!(caught > 0, "never interrupted a transaction in the middle");
    events.wait_error("in the middle of a large transaction").await;
    assert!(probe.snapshot_count() > 1, "the half-applied copy was not copied again");
    engine.shutdown().await.unwrap();
}

/// The engine shuts down while a large transaction is half applied; the
/// reopened engine does not keep the half transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_stopped_in_the_middle_of_a_large_transaction() {
    let Some(db) = testkit::test_db("bigtxn_stop").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c, engine, _probe) = setup(&db, dir.path()).await;
    let mut engine = Some(engine);
    let mut caught = 0;
    for round in 0..3 {
        let e = engine.take().unwrap();
        let stop = {
            let e = e.clone();
            async move { e.shutdown().await.unwrap() }
        };
        let mid = interrupt_mid_transaction(&c, &e, round, stop).await;
        caught += u32::from(mid);
        drop(e);
        let probe = Probe::new(source_config(&db));
        let e = open_engine_with(dir.path(), probe.source(), small_batches()).await;
        let summary = e.sync("*").await.unwrap();
        assert_eq!(summary.realtime.len(), 1, "round {round}: {summary:?}");
        assert_converges(&e, "public.big_live", &c, "public", "big", WAIT).await;
        if mid {
            assert!(probe.snapshot_count() >= 1, "round {round}: a half-applied copy was kept");
        }
        engine = Some(e);
    }
    assert!(caught > 0, "never interrupted a transaction in the middle");
    engine.unwrap().shutdown().await.unwrap();
}
