//! Restart: an engine stopped mid-stream and reopened on the same fjall store
//! sees its views, jobs and states, and resumes realtime jobs from the stored
//! LSN by replaying the slot — no new snapshot — while writers keep going.

#![allow(clippy::unwrap_used)]

mod pg_common;

use flashsync::{JobState, Persistence};
use flashsync_core::FeedStart;
use flashsync_source_pg::testkit;
use pg_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_engine_catches_up_by_replay_without_a_snapshot() {
    let Some(db) = testkit::test_db("restart_replay").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 7);

    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(dir.path(), probe.source()).await;
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
        writers.wait_commits(400).await;

        let probe = Probe::new(source_config(&db));
        let e = open_engine(dir.path(), probe.source()).await;
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
        let applied = e.stats().await.unwrap().commits_applied;
        assert!(applied > 0, "round {round}: nothing replayed");
        let e2 = e.clone();
        wait_for(&format!("round {round}: acct_live to apply commits past {stored:?}"), WAIT, move || {
            let e = e2.clone();
            async move { (e.status("public.acct_live").await.unwrap()[0].last_seen_commit > stored).then_some(()) }
        })
        .await;
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
