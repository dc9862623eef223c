//! Copies in chunks (DESIGN §10): a realtime view copied a key range at a
//! time, each at its own snapshot, while writers change keys in chunks
//! copied, in flight and still to come — and another view of the origin
//! keeps receiving commits in the middle of the copy.

use crate::common::*;
use flashsync::{JobState, Persistence};
use flashsync_source_pg::testkit;

on_every_store!(a_copy_in_chunks_under_writers_is_exact_and_never_stalls_the_origin,);

/// `acct` (30,000 rows) is copied in chunks of 2,000 while writers upsert,
/// update, delete and move keys across the whole key space (moves cross
/// chunk boundaries: a key of a chunk copied moves into one still to come,
/// and back). The copy is held at its fifth chunk while a small view of
/// the same origin receives a commit — the feed is not paused for the big
/// copy — then released. When the writers stop, both views equal upstream.
async fn a_copy_in_chunks_under_writers_is_exact_and_never_stalls_the_origin(kind: StoreKind) {
    let Some(db) = testkit::test_db("chunks_load").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 30_000).await;
    c.batch_execute("CREATE TABLE small (id int PRIMARY KEY, v int); INSERT INTO small VALUES (1, 0);").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let config = flashsync::Config { snapshot_chunk_rows: 2_000, ..fast_config() };
    let engine = open_engine_with(kind, dir.path(), probe.source(), config).await;
    engine.define(view("public", "small_live", Persistence::Realtime, "public", "small")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);

    let writers = Writers::default();
    start_load(&writers, &db, 7);
    writers.wait_commits(100).await;

    // Four chunks pass, the fifth waits.
    let before = probe.snapshot_count();
    let gate = probe.close_gate();
    gate.add_permits(4);
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    let e = engine.clone();
    let sync = tokio::spawn(async move { e.sync("public.acct_live").await });
    let p = probe.clone();
    wait_for("four chunks of acct copied", WAIT, move || {
        let p = p.clone();
        async move { (p.snapshot_count() >= before + 4).then_some(()) }
    })
    .await;
    writers.wait_commits(200).await;

    // Mid-copy, the small view is current: its commit arrives while acct
    // is still copying.
    c.batch_execute("UPDATE small SET v = 42 WHERE id = 1").await.unwrap();
    let e = engine.clone();
    wait_for("the small view to see its commit during the big copy", WAIT, || {
        let e = e.clone();
        async move {
            let key = flashsync::Key(vec![flashsync::Value::Int(1)]);
            let row = e.get("public.small_live", &key).await.ok().flatten()?;
            (row.0.get(1) == Some(&flashsync::Value::Int(42))).then_some(())
        }
    })
    .await;
    let acct = status(&engine, "public.acct_live").await;
    assert_ne!(acct.state, JobState::Running, "acct finished copying before the check: {acct:?}");
    assert_eq!(probe.snapshot_count(), before + 4, "the gate held the fifth chunk");

    gate.add_permits(1_000);
    let summary = sync.await.unwrap().unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    writers.wait_commits(300).await;
    writers.stop().await;

    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    assert_converges(&engine, "public.small_live", &c, "public", "small", WAIT).await;
    let chunks = probe.snapshots.lock().unwrap().iter().filter(|(r, _)| r.table == "acct").count();
    assert!(chunks >= 15, "acct was copied in {chunks} chunks, expected at least 15 of 2,000 rows");
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.subscribes, 1, "one feed throughout: {stats:?}");
    let st = status(&engine, "public.acct_live").await;
    assert_eq!((st.state, st.last_error), (JobState::Running, None));
    eprintln!("copy in chunks under load: {chunks} chunks, {} commits; {stats:?}", writers.committed());
    engine.shutdown().await.unwrap();
}
