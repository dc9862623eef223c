//! `subscribe`: the change feed, acknowledgements, resume, flow control,
//! schema changes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flashsync_core::{
    row, Cell, Change, FeedStart, Lsn, OldRow, Source, SourceRelId, StreamEvent, UpstreamRelation, Value,
};
use flashsync_source_pg::testkit;

use crate::common::*;

fn rel(t: &str) -> UpstreamRelation {
    UpstreamRelation::new("public", t).expect("relation")
}

fn change(e: &StreamEvent) -> &Change {
    match e {
        StreamEvent::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test]
async fn delivers_inserts_updates_deletes_and_truncates_in_order() {
    let Some(db) = testkit::test_db("feed_order").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int4 PRIMARY KEY, v text)").await.expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("t"), true).await.expect("prepare");
    let oid = schema.source_id;
    let mut sub = src.subscribe(None).await.expect("subscribe");
    assert!(matches!(sub.report.start, FeedStart::Created { .. }), "{:?}", sub.report);
    assert_eq!(sub.report.slot_id, src.config().slot_name);

    c.batch_execute("INSERT INTO t VALUES (1, 'a')").await.expect("insert");
    c.batch_execute(
        "BEGIN;
         INSERT INTO t VALUES (2, 'b');
         UPDATE t SET v = 'a2' WHERE id = 1;
         UPDATE t SET id = 3 WHERE id = 2;
         DELETE FROM t WHERE id = 1;
         COMMIT;",
    )
    .await
    .expect("multi");
    c.batch_execute("TRUNCATE t").await.expect("truncate");

    let t1 = next_txn(&mut sub).await;
    assert_eq!(t1.events.len(), 1, "{:?}", t1.events);
    assert_eq!(change(&t1.events[0]), &Change::Insert { rel: oid, new: row![1, "a"] });
    assert!(t1.final_lsn < t1.end_lsn);

    let t2 = next_txn(&mut sub).await;
    assert!(t2.final_lsn >= t1.end_lsn, "commits arrive in commit order");
    let changes: Vec<&Change> = t2.events.iter().map(change).collect();
    assert_eq!(
        changes,
        vec![
            &Change::Insert { rel: oid, new: row![2, "b"] },
            // Key unchanged: no old image.
            &Change::Update { rel: oid, old: None, new: vec![Cell::Set(Value::Int(1)), Cell::Set("a2".into())] },
            // Key changed: old image with the key set, other columns NULL.
            &Change::Update {
                rel: oid,
                old: Some(OldRow::Key(row![2, None::<i64>])),
                new: vec![Cell::Set(Value::Int(3)), Cell::Set("b".into())]
            },
            &Change::Delete { rel: oid, old: OldRow::Key(row![1, None::<i64>]) },
        ]
    );
    assert_ne!(t1.xid, t2.xid);

    let t3 = next_txn(&mut sub).await;
    assert_eq!(t3.events.iter().map(change).collect::<Vec<_>>(), vec![&Change::Truncate { rels: vec![oid] }]);
    assert!(t3.final_lsn >= t2.end_lsn);
}

#[tokio::test]
async fn full_row_identity_sends_whole_old_rows() {
    let Some(db) = testkit::test_db("feed_full").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE f (a int4, b text); ALTER TABLE f REPLICA IDENTITY FULL; INSERT INTO f VALUES (1, 'x'), (1, 'x');")
        .await
        .expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("f"), true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");
    c.batch_execute("UPDATE f SET b = 'y' WHERE ctid = (SELECT min(ctid) FROM f)").await.expect("update");
    c.batch_execute("DELETE FROM f WHERE b = 'x'").await.expect("delete");
    let u = next_txn(&mut sub).await;
    assert_eq!(
        change(&u.events[0]),
        &Change::Update {
            rel: schema.source_id,
            old: Some(OldRow::Full(row![1, "x"])),
            new: vec![Cell::Set(Value::Int(1)), Cell::Set("y".into())]
        }
    );
    let d = next_txn(&mut sub).await;
    assert_eq!(change(&d.events[0]), &Change::Delete { rel: schema.source_id, old: OldRow::Full(row![1, "x"]) });
}

/// A keyed table under `REPLICA IDENTITY FULL` sends the whole old row with
/// every update — its TOASTed values too, flattened — while the new row
/// still marks them unchanged: what lets a filtered view decide a move-in
/// without its local row.
#[tokio::test]
async fn keyed_tables_with_full_identity_send_whole_old_rows_with_toast() {
    let Some(db) = testkit::test_db("feed_keyed_full").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE k (id int8 PRIMARY KEY, tenant int4, body text);
         ALTER TABLE k REPLICA IDENTITY FULL;
         INSERT INTO k SELECT 1, 7, string_agg(md5(g::text), '') FROM generate_series(1, 400) g;",
    )
    .await
    .expect("setup");
    let body: String = c.query_one("SELECT body FROM k", &[]).await.expect("body").get(0);
    let src = source(&db);
    let schema = src.prepare(&rel("k"), true).await.expect("prepare");
    assert_eq!(schema.identity, flashsync_core::Identity::Key, "the primary key still identifies rows");
    let mut sub = src.subscribe(None).await.expect("subscribe");
    c.batch_execute("UPDATE k SET tenant = 42 WHERE id = 1").await.expect("update");
    c.batch_execute("DELETE FROM k WHERE id = 1").await.expect("delete");
    let u = next_txn(&mut sub).await;
    assert_eq!(
        change(&u.events[0]),
        &Change::Update {
            rel: schema.source_id,
            old: Some(OldRow::Full(row![1, 7, body.as_str()])),
            new: vec![Cell::Set(Value::Int(1)), Cell::Set(Value::Int(42)), Cell::Unchanged]
        }
    );
    let d = next_txn(&mut sub).await;
    assert_eq!(
        change(&d.events[0]),
        &Change::Delete { rel: schema.source_id, old: OldRow::Full(row![1, 42, body.as_str()]) }
    );
}

#[tokio::test]
async fn resumes_after_reconnect_without_redelivering_and_acks_advance_the_slot() {
    let Some(db) = testkit::test_db("feed_resume").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE r (id int4 PRIMARY KEY)").await.expect("setup");
    let src = source(&db);
    src.prepare(&rel("r"), true).await.expect("prepare");
    let slot = src.config().slot_name.clone();

    let mut sub = src.subscribe(None).await.expect("subscribe");
    let created = match sub.report.start {
        FeedStart::Created { consistent_point } => consistent_point,
        ref other => panic!("expected Created, got {other:?}"),
    };
    c.batch_execute("INSERT INTO r VALUES (1)").await.expect("insert 1");
    c.batch_execute("INSERT INTO r VALUES (2)").await.expect("insert 2");
    let t1 = next_txn(&mut sub).await;
    let t2 = next_txn(&mut sub).await;
    assert!(t1.end_lsn > created);

    // Acknowledging moves confirmed_flush_lsn to exactly the acked LSN.
    sub.feedback.ack(t1.end_lsn);
    let confirmed = wait_for("confirmed_flush_lsn to reach the ack", || async {
        confirmed_flush(&c, &slot).await.filter(|l| *l >= t1.end_lsn)
    })
    .await;
    assert_eq!(confirmed, t1.end_lsn, "the slot confirms what was acked, no more");
    drop(sub);

    c.batch_execute("INSERT INTO r VALUES (3)").await.expect("insert 3");
    // Resume after t2 although only t1 was acked: t2 must not come again.
    let mut sub = src.subscribe(Some(t2.end_lsn)).await.expect("resubscribe");
    assert_eq!(sub.report.start, FeedStart::Existing { confirmed_flush: t1.end_lsn });
    let t3 = next_txn(&mut sub).await;
    assert_eq!(change(&t3.events[0]), &Change::Insert { rel: SourceRelId(t3_rel(&c).await), new: row![3] });
    drop(sub);

    // Resuming from the slot's position replays what was not acked (t2):
    // the contract allows repeats at or after the requested position.
    let mut sub = src.subscribe(None).await.expect("resubscribe from slot");
    let again = next_txn(&mut sub).await;
    assert_eq!(again.end_lsn, t2.end_lsn);
    assert_eq!(change(&again.events[0]), change(&t2.events[0]));
}

async fn t3_rel(c: &tokio_postgres::Client) -> u64 {
    let oid: u32 = c.query_one("SELECT 'r'::regclass::oid", &[]).await.expect("oid").get(0);
    u64::from(oid)
}

#[tokio::test]
async fn commit_time_is_wall_clock_time() {
    let Some(db) = testkit::test_db("feed_time").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE tm (id int4 PRIMARY KEY)").await.expect("setup");
    let src = source(&db);
    src.prepare(&rel("tm"), true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");
    c.batch_execute("INSERT INTO tm VALUES (1)").await.expect("insert");
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
    match next_data_event(&mut sub).await {
        StreamEvent::Begin { commit_time, .. } => {
            assert!(commit_time.0.abs_diff(now_ms) < 60_000, "commit time {commit_time} vs now {now_ms}");
        }
        other => panic!("expected Begin, got {other:?}"),
    }
}

/// Writes only to tables outside the publication produce no transactions,
/// but keepalives report how far the server has read; acknowledging their
/// `wal_end` (as the machine does when idle) advances the slot past that
/// WAL. Keepalives arrive because the walsender sends one whenever our
/// reported position is behind what it has read, and because our periodic
/// status updates ask for one.
#[tokio::test]
async fn keepalive_acks_advance_the_slot_past_unpublished_writes() {
    let Some(db) = testkit::test_db("feed_keepalive").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE pubd (id int4 PRIMARY KEY); CREATE TABLE other (id int4)").await.expect("setup");
    let src = source(&db);
    src.prepare(&rel("pubd"), true).await.expect("prepare");
    let slot = src.config().slot_name.clone();
    let mut sub = src.subscribe(None).await.expect("subscribe");
    let before = confirmed_flush(&c, &slot).await.expect("slot exists");

    c.batch_execute("BEGIN; INSERT INTO other SELECT generate_series(1, 1000);").await.expect("write");
    let written = current_lsn(&c).await;
    c.batch_execute("COMMIT").await.expect("commit");

    let deadline = std::time::Instant::now() + WAIT;
    let wal_end = loop {
        assert!(std::time::Instant::now() < deadline, "no keepalive past {written} within {WAIT:?}");
        match next_event(&mut sub).await {
            StreamEvent::Keepalive { wal_end, .. } if wal_end > written => break wal_end,
            StreamEvent::Keepalive { .. } => continue,
            other => panic!("no transaction expected for unpublished writes, got {other:?}"),
        }
    };
    sub.feedback.ack(wal_end);
    let confirmed = wait_for("the slot to confirm the keepalive position", || async {
        confirmed_flush(&c, &slot).await.filter(|l| *l >= wal_end)
    })
    .await;
    assert!(confirmed > before && confirmed > written);
}

#[tokio::test]
async fn schema_change_is_reported_before_the_changes_that_carry_it() {
    let Some(db) = testkit::test_db("feed_ddl").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE s (id int4 PRIMARY KEY, v text)").await.expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("s"), true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");
    c.batch_execute("INSERT INTO s VALUES (1, 'a')").await.expect("insert");
    let t = next_txn(&mut sub).await;
    assert!(matches!(t.events.as_slice(), [StreamEvent::Change(Change::Insert { .. })]), "{:?}", t.events);

    c.batch_execute("ALTER TABLE s ADD COLUMN w int4 DEFAULT 7; INSERT INTO s VALUES (2, 'b', 8);").await.expect("ddl");
    let t = next_txn(&mut sub).await;
    match t.events.as_slice() {
        [StreamEvent::SchemaChanged { rel, detail, columns }, StreamEvent::Change(Change::Insert { new, .. })] => {
            assert_eq!(*rel, schema.source_id);
            assert!(detail.contains('w'), "{detail}");
            assert_eq!(new, &row![2, "b", 8]);
            // Where the columns it had are now, and which one is new.
            let matched: Vec<(&str, Option<usize>)> =
                columns.iter().flatten().map(|m| (m.name.as_str(), m.before)).collect();
            assert_eq!(matched, vec![("id", Some(0)), ("v", Some(1)), ("w", None)]);
        }
        other => panic!("expected SchemaChanged then the insert, got {other:?}"),
    }
    // Reported once: the next change carries no new report.
    c.batch_execute("INSERT INTO s VALUES (3, 'c', 9)").await.expect("insert");
    let t = next_txn(&mut sub).await;
    assert!(matches!(t.events.as_slice(), [StreamEvent::Change(Change::Insert { .. })]), "{:?}", t.events);

    // Describing again changes nothing; a type change is reported, the
    // retyped column matched to nothing before.
    src.prepare(&rel("s"), true).await.expect("re-prepare");
    c.batch_execute("ALTER TABLE s ALTER COLUMN w TYPE int8; INSERT INTO s VALUES (4, 'd', 10);")
        .await
        .expect("retype");
    let t = next_txn(&mut sub).await;
    match t.events.first() {
        Some(StreamEvent::SchemaChanged { columns: Some(columns), .. }) => {
            let before: Vec<Option<usize>> = columns.iter().map(|m| m.before).collect();
            assert_eq!(before, vec![Some(0), Some(1), None]);
        }
        other => panic!("expected the type change reported, got {other:?}"),
    }
}

/// The consumer stops reading for longer than `wal_sender_timeout` while a
/// lot of changes arrive: the connection survives (status updates keep
/// flowing), back-pressure reaches the server (it stops sending), and every
/// change arrives afterwards, in order.
#[tokio::test]
async fn survives_a_consumer_that_stops_reading() {
    let Some(mut db) = testkit::test_db("feed_flow").await else { return };
    // A short server timeout makes a missing status update fatal quickly.
    db.conninfo.options = Some("-c wal_sender_timeout=1500".into());
    let c = db.client().await;
    c.batch_execute("CREATE TABLE big (id int4 PRIMARY KEY, pad text)").await.expect("setup");
    let mut cfg = config(&db);
    cfg.status_interval = Duration::from_millis(200);
    cfg.feed_buffer = 8;
    cfg.application_name = format!("flow_{}", db.name);
    let src = flashsync_source_pg::PgSource::new(cfg).expect("source");
    src.prepare(&rel("big"), true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");

    // ~24 MB of changes: far more than socket buffers hold.
    const TXNS: i32 = 60;
    const ROWS: i32 = 200;
    for t in 0..TXNS {
        c.execute(
            "INSERT INTO big SELECT g, repeat(md5(g::text), 60) FROM generate_series($1::int4, $2::int4) g",
            &[&(t * ROWS), &(t * ROWS + ROWS - 1)],
        )
        .await
        .expect("insert");
    }
    let end = current_lsn(&c).await;
    // Not reading (the scenario itself, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent: Option<String> = c
        .query_opt(
            "SELECT sent_lsn::text FROM pg_stat_replication WHERE application_name = $1",
            &[&src.config().application_name],
        )
        .await
        .expect("stat")
        .and_then(|r| r.get(0));
    let sent: Lsn = sent.expect("walsender still connected after the stall").parse().expect("lsn");
    assert!(sent < end, "the server was held back (sent {sent}, WAL at {end})");

    let mut next_id = 0;
    for _ in 0..TXNS {
        let t = next_txn(&mut sub).await;
        for e in &t.events {
            match change(e) {
                Change::Insert { new, .. } => {
                    assert_eq!(new.0[0], Value::Int(next_id.into()));
                    next_id += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        sub.feedback.ack(t.end_lsn);
    }
    assert_eq!(next_id, TXNS * ROWS);
    // And the stream is still healthy.
    c.batch_execute("INSERT INTO big VALUES (-1, 'x')").await.expect("insert");
    let t = next_txn(&mut sub).await;
    assert_eq!(t.events.len(), 1);
}

#[tokio::test]
async fn dropping_the_subscription_releases_the_slot() {
    let Some(db) = testkit::test_db("feed_release").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE d (id int4 PRIMARY KEY)").await.expect("setup");
    let src = source(&db);
    src.prepare(&rel("d"), true).await.expect("prepare");
    let slot = src.config().slot_name.clone();
    let sub = src.subscribe(None).await.expect("subscribe");
    assert!(slot_active(&c, &slot).await);
    drop(sub);
    wait_for("the slot to become inactive", || async { (!slot_active(&c, &slot).await).then_some(()) }).await;
    // A second consumer can take over at once.
    let mut sub = src.subscribe(None).await.expect("resubscribe");
    c.batch_execute("INSERT INTO d VALUES (1)").await.expect("insert");
    next_txn(&mut sub).await;
}

async fn slot_active(c: &tokio_postgres::Client, slot: &str) -> bool {
    c.query_one("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .expect("slot")
        .get::<_, bool>(0)
}

/// The stream says nothing when a published table is dropped or leaves the
/// publication; the feed's relation watch reports both as schema changes,
/// between transactions, once each — so the views are re-prepared instead
/// of silently going stale.
#[tokio::test]
async fn dropped_and_unpublished_relations_are_reported() {
    let Some(db) = testkit::test_db("feed_watch").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE gone (id int4 PRIMARY KEY); CREATE TABLE unpub (id int4 PRIMARY KEY);
         CREATE TABLE keep (id int4 PRIMARY KEY);",
    )
    .await
    .expect("setup");
    let cfg = config(&db).with_relation_check_interval(Duration::from_millis(100));
    let publication = cfg.publication_name.clone();
    let src = flashsync_source_pg::PgSource::new(cfg).expect("source");
    let gone = src.prepare(&rel("gone"), true).await.expect("prepare").source_id;
    let unpub = src.prepare(&rel("unpub"), true).await.expect("prepare").source_id;
    src.prepare(&rel("keep"), true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");
    // Busy upstream: reports must fall between transactions.
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            let w = db.client().await;
            for i in 0..400 {
                w.execute("INSERT INTO keep VALUES ($1)", &[&i]).await.expect("insert");
            }
        })
    };
    c.batch_execute(&format!("DROP TABLE gone; ALTER PUBLICATION \"{publication}\" DROP TABLE unpub;"))
        .await
        .expect("drop");
    let mut reports: Vec<(SourceRelId, String)> = Vec::new();
    let mut in_txn = false;
    let mut inserts = 0;
    let deadline = std::time::Instant::now() + WAIT;
    while reports.len() < 2 || inserts < 400 || in_txn {
        assert!(std::time::Instant::now() < deadline, "reports {reports:?}, {inserts} inserts");
        match next_event(&mut sub).await {
            StreamEvent::Begin { .. } => in_txn = true,
            StreamEvent::Commit { .. } => in_txn = false,
            StreamEvent::Change(_) => inserts += 1,
            StreamEvent::SchemaChanged { rel, detail, columns } => {
                assert!(!in_txn, "reported inside a transaction: {detail}");
                assert_eq!(columns, None, "a relation gone has no columns to match: {detail}");
                reports.push((rel, detail));
            }
            StreamEvent::Keepalive { .. } => {}
        }
    }
    writer.await.expect("writer");
    reports.sort();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let find = |r: SourceRelId| reports.iter().find(|(x, _)| *x == r).map(|(_, d)| d.clone()).expect("reported");
    assert!(find(gone).contains("public.gone was dropped"), "{reports:?}");
    assert!(find(unpub).contains("public.unpub was removed from publication"), "{reports:?}");
    // Once each: a while later, nothing more is reported.
    c.batch_execute("INSERT INTO keep VALUES (1000)").await.expect("insert");
    let t = next_txn(&mut sub).await;
    assert!(matches!(t.events.as_slice(), [StreamEvent::Change(Change::Insert { .. })]), "{:?}", t.events);
    let quiet = std::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(e)) = tokio::time::timeout_at(quiet.into(), futures::StreamExt::next(&mut sub.events)).await {
        assert!(matches!(e, Ok(StreamEvent::Keepalive { .. })), "{e:?}");
    }
    // Described again (re-added), the relation is watched again.
    src.prepare(&rel("unpub"), true).await.expect("re-prepare");
    c.batch_execute("INSERT INTO unpub VALUES (1)").await.expect("insert");
    let t = next_txn(&mut sub).await;
    assert!(matches!(t.events.as_slice(), [StreamEvent::Change(Change::Insert { .. })]), "{:?}", t.events);
}
