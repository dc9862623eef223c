//! The database as plain SQL readers see it: a separate read-only rusqlite
//! connection (what another process opening the file gets) reads views as
//! typed tables named by their qualified names, while the store applies
//! batches and publishes new copies — and only ever sees whole batches and
//! whole copies. Also: every value reads back exactly through the store,
//! whatever SQL shows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsync_core::{
    key, ApplyBatch, BatchSeq, Cell, Column, Identity, JobRecord, JobState, Key, KeyRange, Lsn, OriginId, Persistence,
    Progress, RelationId, RelationSchema, Row, RowOp, SourceRelId, Store, Timestamp, Value, ViewDef, ViewOps,
    ViewRecord,
};
use flashsync_store_sqlite::{Options, SqliteStore};
use rusqlite::{Connection, OpenFlags};

const ORIGIN: &str = "postgres:main";
const POSTS: RelationId = RelationId(1);
const ROWS: i64 = 40;

fn columns(specs: &[(&str, &str)]) -> Vec<Column> {
    specs.iter().map(|(n, t)| Column { name: (*n).into(), type_name: (*t).into() }).collect()
}

/// Postgres-shaped columns, values as the Postgres source makes them.
fn posts_schema() -> RelationSchema {
    RelationSchema::keyed(
        SourceRelId(1),
        columns(&[
            ("id", "int8"),
            ("title", "text"),
            ("score", "float8"),
            ("published", "bool"),
            ("price", "numeric"),
            ("data", "jsonb"),
            ("created_at", "timestamptz"),
            ("payload", "bytea"),
            ("tags", "_text"),
            ("batch", "int4"),
        ]),
        vec![0],
    )
}

fn post(id: i64, batch: i64) -> Row {
    Row(vec![
        Value::Int(id),
        Value::Text(format!("post {id}")),
        Value::Float(id as f64 / 4.0),
        Value::Bool(id % 2 == 0),
        Value::Text(format!("{id}.{:02}", batch % 100)),
        Value::Text(format!(r#"{{"id": {id}, "batch": {batch}, "tags": ["a", "b"]}}"#)),
        // Later ids are later in time; Postgres prints UTC (pinned session).
        Value::Text(format!("2024-01-{:02} {:02}:00:00.{:06}+00", 1 + id / 24, id % 24, batch)),
        Value::Bytes(vec![id as u8, 0, 0xFF]),
        Value::Text("{a,b}".into()),
        Value::Int(batch),
    ])
}

fn view(id: RelationId, namespace: &str, name: &str) -> ViewRecord {
    let def = ViewDef::new(namespace, name, Persistence::Realtime, ORIGIN, "public", name).expect("view");
    ViewRecord { relation_id: id, def }
}

async fn materialize(store: &SqliteStore, v: &ViewRecord, schema: &RelationSchema, rows: Vec<Row>) {
    let mut generation = store.begin_generation(v.relation_id, schema).await.expect("begin generation");
    for chunk in rows.chunks(7) {
        generation.write(chunk.to_vec()).await.expect("write");
    }
    let mut job = JobRecord::new(v.relation_id, &v.def.name, v.def.persistence, Timestamp(0));
    job.state = JobState::Running;
    generation.publish(&job).await.expect("publish");
}

fn batch(seq: u64, views: Vec<ViewOps>) -> ApplyBatch {
    ApplyBatch {
        seq: BatchSeq(seq),
        origin: OriginId::new(ORIGIN).expect("origin"),
        progress: Progress::Commit { end_lsn: Lsn(seq * 10) },
        views,
        jobs: vec![],
        chain: 0,
        commit_time: None,
        capture: Default::default(),
    }
}

fn read_only(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("read-only connection");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    conn
}

fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("mirror.db")
}

/// What one SQL read of the view saw.
struct Seen {
    rows: usize,
    batch: i64,
}

/// One read, as an application would write it, checking the types SQL sees
/// and that every row comes from the same batch.
fn read_posts(conn: &Connection) -> Seen {
    let mut stmt = conn
        .prepare(
            r#"SELECT id, typeof(id), title, typeof(title), score, typeof(score), published, typeof(published),
                      price, typeof(price), price_real, typeof(price_real),
                      json_extract(data, '$.id'), json_extract(data, '$.tags[1]'),
                      created_at, created_at_utc, typeof(payload), length(payload), batch
               FROM "public.posts" ORDER BY created_at"#,
        )
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    let mut seen = Seen { rows: 0, batch: -1 };
    let mut last_id = i64::MIN;
    while let Some(r) = rows.next().expect("row") {
        let id: i64 = r.get(0).expect("id");
        assert_eq!(r.get::<_, String>(1).expect("typeof"), "integer");
        assert_eq!(r.get::<_, String>(2).expect("title"), format!("post {id}"));
        assert_eq!(r.get::<_, String>(3).expect("typeof"), "text");
        assert_eq!(r.get::<_, f64>(4).expect("score"), id as f64 / 4.0);
        assert_eq!(r.get::<_, String>(5).expect("typeof"), "real");
        assert_eq!(r.get::<_, bool>(6).expect("published"), id % 2 == 0);
        assert_eq!(r.get::<_, String>(7).expect("typeof"), "integer");
        let price: String = r.get(8).expect("price");
        assert_eq!(r.get::<_, String>(9).expect("typeof"), "text", "numeric is exact text");
        let price_real: f64 = r.get(10).expect("price_real");
        assert_eq!(price_real, price.parse::<f64>().expect("numeric text"));
        assert_eq!(r.get::<_, String>(11).expect("typeof"), "real");
        assert_eq!(r.get::<_, i64>(12).expect("json id"), id);
        assert_eq!(r.get::<_, String>(13).expect("json tag"), "b");
        let created: String = r.get(14).expect("created_at");
        let utc: String = r.get(15).expect("created_at_utc");
        assert_eq!(&utc[..19], &created[..19], "the UTC helper is SQLite's date format");
        assert_eq!(r.get::<_, String>(16).expect("typeof"), "blob");
        assert_eq!(r.get::<_, i64>(17).expect("length"), 3);
        let batch: i64 = r.get(18).expect("batch");
        // Timestamps sort as text: ORDER BY created_at is id order.
        assert!(id > last_id, "ORDER BY created_at put {id} after {last_id}");
        last_id = id;
        if seen.rows == 0 {
            seen.batch = batch;
        }
        assert_eq!(batch, seen.batch, "one read saw rows of batch {} and of batch {batch}: half a batch", seen.batch);
        seen.rows += 1;
    }
    seen
}

/// Reads the view until `stop` says the writer is done, then once more.
/// Returns the number of reads and the batches seen, in order.
/// `ready` is called after the first read.
fn reader_loop(path: &Path, stop: impl Fn() -> bool, ready: impl FnOnce()) -> (usize, Vec<i64>) {
    let mut ready = Some(ready);
    let conn = read_only(path);
    let mut batches: Vec<i64> = Vec::new();
    let mut reads = 0;
    loop {
        // A read that starts after the writer stopped sees its end.
        let last = stop();
        let seen = read_posts(&conn);
        // A copy republished with more rows, or the batches' rows.
        assert!(seen.rows == ROWS as usize || seen.rows == ROWS as usize + 5, "read {} rows", seen.rows);
        if batches.last() != Some(&seen.batch) {
            assert!(batches.last() < Some(&seen.batch), "went back in time: {batches:?} then {}", seen.batch);
            batches.push(seen.batch);
        }
        reads += 1;
        if let Some(ready) = ready.take() {
            ready();
        }
        if last {
            return (reads, batches);
        }
    }
}

/// The reader process's entry point (ignored unless run by the test below).
#[test]
#[ignore = "run by sql_readers_see_typed_tables_and_only_whole_batches_and_copies as its child process"]
fn sql_reader_child() {
    let (Some(db), Some(stop)) =
        (std::env::var_os("FLASHSYNC_SQL_READER_DB"), std::env::var_os("FLASHSYNC_SQL_READER_STOP"))
    else {
        return;
    };
    let stop = PathBuf::from(stop);
    let (reads, batches) = reader_loop(Path::new(&db), || stop.exists(), || println!("ready"));
    println!("reads {reads}");
    println!("batches {}", batches.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
}

/// Ends the reader process if the test fails before it stops it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this test binary again as [`sql_reader_child`]; its output lines
/// come through the channel.
fn spawn_reader(db: &Path, stop: &Path) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "sql_reader_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("FLASHSYNC_SQL_READER_DB", db)
        .env("FLASHSYNC_SQL_READER_STOP", stop)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the reader process");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may put "test sql_reader_child ... " before the first line.
            let line = line.rsplit(" ... ").next().unwrap_or(&line).trim().to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn sql_readers_see_typed_tables_and_only_whole_batches_and_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = SqliteStore::open(&path, Options::default()).expect("open");
    let v = view(POSTS, "public", "posts");
    futures::executor::block_on(async {
        store.put_view(&v).await.expect("put view");
        materialize(&store, &v, &posts_schema(), (0..ROWS).map(|id| post(id, 0)).collect()).await;
    });
    assert_eq!(read_posts(&read_only(&path)).rows, ROWS as usize);

    // Readers in their own connections read in a loop while batches land:
    // one in a thread of this process, one in another process.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let (path, stop) = (path.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            reader_loop(
                &path,
                || stop.load(Ordering::Relaxed),
                move || {
                    let _ = ready_tx.send(());
                },
            )
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(60)).expect("the reader thread starts reading");
    let stop_file = path.with_extension("stop");
    let (child, lines) = spawn_reader(&path, &stop_file);
    let mut child = KillOnDrop(child);
    // libtest prints its own lines first.
    while lines.recv_timeout(Duration::from_secs(60)).expect("the reader process starts reading") != "ready" {}

    let started = Instant::now();
    let mut seq = 0;
    futures::executor::block_on(async {
        for b in 1..=150i64 {
            seq += 1;
            if b % 50 == 0 {
                // A new copy, swapped in whole: 5 more rows, all of batch b.
                materialize(&store, &v, &posts_schema(), (0..ROWS + 5).map(|id| post(id, b)).collect()).await;
                continue;
            }
            // Every row changes in each batch, some through updates that
            // keep unchanged cells, some through re-inserts.
            let width = posts_schema().columns.len();
            let rows = if b > 50 { ROWS + 5 } else { ROWS };
            let ops = (0..rows)
                .map(|id| {
                    let row = post(id, b);
                    if id % 3 == 0 {
                        let mut new: Vec<Cell> = row.0.into_iter().map(Cell::Set).collect();
                        new[1] = Cell::Unchanged;
                        new[width - 2] = Cell::Unchanged;
                        RowOp::Update { old_key: None, key: key![id], new }
                    } else {
                        RowOp::Insert { key: key![id], row }
                    }
                })
                .collect();
            store
                .apply(batch(seq, vec![ViewOps { relation_id: POSTS, identity: Identity::Key, ops }]))
                .await
                .expect("apply");
            if b % 7 == 0 {
                store.persist().await.expect("persist");
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    std::fs::write(&stop_file, b"").expect("stop the reader process");
    let (reads, batches) = reader.join().expect("the reader thread saw only whole batches and copies");
    println!("thread: {reads} reads saw {} distinct batches in {:?}", batches.len(), started.elapsed());
    assert!(batches.len() >= 2, "the reader never saw the store move: {batches:?}");
    assert_eq!(batches.last(), Some(&150), "the last read saw the last copy");
    let status = child.0.wait().expect("wait for the reader process");
    let report: Vec<String> = lines.iter().collect();
    assert!(status.success(), "the reader process failed (half a batch or copy?): {report:?}");
    let batches: Vec<i64> = report
        .iter()
        .find_map(|line| line.strip_prefix("batches "))
        .expect("the reader process reports what it saw")
        .split(',')
        .map(|b| b.parse().expect("batch number"))
        .collect();
    println!("process: saw {} distinct batches: {report:?}", batches.len());
    assert!(batches.len() >= 2, "the reader process never saw the store move: {batches:?}");
    assert_eq!(batches.last(), Some(&150), "the reader process's last read saw the last copy");

    // What SQL sees is what the store returns.
    let conn = read_only(&path);
    let sql_count: i64 = conn.query_row(r#"SELECT count(*) FROM "public.posts""#, [], |r| r.get(0)).expect("count");
    let rows = futures::executor::block_on(store.scan(POSTS, &KeyRange::default(), usize::MAX)).expect("scan");
    assert_eq!(sql_count as usize, rows.len());
    assert_eq!(rows, (0..ROWS + 5).map(|id| post(id, 150)).collect::<Vec<_>>());
    // Readers can find the upstream types.
    let types: Vec<(String, String, String)> = conn
        .prepare("SELECT name, type_name, sql_type FROM _flashsync_columns WHERE relation_id = 1 ORDER BY position")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .expect("columns");
    assert_eq!(types[4], ("price".into(), "numeric".into(), "TEXT".into()));
    assert_eq!(types[6], ("created_at".into(), "timestamptz".into(), "TEXT".into()));
    // Only one table per view, named by the view; no generation left behind.
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_flashsync\\_%' ESCAPE '\\'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("tables");
    assert_eq!(tables, ["public.posts"]);
}

/// Every value reads back exactly through `get` and `scan`, including those
/// SQL cannot show as they are (NaN, -0.0, a value of another type than its
/// column's); SQL sees their closest form.
#[test]
fn every_value_round_trips_exactly_whatever_sql_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = SqliteStore::open(&path, Options::default()).expect("open");
    let schema = RelationSchema::keyed(
        SourceRelId(2),
        columns(&[("k", "text"), ("i", "int8"), ("f", "float8"), ("b", "bool"), ("n", "numeric"), ("x", "bytea")]),
        vec![0],
    );
    let t = |s: &str| Value::Text(s.into());
    let rows = vec![
        Row(vec![t("a-typed"), Value::Int(-5), Value::Float(1.5), Value::Bool(true), t("1.50"), Value::Bytes(vec![])]),
        Row(vec![t("b-nan"), Value::Null, Value::Float(f64::NAN), Value::Null, t("NaN"), Value::Null]),
        Row(vec![
            t("c-negzero"),
            Value::Int(0),
            Value::Float(-0.0),
            Value::Bool(false),
            t("-0"),
            Value::Bytes(vec![0]),
        ]),
        Row(vec![t("d-mixed"), t("not a number"), Value::Int(3), Value::Int(7), Value::Int(2), t("text")]),
        Row(vec![
            t("e-nul\0"),
            Value::Int(i64::MAX),
            Value::Float(f64::INFINITY),
            Value::Bool(true),
            t("1e3"),
            Value::Bytes(vec![0xFF; 300]),
        ]),
    ];
    let v = view(RelationId(2), "app", "Values");
    futures::executor::block_on(async {
        store.put_view(&v).await.expect("put view");
        materialize(&store, &v, &schema, rows.clone()).await;
        assert_eq!(store.scan(v.relation_id, &KeyRange::default(), usize::MAX).await.expect("scan"), rows);
        for row in &rows {
            let k = Key(vec![row.0[0].clone()]);
            assert_eq!(store.get(v.relation_id, &k).await.expect("get").as_ref(), Some(row));
        }
        // Through apply too, and after a reopen.
        store
            .apply(batch(
                1,
                vec![ViewOps {
                    relation_id: v.relation_id,
                    identity: Identity::Key,
                    ops: vec![RowOp::Insert {
                        key: key!["f-apply"],
                        row: Row(vec![
                            t("f-apply"),
                            Value::Bool(true),
                            Value::Float(-0.0),
                            Value::Null,
                            t("x"),
                            Value::Float(f64::NAN),
                        ]),
                    }],
                }],
            ))
            .await
            .expect("apply");
    });
    let after = futures::executor::block_on(store.scan(v.relation_id, &KeyRange::default(), usize::MAX)).expect("scan");
    drop(store);
    let store = SqliteStore::open(&path, Options::default()).expect("reopen");
    let reopened =
        futures::executor::block_on(store.scan(v.relation_id, &KeyRange::default(), usize::MAX)).expect("scan");
    assert_eq!(reopened, after);
    assert_eq!(reopened.len(), 6);

    let conn = read_only(&path);
    let sql: Vec<(String, String, String, bool)> = conn
        .prepare(r#"SELECT k, typeof(f), quote(f), "_flashsync_exact" IS NOT NULL FROM "app.Values" ORDER BY "_flashsync_key""#)
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect())
        .expect("select");
    let shown: Vec<(&str, &str, &str, bool)> =
        sql.iter().map(|(k, ty, q, exact)| (k.as_str(), ty.as_str(), q.as_str(), *exact)).collect();
    assert_eq!(
        shown,
        [
            ("a-typed", "real", "1.5", false),
            ("b-nan", "null", "NULL", true),
            ("c-negzero", "real", "0.0", true),
            ("d-mixed", "real", "3.0", true),
            ("e-nul\0", "real", "9.0e+999", false),
            ("f-apply", "real", "0.0", true),
        ]
    );
}

/// A full-row view (no key) is a multiset: SQL sees one row per distinct
/// row with its copy count.
#[test]
fn full_row_views_show_copy_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = SqliteStore::open(&path, Options::default()).expect("open");
    let schema = RelationSchema::full_row(SourceRelId(3), columns(&[("a", "int4"), ("b", "text")]));
    let v = view(RelationId(3), "public", "events");
    let row = |a: i64, b: &str| Row(vec![Value::Int(a), Value::Text(b.into())]);
    futures::executor::block_on(async {
        store.put_view(&v).await.expect("put view");
        materialize(&store, &v, &schema, vec![row(1, "x"), row(2, "y"), row(1, "x")]).await;
        assert_eq!(store.count(v.relation_id).await.expect("count"), 3);
    });
    let conn = read_only(&path);
    let got: Vec<(i64, String, i64)> = conn
        .prepare(r#"SELECT a, b, "_flashsync_copies" FROM "public.events" ORDER BY a"#)
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .expect("select");
    assert_eq!(got, [(1, "x".into(), 2), (2, "y".into(), 1)]);
}
