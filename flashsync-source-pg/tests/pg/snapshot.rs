//! `snapshot`: consistent copies, bounded batches, and the visibility point
//! the machine uses to hand over to the feed.

use async_trait::async_trait;
use flashsync_core::{
    row, Change, Row, RowSink, Source, SourceErrorKind, StoreError, StoreErrorKind, StreamEvent, UpstreamRelation,
    Value,
};
use flashsync_source_pg::{testkit, PgSource};

use crate::common::*;

fn rel(t: &str) -> UpstreamRelation {
    UpstreamRelation::new("public", t).expect("relation")
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

#[tokio::test]
async fn copies_every_row_in_bounded_batches() {
    let Some(db) = testkit::test_db("snap_batches").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE s (id int4 PRIMARY KEY, v text);
         INSERT INTO s SELECT g, 'row ' || g FROM generate_series(1, 1050) g;
         INSERT INTO s VALUES (0, E'tab\\there\\nnewline \\\\ backslash \\\\N');",
    )
    .await
    .expect("setup");
    let mut cfg = config(&db);
    cfg.snapshot_batch_rows = 100;
    let src = PgSource::new(cfg).expect("source");
    let schema = src.prepare(&rel("s"), false).await.expect("describe");
    let mut sink = VecSink::default();
    let point =
        src.snapshot(&rel("s"), &flashsync_core::ViewShape::whole(schema.clone()), &mut sink).await.expect("snapshot");
    assert_eq!(point.rows, 1051);
    assert!(sink.batches.iter().all(|&n| n > 0 && n <= 100), "{:?}", sink.batches);
    assert_eq!(sink.batches.iter().sum::<usize>(), 1051);
    let rows = sorted(sink.rows);
    assert_eq!(rows[0], row![0, "tab\there\nnewline \\ backslash \\N"]);
    assert_eq!(rows[1050], row![1050, "row 1050"]);
    assert!(point.is_well_formed(), "{point:?}");
    assert!(point.lsn.0 > 0 && point.lsn <= current_lsn(&c).await);
}

#[tokio::test]
async fn a_transaction_open_across_the_snapshot_is_in_xip_and_not_in_the_copy() {
    let Some(db) = testkit::test_db("snap_xip").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE x (id int4 PRIMARY KEY); INSERT INTO x VALUES (1);").await.expect("setup");
    let committed: String = c.query_one("SELECT pg_current_xact_id()::text", &[]).await.expect("xid").get(0);
    let committed: u64 = committed.parse().expect("xid");
    let open = db.client().await;
    open.batch_execute("BEGIN; INSERT INTO x VALUES (2);").await.expect("open txn");
    let xid: String = open.query_one("SELECT pg_current_xact_id()::text", &[]).await.expect("xid").get(0);
    let xid: u64 = xid.parse().expect("xid");
    // A later transaction completes, so the open one lies below the
    // snapshot's xmax and must be listed in xip (an open xid at or above
    // xmax is invisible without being listed).
    c.batch_execute("CREATE TABLE later (id int4)").await.expect("later txn");

    let src = source(&db);
    let schema = src.prepare(&rel("x"), false).await.expect("describe");
    let mut sink = VecSink::default();
    let point =
        src.snapshot(&rel("x"), &flashsync_core::ViewShape::whole(schema.clone()), &mut sink).await.expect("snapshot");
    assert!(point.xip.contains(&xid), "open xid {xid} not in {point:?}");
    assert!(!point.is_visible(xid as u32));
    assert!(point.is_visible(committed as u32));
    assert!(point.xmin <= xid && xid < point.xmax, "{point:?}");
    assert_eq!(sink.rows, vec![row![1]]);
    open.batch_execute("COMMIT").await.expect("commit");
}

/// The point splits the feed exactly: a transaction committed before the
/// snapshot is `contains`ed (the machine skips it), one committed after —
/// including one that was open across the snapshot — is not (applied).
#[tokio::test]
async fn the_snapshot_point_splits_the_feed() {
    let Some(db) = testkit::test_db("snap_split").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE h (id int4 PRIMARY KEY)").await.expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("h"), true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");

    c.batch_execute("INSERT INTO h VALUES (1)").await.expect("before");
    let open = db.client().await;
    open.batch_execute("BEGIN; INSERT INTO h VALUES (2);").await.expect("open");
    let mut sink = VecSink::default();
    let point =
        src.snapshot(&rel("h"), &flashsync_core::ViewShape::whole(schema.clone()), &mut sink).await.expect("snapshot");
    open.batch_execute("COMMIT").await.expect("commit open");
    c.batch_execute("INSERT INTO h VALUES (3)").await.expect("after");

    assert_eq!(sink.rows, vec![row![1]]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let t = next_txn(&mut sub).await;
        let id = match t.events.as_slice() {
            [StreamEvent::Change(Change::Insert { new, .. })] => new.0[0].clone(),
            other => panic!("unexpected {other:?}"),
        };
        seen.push((id, point.contains(t.xid, t.final_lsn)));
    }
    assert_eq!(seen, vec![(Value::Int(1), true), (Value::Int(2), false), (Value::Int(3), false)]);
}

struct FailingSink;

#[async_trait]
impl RowSink for FailingSink {
    async fn write(&mut self, _rows: Vec<Row>) -> Result<(), StoreError> {
        Err(StoreError::new(StoreErrorKind::Io, "write rows", "disk full"))
    }
}

#[tokio::test]
async fn snapshot_errors_are_typed() {
    let Some(db) = testkit::test_db("snap_errors").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE e (id int4 PRIMARY KEY, v text); INSERT INTO e VALUES (1, 'a');")
        .await
        .expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("e"), false).await.expect("describe");

    let e = assert_kind(
        src.snapshot(&rel("e"), &flashsync_core::ViewShape::whole(schema.clone()), &mut FailingSink).await,
        SourceErrorKind::Sink,
    );
    assert!(e.message.contains("disk full"), "{e}");

    c.batch_execute("ALTER TABLE e ADD COLUMN w int4").await.expect("alter");
    // Describing the relation again fixes a shape change: a transient error.
    assert_kind(
        src.snapshot(&rel("e"), &flashsync_core::ViewShape::whole(schema.clone()), &mut VecSink::default()).await,
        SourceErrorKind::Other,
    );
    c.batch_execute("DROP TABLE e").await.expect("drop");
    assert_kind(
        src.snapshot(&rel("e"), &flashsync_core::ViewShape::whole(schema.clone()), &mut VecSink::default()).await,
        SourceErrorKind::RelationMissing,
    );
}
