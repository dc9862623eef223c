//! Identifiers are always quoted: quotes, spaces, unicode and SQL in names
//! work and inject nothing; secrets never show up in errors or `Debug`.

use flashsync_core::{row, Change, Identity, OriginId, Source, SourceErrorKind, StreamEvent, UpstreamRelation};
use flashsync_source_pg::{testkit, PgSource, PgSourceConfig, Secret, SslMode};

use crate::common::*;

const SCHEMA: &str = "we\"ird sch; DROP TABLE victim; --";
const TABLE: &str = "Tä ble\"); DROP TABLE victim; --";

#[tokio::test]
async fn hostile_identifiers_round_trip_and_inject_nothing() {
    let Some(db) = testkit::test_db("idents").await else { return };
    let c = db.client().await;
    c.batch_execute(
        r#"CREATE TABLE victim (id int);
           CREATE SCHEMA "we""ird sch; DROP TABLE victim; --";
           CREATE TABLE "we""ird sch; DROP TABLE victim; --"."Tä ble""); DROP TABLE victim; --" (
             "select" int4 PRIMARY KEY, "sp ace" text, "ünï" text, "a'b" text, """q""" text);"#,
    )
    .await
    .expect("setup");
    let origin = OriginId::new("PG:we.ird-Origin_1").expect("origin");
    let mut cfg = PgSourceConfig::new(&origin, db.conninfo.clone());
    // The publication name may be anything; slot names are restricted.
    cfg.publication_name = "pub \"q\" 'x'; DROP TABLE victim".into();
    cfg.slot_name = format!("{}_{}", cfg.slot_name, db.name);
    cfg.slot_name.truncate(63);
    let src = PgSource::new(cfg).expect("source");
    let rel = UpstreamRelation::new(SCHEMA, TABLE).expect("relation");
    let schema = src.prepare(&rel, true).await.expect("prepare");
    assert_eq!(schema.identity, Identity::Key);
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["select", "sp ace", "ünï", "a'b", "\"q\""]);

    let mut sub = src.subscribe(None).await.expect("subscribe");
    c.batch_execute(
        r#"INSERT INTO "we""ird sch; DROP TABLE victim; --"."Tä ble""); DROP TABLE victim; --"
           VALUES (1, 'a b', 'ü', 'it''s', '"');"#,
    )
    .await
    .expect("insert");
    let t = next_txn(&mut sub).await;
    match t.events.as_slice() {
        [StreamEvent::Change(Change::Insert { new, .. })] => assert_eq!(new, &row![1, "a b", "ü", "it's", "\""]),
        other => panic!("unexpected {other:?}"),
    }
    let mut sink = VecSink::default();
    src.snapshot(&rel, &flashsync_core::ViewShape::whole(schema.clone()), &mut sink).await.expect("snapshot");
    assert_eq!(sink.rows, vec![row![1, "a b", "ü", "it's", "\""]]);
    drop(sub);
    src.release(&rel).await.expect("release");
    src.drop_feed().await.expect("drop feed");

    let victim: i64 =
        c.query_one("SELECT count(*) FROM pg_class WHERE relname = 'victim'", &[]).await.expect("query").get(0);
    assert_eq!(victim, 1, "the victim table must survive");
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug_output() {
    let Some(db) = testkit::test_db("secrets").await else { return };
    const SECRET: &str = "s3cr3t-'\"-hunter2";
    let mut info = db.conninfo.clone();
    info.password = Some(Secret::new(SECRET));
    let origin = OriginId::new("postgres:secrets").expect("origin");
    let cfg = PgSourceConfig::new(&origin, info.clone());
    let src = PgSource::new(cfg.clone()).expect("source");
    let rel = UpstreamRelation::new("public", "t").expect("relation");

    let mut texts = vec![format!("{info:?}"), info.to_string(), format!("{cfg:?}"), format!("{src:?}")];
    let e = assert_kind(src.prepare(&rel, true).await, SourceErrorKind::Refused);
    texts.push(format!("{e} {e:?}"));
    let e = src.subscribe(None).await.expect_err("wrong password");
    texts.push(format!("{e} {e:?}"));
    let e = src
        .snapshot(
            &rel,
            &flashsync_core::ViewShape::whole(flashsync_core::RelationSchema::full_row(
                flashsync_core::SourceRelId(1),
                vec![],
            )),
            &mut VecSink::default(),
        )
        .await
        .expect_err("wrong password");
    texts.push(format!("{e} {e:?}"));
    // TLS demanded from a server without it: refused, still no secret.
    let mut tls = info.clone();
    tls.sslmode = SslMode::Require;
    let src = PgSource::new(PgSourceConfig::new(&origin, tls)).expect("source");
    let e = src.prepare(&rel, false).await.expect_err("no TLS on the server");
    texts.push(format!("{e} {e:?}"));
    for t in &texts {
        assert!(!t.contains("hunter2"), "secret leaked: {t}");
    }
    assert!(texts[0].contains("<redacted>"));
    assert!(texts[4].contains("password"), "the auth failure says what failed: {}", texts[4]);
}

#[tokio::test]
async fn a_role_without_replication_rights_is_refused_clearly() {
    let Some(db) = testkit::test_db("norepl").await else { return };
    let c = db.client().await;
    let role = format!("r_{}", db.name);
    c.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT ALL ON DATABASE {db} TO {role}; GRANT ALL ON SCHEMA public TO {role};
         CREATE TABLE t (id int4 PRIMARY KEY); ALTER TABLE t OWNER TO {role};",
        db = db.name
    ))
    .await
    .expect("setup");
    let mut info = db.conninfo.clone();
    info.user = role;
    info.password = Some(Secret::new("pw"));
    let origin = OriginId::new(format!("postgres:{}", db.name)).expect("origin");
    let src = PgSource::new(PgSourceConfig::new(&origin, info)).expect("source");
    src.prepare(&UpstreamRelation::new("public", "t").expect("rel"), true).await.expect("owner may publish");
    let e = assert_kind(src.subscribe(None).await, SourceErrorKind::Refused);
    assert!(e.message.contains("replication"), "{e}");
}
