//! Large upstream transactions, staged in the store in several batches
//! before their commit arrives: readers see none of one until all of it,
//! and a feed that breaks (or an engine that stops) in the middle of one
//! leaves the copy as it was — no half transaction, no new copy.

use std::sync::Arc;

use crate::common::*;
use flashsync::{Config, Engine, JobState, Persistence};
use flashsync_source_pg::testkit::{self, TestDb};

/// Small batches, so a transaction of a few thousand rows is staged in
/// many parts.
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
/// arrives whole, and a reader polling throughout sees the rows before it or
/// after it, never a part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_arrives_whole() {
    let Some(db) = testkit::test_db("bigtxn_whole").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c, engine, _probe) = setup(&db, dir.path()).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (e, done) = (engine.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                seen.insert(e.count("public.big_live").await.unwrap());
                tokio::task::yield_now().await;
            }
            seen
        })
    };
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
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = tokio::time::timeout(WAIT, reader).await.expect("the reader stops").unwrap();
    // 21,000 rows, less the fifth deleted (moved keys keep their residue).
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1_000, 16_800], "counts a reader saw");
    engine.shutdown().await.unwrap();
}

/// Rows of the large transactions below, each ~2 KB wide: ~20 MB of stream,
/// far more than the feed buffer and the socket buffers hold, so the
/// walsender is still sending when the interruption comes.
const ROWS: i64 = 10_000;

/// Changes of a large transaction delivered before the probe pauses the
/// feed: several staged parts (`max_batch_ops` is 200), a small part of the
/// transaction.
const PAUSE_AFTER: usize = 1_000;

/// Commits a large transaction upstream and runs `interrupt` while part of
/// it is staged in the store and the rest is stuck behind a paused feed,
/// then lets the feed go. Returns the row count before it.
async fn interrupt_mid_transaction(
    c: &tokio_postgres::Client,
    engine: &Engine,
    probe: &Probe,
    round: i64,
    interrupt: impl std::future::Future<Output = ()>,
) -> u64 {
    let before = engine.count("public.big_live").await.unwrap();
    let staged_before = engine.stats().await.unwrap().batches;
    probe.pause_mid_transaction(PAUSE_AFTER);
    let lo = 1_000_000 * (round + 1);
    c.execute(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 64) FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) g",
        &[&lo, &ROWS],
    )
    .await
    .unwrap();
    let e = engine.clone();
    wait_for("part of the large transaction to be staged, the rest held back", WAIT, move || {
        let e = e.clone();
        async move {
            let batches = e.stats().await.ok()?.batches;
            (probe.feed_paused() && batches >= staged_before + (PAUSE_AFTER / 200) as u64).then_some(())
        }
    })
    .await;
    assert_eq!(engine.count("public.big_live").await.unwrap(), before, "a reader sees none of a staged part");
    interrupt.await;
    probe.pause_feed(false);
    before
}

/// The walsender is killed while a large transaction is half staged: the
/// copy never saw any of it, so the view goes on without a new copy once
/// the feed sends the transaction again, and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_broken_in_the_middle_of_a_large_transaction() {
    let Some(db) = testkit::test_db("bigtxn_kill").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c, engine, probe) = setup(&db, dir.path()).await;
    let slot = feed_name(&db);
    let pid = walsender_pid(&c, &slot).await.unwrap();
    let kill = async {
        c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    };
    interrupt_mid_transaction(&c, &engine, &probe, 0, kill).await;
    assert_converges(&engine, "public.big_live", &c, "public", "big", WAIT).await;
    wait_state(&engine, "public.big_live", JobState::Running).await;
    assert_eq!(probe.snapshot_count(), 1, "the view was copied again");
    engine.shutdown().await.unwrap();
}

/// The engine shuts down while a large transaction is half staged; the
/// reopened engine finds the copy as it was before the transaction, and
/// converges without copying the view again.
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
    assert_eq!(e.count("public.big_live").await.unwrap(), before, "the store kept part of a transaction");
    let summary = e.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    assert_converges(&e, "public.big_live", &c, "public", "big", WAIT).await;
    assert_eq!(probe.snapshot_count(), 0, "the view was copied again");
    e.shutdown().await.unwrap();
}
