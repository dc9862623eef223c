//! Across the 2^32 transaction-id boundary on a real Postgres: the feed
//! carries 32-bit xids that wrap there, while snapshots report 64-bit
//! (epoch-extended) ones. A cluster started just below the boundary runs the
//! snapshot → stream hand-off with a transaction open across it, a restart,
//! and a slot loss, and every mirror ends exact.

use crate::common::*;
use flashsync::{JobState, Persistence};
use flashsync_core::FeedStart;
use flashsync_source_pg::testkit::{self, ClusterOptions, TestDb};

const EPOCH_1: u64 = 1 << 32;
const LIVE: [(&str, &str); 2] = [("public.acct_live", "acct"), ("public.bag_live", "bag")];

/// The server's next 64-bit xid, read without assigning one.
async fn next_xid(c: &tokio_postgres::Client) -> u64 {
    let x: String = c.query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[]).await.unwrap().get(0);
    x.parse().unwrap()
}

async fn converge(engine: &flashsync::Engine, c: &tokio_postgres::Client) {
    for (v, table) in LIVE {
        assert_converges(engine, v, c, "public", table, WAIT).await;
        assert_eq!(status(engine, v).await.state, JobState::Running, "{v}");
    }
}

fn load(db: &TestDb, seed: u64) -> Writers {
    let writers = Writers::default();
    start_load(&writers, db, seed);
    writers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_off_restart_and_slot_loss_across_the_xid_epoch_boundary() {
    let options = ClusterOptions::default().next_xid(EPOCH_1 - 3_000).set("max_slot_wal_keep_size", "1MB");
    let Some(cluster) = testkit::dedicated("wraparound", options) else { return };
    let db = cluster.create_db("wrap").await.unwrap();
    let c = db.client().await;
    let start = next_xid(&c).await;
    assert!(start < EPOCH_1 && start > EPOCH_1 - 4_000, "the cluster starts below the boundary: {start}");
    create_load_tables(&c, 5_000).await;

    // 1. The hand-off. `bag_live` runs first (the slot exists, the feed is
    //    up); then `acct_live` bootstraps with its snapshot held at a gate.
    //    A transaction opened before the boundary (right after `acct` joined
    //    the publication) stays open while the counter crosses 2^32 and the
    //    snapshot is taken (so it lists an old-epoch xid as in progress), and
    //    commits after it: the feed delivers it with its 32-bit xid, and the
    //    hand-off filter must apply it.
    let writers = load(&db, 71);
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    let old = std::sync::Arc::new(db.client().await);
    let gate = probe.close_gate();
    let opener = old.clone();
    probe.after_prepare(Box::new(move || {
        Box::pin(async move {
            opener.batch_execute("BEGIN; INSERT INTO acct VALUES (900001, 1, 'opened before 2^32')").await.unwrap();
        })
    }));
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    let sync = {
        let e = engine.clone();
        tokio::spawn(async move { e.sync("*").await })
    };
    let c2 = &c;
    wait_for("the xid counter to cross 2^32", WAIT, move || async move {
        (next_xid(c2).await > EPOCH_1 + 500).then_some(())
    })
    .await;
    gate.add_permits(1000);
    let summary = tokio::time::timeout(WAIT, sync).await.expect("sync hung").unwrap().unwrap();
    assert_eq!(summary.realtime.len(), 2, "{summary:?}");
    let points: Vec<_> = probe.snapshots.lock().unwrap().iter().map(|(_, p)| p.clone()).collect();
    assert!(
        points.iter().any(|p| p.xmax > EPOCH_1 && p.xip.iter().any(|&x| x < EPOCH_1)),
        "the acct snapshot straddles the boundary: {points:?}"
    );
    old.batch_execute("UPDATE acct SET v = 2 WHERE id = 900001; COMMIT").await.unwrap();
    writers.wait_commits(300).await;
    writers.stop().await;
    converge(&engine, &c).await;
    assert_eq!(probe.snapshot_count(), 2, "the hand-off re-copied a view");

    // 2. A restart resumes from the stored position without a new copy.
    engine.shutdown().await.unwrap();
    drop(engine);
    let writers = load(&db, 72);
    writers.wait_commits(200).await;
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 2);
    writers.wait_commits(200).await;
    writers.stop().await;
    converge(&engine, &c).await;
    assert_eq!(probe.snapshot_count(), 0, "a restart re-copied a view");
    assert!(matches!(probe.starts()[0], FeedStart::Existing { .. }), "{:?}", probe.starts());

    // 3. The slot is invalidated while the engine is down: the views are
    //    copied again (in the new epoch) and converge.
    engine.shutdown().await.unwrap();
    drop(engine);
    let slot = feed_name(&db);
    wait_for("the walsender to exit", WAIT, || async { walsender_pid(&c, &slot).await.is_none().then_some(()) }).await;
    invalidate_slot(&c, &slot).await;
    let writers = load(&db, 73);
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len() + summary.failed.len(), 2, "{summary:?}");
    writers.wait_commits(300).await;
    writers.stop().await;
    // A view whose copy was refused mid-recovery retries on its own timer;
    // a sync() makes sure nothing waits for it.
    engine.sync("*").await.unwrap();
    converge(&engine, &c).await;
    assert!(matches!(probe.starts()[0], FeedStart::Recreated { .. }), "{:?}", probe.starts());
    assert!(probe.snapshot_count() >= 2, "the views were copied again");
    assert!(next_xid(&c).await > EPOCH_1 + 1_000);
    assert_eq!(slots(&c, &db.name).await, vec![slot]);
    engine.shutdown().await.unwrap();
}
