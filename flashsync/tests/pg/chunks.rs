//! Copies in chunks (DESIGN §10): a realtime view copied a key range at a
//! time, each at its own snapshot, while writers change keys in chunks
//! copied, in flight and still to come — and another view of the origin
//! keeps receiving commits in the middle of the copy.

use crate::common::*;
use flashsync::{JobState, Persistence};
use flashsync_source_pg::testkit;

on_every_store!(
    a_copy_in_chunks_under_writers_is_exact_and_never_stalls_the_origin,
    a_column_added_under_writes_keeps_the_view_readable_throughout,
    a_forced_recopy_keeps_the_old_copy_current_until_the_swap,
    a_column_added_keeps_the_old_copy_current_until_the_swap,
);

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

/// `ALTER TABLE … ADD COLUMN` on a mirrored 1,000,000-row table while
/// writers run: the view is copied again (in chunks of 100,000) with the
/// new column,
/// and a reader polling it all along never gets an error nor a copy that
/// is missing rows — the old copy stays readable until the new one
/// replaces it whole. Then the view holds the new column and equals
/// upstream.
async fn a_column_added_under_writes_keeps_the_view_readable_throughout(kind: StoreKind) {
    let Some(db) = testkit::test_db("chunks_ddl").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let config = flashsync::Config { snapshot_chunk_rows: 100_000, ..fast_config() };
    let engine = open_engine_with(kind, dir.path(), probe.source(), config).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    let writers = Writers::default();
    start_load(&writers, &db, 11);
    writers.wait_commits(200).await;

    // The reader: every read answers, and never with a partial copy (the
    // writers touch 12,000 keys, so the table keeps about a million rows).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (e, flag, counter) = (engine.clone(), stop.clone(), reads.clone());
    let reader = tokio::spawn(async move {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let n = e.count("public.acct_live").await.unwrap_or_else(|err| panic!("a read failed: {err}"));
            assert!((985_000..=1_015_000).contains(&n), "a reader saw {n} rows");
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let copies_before = probe.snapshot_count();
    c.batch_execute("ALTER TABLE acct ADD COLUMN extra text DEFAULT 'new'").await.unwrap();
    let reads_at_alter = reads.load(std::sync::atomic::Ordering::Relaxed);
    writers.wait_commits(300).await;
    let e = engine.clone();
    wait_for("acct_live to hold the new column", WAIT, move || {
        let e = e.clone();
        async move {
            let cols = e.schema("public.acct_live").await.ok()?.columns;
            cols.iter().any(|col| col.name == "extra").then_some(())
        }
    })
    .await;
    let during = reads.load(std::sync::atomic::Ordering::Relaxed) - reads_at_alter;
    writers.wait_commits(200).await;
    writers.stop().await;
    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    wait_state(&engine, "public.acct_live", JobState::Running).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.unwrap();
    let chunks = probe.snapshot_count() - copies_before;
    assert!(chunks >= 6, "the new copy took {chunks} chunks, expected at least 6 of 100,000 rows");
    assert!(during >= 1, "no read happened while the view was copied again (the check could not fail)");
    eprintln!("column added under writes: {during} reads during the new copy, none failed or partial; {chunks} chunks");
    engine.shutdown().await.unwrap();
}

/// `sync --force` on a live view of `acct` (30,000 rows) under writers: the
/// view is copied again in chunks of 2,000 into a new generation, and
/// while that copy is held at its fourth chunk the old copy still takes the
/// feed — a row inserted upstream then is readable at once, the job stays
/// running. Released, the forced call returns once the new copy is live;
/// when the writers stop, the view equals upstream.
async fn a_forced_recopy_keeps_the_old_copy_current_until_the_swap(kind: StoreKind) {
    let Some(db) = testkit::test_db("chunks_recopy").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 30_000).await;
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let config = flashsync::Config { snapshot_chunk_rows: 2_000, ..fast_config() };
    let engine = open_engine_with(kind, dir.path(), probe.source(), config).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    let writers = Writers::default();
    start_load(&writers, &db, 13);
    writers.wait_commits(100).await;

    // Three chunks of the new copy pass, the fourth waits.
    let before = probe.snapshot_count();
    let gate = probe.close_gate();
    gate.add_permits(3);
    let e = engine.clone();
    let forced = tokio::spawn(async move { e.sync_forced("public.acct_live").await });
    let p = probe.clone();
    wait_for("three chunks of the new copy", WAIT, move || {
        let p = p.clone();
        async move { (p.snapshot_count() >= before + 3).then_some(()) }
    })
    .await;
    c.batch_execute("INSERT INTO acct VALUES (900001, 7, 'during the re-copy')").await.unwrap();
    let e = engine.clone();
    wait_for("the old copy to take a commit made during the re-copy", WAIT, || {
        let e = e.clone();
        async move {
            let key = flashsync::Key(vec![flashsync::Value::Int(900_001)]);
            e.get("public.acct_live", &key).await.ok().flatten().map(|_| ())
        }
    })
    .await;
    assert!(!forced.is_finished(), "the forced sync returned before its copy was made");
    assert_eq!(probe.snapshot_count(), before + 3, "the gate held the fourth chunk");
    let st = status(&engine, "public.acct_live").await;
    assert_eq!(st.state, JobState::Running, "the view stopped running while copied again: {st:?}");

    gate.add_permits(1_000);
    let summary = forced.await.unwrap().unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    let chunks = probe.snapshot_count() - before;
    assert!(chunks >= 15, "the new copy took {chunks} chunks, expected at least 15 of 2,000 rows");
    writers.wait_commits(200).await;
    writers.stop().await;
    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    let st = status(&engine, "public.acct_live").await;
    assert_eq!((st.state, st.last_error), (JobState::Running, None));
    eprintln!("forced re-copy under writes: {chunks} chunks, the old copy current throughout");
    engine.shutdown().await.unwrap();
}

/// `ALTER TABLE acct ADD COLUMN` under writers, on a live view of `acct`
/// (30,000 rows, chunks of 2,000): while the new copy — with the new
/// column — is held at its fourth chunk, the old copy still takes the feed,
/// reading its own columns from the widened rows: a row inserted upstream
/// then is readable at once, and the job stays running. Released, the view
/// holds the new column and equals upstream.
async fn a_column_added_keeps_the_old_copy_current_until_the_swap(kind: StoreKind) {
    let Some(db) = testkit::test_db("chunks_ddl_current").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 30_000).await;
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let config = flashsync::Config { snapshot_chunk_rows: 2_000, ..fast_config() };
    let engine = open_engine_with(kind, dir.path(), probe.source(), config).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    let writers = Writers::default();
    start_load(&writers, &db, 17);
    writers.wait_commits(100).await;

    let before = probe.snapshot_count();
    let gate = probe.close_gate();
    gate.add_permits(3);
    c.batch_execute("ALTER TABLE acct ADD COLUMN extra text DEFAULT 'new'").await.unwrap();
    let p = probe.clone();
    wait_for("three chunks of the new copy", WAIT, move || {
        let p = p.clone();
        async move { (p.snapshot_count() >= before + 3).then_some(()) }
    })
    .await;
    c.batch_execute("INSERT INTO acct VALUES (900001, 7, 'during the re-copy', 'wide')").await.unwrap();
    let e = engine.clone();
    let row = wait_for("the old copy to take a commit made during the re-copy", WAIT, || {
        let e = e.clone();
        async move {
            let key = flashsync::Key(vec![flashsync::Value::Int(900_001)]);
            e.get("public.acct_live", &key).await.ok().flatten()
        }
    })
    .await;
    assert_eq!(row.0.len(), 3, "the old copy keeps its own columns: {row:?}");
    assert_eq!(probe.snapshot_count(), before + 3, "the gate held the fourth chunk");
    let st = status(&engine, "public.acct_live").await;
    assert_eq!(st.state, JobState::Running, "the view stopped running while copied again: {st:?}");
    assert!(
        matches!(st.last_recopy.as_ref().map(|r| &r.reason), Some(flashsync::RecopyReason::SchemaChanged { .. })),
        "{st:?}"
    );

    gate.add_permits(1_000);
    let e = engine.clone();
    wait_for("acct_live to hold the new column", WAIT, move || {
        let e = e.clone();
        async move {
            let cols = e.schema("public.acct_live").await.ok()?.columns;
            cols.iter().any(|col| col.name == "extra").then_some(())
        }
    })
    .await;
    writers.wait_commits(200).await;
    writers.stop().await;
    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    wait_state(&engine, "public.acct_live", JobState::Running).await;
    eprintln!(
        "column added under writes: the old copy current until the new one, {} chunks",
        probe.snapshot_count() - before
    );
    engine.shutdown().await.unwrap();
}
