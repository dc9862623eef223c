//! Restart: an engine stopped mid-stream and reopened on the same store (the
//! same fjall directory, the same SQLite file) sees its views, jobs and
//! states, and resumes realtime jobs from the stored LSN by replaying the
//! slot — no new snapshot — while writers keep going.

use crate::common::*;
use flashsync::{JobState, Persistence};
use flashsync_core::FeedStart;
use flashsync_source_pg::testkit;

on_every_store!(
    reopened_engine_catches_up_by_replay_without_a_snapshot,
    reopened_after_an_outage_resumes_without_a_snapshot,
    restart_before_the_feed_reaches_a_new_snapshot,
);

async fn reopened_engine_catches_up_by_replay_without_a_snapshot(kind: StoreKind) {
    let Some(db) = testkit::test_db("restart_replay").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 7);

    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    engine.define(view("public", "acct_copy", Persistence::Materialized, "public", "acct")).await.unwrap();
    let summary = engine.sync("*").await.unwrap();
    assert_eq!((summary.realtime.len(), summary.materialized.len()), (2, 1), "{summary:?}");
    let copy = engine.scan_all("public.acct_copy").await.unwrap();
    let ids: Vec<_> = engine.status("*").await.unwrap().into_iter().map(|s| (s.name, s.relation_id)).collect();
    writers.wait_commits(500).await;
    assert!(probe.snapshot_count() >= 3, "two bootstraps and a materialization");
    drop(probe);

    let mut engine = Some(engine);
    for round in 0..3 {
        // Stop mid-stream: writers keep committing.
        let e = engine.take().unwrap();
        let before = e.status("public.acct_live").await.unwrap()[0].last_seen_commit;
        e.shutdown().await.unwrap();
        drop(e);
        assert!(kind.path(dir.path()).exists(), "round {round}: the store is not where the engine kept it");
        writers.wait_commits(400).await;

        let probe = Probe::new(source_config(&db));
        let e = open_engine(kind, dir.path(), probe.source()).await;
        // The reopened engine knows its views, jobs and states before any sync.
        let st = e.status("*").await.unwrap();
        let seen: Vec<_> = st.iter().map(|s| (s.name.clone(), s.relation_id)).collect();
        assert_eq!(seen, ids, "round {round}");
        for s in &st {
            let want = if s.persistence == Persistence::Realtime { JobState::Running } else { JobState::Synced };
            assert_eq!(s.state, want, "round {round}: {s:?}");
            assert!(s.enabled);
            if s.persistence == Persistence::Realtime {
                assert_eq!(s.slot_id.as_deref(), Some(feed_name(&db).as_str()), "round {round}: {s:?}");
            }
        }
        let stored = e.status("public.acct_live").await.unwrap()[0].last_seen_commit;
        assert!(stored.is_some() && stored >= before, "round {round}: {stored:?} < {before:?}");
        assert_eq!(e.scan_all("public.acct_copy").await.unwrap(), copy, "round {round}");

        let summary = e.sync("*").await.unwrap();
        assert_eq!((summary.realtime.len(), summary.materialized.len()), (2, 1), "round {round}: {summary:?}");
        // Replay, not re-copy.
        let stats = e.stats().await.unwrap();
        assert_eq!(stats.snapshots, 0, "round {round}: the reopened engine took a snapshot: {stats:?}");
        assert_eq!(probe.snapshot_count(), 0, "round {round}");
        assert!(
            matches!(probe.starts().as_slice(), [FeedStart::Existing { .. }]),
            "round {round}: {:?}",
            probe.starts()
        );
        writers.wait_commits(300).await;
        let e2 = e.clone();
        wait_for(&format!("round {round}: acct_live to apply commits past {stored:?}"), WAIT, move || {
            let e = e2.clone();
            async move { (e.status("public.acct_live").await.unwrap()[0].last_seen_commit > stored).then_some(()) }
        })
        .await;
        // Asked only now: the writers' commits are awaited above, not
        // assumed applied the moment they are made (a loaded machine
        // failed that, 2026-12-06).
        let applied = e.stats().await.unwrap().commits_applied;
        assert!(applied > 0, "round {round}: nothing replayed");
        engine = Some(e);
    }
    writers.stop().await;
    let engine = engine.unwrap();
    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    assert_converges(&engine, "public.bag_live", &c, "public", "bag", WAIT).await;
    assert_eq!(engine.scan_all("public.acct_copy").await.unwrap(), copy, "the materialized copy was re-copied");
    assert_eq!(slots(&c, &db.name).await, vec![feed_name(&db)]);
    eprintln!("restart: {} commits", writers.committed());
    engine.shutdown().await.unwrap();
}

/// Postgres goes away; the engine's realtime jobs fail ("lost the feed")
/// and the application shuts the engine down. When both come back, the
/// reopened engine resumes from its stored position: the local copies were
/// current through it, so nothing is copied again.
async fn reopened_after_an_outage_resumes_without_a_snapshot(kind: StoreKind) {
    use flashsync_source_pg::testkit::ClusterOptions;
    let Some(mut cluster) = testkit::dedicated("restart_outage", ClusterOptions::default()) else { return };
    let db = cluster.create_db("outage").await.unwrap();
    create_load_tables(&db.client().await, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 13);
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 2);
    writers.wait_commits(300).await;

    tokio::task::block_in_place(|| cluster.stop());
    for v in ["public.acct_live", "public.bag_live"] {
        let st = wait_state(&engine, v, JobState::Failed).await;
        assert!(st.last_error.as_deref().is_some_and(|m| m.contains("feed of postgres:main")), "{st:?}");
    }
    engine.shutdown().await.unwrap();
    drop(engine);
    tokio::task::block_in_place(|| cluster.restart()).unwrap();
    writers.wait_commits(300).await;

    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    let summary = engine.sync_forced("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 2, "{summary:?}");
    writers.wait_commits(300).await;
    writers.stop().await;
    let c = db.client().await;
    for (v, t) in [("public.acct_live", "acct"), ("public.bag_live", "bag")] {
        assert_converges(&engine, v, &c, "public", t, WAIT).await;
    }
    assert_eq!(
        probe.snapshot_count(),
        0,
        "the copies were current through the stored position; the reopened engine copied them again"
    );
    engine.shutdown().await.unwrap();
}

/// A realtime view is bootstrapped while the feed lags (here: the engine
/// reads nothing from it), so its snapshot is ahead of the origin's stored
/// position; the engine stops before the feed catches up. The transactions
/// between the stored position and the snapshot are in the copy: the
/// reopened engine must not apply them again when it replays the slot.
async fn restart_before_the_feed_reaches_a_new_snapshot(kind: StoreKind) {
    let Some(db) = testkit::test_db("restart_lagging_feed").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 1_000).await;
    c.batch_execute("CREATE TABLE warm (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    engine.define(view("public", "warm", Persistence::Realtime, "public", "warm")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);

    // The feed lags: commits to bag and acct are in the WAL, not yet read.
    probe.pause_feed(true);
    c.batch_execute(
        "INSERT INTO bag VALUES (500, 1), (500, 1), (501, 2);
         INSERT INTO bag VALUES (502, 3);
         INSERT INTO acct VALUES (700001, 1, 'lag');
         UPDATE acct SET v = v + 1000 WHERE id <= 10;",
    )
    .await
    .unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 3, "{summary:?}");
    assert_converges(&engine, "public.bag_live", &c, "public", "bag", WAIT).await;
    engine.shutdown().await.unwrap();
    drop(engine);

    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    let events = Events::collect(&engine);
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 3);
    c.batch_execute("INSERT INTO bag VALUES (503, 4); INSERT INTO acct VALUES (700002, 2, 'after');").await.unwrap();
    assert_converges(&engine, "public.bag_live", &c, "public", "bag", WAIT).await;
    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    assert!(events.conflicts().is_empty(), "transactions in the snapshot were applied again: {:?}", events.conflicts());
    engine.shutdown().await.unwrap();
}
