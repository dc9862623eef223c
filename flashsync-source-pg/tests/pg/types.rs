//! The same row read by the snapshot and decoded from the feed is the same
//! `Row`, for every supported type (DESIGN §4.6); unchanged TOAST values
//! arrive as `Cell::Unchanged` (§4.7).

use flashsync_core::{Cell, Change, Row, Source, StreamEvent, UpstreamRelation, Value};
use flashsync_source_pg::testkit;

use crate::common::*;

const TABLE: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE ty (
  id int4 PRIMARY KEY,
  n numeric, f4 float4, f8 float8, i2 int2, i8 int8, b bool, t text, by bytea,
  d date, tm time, ts timestamp, tstz timestamptz, tz timetz, iv interval,
  u uuid, j json, jb jsonb, arr int4[], arr2 text[], m mood, o oid,
  vc varchar(10), ch char(4), nm numeric(12, 4)
);";

const ROWS: &str = r#"
INSERT INTO ty VALUES
 (1, 'NaN', 'NaN', 'Infinity', 32767, -9223372036854775808, true,
  E'h\u00e9llo w\u00f6rld \U0001F389 tab\there\nnewline \\ back', '\x00ff5c0a0d09',
  'infinity', '23:59:59.999999', '-infinity', 'infinity', '12:00:00+05:30',
  '1 year 2 mons -3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": [1, 2.50, "x"], "a": null}',
  '{"b": [1, 2.50, "x"], "a": null}', '{1,NULL,3}', '{{a,b},{"c d",NULL}}', 'happy', 4294967295,
  'v', 'ab', 1.5),
 (2, '1234567890123456789012345678901234567890.0123456789', 1.1, 0.1, -1, 42, false,
  '', '\x', '0044-03-15 BC', '00:00:00', '2000-01-01 12:34:56.789 BC',
  '1999-12-31 23:59:59.123456+02', '00:00:00-01', '-178000000 years',
  '00000000-0000-0000-0000-000000000000', '[]', '{}', '{}', '{{"q\"uote","back\\slash"}}', 'sad', 0,
  'ten chars!', 'x', -0.00005),
 (3, -0.0, '-Infinity', '-0', 0, 0, NULL, 'NULL', '\x5c4e', '2024-02-29', '12:00', '2024-02-29 00:00:00',
  '2024-02-29 00:00:00+00', '23:59:59+14', '0 seconds', NULL, 'null', 'null', '{NULL}', '{}', NULL, 1,
  NULL, NULL, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

#[tokio::test]
async fn snapshot_and_feed_produce_identical_rows_for_every_type() {
    let Some(db) = testkit::test_db("types").await else { return };
    let c = db.client().await;
    c.batch_execute(TABLE).await.expect("setup");
    let src = source(&db);
    let rel = UpstreamRelation::new("public", "ty").expect("rel");
    let schema = src.prepare(&rel, true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");
    // A session with other settings must not change what is read.
    c.batch_execute("SET DateStyle = 'SQL, DMY'; SET TimeZone = 'America/New_York'; SET extra_float_digits = 0; SET bytea_output = 'escape'; SET IntervalStyle = 'iso_8601';")
        .await
        .expect("session");
    c.batch_execute(ROWS).await.expect("insert");

    let t = next_txn(&mut sub).await;
    let fed: Vec<Row> = t
        .events
        .iter()
        .map(|e| match e {
            StreamEvent::Change(Change::Insert { new, .. }) => new.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let mut sink = VecSink::default();
    src.snapshot(&rel, &flashsync_core::ViewShape::whole(schema.clone()), &mut sink).await.expect("snapshot");
    let mut copied = sink.rows;
    copied.sort();
    assert_eq!(fed.len(), 4);
    for (f, s) in fed.iter().zip(&copied) {
        assert_eq!(f, s, "feed and snapshot differ");
    }

    let col = |r: &Row, name: &str| {
        let i = schema.columns.iter().position(|c| c.name == name).expect("column");
        r.0[i].clone()
    };
    let text = |s: &str| Value::Text(s.into());
    let (r1, r2, r3, r4) = (&fed[0], &fed[1], &fed[2], &fed[3]);
    assert_eq!(col(r1, "n"), text("NaN"));
    assert_eq!(col(r1, "f4"), Value::Float(f64::NAN));
    assert_eq!(col(r1, "f8"), Value::Float(f64::INFINITY));
    assert_eq!(col(r3, "f4"), Value::Float(f64::NEG_INFINITY));
    assert_eq!(col(r3, "f8"), Value::Float(-0.0));
    assert_eq!(col(r2, "f4"), Value::Float(f64::from(1.1f32)));
    assert_eq!(col(r2, "f8"), Value::Float(0.1));
    assert_eq!(col(r1, "i2"), Value::Int(32767));
    assert_eq!(col(r1, "i8"), Value::Int(i64::MIN));
    assert_eq!(col(r1, "o"), Value::Int(4_294_967_295));
    assert_eq!(col(r1, "b"), Value::Bool(true));
    assert_eq!(col(r1, "t"), text("h\u{e9}llo w\u{f6}rld \u{1F389} tab\there\nnewline \\ back"));
    assert_eq!(col(r1, "by"), Value::Bytes(vec![0x00, 0xff, 0x5c, 0x0a, 0x0d, 0x09]));
    assert_eq!(col(r2, "by"), Value::Bytes(vec![]));
    assert_eq!(col(r3, "by"), Value::Bytes(b"\\N".to_vec()));
    assert_eq!(col(r3, "t"), text("NULL"));
    assert_eq!(col(r2, "n"), text("1234567890123456789012345678901234567890.0123456789"));
    assert_eq!(col(r1, "d"), text("infinity"));
    assert_eq!(col(r2, "d"), text("0044-03-15 BC"));
    assert_eq!(col(r1, "ts"), text("-infinity"));
    assert_eq!(col(r2, "ts"), text("2000-01-01 12:34:56.789 BC"));
    assert_eq!(col(r2, "tstz"), text("1999-12-31 21:59:59.123456+00"));
    assert_eq!(col(r1, "iv"), text("1 year 2 mons -3 days +04:05:06.789"));
    assert_eq!(col(r1, "arr"), text("{1,NULL,3}"));
    assert_eq!(col(r1, "arr2"), text("{{a,b},{\"c d\",NULL}}"));
    assert_eq!(col(r1, "jb"), text("{\"a\": null, \"b\": [1, 2.50, \"x\"]}"));
    assert_eq!(col(r1, "j"), text("{\"b\": [1, 2.50, \"x\"], \"a\": null}"));
    assert_eq!(col(r1, "m"), text("happy"));
    assert_eq!(col(r1, "ch"), text("ab  "));
    assert_eq!(col(r2, "nm"), text("-0.0001"));
    assert!(r4.0[1..].iter().all(|v| *v == Value::Null), "{r4:?}");
}

#[tokio::test]
async fn unchanged_toasted_values_arrive_as_unchanged() {
    let Some(db) = testkit::test_db("toast").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE big (id int4 PRIMARY KEY, doc text, n int4);
         ALTER TABLE big ALTER COLUMN doc SET STORAGE EXTERNAL;",
    )
    .await
    .expect("setup");
    let src = source(&db);
    let rel = UpstreamRelation::new("public", "big").expect("rel");
    src.prepare(&rel, true).await.expect("prepare");
    let mut sub = src.subscribe(None).await.expect("subscribe");
    // ~10 KB of random hex: above the TOAST threshold and stored out of line.
    c.batch_execute("INSERT INTO big SELECT 1, string_agg(md5(random()::text), ''), 0 FROM generate_series(1, 320)")
        .await
        .expect("insert");
    let doc: String = c.query_one("SELECT doc FROM big", &[]).await.expect("doc").get(0);
    assert!(doc.len() > 8192);
    c.batch_execute("UPDATE big SET n = 1").await.expect("update other column");
    c.batch_execute("UPDATE big SET doc = doc || 'x', n = 2").await.expect("update doc");

    let ins = next_txn(&mut sub).await;
    match ins.events.as_slice() {
        [StreamEvent::Change(Change::Insert { new, .. })] => assert_eq!(new.0[1], Value::Text(doc.clone())),
        other => panic!("unexpected {other:?}"),
    }
    let upd = next_txn(&mut sub).await;
    match upd.events.as_slice() {
        [StreamEvent::Change(Change::Update { old: None, new, .. })] => {
            assert_eq!(new, &vec![Cell::Set(Value::Int(1)), Cell::Unchanged, Cell::Set(Value::Int(1))]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let upd = next_txn(&mut sub).await;
    match upd.events.as_slice() {
        [StreamEvent::Change(Change::Update { new, .. })] => {
            assert_eq!(new[1], Cell::Set(Value::Text(format!("{doc}x"))));
        }
        other => panic!("unexpected {other:?}"),
    }
}
