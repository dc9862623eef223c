//! Crash safety under `SIGKILL`.
//!
//! A child process (this test binary, re-run as `crash_child`) plays a driver:
//! it mirrors a deterministic upstream — commit `n` ends at LSN `10·n`,
//! inserts row `n`, bumps a counter row (keeping an unchanged cell), deletes
//! and moves random rows, adds a copy to a full-row view (so a doubled commit
//! shows as an extra copy), sometimes truncates, and every 11th commit is too
//! large for one batch and goes in as `Stage` + `Commit`. It persists at
//! random, re-materializes a third view every 10 commits, and on start-up
//! resumes from the stored LSN, re-bootstrapping any view marked dirty — the
//! restart path of the real driver.
//!
//! The parent kills it with `SIGKILL` at random moments, reopens the store,
//! and checks that
//! - the store opens, SQLite's `integrity_check` passes, and the file holds
//!   exactly the bookkeeping tables and one table per published view (a
//!   generation table a crash left behind is dropped on open);
//! - the origin's LSN is a commit boundary, at least every LSN the child
//!   reported durable, and the mirrored views hold exactly the upstream state
//!   at that LSN — never part of the next (split) commit, and nothing is
//!   marked dirty — so nothing is lost or applied twice;
//! - the materialized view holds exactly the generation its job record names
//!   (never a mix), at least the last one the child reported published.
//!
//! The seed is printed; rerun with `FLASHSYNC_CRASH_SEED=<seed>`.
//! `FLASHSYNC_CRASH_KILLS` sets the number of kills (default 220).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flashsync_core::rng::Rng;
use flashsync_core::{
    key, row, ApplyBatch, BatchSeq, Cell, Column, Identity, JobRecord, JobState, Key, Lsn, OriginId, Persistence,
    Progress, RelationId, RelationSchema, Row, RowOp, SourceRelId, Store, StoredState, Timestamp, Value, ViewDef,
    ViewOps, ViewRecord,
};
use flashsync_store_sqlite::{Options, SqliteStore};

const ORIGIN: &str = "postgres:main";
/// Keyed view fed by the commit stream.
const R: RelationId = RelationId(1);
/// Full-row view fed by the commit stream.
const F: RelationId = RelationId(2);
/// Materialized view, re-materialized every [`REMATERIALIZE_EVERY`] commits.
const M: RelationId = RelationId(3);
const REMATERIALIZE_EVERY: u64 = 10;
const SPLIT_EVERY: u64 = 11;
const TRUNCATE_EVERY: u64 = 37;

// ---------------------------------------------------------------------------
// The upstream: a pure function of (seed, n) and the state before commit n.

fn keyed_schema() -> RelationSchema {
    // Typed columns, so rows take the typed path (no exact encoding).
    let columns =
        [("id", "int8"), ("val", "text"), ("n", "int8")].map(|(n, t)| Column { name: n.into(), type_name: t.into() });
    RelationSchema::keyed(SourceRelId(1), columns.to_vec(), vec![0])
}

fn full_schema() -> RelationSchema {
    let columns = [("a", "int8"), ("b", "text")].map(|(n, t)| Column { name: n.into(), type_name: t.into() });
    RelationSchema::full_row(SourceRelId(2), columns.to_vec())
}

#[derive(Clone, Default)]
struct Model {
    r: BTreeMap<i64, Row>,
    f: BTreeMap<Row, u64>,
}

impl Model {
    fn initial() -> Model {
        let mut m = Model::default();
        m.r.insert(0, row![0, "counter", 0]);
        m
    }

    fn r_rows(&self) -> Vec<Row> {
        self.r.values().cloned().collect()
    }

    fn f_rows(&self) -> Vec<Row> {
        self.f.iter().flat_map(|(row, &n)| std::iter::repeat_n(row.clone(), n as usize)).collect()
    }

    fn apply(&mut self, r_ops: &[RowOp], f_ops: &[RowOp]) {
        for op in r_ops {
            match op {
                RowOp::Truncate => self.r.clear(),
                RowOp::Insert { key, row } => {
                    self.r.insert(int(key), row.clone());
                }
                RowOp::Delete { key } => {
                    self.r.remove(&int(key));
                }
                RowOp::Update { old_key, key, new } => {
                    let from = int(old_key.as_ref().unwrap_or(key));
                    let old = self.r.remove(&from).expect("the generator only updates existing rows");
                    let merged = new
                        .iter()
                        .zip(old.0)
                        .map(|(cell, old)| match cell {
                            Cell::Set(v) => v.clone(),
                            Cell::Unchanged => old,
                        })
                        .collect();
                    self.r.insert(int(key), Row(merged));
                }
                RowOp::UpdateIf { .. } | RowOp::Evict { .. } => unreachable!("the generator writes no filtered views"),
            }
        }
        for op in f_ops {
            match op {
                RowOp::Insert { row, .. } => *self.f.entry(row.clone()).or_insert(0) += 1,
                RowOp::Delete { key } => {
                    let row = Row(key.0.clone());
                    let copies = self.f.get_mut(&row).expect("the generator only deletes existing rows");
                    *copies -= 1;
                    if *copies == 0 {
                        self.f.remove(&row);
                    }
                }
                _ => unreachable!("the generator sends only inserts and deletes to F"),
            }
        }
    }
}

fn int(key: &Key) -> i64 {
    match key.0.first() {
        Some(Value::Int(i)) => *i,
        other => panic!("R keys are integers, got {other:?}"),
    }
}

struct Commit {
    r_ops: Vec<RowOp>,
    f_ops: Vec<RowOp>,
}

impl Commit {
    fn split(n: u64) -> bool {
        n.is_multiple_of(SPLIT_EVERY)
    }

    /// The R operations of the `Stage` batch of a split commit.
    fn partial(&self) -> &[RowOp] {
        &self.r_ops[..self.r_ops.len() / 2]
    }
}

fn ins(row: Row) -> RowOp {
    RowOp::Insert { key: Key(vec![row.0[0].clone()]), row }
}

fn commit(seed: u64, n: u64, m: &Model) -> Commit {
    let mut rng = Rng::new(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let n_i = n as i64;
    let mut r = Vec::new();
    let truncated = n.is_multiple_of(TRUNCATE_EVERY);
    if truncated {
        r.push(RowOp::Truncate);
        r.push(ins(row![0, "counter", 0]));
    }
    r.push(ins(row![n_i, format!("v{n}"), n_i]));
    r.push(RowOp::Update {
        old_key: None,
        key: key![0],
        new: vec![Cell::Set(0.into()), Cell::Unchanged, Cell::Set(n_i.into())],
    });
    let mut taken = Vec::new();
    if !truncated && rng.chance(0.3) {
        if let Some(k) = pick(m, &mut rng, n, &taken) {
            taken.push(k);
            r.push(RowOp::Delete { key: key![k] });
        }
    }
    if !truncated && rng.chance(0.3) {
        if let Some(k) = pick(m, &mut rng, n, &taken) {
            r.push(RowOp::Update {
                old_key: Some(key![k]),
                key: key![-n_i],
                new: vec![Cell::Set((-n_i).into()), Cell::Unchanged, Cell::Set(n_i.into())],
            });
        }
    }
    if Commit::split(n) {
        for i in 0..BULK_ROWS {
            r.push(ins(row![BULK + n_i * 1000 + i, "bulk", n_i]));
        }
        // Upstream churn: the previous large transaction's rows go again, so
        // the view stays small and checks stay fast.
        let previous = n_i - SPLIT_EVERY as i64;
        for i in 0..BULK_ROWS {
            let k = BULK + previous * 1000 + i;
            if !truncated && m.r.contains_key(&k) {
                r.push(RowOp::Delete { key: key![k] });
            }
        }
    }
    let mut f = vec![ins_full(row![(n % 5) as i64, "t"])];
    if rng.chance(0.2) {
        if let Some(victim) = m.f.keys().nth(rng.below(m.f.len() as u64) as usize) {
            f.push(RowOp::Delete { key: Key(victim.0.clone()) });
        }
    }
    Commit { r_ops: r, f_ops: f }
}

/// Keys of the rows large transactions insert start here.
const BULK: i64 = 1 << 40;
/// Rows a large transaction inserts (and the next one deletes again).
const BULK_ROWS: i64 = 120;

/// A random existing row of R that is neither the counter nor a bulk row, nor
/// in `taken`: the first such key at or after a random point, in O(log n).
fn pick(m: &Model, rng: &mut Rng, n: u64, taken: &[i64]) -> Option<i64> {
    let point = rng.below(2 * n) as i64 - n as i64;
    m.r.range(point..)
        .chain(m.r.range(..point))
        .map(|(&k, _)| k)
        .find(|&k| k != 0 && k.abs() < BULK && !taken.contains(&k))
}

fn ins_full(row: Row) -> RowOp {
    RowOp::Insert { key: Key(row.0.clone()), row }
}

/// The rows of generation `g` of the materialized view.
fn generation_rows(g: u64) -> Vec<Row> {
    let size = 100 + (g * 7919) % 500;
    let mut rows: Vec<Row> = (0..size as i64).map(|i| row![i, format!("g{g}-{i}"), g as i64]).collect();
    if g % 2 == 1 {
        // Ascending for a while, then far behind.
        rows.rotate_left(size as usize / 2);
    }
    rows
}

/// Replays commits `1..=k`.
fn model_at(seed: u64, k: u64) -> Model {
    let mut m = Model::initial();
    for n in 1..=k {
        let c = commit(seed, n, &m);
        m.apply(&c.r_ops, &c.f_ops);
    }
    m
}

// ---------------------------------------------------------------------------
// The child: a driver that never stops on its own.

fn view(id: RelationId, persistence: Persistence) -> ViewRecord {
    let def = ViewDef::new("crash", &format!("v{}", id.0), persistence, ORIGIN, "public", "t").expect("valid view");
    ViewRecord { relation_id: id, def }
}

fn views() -> [(ViewRecord, RelationSchema); 3] {
    [
        (view(R, Persistence::Realtime), keyed_schema()),
        (view(F, Persistence::Realtime), full_schema()),
        (view(M, Persistence::Materialized), keyed_schema()),
    ]
}

async fn materialize(store: &SqliteStore, v: &ViewRecord, schema: &RelationSchema, rows: Vec<Row>, at: Lsn) {
    let mut generation = store.begin_generation(v.relation_id, schema).await.expect("begin generation");
    for chunk in rows.chunks(400) {
        generation.write(chunk.to_vec()).await.expect("write generation");
    }
    let mut job = JobRecord::new(v.relation_id, &v.def.name, v.def.persistence, Timestamp(at.0));
    job.state = JobState::success(v.def.persistence);
    job.last_seen_commit = Some(at);
    generation.publish(&job).await.expect("publish");
}

/// The database file in the test's directory.
fn db(dir: &Path) -> std::path::PathBuf {
    dir.join("store.db")
}

fn lsn_of(state: &StoredState) -> u64 {
    state.origins.iter().find(|o| o.origin.as_str() == ORIGIN).map_or(0, |o| o.applied.0)
}

async fn child(dir: &Path, seed: u64) {
    let store = SqliteStore::open(db(dir), Options::default()).expect("child opens the store");
    let state = store.load().await.expect("load");
    for (v, _) in views() {
        if !state.views.iter().any(|s| s.relation_id == v.relation_id) {
            store.put_view(&v).await.expect("put view");
        }
    }
    let k = lsn_of(&state) / 10;
    let mut model = model_at(seed, k);
    let published = |id| state.schemas.iter().any(|(s, _)| *s == id);
    let [(r, r_schema), (f, f_schema), (m, m_schema)] = views();
    // Restart: views left half-applied (or never bootstrapped) are bootstrapped
    // from the upstream state at the stored LSN; the feed resumes after it.
    if !published(R) || state.dirty.contains(&R) {
        materialize(&store, &r, &r_schema, model.r_rows(), Lsn(k * 10)).await;
    }
    if !published(F) || state.dirty.contains(&F) {
        materialize(&store, &f, &f_schema, model.f_rows(), Lsn(k * 10)).await;
    }
    let mut g = state.jobs.iter().find(|j| j.relation_id == M).and_then(|j| j.last_seen_commit).map_or(0, |l| l.0);
    if !published(M) {
        g += 1;
        materialize(&store, &m, &m_schema, generation_rows(g), Lsn(g)).await;
        println!("published {g}");
    }
    println!("ready");

    let origin = OriginId::new(ORIGIN).expect("origin");
    let mut rng = Rng::new(seed ^ k.rotate_left(17) ^ 0xC0FFEE);
    let mut seq = 0u64;
    let mut batch = |progress, views: Vec<ViewOps>| {
        seq += 1;
        ApplyBatch {
            seq: BatchSeq(seq),
            origin: origin.clone(),
            progress,
            views,
            jobs: vec![],
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        }
    };
    let ops = |id, identity, ops: &[RowOp]| ViewOps { relation_id: id, identity, ops: ops.to_vec() };
    for n in k + 1.. {
        let c = commit(seed, n, &model);
        let end = Progress::Commit { end_lsn: Lsn(n * 10) };
        let batches = if Commit::split(n) {
            let mid = c.partial().len();
            vec![
                batch(Progress::Stage { first: true }, vec![ops(R, Identity::Key, c.partial())]),
                batch(end, vec![ops(R, Identity::Key, &c.r_ops[mid..]), ops(F, Identity::FullRow, &c.f_ops)]),
            ]
        } else {
            vec![batch(end, vec![ops(R, Identity::Key, &c.r_ops), ops(F, Identity::FullRow, &c.f_ops)])]
        };
        let split = batches.len() > 1;
        // A driver may persist between the batches of a large transaction
        // (a crash after that leaves R marked dirty); otherwise both go as
        // one run, which this store commits as one transaction.
        let persist_between = split && rng.chance(0.5);
        if split && !persist_between {
            for report in store.apply_many(batches).await {
                let report = report.expect("apply run");
                assert!(report.conflicts.is_empty(), "commit {n} conflicted: {:?}", report.conflicts);
            }
        } else {
            for (i, b) in batches.into_iter().enumerate() {
                let report = store.apply(b).await.expect("apply");
                assert!(report.conflicts.is_empty(), "commit {n} conflicted: {:?}", report.conflicts);
                if persist_between && i == 0 {
                    store.persist().await.expect("persist");
                    println!("durable {}", (n - 1) * 10);
                }
            }
        }
        model.apply(&c.r_ops, &c.f_ops);
        if rng.chance(0.25) {
            store.persist().await.expect("persist");
            println!("durable {}", n * 10);
        }
        if n.is_multiple_of(REMATERIALIZE_EVERY) {
            g += 1;
            materialize(&store, &m, &m_schema, generation_rows(g), Lsn(g)).await;
            println!("published {g}");
        }
    }
}

/// The child's entry point (ignored unless run by the crash test).
#[test]
#[ignore = "run by crash_safety_under_sigkill as its child process"]
fn crash_child() {
    let (Some(dir), Some(seed)) =
        (std::env::var_os("FLASHSYNC_CRASH_DIR"), std::env::var("FLASHSYNC_CRASH_CHILD_SEED").ok())
    else {
        return;
    };
    let seed = seed.parse().expect("numeric seed");
    futures::executor::block_on(child(Path::new(&dir), seed));
}

// ---------------------------------------------------------------------------
// The parent: kill, reopen, check.

/// What the child said before it died.
#[derive(Default)]
struct Claims {
    durable: u64,
    published: u64,
    ready: bool,
}

fn spawn(dir: &Path, seed: u64) -> (Child, mpsc::Receiver<String>, std::thread::JoinHandle<String>) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("FLASHSYNC_CRASH_DIR", dir)
        .env("FLASHSYNC_CRASH_CHILD_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    (child, rx, errors)
}

fn claim(claims: &mut Claims, line: &str) {
    // libtest may prefix the first line with "test crash_child ... ".
    let line = line.rsplit(" ... ").next().unwrap_or(line).trim();
    if line == "ready" {
        claims.ready = true;
    } else if let Some(v) = line.strip_prefix("durable ").and_then(|v| v.parse().ok()) {
        claims.durable = claims.durable.max(v);
    } else if let Some(v) = line.strip_prefix("published ").and_then(|v| v.parse().ok()) {
        claims.published = claims.published.max(v);
    }
}

struct Checker {
    seed: u64,
    /// The upstream state at `k`, cached: the stored LSN mostly grows.
    k: u64,
    model: Model,
    max_lsn: u64,
    /// Kills after which the next commit was a split one.
    split_next: u32,
    generations: u64,
}

impl Checker {
    fn model_at(&mut self, k: u64) -> &Model {
        if k < self.k {
            self.k = 0;
            self.model = Model::initial();
        }
        while self.k < k {
            self.k += 1;
            let c = commit(self.seed, self.k, &self.model);
            self.model.apply(&c.r_ops, &c.f_ops);
        }
        &self.model
    }

    fn check(&mut self, dir: &Path, claims: &Claims, context: &str) {
        let store = SqliteStore::open(db(dir), Options::default())
            .unwrap_or_else(|e| panic!("{context}: reopening after SIGKILL failed: {e}"));
        futures::executor::block_on(async {
            let state = store.load().await.unwrap_or_else(|e| panic!("{context}: load: {e}"));
            let lsn = lsn_of(&state);
            assert_eq!(lsn % 10, 0, "{context}: LSN {lsn} is not a commit boundary");
            assert!(
                claims.durable <= lsn,
                "{context}: the child was told LSN {} was durable, the store has {lsn}",
                claims.durable
            );
            self.max_lsn = self.max_lsn.max(lsn);
            let k = lsn / 10;
            let published = |id| state.schemas.iter().any(|(s, _)| *s == id);
            let store = &store;
            let scan = |id| async move { store.scan(id, &Default::default(), usize::MAX).await.expect("scan") };

            if published(R) {
                let want = self.model_at(k).clone();
                // Killed between the staged half and the commit of a split
                // commit: nothing of it shows, and nothing is dirty.
                assert!(!state.dirty.contains(&R), "{context}: R is dirty at LSN {lsn}");
                if Commit::split(k + 1) {
                    self.split_next += 1;
                }
                assert_eq!(scan(R).await, want.r_rows(), "{context}: rows of R at LSN {lsn}");
                assert!(!state.dirty.contains(&F), "{context}: F is never in a partial batch");
                if published(F) {
                    assert_eq!(scan(F).await, self.model_at(k).f_rows(), "{context}: rows of F at LSN {lsn}");
                } else {
                    // Killed between bootstrapping R and F at start-up.
                    assert_eq!(lsn, 0, "{context}: commits stored before F was bootstrapped");
                }
            } else {
                assert_eq!(lsn, 0, "{context}: commits stored before R was bootstrapped");
            }

            if published(M) {
                let job = state.jobs.iter().find(|j| j.relation_id == M).expect("M has a job");
                let g = job.last_seen_commit.expect("M's job names its generation").0;
                assert!(
                    g >= claims.published,
                    "{context}: the child published generation {} of M, the store has {g}",
                    claims.published
                );
                let mut want = generation_rows(g);
                want.sort_by(|a, b| a.0.first().cmp(&b.0.first()));
                assert_eq!(scan(M).await, want, "{context}: M is not exactly generation {g}");
                self.generations = self.generations.max(g);
            }
            // The file is sound, and holds exactly the bookkeeping tables and
            // one table per published view: a generation a crash left behind
            // was dropped when the store opened.
            let sql = rusqlite::Connection::open_with_flags(db(dir), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap_or_else(|e| panic!("{context}: read-only connection: {e}"));
            let check: String = sql.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
            assert_eq!(check, "ok", "{context}: integrity_check");
            let mut tables: Vec<String> = sql
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_flashsync\\_%' ESCAPE '\\'")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .expect("list tables");
            tables.sort();
            let mut want: Vec<String> = state.schemas.iter().map(|(id, _)| format!("crash.v{}", id.0)).collect();
            want.sort();
            assert_eq!(tables, want, "{context}: tables in the file");
            let generations: i64 = sql
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name LIKE '\\_flashsync\\_gen\\_%' ESCAPE '\\'",
                    [],
                    |r| r.get(0),
                )
                .expect("count generation tables");
            assert_eq!(generations, 0, "{context}: generation tables left behind");
            if published(R) {
                // What SQL sees is what the store returns.
                let n: i64 = sql.query_row("SELECT count(*) FROM \"crash.v1\"", [], |r| r.get(0)).expect("count R");
                assert_eq!(n as u64, store.count(R).await.expect("count"), "{context}: SQL row count of R");
            }
        });
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn crash_safety_under_sigkill() {
    let seed = env_u64("FLASHSYNC_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let kills = env_u64("FLASHSYNC_CRASH_KILLS").unwrap_or(220);
    println!("crash test seed {seed}: rerun with FLASHSYNC_CRASH_SEED={seed}");
    // Many short runs: each kill pays for the child re-opening the store,
    // which replays a journal that grows through a run.
    let runs = 11;
    let per_run = kills.div_ceil(runs);
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut total = 0;
    let mut early = 0;
    let (mut startup_time, mut check_time) = (Duration::ZERO, Duration::ZERO);
    for run in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut checker =
            Checker { seed: rng.next_u64(), k: 0, model: Model::initial(), max_lsn: 0, split_next: 0, generations: 0 };
        for i in 0..per_run {
            let context = format!("seed {seed}, run {run}, kill {i}");
            let spawned = Instant::now();
            let (mut child, lines, errors) = spawn(dir.path(), checker.seed);
            let mut claims = Claims::default();
            // Most kills land after start-up, in the commit stream; some hit
            // the open, the recovery and the re-bootstrap.
            let during_startup = rng.chance(0.1);
            if !during_startup {
                while !claims.ready {
                    match lines.recv_timeout(Duration::from_secs(60)) {
                        Ok(line) => claim(&mut claims, &line),
                        Err(_) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            panic!("{context}: the child never got ready: {}", errors.join().unwrap_or_default());
                        }
                    }
                }
                startup_time += spawned.elapsed();
            } else {
                early += 1;
            }
            std::thread::sleep(Duration::from_micros(rng.below(40_000)));
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{context}: the child died on its own ({status}): {}", errors.join().unwrap_or_default());
            }
            child.kill().expect("SIGKILL the child");
            let status = child.wait().expect("wait for the child");
            assert!(!status.success(), "{context}: the child exited cleanly");
            // Everything it printed before dying (the reader ends at EOF).
            for line in lines.iter() {
                claim(&mut claims, &line);
            }
            let _ = errors.join();
            let checking = Instant::now();
            checker.check(dir.path(), &claims, &context);
            check_time += checking.elapsed();
            total += 1;
        }
        println!(
            "run {run}: {per_run} kills, reached LSN {}, {} generations of M, {} kills inside a split commit",
            checker.max_lsn, checker.generations, checker.split_next
        );
    }
    println!(
        "{total} kill points ({early} during start-up) in {:.1} s ({:.1} s waiting for child start-ups, {:.1} s checking)",
        started.elapsed().as_secs_f64(),
        startup_time.as_secs_f64(),
        check_time.as_secs_f64()
    );
    assert!(total >= kills);
}
