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

    // Generated columns are not published, so realtime leaves them out.
    let fed = src.prepare(&rel("gen"), true).await.expect("gen");
    assert_eq!(fed.columns.len(), 2);
    let described = src.prepare(&rel("gen"), false).await.expect("gen describe");
    assert_eq!(described.columns.len(), 3);

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
