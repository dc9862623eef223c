//! Faults on a real Postgres while writers run: the walsender killed, the
//! server restarted, the slot dropped or invalidated while the engine is
//! down. The engine reconnects (or re-bootstraps when history is lost, and
//! says why) and converges with nothing lost.

use std::sync::Arc;

use crate::common::*;
use flashsync::{Engine, JobState, Persistence};
use flashsync_core::FeedStart;
use flashsync_source_pg::testkit::{self, ClusterOptions, TestDb};

const LIVE: [(&str, &str); 2] = [("public.acct_live", "acct"), ("public.bag_live", "bag")];

on_every_store!(
    slot_dropped_while_the_engine_is_down,
    slot_invalidated_while_the_engine_is_down,
    slot_invalidated_under_a_stuck_engine,
);

async fn start_views(kind: StoreKind, db: &TestDb, dir: &std::path::Path) -> (Engine, Arc<Probe>) {
    let probe = Probe::new(source_config(db));
    let engine = open_engine(kind, dir, probe.source()).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 2, "{summary:?}");
    (engine, probe)
}

async fn assert_all_converge(engine: &Engine, c: &tokio_postgres::Client) {
    for (v, table) in LIVE {
        assert_converges(engine, v, c, "public", table, WAIT).await;
        let st = status(engine, v).await;
        assert_eq!((st.state, st.last_error.clone()), (JobState::Running, None), "{v}: {st:?}");
    }
}

async fn wait_walsender(c: &tokio_postgres::Client, slot: &str, not: Option<i32>) -> i32 {
    wait_for(&format!("a walsender on slot {slot} other than {not:?}"), WAIT, move || async move {
        walsender_pid(c, slot).await.filter(|p| Some(*p) != not)
    })
    .await
}

/// `pg_terminate_backend` on the walsender, three times while writers run:
/// the engine reconnects by itself and resumes from its position — no
/// re-bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walsender_killed_mid_stream() {
    let Some(db) = testkit::test_db("faults_walsender").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 21);
    let dir = tempfile::tempdir().unwrap();
    let (engine, probe) = start_views(StoreKind::Fjall, &db, dir.path()).await;
    let events = Events::collect(&engine);
    let snapshots = probe.snapshot_count();
    let slot = feed_name(&db);
    for round in 0..3 {
        writers.wait_commits(300).await;
        let pid = wait_walsender(&c, &slot, None).await;
        let killed: bool = c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
        assert!(killed);
        // A reconnect storm: every part of the application calls sync() at
        // once; every call gets an answer.
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let e = engine.clone();
                tokio::spawn(async move { e.sync("*").await })
            })
            .collect();
        for call in calls {
            let summary = tokio::time::timeout(WAIT, call).await.expect("a sync() call hung").unwrap().unwrap();
            assert_eq!(summary.len(), 2, "round {round}: {summary:?}");
        }
        wait_walsender(&c, &slot, Some(pid)).await;
    }
    writers.wait_commits(300).await;
    writers.stop().await;
    assert_all_converge(&engine, &c).await;
    events.wait_error("lost the feed").await;
    assert_eq!(probe.snapshot_count(), snapshots, "a reconnect re-copied a view");
    let starts = probe.starts();
    assert!(starts.len() >= 4, "{starts:?}");
    assert!(matches!(starts[0], FeedStart::Created { .. }), "{starts:?}");
    assert!(starts[1..].iter().all(|s| matches!(s, FeedStart::Existing { .. })), "{starts:?}");
    assert_eq!(slots(&c, &db.name).await, vec![slot]);
    engine.shutdown().await.unwrap();
}

/// The server restarted (fast shutdown) twice while writers run: the engine
/// reconnects, the user's `sync()` after the restart is harmless, nothing is
/// lost and nothing re-copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_stream() {
    let Some(mut cluster) = testkit::dedicated("faults_pg_restart", ClusterOptions::default()) else { return };
    let db = cluster.create_db("pg_restart").await.unwrap();
    create_load_tables(&db.client().await, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 31);
    let dir = tempfile::tempdir().unwrap();
    let (engine, probe) = start_views(StoreKind::Fjall, &db, dir.path()).await;
    let events = Events::collect(&engine);
    let snapshots = probe.snapshot_count();
    let slot = feed_name(&db);
    for round in 0..2 {
        writers.wait_commits(300).await;
        tokio::task::block_in_place(|| cluster.restart()).unwrap();
        // The user's duty on reconnect.
        let summary = engine.sync("*").await.unwrap();
        assert_eq!(summary.len(), 2, "round {round}: {summary:?}");
        for (v, _) in LIVE {
            wait_state(&engine, v, JobState::Running).await;
        }
        let c = db.client().await;
        wait_walsender(&c, &slot, None).await;
        writers.wait_commits(300).await;
    }
    writers.stop().await;
    let c = db.client().await;
    assert_all_converge(&engine, &c).await;
    events.wait_error("lost the feed").await;
    assert_eq!(probe.snapshot_count(), snapshots, "a reconnect re-copied a view");
    assert!(probe.starts()[1..].iter().all(|s| matches!(s, FeedStart::Existing { .. })), "{:?}", probe.starts());
    assert_eq!(slots(&c, &db.name).await, vec![slot]);
    engine.shutdown().await.unwrap();
}

/// Reopens the engine on `dir` with snapshots held at a gate, syncs, and
/// checks that while the views re-bootstrap their status says why
/// (`expect` in `last_error`); then lets the snapshots through.
async fn reopen_and_rebootstrap(
    kind: StoreKind,
    db: &TestDb,
    dir: &std::path::Path,
    expect: &str,
) -> (Engine, Arc<Probe>, Events) {
    let probe = Probe::new(source_config(db));
    let gate = probe.close_gate();
    let engine = open_engine(kind, dir, probe.source()).await;
    let events = Events::collect(&engine);
    let sync = {
        let e = engine.clone();
        tokio::spawn(async move { e.sync("*").await })
    };
    for (v, _) in LIVE {
        let e = engine.clone();
        // Three times the usual wait: creating a logical slot waits for
        // every transaction open in the cluster to end (its consistent
        // point), and the tests share one cluster, where another test's
        // long transaction (a hand-off's holder across thousands of writer
        // commits) once held this past 60 s under CI's load (2026-12-07).
        let st = wait_for(&format!("{v} to report {expect:?}"), WAIT * 3, move || {
            let e = e.clone();
            async move {
                let st = status(&e, v).await;
                (st.state == JobState::Failed && st.last_error.as_deref().is_some_and(|m| m.contains(expect)))
                    .then_some(st)
            }
        })
        .await;
        let msg = st.last_error.unwrap();
        assert!(msg.contains("copying its views again"), "{v}: {msg}");
    }
    events.wait_error(expect).await;
    assert_eq!(probe.snapshot_count(), 0);
    gate.add_permits(1000);
    let summary = tokio::time::timeout(WAIT, sync).await.expect("sync after re-bootstrap").unwrap().unwrap();
    assert_eq!(summary.realtime.len(), 2, "{summary:?}");
    assert!(probe.snapshot_count() >= 2);
    (engine, probe, events)
}

/// The slot is dropped while the engine is down: the reopened engine notices
/// (the slot had to be created), re-bootstraps its views and says why.
async fn slot_dropped_while_the_engine_is_down(kind: StoreKind) {
    let Some(db) = testkit::test_db("faults_slot_dropped").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 41);
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = start_views(kind, &db, dir.path()).await;
    writers.wait_commits(300).await;
    engine.shutdown().await.unwrap();
    drop(engine);
    let slot = feed_name(&db);
    wait_for("the walsender to exit", WAIT, || async { walsender_pid(&c, &slot).await.is_none().then_some(()) }).await;
    c.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
    writers.wait_commits(300).await;

    let (engine, probe, _events) = reopen_and_rebootstrap(
        kind,
        &db,
        dir.path(),
        &format!("replication slot {slot} did not exist and was created"),
    )
    .await;
    assert!(matches!(probe.starts()[0], FeedStart::Created { .. }), "{:?}", probe.starts());
    writers.wait_commits(300).await;
    writers.stop().await;
    assert_all_converge(&engine, &c).await;
    assert_eq!(slots(&c, &db.name).await, vec![slot]);
    engine.shutdown().await.unwrap();
}

/// The slot is invalidated (`max_slot_wal_keep_size` exceeded, WAL removed
/// by a checkpoint) while the engine is down: the source re-creates it and
/// says so, the views re-bootstrap, and converge.
async fn slot_invalidated_while_the_engine_is_down(kind: StoreKind) {
    let options = ClusterOptions::default().set("max_slot_wal_keep_size", "1MB");
    let Some(cluster) = testkit::dedicated("faults_slot_lost", options) else { return };
    let db = cluster.create_db("slot_lost").await.unwrap();
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 51);
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = start_views(kind, &db, dir.path()).await;
    writers.wait_commits(300).await;
    engine.shutdown().await.unwrap();
    drop(engine);
    let slot = feed_name(&db);
    invalidate_slot(&c, &slot).await;
    writers.wait_commits(300).await;

    let (engine, probe, _events) =
        reopen_and_rebootstrap(kind, &db, dir.path(), "was invalidated (wal_status = lost)").await;
    assert!(matches!(probe.starts()[0], FeedStart::Recreated { .. }), "{:?}", probe.starts());
    writers.wait_commits(300).await;
    writers.stop().await;
    assert_all_converge(&engine, &c).await;
    assert_eq!(slots(&c, &db.name).await, vec![slot]);
    engine.shutdown().await.unwrap();
}

/// The walsender is killed while two realtime views bootstrap (their share
/// of the stream held back, snapshots held at a gate) and writers run: the
/// hold-back survives the reconnect, and the views converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walsender_killed_while_views_bootstrap() {
    let Some(db) = testkit::test_db("faults_boot_kill").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    c.batch_execute("CREATE TABLE warm (id int PRIMARY KEY)").await.unwrap();
    let writers = Writers::default();
    start_load(&writers, &db, 61);
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    engine.define(view("public", "warm", Persistence::Realtime, "public", "warm")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    let events = Events::collect(&engine);

    let gate = probe.close_gate();
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    let sync = {
        let e = engine.clone();
        tokio::spawn(async move { e.sync("*").await })
    };
    let e = engine.clone();
    wait_for("both snapshots to start (and wait at the gate)", WAIT, move || {
        let e = e.clone();
        async move { (e.snapshots().len() == 2).then_some(()) }
    })
    .await;
    let slot = feed_name(&db);
    for _ in 0..2 {
        writers.wait_commits(300).await;
        let pid = wait_walsender(&c, &slot, None).await;
        c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
        wait_walsender(&c, &slot, Some(pid)).await;
    }
    writers.wait_commits(300).await;
    gate.add_permits(1000);
    let summary = tokio::time::timeout(WAIT, sync).await.expect("sync").unwrap().unwrap();
    assert_eq!(summary.realtime.len(), 3, "{summary:?}");
    writers.wait_commits(300).await;
    writers.stop().await;
    assert_all_converge(&engine, &c).await;
    events.wait_error("lost the feed").await;
    assert_eq!(probe.snapshot_count(), 3, "one copy per view: the reconnects re-copied nothing");
    engine.shutdown().await.unwrap();
}

/// The server crashes (immediate shutdown: no checkpoint, the slot's
/// persisted position goes back) twice while writers run: the engine
/// resumes from its own position, re-copies nothing, and equals upstream —
/// never ahead of it (the feed only carries flushed WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_mid_stream() {
    let Some(mut cluster) = testkit::dedicated("faults_pg_crash", ClusterOptions::default()) else { return };
    let db = cluster.create_db("pg_crash").await.unwrap();
    create_load_tables(&db.client().await, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 101);
    let dir = tempfile::tempdir().unwrap();
    let (engine, probe) = start_views(StoreKind::Fjall, &db, dir.path()).await;
    let snapshots = probe.snapshot_count();
    let slot = feed_name(&db);
    for round in 0..2 {
        writers.wait_commits(400).await;
        tokio::task::block_in_place(|| {
            cluster.crash();
            cluster.restart()
        })
        .unwrap();
        engine.sync("*").await.unwrap();
        for (v, _) in LIVE {
            wait_state(&engine, v, JobState::Running).await;
        }
        let c = db.client().await;
        wait_walsender(&c, &slot, None).await;
        writers.wait_commits(300).await;
        eprintln!("crash round {round}: {:?}", probe.starts().last());
    }
    writers.stop().await;
    let c = db.client().await;
    assert_all_converge(&engine, &c).await;
    assert_eq!(probe.snapshot_count(), snapshots, "a reconnect re-copied a view");
    assert!(probe.starts()[1..].iter().all(|s| matches!(s, FeedStart::Existing { .. })), "{:?}", probe.starts());
    engine.shutdown().await.unwrap();
}

/// The engine is stuck (reads nothing from the feed) while writers run and
/// the slot falls behind by more than `max_slot_wal_keep_size`: a checkpoint
/// invalidates it under the running engine. Once unstuck, the engine finds
/// the slot lost, re-bootstraps its views, says why, and converges.
async fn slot_invalidated_under_a_stuck_engine(kind: StoreKind) {
    let options = ClusterOptions::default().set("max_slot_wal_keep_size", "1MB");
    let Some(cluster) = testkit::dedicated("faults_slot_lost_live", options) else { return };
    let db = cluster.create_db("slot_lost_live").await.unwrap();
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 111);
    let dir = tempfile::tempdir().unwrap();
    let (engine, probe) = start_views(kind, &db, dir.path()).await;
    let events = Events::collect(&engine);
    writers.wait_commits(300).await;
    probe.pause_feed(true);
    writers.wait_commits(300).await;
    let slot = feed_name(&db);
    let (c2, slot2) = (&c, &slot);
    wait_for("the slot to be invalidated", WAIT, move || async move {
        c2.batch_execute(
            "SELECT pg_switch_wal(); INSERT INTO side (x) VALUES (1); SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .await
        .unwrap();
        let status: Option<String> = c2
            .query_one("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", &[slot2])
            .await
            .unwrap()
            .get(0);
        (status.as_deref() == Some("lost")).then_some(())
    })
    .await;
    let gate = probe.close_gate();
    probe.pause_feed(false);
    let expect = "was invalidated (wal_status = lost)";
    for (v, _) in LIVE {
        let e = engine.clone();
        wait_for(&format!("{v} to report {expect:?}"), WAIT, move || {
            let e = e.clone();
            async move {
                let st = status(&e, v).await;
                (st.state == JobState::Failed && st.last_error.as_deref().is_some_and(|m| m.contains(expect)))
                    .then_some(())
            }
        })
        .await;
    }
    events.wait_error(expect).await;
    gate.add_permits(1000);
    for (v, _) in LIVE {
        wait_state(&engine, v, JobState::Running).await;
    }
    assert!(probe.starts().iter().any(|s| matches!(s, FeedStart::Recreated { .. })), "{:?}", probe.starts());
    writers.wait_commits(300).await;
    writers.stop().await;
    assert_all_converge(&engine, &c).await;
    assert_eq!(slots(&c, &db.name).await, vec![slot]);
    engine.shutdown().await.unwrap();
}
