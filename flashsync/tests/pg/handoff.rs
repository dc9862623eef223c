//! The snapshot → stream hand-off under load (DESIGN §4.4): writers commit
//! continuously while realtime views bootstrap; afterwards every local copy
//! equals upstream exactly — nothing lost, nothing doubled — and one origin
//! keeps exactly one replication slot.

use std::sync::Arc;

use crate::common::*;
use flashsync::{JobState, Persistence};
use flashsync_source_pg::testkit;

on_every_store!(bootstrap_under_load_loses_and_doubles_nothing, views_started_at_different_moments_share_one_slot,);

/// Two realtime views (a keyed table and a keyless `REPLICA IDENTITY FULL`
/// one) bootstrap while writers commit thousands of transactions, some held
/// open across the snapshot. One transaction began (and wrote elsewhere)
/// before the tables entered the publication, writes to them after, and
/// commits only after the snapshot: it is in the snapshot's `xip` and must
/// come through the stream.
async fn bootstrap_under_load_loses_and_doubles_nothing(kind: StoreKind) {
    let Some(db) = testkit::test_db("handoff_load").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 10_000).await;
    c.batch_execute("CREATE TABLE warm (id int PRIMARY KEY)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    // The feed is up first: creating a slot waits for every transaction
    // with an xid, the holder's included.
    engine.define(view("public", "warm", Persistence::Realtime, "public", "warm")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);

    // Two holders with xids assigned before the views are prepared: the
    // first commits after the snapshot (it is in the snapshot's xip, its
    // changes must come from the stream), the second while the stream is
    // already held back but just before the snapshot is taken (visible to
    // it: the stream's copy must be skipped — else bag doubles its rows).
    let holder = Arc::new(db.client().await);
    holder.batch_execute("BEGIN; INSERT INTO side (x) VALUES (1);").await.unwrap();
    let holder_xid: i64 = holder.query_one("SELECT txid_current()", &[]).await.unwrap().get(0);
    let early = Arc::new(db.client().await);
    early.batch_execute("BEGIN; INSERT INTO side (x) VALUES (2);").await.unwrap();

    let writers = Writers::default();
    start_load(&writers, &db, 1);
    writers.wait_commits(200).await;

    let (h, e) = (holder.clone(), early.clone());
    probe.after_prepare(Box::new(move || {
        Box::pin(async move {
            h.batch_execute(
                "INSERT INTO acct VALUES (900001, 1, 'holder') ON CONFLICT (id) DO UPDATE SET note = 'holder';
                 INSERT INTO bag VALUES (1, 1), (1, 1), (77, 77);
                 DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE k = 2 LIMIT 1);",
            )
            .await
            .unwrap();
            e.batch_execute(
                "INSERT INTO acct VALUES (900002, 2, 'early') ON CONFLICT (id) DO UPDATE SET note = 'early';
                 INSERT INTO bag VALUES (88, 88), (88, 88), (88, 88);",
            )
            .await
            .unwrap();
        })
    }));
    let e = early.clone();
    probe.before_snapshot(Box::new(move || {
        Box::pin(async move {
            e.batch_execute("COMMIT").await.unwrap();
        })
    }));
    let h = holder.clone();
    probe.after_snapshot(Box::new(move || {
        Box::pin(async move {
            h.batch_execute("COMMIT").await.unwrap();
        })
    }));
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 3, "{summary:?}");

    writers.wait_commits(2500).await;
    writers.stop().await;
    let committed = writers.committed();
    assert!(committed >= 2700, "only {committed} commits");

    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    assert_converges(&engine, "public.bag_live", &c, "public", "bag", WAIT).await;
    let holder_rows: i64 = c.query_one("SELECT count(*) FROM acct WHERE note = 'holder'", &[]).await.unwrap().get(0);
    assert_eq!(holder_rows, 1, "the holder transaction committed");
    let early_rows: i64 = c.query_one("SELECT count(*) FROM bag WHERE k = 88", &[]).await.unwrap().get(0);
    assert_eq!(early_rows, 3, "the early transaction committed");

    // The scenario happened: a snapshot saw the holder in progress.
    let snaps = probe.snapshots.lock().unwrap().clone();
    assert!(
        snaps.iter().any(|(_, p)| p.xip.contains(&(holder_xid as u64))),
        "no snapshot had the holder {holder_xid} in progress: {snaps:?}"
    );
    assert_eq!(slots(&c, &db.name).await, vec![feed_name(&db)]);
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.subscribes, 1, "{stats:?}");
    assert!(stats.filtered >= 1, "the early transaction was not skipped by the hand-off: {stats:?}");
    for v in ["public.acct_live", "public.bag_live"] {
        let st = status(&engine, v).await;
        assert_eq!((st.state, st.last_error), (JobState::Running, None), "{v}");
    }
    eprintln!(
        "hand-off under load: {committed} commits, {} failed (e.g. {:?}); {stats:?}",
        writers.failures.load(std::sync::atomic::Ordering::Relaxed),
        writers.errors.lock().unwrap().first()
    );
    engine.shutdown().await.unwrap();
}

/// Several views of one origin, defined and synced one after another while
/// writers run: each bootstraps into a live feed; still one slot.
async fn views_started_at_different_moments_share_one_slot(kind: StoreKind) {
    let Some(db) = testkit::test_db("handoff_staggered").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 8_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 100);
    writers.wait_commits(100).await;

    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    let views = [
        ("acct_a", Persistence::Realtime, "acct"),
        ("bag_a", Persistence::Realtime, "bag"),
        ("acct_copy", Persistence::Materialized, "acct"),
        ("acct_b", Persistence::Realtime, "acct"),
        ("bag_b", Persistence::Realtime, "bag"),
    ];
    for (name, persistence, table) in views {
        engine.define(view("public", name, persistence, "public", table)).await.unwrap();
        let summary = engine.sync(format!("public.{name}")).await.unwrap();
        assert!(summary.failed.is_empty(), "{name}: {summary:?}");
        assert_eq!(summary.len(), 1, "{name}: {summary:?}");
        assert_eq!(slots(&c, &db.name).await, vec![feed_name(&db)], "after starting {name}");
        writers.wait_commits(500).await;
    }
    // A sync of everything while writers run changes nothing.
    let summary = engine.sync("*").await.unwrap();
    assert_eq!((summary.realtime.len(), summary.materialized.len()), (4, 1), "{summary:?}");
    writers.wait_commits(300).await;
    writers.stop().await;

    for (name, persistence, table) in views {
        if persistence == Persistence::Realtime {
            assert_converges(&engine, &format!("public.{name}"), &c, "public", table, WAIT).await;
        }
    }
    // The two views of each table hold the same rows.
    assert_eq!(engine.scan_all("public.acct_a").await.unwrap(), engine.scan_all("public.acct_b").await.unwrap());
    engine.sync_forced("public.acct_copy").await.unwrap();
    assert_converges(&engine, "public.acct_copy", &c, "public", "acct", WAIT).await;
    assert_eq!(slots(&c, &db.name).await, vec![feed_name(&db)]);
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.subscribes, 1, "{stats:?}");
    eprintln!("staggered views: {} commits; {stats:?}", writers.committed());
    engine.shutdown().await.unwrap();
}
