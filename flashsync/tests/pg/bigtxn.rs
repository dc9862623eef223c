//! Large upstream transactions, applied in several store batches before
//! their commit arrives: they arrive whole, and a feed that breaks (or an
//! engine that stops) in the middle of one leaves no half transaction
//! behind.

use std::sync::Arc;

use crate::common::*;
use flashsync::{Config, Engine, JobState, Persistence};
use flashsync_source_pg::testkit::{self, TestDb};

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
    let engine = open_engine_with(StoreKind::Fjall, dir, probe.source(), small_batches()).await;
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
/// far more than the feed buffer and the socket buffers hold, so the
/// walsender is still sending when the interruption comes.
const ROWS: i64 = 10_000;

/// Changes of a large transaction delivered before the probe pauses the
/// feed: several partial batches (`max_batch_ops` is 200), a small part of
/// the transaction.
const PAUSE_AFTER: usize = 1_000;

/// Commits a large transaction upstream and runs `interrupt` while part of
/// it is in the local copy and the rest is stuck behind a paused feed, then
/// lets the feed go. Returns the row count before it.
async fn interrupt_mid_transaction(
    c: &tokio_postgres::Client,
    engine: &Engine,
    probe: &Probe,
    round: i64,
    interrupt: impl std::future::Future<Output = ()>,
) -> u64 {
    let before = engine.count("public.big_live").await.unwrap();
    probe.pause_mid_transaction(PAUSE_AFTER);
    let lo = 1_000_000 * (round + 1);
    c.execute(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 64) FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) g",
        &[&lo, &ROWS],
    )
    .await
    .unwrap();
    let e = engine.clone();
    wait_for("part of the large transaction to be applied, the rest held back", WAIT, move || {
        let e = e.clone();
        async move { e.count("public.big_live").await.ok().filter(|n| *n != before && probe.feed_paused()) }
    })
    .await;
    interrupt.await;
    probe.pause_feed(false);
    before
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
    let cut = "the feed broke in the middle of a large transaction";
    let pid = walsender_pid(&c, &slot).await.unwrap();
    let kill = async {
        c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    };
    interrupt_mid_transaction(&c, &engine, &probe, 0, kill).await;
    assert_converges(&engine, "public.big_live", &c, "public", "big", WAIT).await;
    wait_state(&engine, "public.big_live", JobState::Running).await;
    wait_for("the cut to be reported", WAIT, || async {
        events.errors().iter().any(|m| m.contains(cut)).then_some(())
    })
    .await;
    assert!(probe.snapshot_count() > 1, "the half-applied copy was not copied again");
    engine.shutdown().await.unwrap();
}

/// The engine shuts down while a large transaction is half applied; the
/// reopened engine does not keep the half transaction: it copies the view
/// again and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_stopped_in_the_middle_of_a_large_transaction() {
    let Some(db) = testkit::test_db("bigtxn_stop").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c, engine, probe) = setup(&db, dir.path()).await;
    let stop = {
        let e = engine.clone();
        async move { e.shutdown().await.unwrap() }
    };
    let before = interrupt_mid_transaction(&c, &engine, &probe, 0, stop).await;
    drop(engine);
    let probe = Probe::new(source_config(&db));
    let e = open_engine_with(StoreKind::Fjall, dir.path(), probe.source(), small_batches()).await;
    // What the store kept: half of the transaction, in a copy marked as not
    // to be trusted.
    let kept = e.count("public.big_live").await.unwrap();
    assert!(kept != before && kept != before + ROWS as u64, "the store kept {kept} rows, not half a transaction");
    let summary = e.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    assert_converges(&e, "public.big_live", &c, "public", "big", WAIT).await;
    assert!(probe.snapshot_count() >= 1, "a half-applied copy was kept, not copied again");
    e.shutdown().await.unwrap();
}
