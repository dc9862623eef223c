//! Engine acceptance on a real Postgres: views of real tables reach their
//! states and mirror DML in order; values, TOAST, replica identity,
//! identifiers and keepalive acknowledgements end to end.

use crate::common::*;
use flashsync::{Engine, JobState, Persistence, Value};
use flashsync_source_pg::ident::{qualified, quote_ident};
use flashsync_source_pg::testkit::{self, TestDb};

on_every_store!(
    dml_arrives_in_order,
    type_matrix_through_the_engine,
    toasted_values_survive_updates_of_other_columns,
    replica_identity_is_required_for_realtime,
    hostile_identifiers_work_and_inject_nothing,
);

async fn engine_for(kind: StoreKind, db: &TestDb, dir: &std::path::Path) -> (Engine, std::sync::Arc<Probe>) {
    let probe = Probe::new(source_config(db));
    (open_engine(kind, dir, probe.source()).await, probe)
}

/// Inserts, updates, deletes, key-changing updates and TRUNCATE show up
/// locally, each transaction whole and in commit order; a materialized view
/// keeps its copy until refreshed.
async fn dml_arrives_in_order(kind: StoreKind) {
    let Some(db) = testkit::test_db("dml_order").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, name text, qty int);
         INSERT INTO t SELECT g, 'row ' || g, g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, probe) = engine_for(kind, &db, dir.path()).await;
    engine.define(view("public", "t_live", Persistence::Realtime, "public", "t")).await.unwrap();
    engine.define(view("public", "t_copy", Persistence::Materialized, "public", "t")).await.unwrap();
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    assert_eq!(summary.materialized.len(), 1, "{summary:?}");
    assert!(summary.failed.is_empty(), "{summary:?}");
    let live = status(&engine, "public.t_live").await;
    assert_eq!(live.state, JobState::Running);
    assert_eq!(live.slot_id.as_deref(), Some(feed_name(&db).as_str()));
    assert_eq!(status(&engine, "public.t_copy").await.state, JobState::Synced);
    let initial = assert_converges(&engine, "public.t_copy", &c, "public", "t", WAIT).await;
    assert_eq!(initial.len(), 100);

    let steps: &[(&str, &str)] = &[
        ("insert", "INSERT INTO t SELECT g, 'new ' || g, 0 FROM generate_series(101, 110) g"),
        ("update", "UPDATE t SET name = name || ' (upd)', qty = qty * 2 WHERE id % 3 = 0"),
        ("delete", "DELETE FROM t WHERE id % 5 = 0"),
        ("key change", "UPDATE t SET id = 1000 WHERE id = 1"),
        // Move a row away and reuse its key in one transaction: applied in
        // the wrong order, the insert would be overwritten or lost.
        (
            "move and reuse a key",
            "BEGIN; UPDATE t SET id = 2000 WHERE id = 2; INSERT INTO t VALUES (2, 'reused', -2); COMMIT",
        ),
        (
            "swap two keys",
            "BEGIN; UPDATE t SET id = -3 WHERE id = 3; UPDATE t SET id = 3 WHERE id = 4;
             UPDATE t SET id = 4, name = 'was 3' WHERE id = -3; COMMIT",
        ),
        ("shift every key", "UPDATE t SET id = id + 100000"),
        ("one row's life in one transaction", "BEGIN; INSERT INTO t VALUES (50, 'a', 1); UPDATE t SET id = 51, name = 'b' WHERE id = 50; DELETE FROM t WHERE id = 51; INSERT INTO t VALUES (51, 'final', 3); UPDATE t SET qty = qty + 1 WHERE id = 51; COMMIT"),
        ("truncate", "TRUNCATE t"),
        (
            "insert, truncate and insert in one transaction",
            "BEGIN; INSERT INTO t VALUES (7, 'gone', 0); TRUNCATE t;
             INSERT INTO t SELECT g, 'after truncate', g FROM generate_series(1, 5) g; COMMIT",
        ),
        ("rolled back", "BEGIN; DELETE FROM t; INSERT INTO t VALUES (99, 'never', 0); ROLLBACK"),
        ("upsert", "INSERT INTO t VALUES (3, 'upserted', 33), (6, 'new', 6) ON CONFLICT (id) DO UPDATE SET name = excluded.name"),
    ];
    let mut last_seen = None;
    for (what, sql) in steps {
        c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let rows = assert_converges(&engine, "public.t_live", &c, "public", "t", WAIT).await;
        if *what == "truncate" {
            assert!(rows.is_empty());
            assert_eq!(engine.count("public.t_live").await.unwrap(), 0);
        }
        // The status follows the store: the commit that changed the copy is
        // recorded as seen (a rolled back transaction is no commit).
        if *what != "rolled back" {
            let e = engine.clone();
            last_seen = wait_for(&format!("{what}: last_seen_commit to pass {last_seen:?}"), WAIT, move || {
                let e = e.clone();
                async move {
                    let seen = status(&e, "public.t_live").await.last_seen_commit;
                    (seen > last_seen).then_some(seen)
                }
            })
            .await;
        }
    }
    assert_eq!(
        engine.get("public.t_live", &flashsync::Key(vec![Value::Int(51)])).await.unwrap(),
        None,
        "the final state has 1..=5, 3 and 6 only"
    );
    assert_eq!(
        engine.get("public.t_live", &flashsync::Key(vec![Value::Int(3)])).await.unwrap(),
        Some(flashsync::Row(vec![Value::Int(3), Value::Text("upserted".into()), Value::Int(3)]))
    );

    // The materialized copy is the snapshot it took, until refreshed.
    let cols = engine.schema("public.t_copy").await.unwrap().columns;
    assert_eq!(local_text_rows(&engine.scan_all("public.t_copy").await.unwrap()), initial);
    assert_eq!(engine.sync("public.t_copy").await.unwrap().materialized.len(), 1);
    assert_eq!(local_text_rows(&engine.scan_all("public.t_copy").await.unwrap()), initial, "a plain sync re-copied");
    engine.sync_forced("public.t_copy").await.unwrap();
    assert_eq!(
        local_text_rows(&engine.scan_all("public.t_copy").await.unwrap()),
        upstream_text_rows(&c, "public", "t", &cols).await
    );
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.subscribes, 1, "{stats:?}");
    assert_eq!(probe.snapshot_count(), 3, "bootstrap, materialize, forced refresh");
    engine.shutdown().await.unwrap();
}

const TYPES_TABLE: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'très \"content\"');
CREATE TABLE ty (
  id int4 PRIMARY KEY,
  n numeric, f4 float4, f8 float8, i2 int2, i8 int8, b bool, t text, by bytea,
  d date, tm time, ts timestamp, tstz timestamptz, tz timetz, iv interval,
  u uuid, j json, jb jsonb, arr int4[], arr2 text[], arr3 float8[], m mood, o oid,
  vc varchar(10), ch char(4), nm numeric(12, 4), moods mood[]
);";

const TYPES_ROWS: &str = r#"
INSERT INTO ty VALUES
 (1, 'NaN', 'NaN', 'Infinity', 32767, -9223372036854775808, true,
  E'h\u00e9llo w\u00f6rld \U0001F389 tab\there\nnewline \\ back', '\x00ff5c0a0d09',
  'infinity', '23:59:59.999999', '-infinity', 'infinity', '12:00:00+05:30',
  '1 year 2 mons -3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": [1, 2.50, "x"], "a": null}',
  '{"b": [1, 2.50, "x"], "a": null, "u": "\u00fc\ud83c\udf89"}', '{1,NULL,3}', '{{a,b},{"c d",NULL}}',
  '{{{1.5,NaN},{Infinity,-Infinity}},{{NULL,0},{-0,1e-300}}}', 'happy', 4294967295,
  'v', 'ab', 1.5, '{sad,NULL,"très \"content\""}'),
 (2, '1234567890123456789012345678901234567890.0123456789', 1.1, 0.1, -1, 42, false,
  '', '\x', '0044-03-15 BC', '00:00:00', '2000-01-01 12:34:56.789 BC',
  '1999-12-31 23:59:59.123456+02', '00:00:00-01', '-178000000 years',
  '00000000-0000-0000-0000-000000000000', '[]', '{}', '{}', '{{"q\"uote","back\\slash"}}', '{}', 'sad', 0,
  'ten chars!', 'x', -0.00005, '{}'),
 (3, -0.0, '-Infinity', '-0', 0, 0, NULL, 'NULL', '\x5c4e', '2024-02-29', '12:00', '2024-02-29 00:00:00',
  '4713-01-01 00:00:00+00 BC', '23:59:59+14', '0 seconds', NULL, 'null', 'null', '{NULL}', '{}', '{NULL}',
  'très "content"', 1, NULL, NULL, NULL, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, '-9999999999999999999999999999999999999999', 3.4028235e38, 1.7976931348623157e308, -32768,
  9223372036854775807, true, repeat('x', 3000), decode(repeat('00ff', 100), 'hex'), '5874897-12-31',
  '24:00:00', '294276-12-31 23:59:59.999999', '-infinity', '00:00:00+00', '-1 days -00:00:00.000001',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '"str"', '[1, "a", {"k": [true, false, null]}]',
  '{-2147483648,2147483647}', '{"",NULL,"NULL","a,b","{}"}', '{1.1,2.2}', 'ok', 12345,
  '', '    ', 99999999.9999, '{happy,happy}'),
 (6, '1.50', 1, 2, 3, 4, true, '007', '\x31', '2024-01-01', '01:02:03', '2024-01-01 00:00:00',
  '2024-01-01 00:00:00+00', '01:02:03+00', '1', '10000000-0000-0000-0000-000000000001', '1', '1.50',
  '{1}', '{1,2.0}', '{1,2.50}', 'ok', 7, '1e3', '12', 1, '{ok}');
"#;

/// The `Value` variant the Postgres source makes of a column of upstream
/// type `type_name` (NULL aside).
fn variant_of_type(type_name: &str) -> &'static str {
    match type_name {
        "int2" | "int4" | "int8" | "oid" => "Int",
        "float4" | "float8" => "Float",
        "bool" => "Bool",
        "bytea" => "Bytes",
        _ => "Text",
    }
}

fn variant(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Bool",
        Value::Int(_) => "Int",
        Value::Float(_) => "Float",
        Value::Text(_) => "Text",
        Value::Bytes(_) => "Bytes",
    }
}

/// Every value of `rows` has the variant its column's type makes: a store
/// that gives back the text `'1'` of a json column as an integer, or a NaN
/// as NULL, does not round-trip, even where the text forms agree.
fn assert_variants(rows: &[flashsync::Row], columns: &[flashsync_core::Column], what: &str) {
    for row in rows {
        for (v, c) in row.0.iter().zip(columns) {
            if *v != Value::Null {
                assert_eq!(
                    variant(v),
                    variant_of_type(&c.type_name),
                    "{what}: column {} ({}): {v:?}",
                    c.name,
                    c.type_name
                );
            }
        }
    }
}

/// Every supported type, read by a snapshot (materialized view) and decoded
/// from the stream (realtime view), gives identical rows equal to upstream's
/// text forms, with the variants the source made and floats bit for bit
/// (`Value` compares floats by their total order: -0.0 is not 0.0), also
/// when read back after the store was closed and reopened. Row 6 holds text
/// that looks like numbers (`'007'`, json `1`, jsonb `1.50`, numeric
/// `1.50`): a store that let its columns convert them would change them.
async fn type_matrix_through_the_engine(kind: StoreKind) {
    let Some(db) = testkit::test_db("engine_types").await else { return };
    let c = db.client().await;
    c.batch_execute(TYPES_TABLE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = engine_for(kind, &db, dir.path()).await;
    engine.define(view("public", "ty_live", Persistence::Realtime, "public", "ty")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    assert_eq!(engine.count("public.ty_live").await.unwrap(), 0);

    // Rows arrive through the stream; the session's own settings differ
    // from the pinned ones and must not matter.
    c.batch_execute(
        "SET DateStyle = 'SQL, DMY'; SET TimeZone = 'America/New_York'; SET extra_float_digits = 0;
         SET bytea_output = 'escape'; SET IntervalStyle = 'sql_standard';",
    )
    .await
    .unwrap();
    c.batch_execute(TYPES_ROWS).await.unwrap();
    let verify = db.client().await;
    assert_converges(&engine, "public.ty_live", &verify, "public", "ty", WAIT).await;

    engine.define(view("public", "ty_copy", Persistence::Materialized, "public", "ty")).await.unwrap();
    assert_eq!(engine.sync("public.ty_copy").await.unwrap().materialized.len(), 1);
    let streamed = engine.scan_all("public.ty_live").await.unwrap();
    let copied = engine.scan_all("public.ty_copy").await.unwrap();
    assert_eq!(streamed.len(), 6);
    assert_eq!(streamed, copied, "stream and snapshot paths differ");
    let columns = engine.schema("public.ty_live").await.unwrap().columns;
    assert_variants(&streamed, &columns, "streamed");
    assert_variants(&copied, &columns, "copied");
    assert_converges(&engine, "public.ty_copy", &verify, "public", "ty", WAIT).await;
    // Spot checks of exact values.
    let row1 = engine.get("public.ty_live", &flashsync::Key(vec![Value::Int(1)])).await.unwrap().unwrap();
    assert_eq!(row1.0[1], Value::Text("NaN".into()));
    assert!(matches!(row1.0[2], Value::Float(f) if f.is_nan()));
    assert_eq!(row1.0[3], Value::Float(f64::INFINITY));
    assert_eq!(row1.0[8], Value::Bytes(vec![0x00, 0xff, 0x5c, 0x0a, 0x0d, 0x09]));
    let row2 = engine.get("public.ty_live", &flashsync::Key(vec![Value::Int(2)])).await.unwrap().unwrap();
    assert_eq!(row2.0[1], Value::Text("1234567890123456789012345678901234567890.0123456789".into()));
    assert_eq!(row2.0[9], Value::Text("0044-03-15 BC".into()));
    let row3 = engine.get("public.ty_live", &flashsync::Key(vec![Value::Int(3)])).await.unwrap().unwrap();
    assert!(
        matches!(row3.0[3], Value::Float(f) if f == 0.0 && f.is_sign_negative()),
        "-0 lost its sign: {:?}",
        row3.0[3]
    );
    assert_eq!(row3.0[2], Value::Float(f64::NEG_INFINITY));
    let row6 = engine.get("public.ty_live", &flashsync::Key(vec![Value::Int(6)])).await.unwrap().unwrap();
    for (i, want) in [(1, "1.50"), (7, "007"), (16, "1"), (17, "1.50"), (23, "1e3"), (24, "12  ")] {
        assert_eq!(row6.0[i], Value::Text(want.into()), "row 6, column {}", columns[i].name);
    }
    assert_eq!(row6.0[8], Value::Bytes(b"1".to_vec()));
    typed_conversions_agree_with_postgres(&engine, "public.ty_live", &verify).await;

    // Updates (every column re-sent, keys moved) through the stream, then a
    // fresh snapshot: still identical.
    c.batch_execute("UPDATE ty SET id = id + 10, t = coalesce(t, '') || '!'").await.unwrap();
    assert_converges(&engine, "public.ty_live", &verify, "public", "ty", WAIT).await;
    engine.sync_forced("public.ty_copy").await.unwrap();
    let live = engine.scan_all("public.ty_live").await.unwrap();
    assert_eq!(live, engine.scan_all("public.ty_copy").await.unwrap());
    assert_variants(&live, &columns, "after the updates");
    engine.shutdown().await.unwrap();
    drop(engine);

    // Read back from the reopened store: the same values.
    let (engine, _probe) = engine_for(kind, &db, dir.path()).await;
    assert_eq!(engine.scan_all("public.ty_live").await.unwrap(), live, "the reopened store reads other values");
    assert_eq!(engine.scan_all("public.ty_copy").await.unwrap(), live, "the reopened store reads other values");
    engine.shutdown().await.unwrap();
}

/// Typed reads of the type matrix agree with Postgres's own arithmetic on
/// the same values: numeric as an exact Decimal (or refused: NaN, ±Infinity,
/// more digits than a Decimal holds), timestamptz as instants to the
/// microsecond and dates as days (or refused: infinity, years outside
/// chrono's range), uuids, jsonb as JSON; and a row reads into a struct.
async fn typed_conversions_agree_with_postgres(engine: &Engine, view: &str, pg: &tokio_postgres::Client) {
    use std::str::FromStr;
    let expected = pg
        .query(
            "SELECT id, n::text, CASE WHEN n IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE n::text END,
                    CASE WHEN isfinite(tstz) THEN (extract(epoch FROM tstz) * 1000000)::numeric(40, 0)::text END,
                    CASE WHEN isfinite(d) THEN d - date '1970-01-01' END,
                    u::text, jb::text
             FROM ty ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let (mut decimals, mut instants, mut refused) = (0, 0, 0);
    for r in expected {
        let id: i32 = r.get(0);
        let row = engine.get(view, &flashsync::Key(vec![Value::Int(id.into())])).await.unwrap().unwrap();
        // numeric (column 1)
        let finite: Option<String> = r.get(2);
        match (row.0[1].to_decimal(), finite) {
            (Ok(d), Some(text)) => {
                assert_eq!(d, rust_decimal::Decimal::from_str(&text).unwrap(), "row {id}: numeric {text}");
                decimals += 1;
            }
            (Err(_), Some(text)) => {
                let digits = text.chars().filter(char::is_ascii_digit).count();
                assert!(digits > 28, "row {id}: numeric {text} fits a Decimal but was refused");
                refused += 1;
            }
            (Err(_), None) => refused += 1,
            (Ok(d), None) => panic!("row {id}: NaN/Infinity/NULL read as {d}"),
        }
        // timestamptz (column 12)
        let micros: Option<String> = r.get(3);
        match (row.0[12].to_datetime_utc(), micros) {
            (Ok(t), Some(m)) => {
                assert_eq!(t.timestamp_micros(), m.parse::<i64>().unwrap(), "row {id}: timestamptz");
                instants += 1;
            }
            (Err(e), Some(m)) => panic!("row {id}: a finite timestamptz ({m} µs) was refused: {e}"),
            (Ok(t), None) => panic!("row {id}: infinity/NULL read as {t}"),
            (Err(_), None) => refused += 1,
        }
        // date (column 9): finite dates beyond chrono's years are refused.
        let days: Option<i32> = r.get(4);
        match (row.0[9].to_naive_date(), days) {
            (Ok(d), Some(k)) => {
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
                assert_eq!((d - epoch).num_days(), i64::from(k), "row {id}: date");
            }
            (Err(_), Some(k)) => assert!(k.unsigned_abs() > 262_000 * 365, "row {id}: date {k} days refused"),
            (Ok(d), None) => panic!("row {id}: infinity/NULL read as {d}"),
            (Err(_), None) => {}
        }
        // uuid (15), jsonb (17)
        let uuid: Option<String> = r.get(5);
        assert_eq!(row.0[15].to_uuid().ok().map(|u| u.to_string()), uuid, "row {id}: uuid");
        let jsonb: Option<String> = r.get(6);
        let want = jsonb.map(|j| serde_json::from_str::<serde_json::Value>(&j).unwrap());
        assert_eq!(row.0[17].to_json().ok(), want, "row {id}: jsonb");
    }
    assert!(
        decimals >= 2 && instants >= 3 && refused >= 4,
        "{decimals} decimals, {instants} instants, {refused} refused"
    );

    // A row into the app's own struct, by column name.
    #[derive(Debug, serde::Deserialize)]
    struct Ty {
        id: i64,
        n: rust_decimal::Decimal,
        tstz: chrono::DateTime<chrono::Utc>,
        u: String,
        jb: serde_json::Value,
        arr: String,
        moods: Option<String>,
    }
    let six: Ty = engine.get_as(view, &flashsync::Key(vec![Value::Int(6)])).await.unwrap().unwrap();
    assert_eq!((six.id, six.n.to_string(), six.u.as_str()), (6, "1.50".into(), "10000000-0000-0000-0000-000000000001"));
    assert_eq!(six.tstz.timestamp(), 1_704_067_200);
    assert_eq!(six.jb, serde_json::json!(1.50));
    assert_eq!((six.arr.as_str(), six.moods.as_deref()), ("{1}", Some("{ok}")));
}

/// An out-of-line, incompressible value (> 8 KB) survives updates of other
/// columns: pgoutput sends it as "unchanged" and the local value is kept.
async fn toasted_values_survive_updates_of_other_columns(kind: StoreKind) {
    let Some(db) = testkit::test_db("engine_toast").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE big (id int4 PRIMARY KEY, doc text, bin bytea, n int4);
         ALTER TABLE big ALTER COLUMN doc SET STORAGE EXTERNAL;
         INSERT INTO big SELECT 1, string_agg(md5(random()::text), ''), decode(string_agg(md5(random()::text), ''), 'hex'), 0
           FROM generate_series(1, 400);",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = engine_for(kind, &db, dir.path()).await;
    engine.define(view("public", "big_live", Persistence::Realtime, "public", "big")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    // Row 2 arrives through the stream.
    c.batch_execute(
        "INSERT INTO big SELECT 2, string_agg(md5(random()::text), ''), decode(string_agg(md5(random()::text), ''), 'hex'), 0
           FROM generate_series(1, 400)",
    )
    .await
    .unwrap();
    let stored: i64 = c
        .query_one("SELECT count(*) FROM big WHERE pg_column_size(doc) > 8192 AND octet_length(doc) > 8192", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2, "the values must be stored out of line, uncompressed");
    let before = assert_converges(&engine, "public.big_live", &c, "public", "big", WAIT).await;

    c.batch_execute("UPDATE big SET n = n + 1").await.unwrap();
    c.batch_execute("BEGIN; UPDATE big SET n = n + 1 WHERE id = 1; UPDATE big SET n = n + 10 WHERE id = 2; COMMIT")
        .await
        .unwrap();
    let after = assert_converges(&engine, "public.big_live", &c, "public", "big", WAIT).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b[1], a[1], "doc changed");
        assert_eq!(b[2], a[2], "bin changed");
        assert!(a[1].as_ref().is_some_and(|d| d.len() > 8192));
    }
    let row = engine.get("public.big_live", &flashsync::Key(vec![Value::Int(2)])).await.unwrap().unwrap();
    assert_eq!(row.0[3], Value::Int(11));
    // Changing the TOASTed value itself arrives too.
    c.batch_execute("UPDATE big SET doc = doc || 'tail', n = 0 WHERE id = 1").await.unwrap();
    assert_converges(&engine, "public.big_live", &c, "public", "big", WAIT).await;
    engine.shutdown().await.unwrap();
}

/// No primary key and REPLICA IDENTITY DEFAULT: the realtime job fails with
/// a clear reason (a materialized view of it works). With REPLICA IDENTITY
/// FULL it runs, duplicate identical rows included.
async fn replica_identity_is_required_for_realtime(kind: StoreKind) {
    let Some(db) = testkit::test_db("engine_identity").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE logs (k int, msg text);
         INSERT INTO logs VALUES (1, 'a'), (1, 'a'), (2, 'b');",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = engine_for(kind, &db, dir.path()).await;
    let events = Events::collect(&engine);
    engine.define(view("public", "logs_live", Persistence::Realtime, "public", "logs")).await.unwrap();
    engine.define(view("public", "logs_copy", Persistence::Materialized, "public", "logs")).await.unwrap();
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.materialized.len(), 1, "{summary:?}");
    assert_eq!(summary.failed.len(), 1, "{summary:?}");
    let st = status(&engine, "public.logs_live").await;
    assert_eq!(st.state, JobState::Failed);
    let err = st.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("has no primary key and REPLICA IDENTITY DEFAULT") && err.contains("REPLICA IDENTITY FULL"),
        "unclear last_error: {err:?}"
    );
    assert!(err.contains("logs"), "last_error does not name the table: {err:?}");
    events.wait_error("REPLICA IDENTITY").await;
    assert_eq!(engine.count("public.logs_copy").await.unwrap(), 3);

    c.batch_execute("ALTER TABLE logs REPLICA IDENTITY FULL").await.unwrap();
    let summary = engine.sync_forced("public.logs_live").await.unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    let st = status(&engine, "public.logs_live").await;
    assert_eq!((st.state, st.last_error), (JobState::Running, None));
    assert_converges(&engine, "public.logs_live", &c, "public", "logs", WAIT).await;
    let steps = [
        "INSERT INTO logs VALUES (1, 'a'), (1, 'a'), (3, NULL), (3, NULL)",
        "DELETE FROM logs WHERE ctid = (SELECT ctid FROM logs WHERE k = 1 LIMIT 1)",
        "UPDATE logs SET msg = 'changed' WHERE ctid = (SELECT ctid FROM logs WHERE k = 1 LIMIT 1)",
        "UPDATE logs SET k = 4 WHERE k = 3",
        "DELETE FROM logs WHERE ctid = (SELECT ctid FROM logs WHERE k = 4 LIMIT 1)",
        "UPDATE logs SET msg = 'all'",
        "INSERT INTO logs SELECT 9, 'dup' FROM generate_series(1, 50)",
        "DELETE FROM logs WHERE ctid IN (SELECT ctid FROM logs WHERE k = 9 LIMIT 20)",
    ];
    for sql in steps {
        c.batch_execute(sql).await.unwrap();
        assert_converges(&engine, "public.logs_live", &c, "public", "logs", WAIT).await;
    }
    assert_eq!(engine.count("public.logs_live").await.unwrap(), 35);
    assert!(events.conflicts().is_empty(), "{:?}", events.conflicts());
    engine.shutdown().await.unwrap();
}

/// Schema, table and column names with quotes, spaces, unicode and SQL in
/// them work end to end and inject nothing.
async fn hostile_identifiers_work_and_inject_nothing(kind: StoreKind) {
    let Some(db) = testkit::test_db("engine_idents").await else { return };
    let c = db.client().await;
    let schema = "Sch \"ëma\"; DROP TABLE guard; --";
    let table = "Tä'ble\"); DELETE FROM guard; --";
    let (id_col, name_col) = ("I d \"k\"", "na'me); DROP TABLE guard; --");
    assert!(schema.len() <= 63 && table.len() <= 63);
    c.batch_execute(&format!(
        "CREATE TABLE guard (x int); INSERT INTO guard VALUES (1);
         CREATE SCHEMA {s};
         CREATE TABLE {t} ({i} bigint PRIMARY KEY, {n} text);
         INSERT INTO {t} VALUES (1, 'one'), (2, 'two');",
        s = quote_ident(schema),
        t = qualified(schema, table),
        i = quote_ident(id_col),
        n = quote_ident(name_col),
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = engine_for(kind, &db, dir.path()).await;
    let (ns, live, copy) = ("ns \"q\".x ü", "live, \"1\" 🎉", "copy.\"2\"");
    engine.define(view(ns, live, Persistence::Realtime, schema, table)).await.unwrap();
    engine.define(view(ns, copy, Persistence::Materialized, schema, table)).await.unwrap();
    let summary = engine.sync(sel(ns, "*")).await.unwrap();
    assert_eq!((summary.realtime.len(), summary.materialized.len()), (1, 1), "{summary:?}");
    let (live_sel, copy_sel) = (sel(ns, live), sel(ns, copy));
    assert_converges(&engine, &copy_sel, &c, schema, table, WAIT).await;
    let schema_cols: Vec<String> =
        engine.schema(&live_sel).await.unwrap().columns.into_iter().map(|c| c.name).collect();
    assert_eq!(schema_cols, vec![id_col.to_owned(), name_col.to_owned()]);

    let t = qualified(schema, table);
    let (i, n) = (quote_ident(id_col), quote_ident(name_col));
    for sql in [
        format!("INSERT INTO {t} VALUES (3, 'O''Reilly \"; DROP TABLE guard; --')"),
        format!("UPDATE {t} SET {n} = {n} || '!' WHERE {i} = 1"),
        format!("UPDATE {t} SET {i} = 20 WHERE {i} = 2"),
        format!("DELETE FROM {t} WHERE {i} = 1"),
        format!("TRUNCATE {t}"),
        format!("INSERT INTO {t} VALUES (4, 'after')"),
    ] {
        c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_converges(&engine, &live_sel, &c, schema, table, WAIT).await;
    }
    engine.sync_forced(copy_sel.as_str()).await.unwrap();
    assert_converges(&engine, &copy_sel, &c, schema, table, WAIT).await;
    let forgotten = engine.forget(live_sel.as_str()).await.unwrap();
    assert_eq!(forgotten.views.len(), 1);
    assert!(forgotten.warnings.is_empty(), "{forgotten:?}");

    // Nothing was injected: the guard row and every table are still there.
    let guard: i64 = c.query_one("SELECT count(*) FROM guard", &[]).await.unwrap().get(0);
    assert_eq!(guard, 1);
    let tables: Vec<String> = c
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, vec![format!("{schema}.{table}"), "public.guard".to_owned()]);
    engine.shutdown().await.unwrap();
}

/// Writes only to tables outside every view still advance the slot's
/// `confirmed_flush_lsn`: the engine acknowledges keepalive positions once
/// they are durable, so unrelated WAL does not pin the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_writes_advance_the_slot() {
    let Some(db) = testkit::test_db("engine_keepalive").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE watched (id int PRIMARY KEY, v text);
         CREATE TABLE other (id int PRIMARY KEY, v text);
         INSERT INTO watched VALUES (1, 'x');",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = engine_for(StoreKind::Fjall, &db, dir.path()).await;
    engine.define(view("public", "watched", Persistence::Realtime, "public", "watched")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    let slot = feed_name(&db);
    let start = confirmed_flush(&c, &slot).await.unwrap();
    let commits = engine.stats().await.unwrap().commits_applied;

    for round in 0..3 {
        for i in 0..100 {
            c.execute("INSERT INTO other VALUES ($1, repeat('y', 200))", &[&(round * 1000 + i)]).await.unwrap();
        }
        let target = current_lsn(&c).await;
        assert!(target > start);
        let (c2, slot2) = (&c, &slot);
        wait_for(&format!("confirmed_flush_lsn to reach {target} (round {round})"), WAIT, move || async move {
            confirmed_flush(c2, slot2).await.filter(|l| *l >= target)
        })
        .await;
    }
    // Nothing was applied for those writes, and the view is untouched.
    assert_eq!(engine.stats().await.unwrap().commits_applied, commits);
    assert_eq!(engine.count("public.watched").await.unwrap(), 1);
    // The watched table still flows.
    c.batch_execute("INSERT INTO watched VALUES (2, 'y')").await.unwrap();
    assert_converges(&engine, "public.watched", &c, "public", "watched", WAIT).await;
    engine.shutdown().await.unwrap();
}

/// With its only realtime view stopped, an origin holds no walsender (a
/// server process, and the slot's WAL pinned by an open connection); a
/// resume connects again and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_last_realtime_view_releases_the_walsender() {
    let Some(db) = testkit::test_db("stop_walsender").await else { return };
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = engine_for(StoreKind::Fjall, &db, dir.path()).await;
    engine.define(view("public", "t_live", Persistence::Realtime, "public", "t")).await.unwrap();
    engine.sync("*").await.unwrap();
    let slot = feed_name(&db);
    slot_active(&c, &slot, true).await;
    engine.stop("public.t_live").await.unwrap();
    slot_active(&c, &slot, false).await;
    c.batch_execute("INSERT INTO t VALUES (2, 'while stopped')").await.unwrap();
    engine.resume("public.t_live").await.unwrap();
    slot_active(&c, &slot, true).await;
    assert_converges(&engine, "public.t_live", &c, "public", "t", WAIT).await;
    engine.shutdown().await.unwrap();
}

/// Waits until `slot` is (or is not) held by a walsender.
async fn slot_active(c: &tokio_postgres::Client, slot: &str, want: bool) {
    wait_for(&format!("slot {slot} active = {want}"), WAIT, || async move {
        let row = c.query_one("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).await.ok()?;
        (row.get::<_, bool>(0) == want).then_some(())
    })
    .await;
}

/// Views of one table have the same columns whatever their persistence:
/// generated columns are left out of both (pgoutput does not send them, so
/// a realtime view could not keep them up to date).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_are_left_out_of_every_view() {
    let Some(db) = testkit::test_db("generated_cols").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE g (id bigint PRIMARY KEY, price int, doubled int GENERATED ALWAYS AS (price * 2) STORED, note text);
         INSERT INTO g (id, price, note) VALUES (1, 10, 'a'), (2, 20, 'b');",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _probe) = engine_for(StoreKind::Fjall, &db, dir.path()).await;
    engine.define(view("public", "g_live", Persistence::Realtime, "public", "g")).await.unwrap();
    engine.define(view("public", "g_copy", Persistence::Materialized, "public", "g")).await.unwrap();
    let s = engine.sync("*").await.unwrap();
    assert!(s.failed.is_empty(), "{s:?}");
    c.batch_execute("UPDATE g SET price = 11 WHERE id = 1").await.unwrap();
    let names = |e: &Engine, v: &'static str| {
        let e = e.clone();
        async move { e.schema(v).await.unwrap().columns.into_iter().map(|c| c.name).collect::<Vec<_>>() }
    };
    assert_eq!(names(&engine, "public.g_live").await, ["id", "price", "note"]);
    assert_eq!(names(&engine, "public.g_copy").await, ["id", "price", "note"], "same columns as the realtime view");
    let rows = assert_converges(&engine, "public.g_live", &c, "public", "g", WAIT).await;
    assert_eq!(rows.len(), 2);
    engine.shutdown().await.unwrap();
}
