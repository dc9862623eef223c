//! `copy_chunk`: a copy made a key range at a time, each chunk from its own
//! snapshot, split exactly in the order of encoded keys (the order the
//! machine assigns feed changes to chunks by).

use flashsync_core::codec::encode_key;
use flashsync_core::{
    ChunkEnd, CopiedChunk, Key, Persistence, Row, Source, SourceErrorKind, UpstreamRelation, Value, ViewDef, ViewShape,
};
use flashsync_source_pg::testkit::{self, TestDb};
use flashsync_source_pg::{PgSource, PgSourceConfig};

use crate::common::*;

fn rel(t: &str) -> UpstreamRelation {
    UpstreamRelation::new("public", t).expect("relation")
}

/// A row's encoded local key.
fn key_bytes(shape: &ViewShape, row: &Row) -> Vec<u8> {
    encode_key(&shape.local().key_of(row).expect("row fits the key"))
}

/// The rows of a whole `snapshot`, in encoded-key order.
async fn whole(src: &PgSource, r: &UpstreamRelation, shape: &ViewShape) -> Vec<Row> {
    let mut sink = VecSink::default();
    let point = src.snapshot(r, shape, &mut sink).await.expect("snapshot");
    assert_eq!(point.rows, sink.rows.len() as u64);
    let mut rows = sink.rows;
    rows.sort_by_key(|row| key_bytes(shape, row));
    rows
}

/// Copies `r` chunk by chunk until `Done`, checking each chunk against the
/// contract: its rows ascend in encoded-key order (also across chunks), it
/// ends after its own last row, only the last says `Done`, and every chunk
/// but the last copies exactly `size` rows (keys are unique).
async fn chunked(src: &PgSource, r: &UpstreamRelation, shape: &ViewShape, size: u64) -> Vec<Vec<Row>> {
    let mut chunks: Vec<Vec<Row>> = Vec::new();
    let mut after: Option<Key> = None;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        assert!(chunks.len() < 10_000, "no end in sight");
        let mut sink = VecSink::default();
        let CopiedChunk { point, end } =
            src.copy_chunk(r, shape, after.as_ref(), size, &mut sink).await.expect("copy chunk");
        assert!(point.is_well_formed(), "{point:?}");
        assert_eq!(point.rows, sink.rows.len() as u64, "the point counts the chunk's rows");
        for row in &sink.rows {
            let k = key_bytes(shape, row);
            if let Some(prev) = &last_key {
                assert!(prev < &k, "keys must ascend strictly across chunks: {row:?} after {prev:?}");
            }
            last_key = Some(k);
        }
        let rows = sink.rows;
        match end {
            ChunkEnd::After(k) => {
                assert_eq!(rows.len() as u64, size, "a chunk that is not the last is full");
                let last = rows.last().expect("a chunk ending after a key has rows");
                assert_eq!(shape.local().key_of(last).expect("key"), k, "the chunk ends after its last row");
                chunks.push(rows);
                after = Some(k);
            }
            ChunkEnd::Done => {
                assert!((rows.len() as u64) <= size, "{} rows in a chunk of {size}", rows.len());
                chunks.push(rows);
                return chunks;
            }
        }
    }
}

#[tokio::test]
async fn an_int8_key_is_copied_in_chunks_that_add_up_to_the_snapshot() {
    let Some(db) = testkit::test_db("chunk_int8").await else { return };
    let c = db.client().await;
    // 2800 rows, negative and positive, with both ends of the range: the
    // sign-flipped encoding orders them as Postgres does. A multiple of the
    // chunk size, so the last full chunk must already say `Done`.
    c.batch_execute(
        "CREATE TABLE n (id int8 PRIMARY KEY, v text);
         INSERT INTO n SELECT g * 3 - 4000, 'row ' || g FROM generate_series(1, 2798) g;
         INSERT INTO n VALUES (-9223372036854775808, 'min'), (9223372036854775807, 'max');",
    )
    .await
    .expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("n"), false).await.expect("describe");
    let shape = ViewShape::whole(schema);
    let all = whole(&src, &rel("n"), &shape).await;
    assert_eq!(all.len(), 2800);

    let chunks = chunked(&src, &rel("n"), &shape, 700).await;
    assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![700, 700, 700, 700]);
    assert_eq!(chunks.concat(), all);
    assert_eq!(chunks[0][0].0[0], Value::Int(i64::MIN));

    // A size that does not divide the table: the last chunk is short.
    let chunks = chunked(&src, &rel("n"), &shape, 999).await;
    assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![999, 999, 802]);
    assert_eq!(chunks.concat(), all);

    // After the last key nothing remains; a size of 0 still makes progress.
    let mut sink = VecSink::default();
    let top = Key(vec![Value::Int(i64::MAX)]);
    let end = src.copy_chunk(&rel("n"), &shape, Some(&top), 700, &mut sink).await.expect("chunk");
    assert_eq!((end.end, end.point.rows, sink.rows.len()), (ChunkEnd::Done, 0, 0));
    let mut sink = VecSink::default();
    let end = src.copy_chunk(&rel("n"), &shape, None, 0, &mut sink).await.expect("chunk");
    assert_eq!(end.end, ChunkEnd::After(Key(vec![Value::Int(i64::MIN)])));
    assert_eq!(sink.rows.len(), 1);
}

/// The first of these collations the server has that orders text unlike
/// bytes (so the test tells `COLLATE "C"` from the column's own), if any.
async fn non_c_collation(c: &tokio_postgres::Client) -> Option<String> {
    let row = c
        .query_opt(
            "SELECT collname::text FROM pg_collation \
             WHERE collname IN ('und-x-icu', 'en-US-x-icu', 'en_US.utf8', 'en_US') \
               AND collencoding IN (-1, pg_char_to_encoding('UTF8')) \
             ORDER BY array_position(ARRAY['und-x-icu', 'en-US-x-icu', 'en_US.utf8', 'en_US'], collname::text) \
             LIMIT 1",
            &[],
        )
        .await
        .expect("collations");
    row.map(|r| r.get(0))
}

#[tokio::test]
async fn a_composite_key_with_text_splits_in_byte_order_not_the_columns_collation() {
    let Some(db) = testkit::test_db("chunk_text").await else { return };
    let c = db.client().await;
    // The test cluster's databases are C-collated (initdb --locale=C): give
    // the key's text column a linguistic collation, whose order ('a' < 'B'
    // < 'é' < 'Z') is not the bytes' ('B' < 'Z' < 'a' < 'é').
    let collation = non_c_collation(&c).await;
    let collate = match &collation {
        Some(name) => format!("COLLATE \"{name}\""),
        None => {
            eprintln!("no linguistic collation on this server: the text key keeps the database's (C) collation");
            String::new()
        }
    };
    c.batch_execute(&format!(
        "CREATE TABLE p (g int4, name text {collate}, v int8, PRIMARY KEY (g, name));
         INSERT INTO p SELECT g, s, g FROM generate_series(1, 3) g,
             unnest(ARRAY['a', 'B', 'é', 'Z', 'ab', 'a b', 'A', '', 'z', 'ä', '日本', 'Ab', 'aB', 'a''b', E'back\\\\slash']) s;
         INSERT INTO p SELECT g, chr(65 + (i % 60)) || i, i FROM generate_series(1, 3) g, generate_series(1, 1000) i;"
    ))
    .await
    .expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("p"), false).await.expect("describe");
    let shape = ViewShape::whole(schema);
    let all = whole(&src, &rel("p"), &shape).await;
    assert_eq!(all.len(), 3045);

    for size in [700, 97] {
        let chunks = chunked(&src, &rel("p"), &shape, size).await;
        assert_eq!(chunks.concat(), all, "chunks of {size}");
    }
    let chunks = chunked(&src, &rel("p"), &shape, 700).await;
    assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![700, 700, 700, 700, 245]);

    if collation.is_some() {
        // The column's own order differs: a split by it would not be the
        // machine's.
        let own: Vec<(i32, String)> = c
            .query("SELECT g, name FROM p ORDER BY g, name", &[])
            .await
            .expect("own order")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let chunked: Vec<(i32, String)> = all
            .iter()
            .map(|r| match (&r.0[0], &r.0[1]) {
                (Value::Int(g), Value::Text(n)) => (i32::try_from(*g).expect("int4"), n.clone()),
                other => panic!("unexpected key {other:?}"),
            })
            .collect();
        assert_ne!(own, chunked, "the collation should order these keys unlike bytes");
    }

    // Resuming after a text key that is not in the table (between rows).
    let mut sink = VecSink::default();
    let after = Key(vec![Value::Int(2), Value::Text("a".into())]);
    let end = src.copy_chunk(&rel("p"), &shape, Some(&after), 3, &mut sink).await.expect("chunk");
    let above: Vec<Row> = all.iter().filter(|r| key_bytes(&shape, r) > encode_key(&after)).take(3).cloned().collect();
    assert_eq!(sink.rows, above);
    assert_eq!(sink.rows[0].0[1], Value::Text("a b".into()));
    assert_eq!(end.end, ChunkEnd::After(shape.local().key_of(&above[2]).expect("key")));
}

#[tokio::test]
async fn a_filtered_view_is_chunked_over_the_rows_it_keeps() {
    let Some(db) = testkit::test_db("chunk_filter").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE f (id int8 PRIMARY KEY, tenant int4 NOT NULL, body text);
         INSERT INTO f SELECT g, g % 5, 'body ' || g FROM generate_series(1, 3000) g;",
    )
    .await
    .expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("f"), false).await.expect("describe");
    // An OR (it must stay whole next to the key condition), and the key not
    // first among the view's columns.
    let def = ViewDef::new("app", "some", Persistence::Materialized, "postgres:x", "public", "f")
        .expect("def")
        .with_filter("tenant = 2 OR tenant = 3")
        .expect("filter")
        .with_columns(["body", "id"])
        .expect("columns");
    let shape = ViewShape::new(&def, schema).expect("shape");
    let all = whole(&src, &rel("f"), &shape).await;
    assert_eq!(all.len(), 1200);
    assert!(all.iter().all(|r| r.0.len() == 2), "only the view's columns");

    let chunks = chunked(&src, &rel("f"), &shape, 250).await;
    assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![250, 250, 250, 250, 200]);
    assert_eq!(chunks.concat(), all);
    assert_eq!(chunks[0][0], flashsync_core::row!["body 2", 2]);
}

/// `bytea` compares as `memcmp`, a prefix first: the order of its escaped
/// encoding, NULs and all.
#[tokio::test]
async fn a_bytea_key_splits_in_byte_order() {
    let Some(db) = testkit::test_db("chunk_bytea").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE y (k bytea PRIMARY KEY, v int4);
         INSERT INTO y VALUES ('\\x', 0), ('\\x00', 1), ('\\x0000', 2), ('\\x0001', 3), ('\\x01', 4),
             ('\\x00ff', 5), ('\\xff', 6), ('\\xff00', 7), ('\\x7f', 8);
         INSERT INTO y SELECT decode(substr(md5(g::text), 1, 2 + 2 * (g % 6)), 'hex'), g
             FROM generate_series(1, 200) g ON CONFLICT DO NOTHING;",
    )
    .await
    .expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("y"), false).await.expect("describe");
    let shape = ViewShape::whole(schema);
    let all = whole(&src, &rel("y"), &shape).await;
    assert!(all.len() > 150, "{} rows", all.len());
    for size in [3, 40] {
        assert_eq!(chunked(&src, &rel("y"), &shape, size).await.concat(), all, "chunks of {size}");
    }
    let firsts: Vec<&Value> = all.iter().take(3).map(|r| &r.0[0]).collect();
    assert_eq!(firsts, [&Value::Bytes(vec![]), &Value::Bytes(vec![0]), &Value::Bytes(vec![0, 0])]);
}

#[tokio::test]
async fn a_uuid_key_splits_in_its_own_order() {
    let Some(db) = testkit::test_db("chunk_uuid").await else { return };
    let c = db.client().await;
    // Random keys, the ends of the range, and neighbours where a hex digit
    // turns into a letter ('9' < 'a' in ASCII as in value), also behind an
    // integer column.
    c.batch_execute(
        "CREATE TABLE u (id uuid PRIMARY KEY, v int4);
         INSERT INTO u SELECT md5(g::text)::uuid, g FROM generate_series(1, 300) g;
         INSERT INTO u VALUES ('00000000-0000-0000-0000-000000000000', -1),
             ('ffffffff-ffff-ffff-ffff-ffffffffffff', -2), ('90000000-0000-0000-0000-000000000000', -3),
             ('9fffffff-ffff-ffff-ffff-ffffffffffff', -4), ('a0000000-0000-0000-0000-000000000000', -5),
             ('00000000-0000-0000-0000-00000000000a', -6), ('00000000-0000-0000-0000-000000000009', -7);
         CREATE TABLE pair (g int4, id uuid, PRIMARY KEY (g, id));
         INSERT INTO pair SELECT g % 3, md5(g::text)::uuid FROM generate_series(1, 200) g;",
    )
    .await
    .expect("setup");
    let src = source(&db);
    for t in ["u", "pair"] {
        let schema = src.prepare(&rel(t), false).await.expect("describe");
        let shape = ViewShape::whole(schema);
        let all = whole(&src, &rel(t), &shape).await;
        // Postgres's own order is the order of encoded keys.
        let ordered = c
            .query(&format!("SELECT id::text FROM {t} ORDER BY {}", if t == "u" { "id" } else { "g, id" }), &[])
            .await
            .expect("order");
        let ids: Vec<String> = ordered.iter().map(|r| r.get(0)).collect();
        let column = if t == "u" { 0 } else { 1 };
        let copied: Vec<String> = all
            .iter()
            .map(|r| match &r.0[column] {
                Value::Text(s) => s.clone(),
                other => panic!("a uuid read as {other:?}"),
            })
            .collect();
        assert_eq!(copied, ids, "{t}");
        for size in [3, 40] {
            assert_eq!(chunked(&src, &rel(t), &shape, size).await.concat(), all, "{t} in chunks of {size}");
        }
    }
}

#[tokio::test]
async fn keys_of_other_types_and_keyless_tables_are_copied_whole() {
    let Some(db) = testkit::test_db("chunk_whole").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE m (id numeric PRIMARY KEY, v int4);
         INSERT INTO m SELECT g, g FROM generate_series(1, 50) g;
         CREATE TABLE mixed (a int4, b timestamptz, PRIMARY KEY (a, b));
         INSERT INTO mixed SELECT g, '2026-01-01'::timestamptz + g * interval '1 hour' FROM generate_series(1, 50) g;
         CREATE TABLE nokey (v int4);
         INSERT INTO nokey SELECT g % 7 FROM generate_series(1, 50) g;",
    )
    .await
    .expect("setup");
    let src = source(&db);
    for t in ["m", "mixed", "nokey"] {
        let schema = src.prepare(&rel(t), false).await.expect("describe");
        let shape = ViewShape::whole(schema);
        let mut sink = VecSink::default();
        let chunk = src.copy_chunk(&rel(t), &shape, None, 7, &mut sink).await.expect("chunk");
        assert_eq!(chunk.end, ChunkEnd::Done, "{t}");
        assert_eq!((chunk.point.rows, sink.rows.len()), (50, 50), "{t}");
        let mut rows = sink.rows;
        rows.sort();
        let mut expected = whole(&src, &rel(t), &shape).await;
        expected.sort();
        assert_eq!(rows, expected, "{t}");
        // Nor can such a copy resume after a key.
        let key = shape.local().key_of(&rows[0]).expect("key");
        let e = assert_kind(
            src.copy_chunk(&rel(t), &shape, Some(&key), 7, &mut VecSink::default()).await,
            SourceErrorKind::Unsupported,
        );
        assert!(e.message.contains("copied whole"), "{e}");
    }
}

#[tokio::test]
async fn a_key_that_does_not_fit_is_refused_without_showing_it() {
    let Some(db) = testkit::test_db("chunk_badkey").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE b (id int4, name varchar(20), PRIMARY KEY (id, name)); INSERT INTO b VALUES (1, 'x');",
    )
    .await
    .expect("setup");
    let src = source(&db);
    let schema = src.prepare(&rel("b"), false).await.expect("describe");
    let shape = ViewShape::whole(schema);
    for bad in [
        Key(vec![Value::Int(1)]),
        Key(vec![Value::Text("secret".into()), Value::Text("x".into())]),
        Key(vec![Value::Int(1), Value::Text("sec\0ret".into())]),
        Key(vec![Value::Int(1), Value::Null]),
    ] {
        let e = assert_kind(
            src.copy_chunk(&rel("b"), &shape, Some(&bad), 10, &mut VecSink::default()).await,
            SourceErrorKind::Other,
        );
        assert!(e.message.contains("cannot resume") && !e.message.contains("secret"), "{e}");
    }
    // Quotes, backslashes and SQL in a bound value are only a value.
    let mut sink = VecSink::default();
    let after = Key(vec![Value::Int(0), Value::Text("'); DROP TABLE b; --\\".into())]);
    let chunk = src.copy_chunk(&rel("b"), &shape, Some(&after), 10, &mut sink).await.expect("chunk");
    assert_eq!((chunk.end, sink.rows), (ChunkEnd::Done, vec![flashsync_core::row![1, "x"]]));
}

/// `COLLATE "C"` is byte order only in a UTF-8 database: elsewhere a text
/// key is copied whole.
#[tokio::test]
async fn text_keys_in_a_database_of_another_encoding_are_copied_whole() {
    let Some(db) = testkit::test_db("chunk_latin1").await else { return };
    let name = format!("{}_latin1", db.name);
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
        .await
        .expect("create database");
    let mut conninfo = db.conninfo.clone();
    conninfo.dbname = name.clone();
    let latin1 = TestDb { conninfo, name };
    latin1
        .client()
        .await
        .batch_execute(
            "CREATE TABLE t (k text PRIMARY KEY);
             INSERT INTO t SELECT 'k' || g FROM generate_series(1, 20) g;
             CREATE TABLE i (k int8 PRIMARY KEY);
             INSERT INTO i SELECT g FROM generate_series(1, 20) g;",
        )
        .await
        .expect("setup");
    let src = PgSource::new(PgSourceConfig::new(
        &flashsync_core::OriginId::new(format!("postgres:{}", latin1.name)).expect("origin"),
        latin1.conninfo.clone(),
    ))
    .expect("source");
    let schema = src.prepare(&rel("t"), false).await.expect("describe");
    let mut sink = VecSink::default();
    let chunk = src.copy_chunk(&rel("t"), &ViewShape::whole(schema), None, 5, &mut sink).await.expect("chunk");
    assert_eq!((chunk.end, sink.rows.len()), (ChunkEnd::Done, 20));
    // Integer keys do not depend on the encoding.
    let schema = src.prepare(&rel("i"), false).await.expect("describe");
    let mut sink = VecSink::default();
    let chunk = src.copy_chunk(&rel("i"), &ViewShape::whole(schema), None, 5, &mut sink).await.expect("chunk");
    assert_eq!((chunk.end, sink.rows.len()), (ChunkEnd::After(Key(vec![Value::Int(5)])), 5));
}
