//! Resumable copies (guarantee 8) under `SIGKILL`.
//!
//! A child process (this test binary, re-run as `checkpoint_child`)
//! publishes a small copy of a view, then makes a new copy of it in 20
//! chunks of 1000 rows, checkpointing after each with the feed's changes to
//! the part already copied (a delete and an update) and a job record whose
//! `copy` says how far it got. Then it writes three more chunks without a
//! checkpoint, says so, and waits to be killed.
//!
//! The parent kills it with `SIGKILL` — once after the last write, and at
//! random moments during the checkpoints — reopens the store and checks that
//! the published copy is untouched, that the job record names a checkpoint
//! at least as late as the last one the child reported, that the resumed
//! generation holds exactly the rows of that checkpoint (read from its
//! table with SQL: rows written after it are gone), and that the copy goes
//! on from there and publishes exactly the whole view, leaving no
//! generation table or checkpoint behind.
//!
//! The seed of the random kills is printed; rerun with
//! `FLASHSYNC_CHECKPOINT_SEED=<seed>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flashsync_core::rng::Rng;
use flashsync_core::{
    key, row, Cell, Column, CopyCheckpoint, Generation, Identity, JobRecord, JobState, Lsn, Persistence, RelationId,
    RelationSchema, Row, RowOp, SourceRelId, Store, StoreErrorKind, Timestamp, Value, ViewDef, ViewOps, ViewRecord,
};
use flashsync_store_sqlite::{Options, SqliteStore};
use rusqlite::{Connection, OpenFlags};

const V: RelationId = RelationId(7);
const CHUNK: i64 = 1000;
/// Chunks the child checkpoints.
const CHECKPOINTS: u64 = 20;
/// Chunks it writes after the last checkpoint.
const UNCHECKPOINTED: u64 = 3;

fn schema() -> RelationSchema {
    let columns =
        [("id", "int8"), ("val", "text"), ("n", "int8")].map(|(n, t)| Column { name: n.into(), type_name: t.into() });
    RelationSchema::keyed(SourceRelId(3), columns.to_vec(), vec![0])
}

fn view() -> ViewRecord {
    let def = ViewDef::new("app", "items", Persistence::Realtime, "postgres:main", "public", "items").expect("view");
    ViewRecord { relation_id: V, def }
}

fn db(dir: &Path) -> PathBuf {
    dir.join("store.db")
}

/// The published copy the new one replaces.
fn old_rows() -> Vec<Row> {
    (0..10).map(|i| row![i * 3, "old", -1]).collect()
}

/// The rows of chunk `c` (1-based): keys `(c-1)·1000 .. c·1000`.
fn chunk(c: u64) -> Vec<Row> {
    let start = (c as i64 - 1) * CHUNK;
    (start..start + CHUNK).map(|i| row![i, format!("r{i}"), c as i64]).collect()
}

/// The feed's changes taken into the copy by checkpoint `c`: they touch
/// the chunk before, already copied.
fn changes(c: u64) -> Vec<RowOp> {
    if c < 2 {
        return Vec::new();
    }
    let below = (c as i64 - 1) * CHUNK;
    vec![
        RowOp::Delete { key: key![below - 7] },
        RowOp::Update {
            old_key: None,
            key: key![below - 3],
            new: vec![Cell::Set(Value::Int(below - 3)), Cell::Set(format!("amended {c}").into()), Cell::Unchanged],
        },
    ]
}

/// The job record checkpoint `c` writes.
fn job(c: u64) -> JobRecord {
    let v = view();
    let mut job = JobRecord::new(V, &v.def.name, v.def.persistence, Timestamp(c));
    job.copy = Some(Box::new(CopyCheckpoint {
        segments: Vec::new(),
        after: key![c as i64 * CHUNK - 1],
        rows: c * CHUNK as u64,
        through: Lsn(c),
    }));
    job
}

/// The copy's rows as of checkpoint `c`, in key order.
fn model(c: u64) -> Vec<Row> {
    let mut rows = BTreeMap::new();
    for i in 1..=c {
        for row in chunk(i) {
            rows.insert(int(&row.0[0]), row);
        }
        for op in changes(i) {
            match op {
                RowOp::Delete { key } => {
                    rows.remove(&int(&key.0[0]));
                }
                RowOp::Update { key, new, .. } => {
                    let row = rows.get_mut(&int(&key.0[0])).expect("updates touch copied rows");
                    for (cell, value) in new.into_iter().zip(row.0.iter_mut()) {
                        if let Cell::Set(v) = cell {
                            *value = v;
                        }
                    }
                }
                _ => unreachable!("only deletes and updates"),
            }
        }
    }
    rows.into_values().collect()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("keys are integers, got {other:?}"),
    }
}

/// Writes chunks `from..=to` into `generation`, checkpointing after each
/// (printing `checkpoint <c>` once it returned, when `say`).
async fn fill(generation: &mut Box<dyn Generation>, from: u64, to: u64, say: bool) {
    for c in from..=to {
        generation.write(chunk(c)).await.expect("write a chunk");
        let ops = ViewOps { relation_id: V, identity: Identity::Key, ops: changes(c) };
        let report = generation.checkpoint(ops, &job(c)).await.expect("checkpoint");
        assert!(report.conflicts.is_empty(), "checkpoint {c} conflicted: {:?}", report.conflicts);
        if say {
            println!("checkpoint {c}");
        }
    }
}

// ---------------------------------------------------------------------------
// The child.

async fn child(dir: &Path) {
    let store = SqliteStore::open(db(dir), Options::default()).expect("child opens the store");
    let v = view();
    store.put_view(&v).await.expect("put view");
    let mut generation = store.begin_generation(V, &schema()).await.expect("begin");
    generation.write(old_rows()).await.expect("write");
    generation.publish(&JobRecord::new(V, &v.def.name, v.def.persistence, Timestamp(0))).await.expect("publish");

    let mut generation = store.begin_generation(V, &schema()).await.expect("begin the new copy");
    println!("begun");
    fill(&mut generation, 1, CHECKPOINTS, true).await;
    for c in CHECKPOINTS + 1..=CHECKPOINTS + UNCHECKPOINTED {
        generation.write(chunk(c)).await.expect("write after the checkpoint");
    }
    println!("written");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The child's entry point (ignored unless run by the tests below).
#[test]
#[ignore = "run by the tests below as their child process"]
fn checkpoint_child() {
    let Some(dir) = std::env::var_os("FLASHSYNC_CHECKPOINT_DIR") else {
        return;
    };
    futures::executor::block_on(child(Path::new(&dir)));
}

// ---------------------------------------------------------------------------
// The parent.

/// Ends the child if the test fails before it kills it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "checkpoint_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("FLASHSYNC_CHECKPOINT_DIR", dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may put "test checkpoint_child ... " before the first line.
            let line = line.rsplit(" ... ").next().unwrap_or(&line).trim().to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (KillOnDrop(child), rx)
}

/// Waits for the child to print `want`; returns the last checkpoint it
/// reported meanwhile.
fn wait_for(lines: &mpsc::Receiver<String>, want: &str, checkpointed: &mut u64) {
    loop {
        let line = lines.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|e| panic!("waiting for {want}: {e}"));
        note(&line, checkpointed);
        if line == want {
            return;
        }
    }
}

fn note(line: &str, checkpointed: &mut u64) {
    if let Some(c) = line.strip_prefix("checkpoint ").and_then(|c| c.parse().ok()) {
        *checkpointed = (*checkpointed).max(c);
    }
}

/// `SIGKILL`s the child; returns the last checkpoint it reported.
fn kill(mut child: KillOnDrop, lines: &mpsc::Receiver<String>, mut checkpointed: u64) -> u64 {
    child.0.kill().expect("SIGKILL the child");
    let status = child.0.wait().expect("wait for the child");
    assert!(!status.success(), "the child exited on its own");
    for line in lines.iter() {
        note(&line, &mut checkpointed);
    }
    checkpointed
}

fn read_only(dir: &Path) -> Connection {
    Connection::open_with_flags(db(dir), OpenFlags::SQLITE_OPEN_READ_ONLY).expect("read-only connection")
}

/// The table `_flashsync_checkpoints` names for the view, if any.
fn checkpoint_table(sql: &Connection) -> Option<String> {
    let mut stmt = sql.prepare("SELECT table_name FROM _flashsync_checkpoints WHERE relation_id = ?1").expect("query");
    let mut names: Vec<String> =
        stmt.query_map([V.0 as i64], |r| r.get(0)).and_then(|rows| rows.collect()).expect("checkpoint rows");
    assert!(names.len() <= 1, "one checkpoint per view: {names:?}");
    names.pop()
}

/// A generation table's rows, read with SQL, in key order.
fn table_rows(sql: &Connection, table: &str) -> Vec<Row> {
    let query = format!(r#"SELECT id, val, n FROM "{table}" ORDER BY "_flashsync_key""#);
    let mut stmt = sql.prepare(&query).expect("query the generation table");
    stmt.query_map([], |r| Ok(Row(vec![Value::Int(r.get(0)?), Value::Text(r.get(1)?), Value::Int(r.get(2)?)])))
        .and_then(|rows| rows.collect())
        .expect("rows of the generation table")
}

fn generation_tables(sql: &Connection) -> Vec<String> {
    let mut stmt = sql
        .prepare("SELECT name FROM sqlite_schema WHERE name LIKE '\\_flashsync\\_gen\\_%' ESCAPE '\\'")
        .expect("query");
    stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()).expect("generation tables")
}

/// Reopens the store after the kill and checks the resumed copy, which it
/// then finishes and publishes. `reported` is the last checkpoint the child
/// reported done; `context` says which kill this is.
fn check(dir: &Path, reported: u64, context: &str) {
    let store = SqliteStore::open(db(dir), Options::default())
        .unwrap_or_else(|e| panic!("{context}: reopening after SIGKILL failed: {e}"));
    futures::executor::block_on(async {
        let state = store.load().await.expect("load");
        let stored = state.jobs.iter().find(|j| j.relation_id == V).cloned();
        // The checkpoint the job record names: the child's first publish
        // wrote one without a copy (and the kill may come before it).
        let c = stored.as_ref().and_then(|j| j.copy.as_ref()).map_or(0, |copy| copy.through.0);
        println!("{context}: the store holds checkpoint {c}; the child reported {reported}");
        assert!(c >= reported, "{context}: the child reported checkpoint {reported}, the job record names {c}");
        if c > 0 {
            assert_eq!(stored, Some(job(c)), "{context}: the job record of checkpoint {c}");
        }
        let published = state.schemas.iter().any(|(id, _)| *id == V);
        if published {
            let rows = store.scan(V, &Default::default(), usize::MAX).await.expect("scan");
            assert_eq!(rows, old_rows(), "{context}: the unpublished copy showed");
        }
        let sql = read_only(dir);
        // What the open kept: the checkpoint's table, and no other.
        let table = checkpoint_table(&sql);
        assert_eq!(table.is_some(), c > 0, "{context}: a checkpoint row at checkpoint {c}");
        assert_eq!(generation_tables(&sql), table.iter().cloned().collect::<Vec<_>>(), "{context}: generation tables");

        let after = key![c as i64 * CHUNK - 1];
        let resumed = store.resume_generation(V, &schema(), &after).await.expect("resume");
        let mut generation = match (resumed, c) {
            (None, 0) => return,
            (Some(generation), c) if c > 0 => generation,
            (resumed, c) => panic!("{context}: resumed {} at checkpoint {c}", resumed.is_some()),
        };
        let table = table.expect("checked above");
        // Exactly the checkpoint's rows and changes: rows written after it
        // (keyed above its last key) are gone.
        assert_eq!(table_rows(&sql, &table), model(c), "{context}: the resumed copy's rows");
        assert!(
            store.resume_generation(V, &schema(), &after).await.is_err(),
            "{context}: a copy that is being filled was handed out twice"
        );

        // It goes on where it was, and publishes the whole view.
        fill(&mut generation, c + 1, CHECKPOINTS, false).await;
        let mut done = job(CHECKPOINTS);
        done.copy = None;
        done.state = JobState::Running;
        generation.publish(&done).await.expect("publish the resumed copy");
        let rows = store.scan(V, &Default::default(), usize::MAX).await.expect("scan");
        assert_eq!(rows.len(), model(CHECKPOINTS).len(), "{context}: rows published");
        assert!(rows == model(CHECKPOINTS), "{context}: the published rows differ from the whole copy's");
        let state = store.load().await.expect("load");
        assert_eq!(state.jobs, vec![done], "{context}: the job after publish");
        assert!(checkpoint_table(&sql).is_none(), "{context}: the checkpoint outlived its publish");
        assert_eq!(generation_tables(&sql), Vec::<String>::new(), "{context}: generation tables after publish");
        assert!(store.resume_generation(V, &schema(), &after).await.expect("resume").is_none());
        let check: String = sql.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
        assert_eq!(check, "ok", "{context}: integrity_check");
    });
}

#[test]
fn a_checkpointed_copy_of_20k_rows_resumes_after_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, lines) = spawn(dir.path());
    let mut reported = 0;
    wait_for(&lines, "written", &mut reported);
    let reported = kill(child, &lines, reported);
    assert_eq!(reported, CHECKPOINTS);
    // The rows written after the last checkpoint reached the file: the
    // resume has something to drop.
    {
        let sql = read_only(dir.path());
        let table = checkpoint_table(&sql).expect("a checkpoint row after the kill");
        let rows = table_rows(&sql, &table);
        assert_eq!(rows.len(), model(CHECKPOINTS).len() + (UNCHECKPOINTED as i64 * CHUNK) as usize);
    }
    check(dir.path(), reported, "after the last write");
}

#[test]
fn checkpoints_are_atomic_under_sigkill_at_random_moments() {
    let seed = std::env::var("FLASHSYNC_CHECKPOINT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("checkpoint kill seed {seed}: rerun with FLASHSYNC_CHECKPOINT_SEED={seed}");
    let mut rng = Rng::new(seed);
    // How long the checkpoints take here, measured by one run to its end.
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, lines) = spawn(dir.path());
    let mut reported = 0;
    wait_for(&lines, "begun", &mut reported);
    let started = Instant::now();
    wait_for(&lines, "written", &mut reported);
    let span = started.elapsed();
    drop(child);
    for kill_at in 0..6 {
        let context = format!("seed {seed}, kill {kill_at}");
        let dir = tempfile::tempdir().expect("tempdir");
        let (child, lines) = spawn(dir.path());
        let mut reported = 0;
        wait_for(&lines, "begun", &mut reported);
        std::thread::sleep(span.mul_f64(rng.below(1000) as f64 / 1000.0));
        let reported = kill(child, &lines, reported);
        check(dir.path(), reported, &context);
    }
}

#[test]
fn a_damaged_checkpoint_row_is_an_error_and_a_store_of_format_1_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db(dir.path());
    futures::executor::block_on(async {
        let store = SqliteStore::open(&path, Options::default()).expect("open");
        store.put_view(&view()).await.expect("put view");
        let mut generation = store.begin_generation(V, &schema()).await.expect("begin");
        generation.write(chunk(1)).await.expect("write");
        let ops = ViewOps { relation_id: V, identity: Identity::Key, ops: Vec::new() };
        generation.checkpoint(ops, &job(1)).await.expect("checkpoint");
    });
    // A row that names another table than its generation's: the store would
    // drop that table, so it refuses to open instead.
    let sql = Connection::open(&path).expect("sqlite");
    let table: String = sql.query_row("SELECT table_name FROM _flashsync_checkpoints", [], |r| r.get(0)).expect("row");
    sql.execute("UPDATE _flashsync_checkpoints SET table_name = 'app.items'", []).expect("tamper");
    drop(sql);
    let e = SqliteStore::open(&path, Options::default()).expect_err("a damaged checkpoint row");
    assert_eq!(e.kind, StoreErrorKind::Corrupt, "{e}");
    let sql = Connection::open(&path).expect("sqlite");
    sql.execute("UPDATE _flashsync_checkpoints SET table_name = ?1, schema = '{nope'", [&table]).expect("tamper");
    drop(sql);
    let e = SqliteStore::open(&path, Options::default()).expect_err("an undecodable schema");
    assert_eq!(e.kind, StoreErrorKind::Corrupt, "{e}");

    // A store of format version 1 had no checkpoints: opening it migrates it.
    let sql = Connection::open(&path).expect("sqlite");
    sql.execute_batch(
        "DROP TABLE _flashsync_checkpoints; UPDATE _flashsync_meta SET value = 1 WHERE key = 'format_version'; \
         PRAGMA user_version = 1;",
    )
    .expect("make it a version-1 store");
    drop(sql);
    let store = SqliteStore::open(&path, Options::default()).expect("open a version-1 store");
    futures::executor::block_on(async {
        // Without a checkpoint row its generation was left behind: dropped.
        assert!(store.resume_generation(V, &schema(), &key![999]).await.expect("resume").is_none());
        assert_eq!(store.load().await.expect("load").views, vec![view()]);
    });
    drop(store);
    let sql = read_only(dir.path());
    let version: i64 = sql.pragma_query_value(None, "user_version", |r| r.get(0)).expect("user_version");
    assert_eq!(version, 2);
    assert_eq!(checkpoint_table(&sql), None);
    assert_eq!(generation_tables(&sql), Vec::<String>::new());
}
