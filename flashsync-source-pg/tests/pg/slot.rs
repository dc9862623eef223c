//! Slot lifecycle: created, existing, dropped, busy, invalidated, and a
//! server restart.

use std::time::Duration;

use flashsync_core::{Change, FeedStart, Source, SourceErrorKind, StreamEvent, UpstreamRelation};
use flashsync_source_pg::testkit::{self, ClusterOptions};
use flashsync_source_pg::PgSource;
use futures::StreamExt;

use crate::common::*;

fn rel(t: &str) -> UpstreamRelation {
    UpstreamRelation::new("public", t).expect("relation")
}

async fn slot_exists(c: &tokio_postgres::Client, slot: &str) -> bool {
    c.query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).await.expect("query").is_some()
}

async fn wait_inactive(c: &tokio_postgres::Client, slot: &str) {
    wait_for("the slot to be released", || async {
        let active: bool = c
            .query_one("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .expect("slot")
            .get(0);
        (!active).then_some(())
    })
    .await
}

#[tokio::test]
async fn created_then_existing_then_created_again_after_the_slot_is_dropped() {
    let Some(db) = testkit::test_db("slot_dropped").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int4 PRIMARY KEY)").await.expect("setup");
    let src = source(&db);
    src.prepare(&rel("t"), true).await.expect("prepare");
    let slot = src.config().slot_name.clone();

    let sub = src.subscribe(None).await.expect("first");
    let FeedStart::Created { consistent_point } = sub.report.start else {
        panic!("expected Created, got {:?}", sub.report)
    };
    drop(sub);
    let sub = src.subscribe(None).await.expect("second");
    assert_eq!(sub.report.start, FeedStart::Existing { confirmed_flush: consistent_point });
    drop(sub);

    wait_inactive(&c, &slot).await;
    c.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.expect("drop slot");
    let mut sub = src.subscribe(None).await.expect("third");
    assert!(matches!(sub.report.start, FeedStart::Created { .. }), "{:?}", sub.report);
    c.batch_execute("INSERT INTO t VALUES (1)").await.expect("insert");
    next_txn(&mut sub).await;
}

#[tokio::test]
async fn a_busy_slot_is_reported_and_drop_feed_removes_everything() {
    let Some(db) = testkit::test_db("slot_busy").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int4 PRIMARY KEY)").await.expect("setup");
    let mut cfg = config(&db);
    cfg.slot_busy_wait = Duration::from_millis(300);
    let src = PgSource::new(cfg.clone()).expect("source");
    src.prepare(&rel("t"), true).await.expect("prepare");
    let sub = src.subscribe(None).await.expect("subscribe");
    let other = PgSource::new(cfg).expect("second source");
    let e = assert_kind(other.subscribe(None).await, SourceErrorKind::Connection);
    assert!(e.message.contains("in use"), "{e}");
    drop(sub);

    let slot = src.config().slot_name.clone();
    let publication = src.config().publication_name.clone();
    src.drop_feed().await.expect("drop feed");
    assert!(!slot_exists(&c, &slot).await);
    let pubs: i64 = c
        .query_one("SELECT count(*) FROM pg_publication WHERE pubname = $1", &[&publication])
        .await
        .expect("query")
        .get(0);
    assert_eq!(pubs, 0);
    src.drop_feed().await.expect("dropping twice is fine");
}

/// `max_slot_wal_keep_size` lets the server invalidate a slot that falls
/// too far behind; subscribing then re-creates it and says why.
#[tokio::test]
async fn an_invalidated_slot_is_recreated_with_a_reason() {
    let Some(cluster) = testkit::dedicated(
        "slot_invalidated",
        ClusterOptions::default()
            .set("max_slot_wal_keep_size", "1MB")
            .set("wal_keep_size", "0")
            .set("min_wal_size", "32MB")
            .set("max_wal_size", "64MB"),
    ) else {
        return;
    };
    let db = cluster.create_db("inval").await.expect("db");
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int4 PRIMARY KEY)").await.expect("setup");
    let src = source(&db);
    src.prepare(&rel("t"), true).await.expect("prepare");
    let slot = src.config().slot_name.clone();
    let sub = src.subscribe(None).await.expect("subscribe");
    assert!(matches!(sub.report.start, FeedStart::Created { .. }));
    drop(sub);
    wait_inactive(&c, &slot).await;

    // Move WAL on by whole segments until a checkpoint removes what the
    // slot still needs.
    let mut n = 0;
    wait_for("the slot to be invalidated", || {
        n += 1;
        let c = &c;
        let slot = slot.clone();
        async move {
            for i in 0..3 {
                c.execute("INSERT INTO t VALUES ($1)", &[&(n * 10 + i)]).await.expect("insert");
                c.batch_execute("SELECT pg_switch_wal()").await.expect("switch");
            }
            c.batch_execute("CHECKPOINT").await.expect("checkpoint");
            let status: Option<String> = c
                .query_one("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
                .await
                .expect("slot")
                .get(0);
            (status.as_deref() == Some("lost")).then_some(())
        }
    })
    .await;

    let mut sub = src.subscribe(None).await.expect("subscribe after loss");
    match &sub.report.start {
        FeedStart::Recreated { reason, .. } => {
            assert!(reason.contains("invalidated") && reason.contains(&slot), "{reason}");
        }
        other => panic!("expected Recreated, got {other:?}"),
    }
    c.batch_execute("INSERT INTO t VALUES (-1)").await.expect("insert");
    let t = next_txn(&mut sub).await;
    assert!(matches!(t.events.as_slice(), [StreamEvent::Change(Change::Insert { .. })]));
}

/// A server restart breaks the feed with an error (never silently); the
/// slot survives and resuming from the acknowledged position continues
/// without re-delivering.
#[tokio::test]
async fn a_server_restart_breaks_the_feed_and_resuming_continues() {
    let Some(mut cluster) = testkit::dedicated("slot_restart", ClusterOptions::default()) else {
        return;
    };
    let db = cluster.create_db("restart").await.expect("db");
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int4 PRIMARY KEY)").await.expect("setup");
    let src = source(&db);
    src.prepare(&rel("t"), true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");
    c.batch_execute("INSERT INTO t VALUES (1)").await.expect("insert");
    let t1 = next_txn(&mut sub).await;
    sub.feedback.ack(t1.end_lsn);
    let slot = src.config().slot_name.clone();
    wait_for("the ack to reach the slot", || async { confirmed_flush(&c, &slot).await.filter(|l| *l >= t1.end_lsn) })
        .await;

    cluster.restart().expect("restart");
    // The old feed ends with an error (possibly after a keepalive or two).
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match sub.events.next().await {
                Some(Ok(StreamEvent::Keepalive { .. })) => continue,
                Some(Ok(other)) => panic!("unexpected event after restart: {other:?}"),
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        }
    })
    .await
    .expect("the feed noticed the restart");
    if let Some(e) = ended {
        assert_eq!(e.kind, SourceErrorKind::Connection, "{e}");
    }

    let c = db.client().await;
    let mut sub = src.subscribe(Some(t1.end_lsn)).await.expect("resubscribe");
    // Before Postgres 17 an advance of confirmed_flush alone is not written
    // at the shutdown checkpoint, so after a restart the slot may report an
    // older position — never a newer one. Resuming from our own position
    // keeps already-applied commits out.
    match sub.report.start {
        FeedStart::Existing { confirmed_flush } => assert!(confirmed_flush <= t1.end_lsn, "{confirmed_flush}"),
        ref other => panic!("expected Existing, got {other:?}"),
    }
    c.batch_execute("INSERT INTO t VALUES (2)").await.expect("insert");
    let t2 = next_txn(&mut sub).await;
    match t2.events.as_slice() {
        [StreamEvent::Change(Change::Insert { new, .. })] => assert_eq!(new, &flashsync_core::row![2]),
        other => panic!("unexpected {other:?}"),
    }
}
