//! `prepare`: describing relations, identity rules, publication membership.

use flashsync_core::{Column, Identity, Source, SourceErrorKind, UpstreamRelation};
use flashsync_source_pg::testkit;

use crate::common::*;

fn rel(t: &str) -> UpstreamRelation {
    UpstreamRelation::new("public", t).expect("relation")
}

fn col(name: &str, ty: &str) -> Column {
    Column { name: name.into(), type_name: ty.into() }
}

#[tokio::test]
async fn describes_keys_and_identities() {
    let Some(db) = testkit::test_db("prepare_keys").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE pk (id int8 PRIMARY KEY, v text);
         CREATE TABLE comp (b int4, a text, v float8, PRIMARY KEY (a, b));
         CREATE TABLE idx (id int4 NOT NULL, code text NOT NULL, v text);
         CREATE UNIQUE INDEX idx_code ON idx (code);
         ALTER TABLE idx REPLICA IDENTITY USING INDEX idx_code;
         CREATE TABLE full_t (a int4, b text);
         ALTER TABLE full_t REPLICA IDENTITY FULL;
         CREATE TABLE none_t (a int4, b text);
         CREATE TABLE nothing_t (id int4 PRIMARY KEY);
         ALTER TABLE nothing_t REPLICA IDENTITY NOTHING;
         CREATE TABLE gen (id int4 PRIMARY KEY, x int4, y int4 GENERATED ALWAYS AS (x * 2) STORED);
         CREATE MATERIALIZED VIEW mv AS SELECT a, b FROM full_t;
         CREATE VIEW v AS SELECT id FROM pk;",
    )
    .await
    .expect("setup");
    let src = source(&db);

    let s = src.prepare(&rel("pk"), true).await.expect("pk");
    assert_eq!(s.identity, Identity::Key);
    assert_eq!(s.columns, vec![col("id", "int8"), col("v", "text")]);
    assert_eq!(s.key, vec![0]);
    assert!(s.is_well_formed());

    // Key order is the primary key's order, not the column order.
    let s = src.prepare(&rel("comp"), true).await.expect("comp");
    assert_eq!(s.identity, Identity::Key);
    assert_eq!(s.key, vec![1, 0]);

    let s = src.prepare(&rel("idx"), true).await.expect("using index");
    assert_eq!((s.identity, s.key.clone()), (Identity::Key, vec![1]));

    let s = src.prepare(&rel("full_t"), true).await.expect("full");
    assert_eq!(s.identity, Identity::FullRow);
    assert_eq!(s.key, vec![0, 1]);

    let e = assert_kind(src.prepare(&rel("none_t"), true).await, SourceErrorKind::ReplicaIdentity);
    assert!(e.message.contains("REPLICA IDENTITY FULL"), "{e}");
    assert!(e.message.contains("none_t"), "{e}");
    assert_kind(src.prepare(&rel("nothing_t"), true).await, SourceErrorKind::ReplicaIdentity);

    // Describe-only: keyless relations are full-row; views cannot be fed.
    let s = src.prepare(&rel("none_t"), false).await.expect("describe");
    assert_eq!(s.identity, Identity::FullRow);
    let s = src.prepare(&rel("mv"), false).await.expect("matview");
    assert_eq!(s.identity, Identity::FullRow);
    assert_eq!(s.columns.len(), 2);
    assert_kind(src.prepare(&rel("mv"), true).await, SourceErrorKind::Unsupported);
    let s = src.prepare(&rel("v"), false).await.expect("view");
    assert_eq!(s.identity, Identity::FullRow);

    // Generated columns are not published, so realtime leaves them out,
    // and materialized views too: one table, one set of columns.
    let fed = src.prepare(&rel("gen"), true).await.expect("gen");
    assert_eq!(fed.columns.len(), 2);
    let described = src.prepare(&rel("gen"), false).await.expect("gen describe");
    assert_eq!(described.columns, fed.columns);

    // Missing relations and schemas.
    assert_kind(src.prepare(&rel("nope"), true).await, SourceErrorKind::RelationMissing);
    assert_kind(
        src.prepare(&UpstreamRelation::new("no_schema", "t").unwrap(), false).await,
        SourceErrorKind::RelationMissing,
    );

    // Fed tables are in the publication, others are not; idempotent.
    src.prepare(&rel("pk"), true).await.expect("again");
    let published: Vec<String> = c
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1",
            &[&src.config().publication_name],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(published, vec!["comp", "full_t", "gen", "idx", "pk"]);

    // release removes it; releasing twice (or a missing table) is fine.
    src.release(&rel("pk")).await.expect("release");
    src.release(&rel("pk")).await.expect("release again");
    src.release(&rel("nope")).await.expect("release missing");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'pk'",
            &[&src.config().publication_name],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn prepare_waits_for_writers_that_started_before_the_table_was_published() {
    let Some(db) = testkit::test_db("prepare_writers").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE w (id int PRIMARY KEY)").await.expect("setup");
    let writer = db.client().await;
    writer.batch_execute("BEGIN; INSERT INTO w VALUES (1);").await.expect("open writer");
    let src = source(&db);
    let prepare = tokio::spawn(async move { src.prepare(&rel("w"), true).await });
    // prepare must not return while the writer's transaction is open.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!prepare.is_finished(), "prepare returned while a writer was still open");
    writer.batch_execute("COMMIT").await.expect("commit");
    let schema = tokio::time::timeout(WAIT, prepare)
        .await
        .expect("prepare finished after the writer committed")
        .expect("join")
        .expect("prepare");
    assert_eq!(schema.key, vec![0]);
}

/// Regression: the wait for a table's open writers used to run on the shared
/// control connection, holding it for as long as the application's
/// transaction lasted — every other view's `prepare` and the feed's
/// `subscribe` stalled behind it (a deadlock when that transaction waits for
/// the feed).
#[tokio::test]
async fn a_prepare_waiting_for_writers_holds_up_nothing_else() {
    let Some(db) = testkit::test_db("prepare_no_stall").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE w (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY);")
        .await
        .expect("setup");
    let src = std::sync::Arc::new(source(&db));
    // The slot exists already (creating one waits for every transaction
    // with an xid, by Postgres' design).
    drop(src.subscribe(None).await.expect("create the slot"));
    let writer = db.client().await;
    writer.batch_execute("BEGIN; INSERT INTO w VALUES (1);").await.expect("open writer");
    let waiting = {
        let src = src.clone();
        tokio::spawn(async move { src.prepare(&rel("w"), true).await })
    };
    // The waiting prepare has published the table and now waits.
    wait_for("prepare to publish the table", || async {
        c.query_opt("SELECT 1 FROM pg_publication_tables WHERE tablename = 'w'", &[]).await.expect("query").map(|_| ())
    })
    .await;
    tokio::time::timeout(std::time::Duration::from_secs(10), src.prepare(&rel("other"), true))
        .await
        .expect("another prepare stalled behind the waiting one")
        .expect("prepare other");
    let sub = tokio::time::timeout(std::time::Duration::from_secs(10), src.subscribe(None))
        .await
        .expect("subscribe stalled behind the waiting prepare")
        .expect("subscribe");
    assert!(!waiting.is_finished(), "prepare returned while a writer was still open");
    writer.batch_execute("COMMIT").await.expect("commit");
    tokio::time::timeout(WAIT, waiting).await.expect("prepare finished").expect("join").expect("prepare w");
    drop(sub);
}

/// Regression: a `prepare` whose wait for writers did not finish (timed out,
/// or the process stopped) left the table in the publication, and the next
/// `prepare` skipped the wait — a snapshot could then miss the changes that
/// transaction made before the table was published.
#[tokio::test]
async fn prepare_waits_again_when_an_earlier_wait_did_not_finish() {
    let Some(db) = testkit::test_db("prepare_rewait").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE w (id int PRIMARY KEY)").await.expect("setup");
    let writer = db.client().await;
    writer.batch_execute("BEGIN; INSERT INTO w VALUES (1);").await.expect("open writer");
    let mut cfg = config(&db);
    cfg.writer_wait = std::time::Duration::from_millis(200);
    let impatient = flashsync_source_pg::PgSource::new(cfg).expect("source");
    let e = assert_kind(impatient.prepare(&rel("w"), true).await, SourceErrorKind::Other);
    assert!(e.message.contains("still open"), "{e}");
    // The table is in the publication now; the writer is still open.
    let src = source(&db);
    let prepare = tokio::spawn(async move { src.prepare(&rel("w"), true).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!prepare.is_finished(), "the second prepare did not wait for the writer");
    writer.batch_execute("COMMIT").await.expect("commit");
    tokio::time::timeout(WAIT, prepare).await.expect("prepare finished").expect("join").expect("prepare");
}
