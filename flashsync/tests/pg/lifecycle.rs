//! Life-cycle events while writers run: upstream DDL, stop/resume, a restart
//! in the middle of a bootstrap, a dropped upstream table.

use crate::common::*;
use flashsync::{JobState, Persistence};
use flashsync_source_pg::testkit;

on_every_store!(restart_in_the_middle_of_a_bootstrap, a_column_dropped_and_added_again_while_stopped_is_copied_again,);

/// Columns added to and dropped from mirrored tables while writers run: the
/// affected views copy again with the new shape and converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_ddl_under_load() {
    let Some(db) = testkit::test_db("life_ddl").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 71);
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    let events = Events::collect(&engine);
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 2);
    for ddl in [
        "ALTER TABLE acct ADD COLUMN extra text DEFAULT 'd'",
        "ALTER TABLE bag ADD COLUMN w int",
        "UPDATE bag SET w = 1 WHERE k < 5",
        "ALTER TABLE acct DROP COLUMN extra",
        "ALTER TABLE acct ALTER COLUMN note TYPE varchar(100)",
    ] {
        writers.wait_commits(300).await;
        c.batch_execute(ddl).await.unwrap();
    }
    writers.wait_commits(300).await;
    writers.stop().await;
    for (v, t) in [("public.acct_live", "acct"), ("public.bag_live", "bag")] {
        // The copy is redone with the new columns.
        let e = engine.clone();
        let c2 = &c;
        wait_for(&format!("{v} to have the upstream's columns"), WAIT, move || {
            let e = e.clone();
            async move {
                let want: Vec<(String, String)> = c2
                    .query(
                        "SELECT attname::text, format_type(atttypid, NULL) FROM pg_attribute \
                         WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                        &[&format!("public.{t}")],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                let have = e.schema(v).await.ok()?.columns;
                (have.len() == want.len() && have.iter().zip(&want).all(|(h, w)| h.name == w.0)).then_some(())
            }
        })
        .await;
        assert_converges(&engine, v, &c, "public", t, WAIT).await;
        wait_state(&engine, v, JobState::Running).await;
    }
    events.wait_error("changed shape").await;
    assert!(probe.snapshot_count() >= 4, "the views were not copied again");
    engine.shutdown().await.unwrap();
}

/// A column a projected view does not keep is dropped, and the kept column
/// after it moves up. While the view is copied again (its snapshot held at
/// a gate), its old copy stays current: updates made after the drop reach
/// it, read by column name where the column now is, and the job stays
/// running. Then the new copy replaces it, exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projected_view_follows_a_dropped_column_by_name() {
    let Some(db) = testkit::test_db("life_drop_moved").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE moved (id int PRIMARY KEY, mid text, keep int); \
         INSERT INTO moved SELECT g, 'm' || g, g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine_with(StoreKind::Fjall, dir.path(), probe.source(), fast_config()).await;
    let mut def = view("public", "moved_live", Persistence::Realtime, "public", "moved");
    def.columns = Some(vec!["id".into(), "keep".into()]);
    engine.define(def).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);

    // The next copy waits at the gate; the old copy must carry on alone.
    let gate = probe.close_gate();
    let before = probe.snapshot_count();
    c.batch_execute("ALTER TABLE moved DROP COLUMN mid").await.unwrap();
    c.batch_execute("UPDATE moved SET keep = keep + 1000 WHERE id <= 10").await.unwrap();
    let e = engine.clone();
    wait_for("the old copy to take the update after the drop", WAIT, move || {
        let e = e.clone();
        async move {
            let row = e.get("public.moved_live", &flashsync::Key(vec![flashsync::Value::Int(7)])).await.ok()??;
            (row.0 == vec![flashsync::Value::Int(7), flashsync::Value::Int(1007)]).then_some(())
        }
    })
    .await;
    assert_eq!(probe.snapshot_count(), before, "the gate held the new copy");
    let st = status(&engine, "public.moved_live").await;
    assert_eq!(st.state, JobState::Running, "{st:?}");
    assert_eq!(engine.count("public.moved_live").await.unwrap(), 100);

    gate.add_permits(1_000);
    c.batch_execute("UPDATE moved SET keep = keep + 1 WHERE id > 90").await.unwrap();
    assert_converges(&engine, "public.moved_live", &c, "public", "moved", WAIT).await;
    let st = wait_state(&engine, "public.moved_live", JobState::Running).await;
    assert!(probe.snapshot_count() > before, "the view was not copied again");
    assert!(st.last_recopy.is_some(), "{st:?}");
    let columns: Vec<String> =
        engine.schema("public.moved_live").await.unwrap().columns.into_iter().map(|c| c.name).collect();
    assert_eq!(columns, ["id", "keep"]);
    engine.shutdown().await.unwrap();
}

/// A column dropped and another of the same name and type added in its
/// place (the last column, so the relation reads the same): `pgoutput`
/// describes the relation exactly as before, yet every row's value of the
/// new column is new (NULL here). The view must not go on holding the old
/// column's values: it is copied again and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_dropped_and_added_again_under_its_name_is_copied_again() {
    let Some(db) = testkit::test_db("life_readded").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE readded (id int PRIMARY KEY, note text, x int); \
         INSERT INTO readded SELECT g, 'n' || g, g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine_with(StoreKind::Fjall, dir.path(), probe.source(), fast_config()).await;
    engine.define(view("public", "readded_live", Persistence::Realtime, "public", "readded")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    let before = probe.snapshot_count();

    c.batch_execute("ALTER TABLE readded DROP COLUMN x; ALTER TABLE readded ADD COLUMN x int").await.unwrap();
    // A change after the DDL makes the walsender describe the relation again.
    c.batch_execute("UPDATE readded SET note = 'changed' WHERE id = 1").await.unwrap();
    assert_converges(&engine, "public.readded_live", &c, "public", "readded", WAIT).await;
    wait_state(&engine, "public.readded_live", JobState::Running).await;
    assert!(probe.snapshot_count() > before, "the view was not copied again");
    engine.shutdown().await.unwrap();
}

/// The same while the engine is down — migrations often run then: the
/// stored copy was made of the old column, the relation reads the same,
/// and after the restart nothing may change at all. The copy must not
/// attach as if it were current: it is copied again. So is a copy that
/// leaves the column out but was filtered by it: its rows were chosen by
/// the old column's values.
async fn a_column_dropped_and_added_again_while_stopped_is_copied_again(kind: StoreKind) {
    let Some(db) = testkit::test_db("life_readded_stopped").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE readded (id int PRIMARY KEY, note text, x int); \
         INSERT INTO readded SELECT g, 'n' || g, g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine_with(kind, dir.path(), probe.source(), fast_config()).await;
    engine.define(view("public", "readded_live", Persistence::Realtime, "public", "readded")).await.unwrap();
    let filtered = view("public", "readded_some", Persistence::Realtime, "public", "readded")
        .with_filter("x > 50")
        .and_then(|v| v.with_columns(["id", "note"]))
        .unwrap();
    engine.define(filtered).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 2);
    assert_converges(&engine, "public.readded_live", &c, "public", "readded", WAIT).await;
    let some = assert_converges_where(&engine, "public.readded_some", &c, "public", "readded", Some("x > 50"), WAIT);
    assert_eq!(some.await.len(), 50);
    engine.shutdown().await.unwrap();
    drop(engine);

    c.batch_execute("ALTER TABLE readded DROP COLUMN x; ALTER TABLE readded ADD COLUMN x int").await.unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine_with(kind, dir.path(), probe.source(), fast_config()).await;
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 2);
    assert_converges(&engine, "public.readded_live", &c, "public", "readded", WAIT).await;
    // Every `x` is NULL now: no row passes the filter.
    let some = assert_converges_where(&engine, "public.readded_some", &c, "public", "readded", Some("x > 50"), WAIT);
    assert_eq!(some.await.len(), 0);
    assert!(probe.snapshot_count() >= 2, "the views were not copied again");
    engine.shutdown().await.unwrap();
}

/// The same between the description of a view and its copy: the copy
/// must not be stored as made of the column described (which a restart
/// would then find gone, or the feed report as changed): the snapshot
/// refuses, the view is described again, and the copy is recorded with
/// the attribute numbers its rows come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_dropped_and_added_again_before_the_copy_is_described_again() {
    let Some(db) = testkit::test_db("life_readded_copy").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE readded (id int PRIMARY KEY, note text, x int); \
         INSERT INTO readded SELECT g, 'n' || g, g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let ddl = db.client().await;
    probe.after_prepare(Box::new(move || {
        Box::pin(async move {
            ddl.batch_execute("ALTER TABLE readded DROP COLUMN x; ALTER TABLE readded ADD COLUMN x int").await.unwrap();
        })
    }));
    let engine = open_engine_with(StoreKind::Fjall, dir.path(), probe.source(), fast_config()).await;
    engine.define(view("public", "readded_live", Persistence::Realtime, "public", "readded")).await.unwrap();
    let _ = engine.sync("*").await.unwrap();
    wait_state(&engine, "public.readded_live", JobState::Running).await;
    assert_converges(&engine, "public.readded_live", &c, "public", "readded", WAIT).await;
    let attnums: Vec<u32> = c
        .query(
            "SELECT attnum::int4 FROM pg_attribute WHERE attrelid = 'readded'::regclass AND attnum > 0 \
             AND NOT attisdropped ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect();
    assert_eq!(attnums, [1, 2, 4]);
    assert_eq!(engine.schema("public.readded_live").await.unwrap().column_ids, attnums);
    engine.shutdown().await.unwrap();
}

/// stop() halts one view while the other keeps mirroring; resume() brings it
/// back to an exact copy. Stopping every view and resuming works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_resume_under_load() {
    let Some(db) = testkit::test_db("life_stop").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 81);
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 2);
    writers.wait_commits(300).await;

    assert_eq!(engine.stop("public.acct_live").await.unwrap().len(), 1);
    let st = status(&engine, "public.acct_live").await;
    assert_eq!((st.state, st.enabled), (JobState::Idle, false));
    let frozen = engine.scan_all("public.acct_live").await.unwrap();
    writers.wait_commits(500).await;
    // A sync skips the stopped view; its copy no longer changes.
    let summary = engine.sync("*").await.unwrap();
    assert_eq!((summary.disabled.len(), summary.realtime.len()), (1, 1), "{summary:?}");
    assert_eq!(engine.scan_all("public.acct_live").await.unwrap(), frozen, "a stopped view changed");

    let summary = engine.resume("public.acct_live").await.unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    writers.wait_commits(300).await;

    engine.stop("*").await.unwrap();
    writers.wait_commits(300).await;
    let summary = engine.resume("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 2, "{summary:?}");
    writers.wait_commits(300).await;
    writers.stop().await;
    for (v, t) in [("public.acct_live", "acct"), ("public.bag_live", "bag")] {
        assert_converges(&engine, v, &c, "public", t, WAIT).await;
        let st = status(&engine, v).await;
        assert_eq!((st.state, st.enabled, st.last_error), (JobState::Running, true, None), "{v}");
    }
    assert_eq!(slots(&c, &db.name).await, vec![feed_name(&db)]);
    engine.shutdown().await.unwrap();
}

/// The engine shuts down while realtime views are copying; the reopened
/// engine copies them again and converges.
async fn restart_in_the_middle_of_a_bootstrap(kind: StoreKind) {
    let Some(db) = testkit::test_db("life_boot_restart").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 5_000).await;
    let writers = Writers::default();
    start_load(&writers, &db, 91);
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let gate = probe.close_gate();
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    let sync = {
        let e = engine.clone();
        tokio::spawn(async move { e.sync("*").await })
    };
    let e = engine.clone();
    wait_for("both snapshots to wait at the gate", WAIT, move || {
        let e = e.clone();
        async move { (e.snapshots().len() == 2).then_some(()) }
    })
    .await;
    writers.wait_commits(300).await;
    engine.shutdown().await.unwrap();
    assert!(sync.await.unwrap().is_err(), "the interrupted sync reports the shutdown");
    drop(engine);
    gate.add_permits(1000);
    writers.wait_commits(300).await;

    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    for st in engine.status("*").await.unwrap() {
        assert_ne!(st.state, JobState::Running, "{st:?}");
    }
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 2, "{summary:?}");
    writers.wait_commits(300).await;
    writers.stop().await;
    for (v, t) in [("public.acct_live", "acct"), ("public.bag_live", "bag")] {
        assert_converges(&engine, v, &c, "public", t, WAIT).await;
    }
    assert!(probe.snapshot_count() >= 2);
    assert_eq!(slots(&c, &db.name).await, vec![feed_name(&db)]);
    engine.shutdown().await.unwrap();
}

/// A dropped upstream table fails its job only — noticed by the running
/// engine, though the stream says nothing — while the other views of the
/// origin keep running. A table re-created under the name is picked up by
/// the job's retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_upstream_table_fails_that_job_only() {
    let Some(db) = testkit::test_db("life_drop").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    let events = Events::collect(&engine);
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    engine.define(view("public", "bag_live", Persistence::Realtime, "public", "bag")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 2);
    c.batch_execute("DROP TABLE bag").await.unwrap();
    let e = engine.clone();
    let st = wait_for("bag_live to fail because its table is gone", WAIT, move || {
        let e = e.clone();
        async move {
            let st = status(&e, "public.bag_live").await;
            (st.state == JobState::Failed && st.last_error.as_deref().is_some_and(|m| m.contains("does not exist")))
                .then_some(st)
        }
    })
    .await;
    assert!(st.last_error.unwrap().contains("public.bag"));
    events.wait_error("public.bag was dropped").await;
    assert_eq!(status(&engine, "public.acct_live").await.state, JobState::Running);
    c.batch_execute("UPDATE acct SET v = v + 1 WHERE id < 100").await.unwrap();
    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    // The user's sync() reports the failure and leaves the rest alone.
    let summary = engine.sync("*").await.unwrap();
    assert_eq!((summary.realtime.len(), summary.failed.len()), (1, 1), "{summary:?}");

    c.batch_execute(
        "CREATE TABLE bag (k bigint, v bigint); ALTER TABLE bag REPLICA IDENTITY FULL;
         INSERT INTO bag VALUES (1, 1), (1, 1), (2, 2);",
    )
    .await
    .unwrap();
    wait_state(&engine, "public.bag_live", JobState::Running).await;
    c.batch_execute("INSERT INTO bag VALUES (3, 3); DELETE FROM bag WHERE k = 2;").await.unwrap();
    assert_converges(&engine, "public.bag_live", &c, "public", "bag", WAIT).await;
    assert_converges(&engine, "public.acct_live", &c, "public", "acct", WAIT).await;
    engine.shutdown().await.unwrap();
}

/// Overlapping sync() calls while a pass is busy (a bootstrap waiting at a
/// gate) coalesce into one queued pass; a forced request among them is not
/// lost: the materialized view is copied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_syncs_coalesce_and_keep_force() {
    let Some(db) = testkit::test_db("life_storm").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    engine.define(view("public", "acct_copy", Persistence::Materialized, "public", "acct")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().materialized.len(), 1);
    let gate = probe.close_gate();
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    let first = {
        let e = engine.clone();
        tokio::spawn(async move { e.sync("public.acct_live").await })
    };
    let e = engine.clone();
    wait_for("the bootstrap to wait at the gate", WAIT, move || {
        let e = e.clone();
        async move { (e.snapshots().len() == 1).then_some(()) }
    })
    .await;
    let passes = engine.stats().await.unwrap().passes;
    let snapshots = probe.snapshot_count();
    c.batch_execute("UPDATE acct SET v = -1 WHERE id = 1").await.unwrap();
    let mut calls = futures::stream::FuturesOrdered::new();
    for i in 0..20 {
        let e = engine.clone();
        calls.push_back(async move {
            if i == 7 {
                e.sync_forced("public.acct_copy").await
            } else {
                e.sync("*").await
            }
        });
    }
    // Polled once, every call has sent its request; a later request on the
    // same channel (stats) is answered only after the machine took them all:
    // they are queued behind the running pass.
    assert!(futures::poll!(futures::StreamExt::next(&mut calls)).is_pending());
    assert_eq!(engine.stats().await.unwrap().passes, passes);
    gate.add_permits(1000);
    let summary = tokio::time::timeout(WAIT, first).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    let results: Vec<_> =
        tokio::time::timeout(WAIT, futures::StreamExt::collect::<Vec<_>>(calls)).await.expect("a sync() call hung");
    for (i, r) in results.into_iter().enumerate() {
        let summary = r.unwrap();
        let want = if i == 7 { 1 } else { 2 };
        assert_eq!(summary.len(), want, "call {i}: {summary:?}");
        assert!(summary.failed.is_empty(), "call {i}: {summary:?}");
    }
    let ran = engine.stats().await.unwrap().passes - passes;
    assert_eq!(ran, 1, "20 calls behind a running pass should run as one pass");
    assert_eq!(probe.snapshot_count(), snapshots + 2, "the bootstrap and the forced refresh");
    assert_converges(&engine, "public.acct_copy", &c, "public", "acct", WAIT).await;
    engine.shutdown().await.unwrap();
}

/// A copy in progress reports its rows, the server's estimate of the total
/// (taken beside the copy, not in front of it) and, once rows arrive, the
/// time left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_progress_report_an_estimated_total() {
    let Some(db) = testkit::test_db("life_estimate").await else { return };
    let c = db.client().await;
    create_load_tables(&c, 20_000).await;
    c.batch_execute("ANALYZE acct").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(StoreKind::Fjall, dir.path(), probe.source()).await;
    let gate = probe.close_gate();
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();
    let first = {
        let e = engine.clone();
        tokio::spawn(async move { e.sync("public.acct_live").await })
    };
    let e = engine.clone();
    let progress = wait_for("the copy to report an estimate", WAIT, move || {
        let e = e.clone();
        async move { e.snapshots().into_iter().find(|p| p.estimated_rows.is_some()) }
    })
    .await;
    let estimate = progress.estimated_rows.unwrap();
    assert!((18_000..=22_000).contains(&estimate), "estimated {estimate} rows of 20,000");
    assert_eq!(progress.rows, 0, "the copy waits at the gate");
    assert_eq!(progress.eta(), None, "no rate yet, so no time left to give");
    gate.add_permits(1000);
    let summary = tokio::time::timeout(WAIT, first).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    assert!(engine.snapshots().is_empty());
    engine.shutdown().await.unwrap();
}
