//! The store conformance suite: one set of checks every [`Store`] must pass.
//!
//! The [`Store`] contract (see [`store`](crate::store)) is what the machine and
//! the driver rely on; this suite pins it down executably. It checks, against
//! any implementation:
//!
//! - the catalog, jobs, origin progress and published schemas round-trip
//!   through [`Store::load`];
//! - [`Store::apply`] with every [`RowOp`] kind — upserts, updates that keep
//!   [`Cell::Unchanged`] values, key moves, deletes, full-row multisets with
//!   copy counts, a truncate followed by inserts in the same batch, the same
//!   view twice in one batch — and that conflicts are reported;
//! - batches are atomic (a failing batch changes nothing), sequence
//!   numbers must increase, and `apply_many` stops at the first failure;
//! - `Partial` batches mark their views dirty and the `Commit` clears them;
//!   `Replay` never moves an origin's progress;
//! - generations are invisible until published, publish switches rows,
//!   schema and job together, and discarded or abandoned generations leave no
//!   trace; rows written pre-encoded read back as the same rows written
//!   plainly, and a batch encoded for another width is refused;
//! - scans come out in key order for integer (negative too), text, float and
//!   composite keys, honouring ranges and limits, and `count` counts copies;
//! - `forget` removes everything, and unknown views are `NotFound` errors;
//! - with a crash hook ([`run_all_with_crash`]): persisted batches and every
//!   other mutation survive a crash, and a crash loses at most a whole suffix
//!   of unpersisted batches.
//!
//! The checks are plain async functions with no runtime of their own: drive
//! them with any executor. Each takes a fresh, empty store.
//!
//! ```
//! use flashsync_core::conformance;
//! use flashsync_core::memory::MemoryStore;
//!
//! futures::executor::block_on(async {
//!     // Every check, each on a fresh store from the factory:
//!     conformance::run_all(MemoryStore::new).await?;
//!     // The same plus the crash checks. The hook takes the store, "crashes"
//!     // it (losing whatever was not persisted) and returns the store as it
//!     // is after a restart; a disk-backed store would drop itself and reopen
//!     // its directory here.
//!     conformance::run_all_with_crash(MemoryStore::new, |store: MemoryStore| {
//!         store.crash();
//!         store
//!     })
//!     .await
//! })?;
//! # Ok::<(), conformance::Failures>(())
//! ```
//!
//! A library author adds one test like the above for their own store; a
//! failure lists every failing check with what it expected and what it got.
//! Individual checks are public too, for running one while debugging.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::change::{ApplyBatch, BatchSeq, Cell, Progress, RowOp, ViewOps};
use crate::error::{StoreError, StoreErrorKind};
use crate::job::{JobRecord, JobState};
use crate::lsn::Lsn;
use crate::rowops::ApplyReport;
use crate::schema::{Column, Identity, RelationSchema, SourceRelId};
use crate::store::{KeyRange, OriginProgress, Store, StoredState, ViewRecord};
use crate::time::Timestamp;
use crate::value::{Key, Row, Value};
use crate::view::{OriginId, Persistence, RelationId, ViewDef};

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check's name (the name of its function in this module).
    pub check: &'static str,
    /// What was expected and what happened.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

impl std::error::Error for Failure {}

/// Every failed check of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failures(pub Vec<Failure>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} store conformance check(s) failed", self.0.len())?;
        for failure in &self.0 {
            write!(f, "\n  - {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failures {}

/// Runs every check that needs no crash hook, each on a fresh store from
/// `make`, and reports every failure.
pub async fn run_all<S: Store>(mut make: impl FnMut() -> S) -> Result<(), Failures> {
    let mut failures = Vec::new();
    macro_rules! run {
        ($($check:ident),* $(,)?) => {
            $(
                if let Err(failure) = $check(&make()).await {
                    failures.push(failure);
                }
            )*
        };
    }
    run!(
        catalog_round_trip,
        keyed_row_ops,
        unchanged_cells,
        full_row_multisets,
        truncate_then_insert,
        same_view_twice_in_a_batch,
        conflicts_are_reported,
        batches_are_atomic,
        sequence_numbers_increase,
        dirty_markers,
        replay_keeps_progress,
        generation_publish_is_atomic,
        generation_discard_and_abandon,
        generation_errors,
        generation_encoded_rows,
        scan_order_and_ranges,
        count_rows,
        forget_removes_everything,
        unknown_views_are_errors,
        persist_reports_last_batch,
        apply_many_stops_at_a_failure,
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}

/// Runs [`run_all`] plus the crash checks. `crash` takes a store, simulates a
/// crash (every batch applied since the last [`Store::persist`] may be lost;
/// nothing else may) and returns the store as a restarted process would see
/// it.
pub async fn run_all_with_crash<S: Store>(
    mut make: impl FnMut() -> S,
    mut crash: impl FnMut(S) -> S,
) -> Result<(), Failures> {
    let mut failures = match run_all(&mut make).await {
        Ok(()) => Vec::new(),
        Err(Failures(failures)) => failures,
    };
    if let Err(failure) = crash_keeps_persisted_batches(make(), &mut crash).await {
        failures.push(failure);
    }
    if let Err(failure) = crash_keeps_durable_mutations(make(), &mut crash).await {
        failures.push(failure);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}

// ---------------------------------------------------------------------------
// Fixtures and assertion helpers.

const ORIGIN: &str = "conformance:main";

/// Per-check context: names failures and hands out batch sequence numbers.
struct Ctx {
    check: &'static str,
    /// Atomic (not `Cell`) so the checks' futures stay `Send`.
    next_seq: AtomicU64,
}

impl Ctx {
    fn new(check: &'static str) -> Self {
        Ctx { check, next_seq: AtomicU64::new(1) }
    }

    fn fail(&self, message: impl Into<String>) -> Failure {
        Failure { check: self.check, message: message.into() }
    }

    fn ensure(&self, cond: bool, message: impl FnOnce() -> String) -> Result<(), Failure> {
        if cond {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    fn eq<T: PartialEq + fmt::Debug>(&self, what: &str, got: T, want: T) -> Result<(), Failure> {
        self.ensure(got == want, || format!("{what}: expected {want:?}, got {got:?}"))
    }

    fn ok<T>(&self, what: &str, result: Result<T, StoreError>) -> Result<T, Failure> {
        result.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    fn err_kind<T: fmt::Debug>(
        &self,
        what: &str,
        result: Result<T, StoreError>,
        kind: StoreErrorKind,
    ) -> Result<(), Failure> {
        match result {
            Err(e) if e.kind == kind => Ok(()),
            Err(e) => Err(self.fail(format!("{what}: expected a {kind:?} error, got a {:?} error: {e}", e.kind))),
            Ok(v) => Err(self.fail(format!("{what}: expected a {kind:?} error, got Ok({v:?})"))),
        }
    }

    fn seq(&self) -> BatchSeq {
        BatchSeq(self.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    fn skip_to(&self, seq: u64) {
        self.next_seq.store(seq, Ordering::Relaxed);
    }

    fn origin(&self, name: &str) -> Result<OriginId, Failure> {
        OriginId::new(name).map_err(|e| self.fail(format!("fixture origin: {e}")))
    }

    fn view(&self, id: u64, origin: &str) -> Result<ViewRecord, Failure> {
        let def = ViewDef::new(
            "conformance",
            &format!("view_{id}"),
            Persistence::Realtime,
            origin,
            "public",
            &format!("table_{id}"),
        )
        .map_err(|e| self.fail(format!("fixture view: {e}")))?;
        Ok(ViewRecord { relation_id: RelationId(id), def })
    }

    fn batch(&self, origin: &str, progress: Progress, views: Vec<ViewOps>) -> Result<ApplyBatch, Failure> {
        Ok(ApplyBatch { seq: self.seq(), origin: self.origin(origin)?, progress, views, jobs: Vec::new(), chain: 0 })
    }

    fn commit(&self, lsn: u64, views: Vec<ViewOps>) -> Result<ApplyBatch, Failure> {
        self.batch(ORIGIN, Progress::Commit { end_lsn: Lsn(lsn) }, views)
    }
}

fn columns(names: &[&str]) -> Vec<Column> {
    names.iter().map(|n| Column { name: (*n).to_owned(), type_name: "text".to_owned() }).collect()
}

/// `(id, name, note)` keyed by `id`.
fn keyed3() -> RelationSchema {
    RelationSchema::keyed(SourceRelId(1), columns(&["id", "name", "note"]), vec![0])
}

/// `(a, b)` identified by the full row.
fn full2() -> RelationSchema {
    RelationSchema::full_row(SourceRelId(2), columns(&["a", "b"]))
}

fn job(view: &ViewRecord, state: JobState, at: u64) -> JobRecord {
    let mut job = JobRecord::new(view.relation_id, &view.def.name, view.def.persistence, Timestamp(at));
    job.state = state;
    job
}

fn ops(view: &ViewRecord, identity: Identity, ops: Vec<RowOp>) -> ViewOps {
    ViewOps { relation_id: view.relation_id, identity, ops }
}

fn insert(row: Row, key_cols: &[usize]) -> RowOp {
    let key = Key(key_cols.iter().filter_map(|&i| row.0.get(i).cloned()).collect());
    RowOp::Insert { key, row }
}

/// Insert into a keyed view whose key is column 0.
fn ins(row: Row) -> RowOp {
    insert(row, &[0])
}

/// Insert into a full-row view (the key is the row).
fn ins_full(row: Row) -> RowOp {
    RowOp::Insert { key: Key(row.0.clone()), row }
}

fn set(row: Row) -> Vec<Cell> {
    row.0.into_iter().map(Cell::Set).collect()
}

fn all() -> KeyRange {
    KeyRange::default()
}

async fn define<S: Store>(cx: &Ctx, store: &S, id: u64) -> Result<ViewRecord, Failure> {
    let view = cx.view(id, ORIGIN)?;
    cx.ok("put_view", store.put_view(&view).await)?;
    Ok(view)
}

/// Fills and publishes a generation.
async fn materialize<S: Store>(
    cx: &Ctx,
    store: &S,
    view: &ViewRecord,
    schema: &RelationSchema,
    rows: Vec<Row>,
    job: &JobRecord,
) -> Result<(), Failure> {
    let mut generation = cx.ok("begin_generation", store.begin_generation(view.relation_id, schema).await)?;
    cx.ok("generation write", generation.write(rows).await)?;
    cx.ok("publish", generation.publish(job).await)
}

/// Defines view `id` and publishes `rows` as its copy.
async fn published<S: Store>(
    cx: &Ctx,
    store: &S,
    id: u64,
    schema: &RelationSchema,
    rows: Vec<Row>,
) -> Result<ViewRecord, Failure> {
    let view = define(cx, store, id).await?;
    materialize(cx, store, &view, schema, rows, &job(&view, JobState::Running, 1)).await?;
    Ok(view)
}

async fn apply<S: Store>(cx: &Ctx, store: &S, batch: ApplyBatch) -> Result<ApplyReport, Failure> {
    let what = format!("apply batch {}", batch.seq.0);
    cx.ok(&what, store.apply(batch).await)
}

/// Applies and requires no conflicts.
async fn apply_clean<S: Store>(cx: &Ctx, store: &S, batch: ApplyBatch) -> Result<(), Failure> {
    let seq = batch.seq.0;
    let report = apply(cx, store, batch).await?;
    cx.ensure(report.conflicts.is_empty(), || {
        format!("batch {seq} reported unexpected conflicts: {:?}", report.conflicts)
    })
}

async fn rows<S: Store>(cx: &Ctx, store: &S, id: RelationId) -> Result<Vec<Row>, Failure> {
    cx.ok("scan", store.scan(id, &all(), usize::MAX).await)
}

async fn load<S: Store>(cx: &Ctx, store: &S) -> Result<StoredState, Failure> {
    let mut state = cx.ok("load", store.load().await)?;
    // The contract fixes no order for these lists.
    state.views.sort_by_key(|v| v.relation_id);
    state.jobs.sort_by_key(|j| j.relation_id);
    state.origins.sort_by(|a, b| a.origin.cmp(&b.origin));
    state.schemas.sort_by_key(|(id, _)| *id);
    state.dirty.sort();
    Ok(state)
}

fn progress(origin: &OriginId, lsn: u64) -> OriginProgress {
    OriginProgress { origin: origin.clone(), applied: Lsn(lsn) }
}

// ---------------------------------------------------------------------------
// The checks.

/// Views, jobs, origin progress and schemas round-trip through `load`;
/// `put_*` replace; `forget_origin` removes an origin's progress.
pub async fn catalog_round_trip<S: Store>(store: &S) -> Result<(), Failure> {
    let cx = Ctx::new("catalog_round_trip");
    cx.eq("load of an empty store", load(&cx, store).await?, StoredState::default())?;

    let v1 = define(&cx, store, 1).await?;
    let v2 = define(&cx, store, 2).await?;
    let mut v1b = v1.clone();
    v1b.def.persistence = Persistence::Materialized;
    cx.ok("put_view (replace)", store.put_view(&v1b).await)?;
    let j2 = job(&v2, JobState::Idle, 5);
    cx.ok("put_job", store.put_job(&j2).await)?;
    let mut j2b = j2.clone();
    j2b.state = JobState::Failed;
    j2b.retry_count = 3;
    j2b.last_error = Some("upstream relation public.t does not exist".into());
    j2b.next_retry_at = Some(Timestamp(9_000));
    j2b.slot_id = Some("flashsync_slot".into());
    j2b.last_seen_commit = Some(Lsn(0x16_B374_D848));
    cx.ok("put_job (replace)", store.put_job(&j2b).await)?;

    let state = load(&cx, store).await?;
    cx.eq("views", state.views, vec![v1b.clone(), v2.clone()])?;
    cx.eq("jobs", state.jobs, vec![j2b.clone()])?;
    cx.eq("schemas before any publish", state.schemas, vec![])?;

    let schema = keyed3();
    let j1 = job(&v1b, JobState::Synced, 7);
    materialize(&cx, store, &v1b, &schema, vec![crate::row![1, "a", "x"]], &j1).await?;
    let main = cx.origin(ORIGIN)?;
    let other = cx.origin("conformance:other")?;
    apply_clean(&cx, store, cx_commit(&cx, &main, 500)?).await?;
    apply_clean(&cx, store, cx_commit(&cx, &other, 700)?).await?;
    apply_clean(&cx, store, cx_commit(&cx, &main, 600)?).await?;

    let state = load(&cx, store).await?;
    cx.eq("jobs after publish", state.jobs, vec![j1, j2b])?;
    cx.eq("schemas after publish", state.schemas, vec![(v1b.relation_id, schema)])?;
    cx.eq("origins", state.origins, vec![progress(&main, 600), progress(&other, 700)])?;

    cx.ok("forget_origin", store.forget_origin(&main).await)?;
    cx.ok("forget_origin of an unknown origin", store.forget_origin(&cx.origin("conformance:never")?).await)?;
    cx.eq("origins after forget_origin", load(&cx, store).await?.origins, vec![progress(&other, 700)])
}

fn cx_commit(cx: &Ctx, origin: &OriginId, lsn: u64) -> Result<ApplyBatch, Failure> {
    cx.batch(origin.as_str(), Progress::Commit { end_lsn: Lsn(lsn) }, vec![])
}

/// Keyed views are maps: inserts upsert, updates replace, updates with
/// `old_key` move the row, deletes remove.
pub async fn keyed_row_ops<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("keyed_row_ops");
    let v = published(&cx, store, 1, &keyed3(), vec![row![1, "a", "x"], row![2, "b", "y"], row![3, "c", "z"]]).await?;
    let id = v.relation_id;
    let batch = cx.commit(
        10,
        vec![ops(
            &v,
            Identity::Key,
            vec![
                ins(row![4, "d", "w"]),
                RowOp::Update { old_key: None, key: crate::key![1], new: set(row![1, "A", "x2"]) },
                RowOp::Update { old_key: Some(crate::key![2]), key: crate::key![20], new: set(row![20, "b", "y"]) },
                RowOp::Delete { key: crate::key![3] },
                ins(row![5, "e", "v"]),
                RowOp::Delete { key: crate::key![5] },
                ins(row![4, "d2", "w2"]),
            ],
        )],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq(
        "rows after the batch",
        rows(&cx, store, id).await?,
        vec![row![1, "A", "x2"], row![4, "d2", "w2"], row![20, "b", "y"]],
    )?;
    cx.eq("get moved-away key 2", cx.ok("get", store.get(id, &crate::key![2]).await)?, None)?;
    cx.eq("get deleted key 3", cx.ok("get", store.get(id, &crate::key![3]).await)?, None)?;
    cx.eq("get moved-to key 20", cx.ok("get", store.get(id, &crate::key![20]).await)?, Some(row![20, "b", "y"]))?;
    cx.eq("count", cx.ok("count", store.count(id).await)?, 3)?;

    // A key move that keeps an unchanged value from the old row.
    let batch = cx.commit(
        20,
        vec![ops(
            &v,
            Identity::Key,
            vec![RowOp::Update {
                old_key: Some(crate::key![20]),
                key: crate::key![21],
                new: vec![Cell::Set(21.into()), Cell::Unchanged, Cell::Set("moved".into())],
            }],
        )],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("old key after move", cx.ok("get", store.get(id, &crate::key![20]).await)?, None)?;
    cx.eq("new key after move", cx.ok("get", store.get(id, &crate::key![21]).await)?, Some(row![21, "b", "moved"]))
}

/// `Cell::Unchanged` keeps the stored value (a Postgres unchanged TOAST
/// column is never overwritten with NULL).
pub async fn unchanged_cells<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("unchanged_cells");
    let big = "t".repeat(10_000);
    let v = published(&cx, store, 1, &keyed3(), vec![row![1, big.as_str(), "s1"]]).await?;
    let batch = cx.commit(
        10,
        vec![ops(
            &v,
            Identity::Key,
            vec![
                RowOp::Update {
                    old_key: None,
                    key: crate::key![1],
                    new: vec![Cell::Set(1.into()), Cell::Unchanged, Cell::Set("s2".into())],
                },
                RowOp::Update {
                    old_key: None,
                    key: crate::key![1],
                    new: vec![Cell::Set(1.into()), Cell::Unchanged, Cell::Unchanged],
                },
            ],
        )],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq(
        "row after updates with unchanged cells",
        cx.ok("get", store.get(v.relation_id, &crate::key![1]).await)?,
        Some(row![1, big.as_str(), "s2"]),
    )
}

/// Full-row views are multisets: copies are counted, scanned once per copy,
/// removed one at a time; an update moves one copy.
pub async fn full_row_multisets<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("full_row_multisets");
    let v = published(&cx, store, 1, &full2(), vec![row![1, "x"], row![2, "y"], row![1, "x"]]).await?;
    let id = v.relation_id;
    cx.eq("count of the snapshot (duplicates kept)", cx.ok("count", store.count(id).await)?, 3)?;
    cx.eq("snapshot rows", rows(&cx, store, id).await?, vec![row![1, "x"], row![1, "x"], row![2, "y"]])?;
    let batch = cx.commit(
        10,
        vec![ops(
            &v,
            Identity::FullRow,
            vec![
                ins_full(row![1, "x"]),
                RowOp::Delete { key: crate::key![2, "y"] },
                RowOp::Update { old_key: Some(crate::key![1, "x"]), key: crate::key![1, "w"], new: set(row![1, "w"]) },
            ],
        )],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq(
        "rows after insert, delete and update",
        rows(&cx, store, id).await?,
        vec![row![1, "w"], row![1, "x"], row![1, "x"]],
    )?;
    cx.eq("count", cx.ok("count", store.count(id).await)?, 3)?;
    cx.eq("get of a duplicated row", cx.ok("get", store.get(id, &crate::key![1, "x"]).await)?, Some(row![1, "x"]))?;
    cx.eq(
        "scan with a limit inside a run of copies",
        cx.ok("scan", store.scan(id, &all(), 2).await)?,
        vec![row![1, "w"], row![1, "x"]],
    )?;
    let batch = cx.commit(
        20,
        vec![ops(
            &v,
            Identity::FullRow,
            vec![RowOp::Delete { key: crate::key![1, "x"] }, RowOp::Delete { key: crate::key![1, "x"] }],
        )],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("rows after deleting both copies", rows(&cx, store, id).await?, vec![row![1, "w"]])?;
    cx.eq("get of a fully deleted row", cx.ok("get", store.get(id, &crate::key![1, "x"]).await)?, None)
}

/// A truncate empties the view; rows written after it in the same batch
/// survive, rows written before it do not.
pub async fn truncate_then_insert<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("truncate_then_insert");
    let initial: Vec<Row> = (1..=5).map(|i| row![i, format!("n{i}"), "x"]).collect();
    let v = published(&cx, store, 1, &keyed3(), initial).await?;
    let id = v.relation_id;
    let batch = cx.commit(
        10,
        vec![ops(
            &v,
            Identity::Key,
            vec![
                ins(row![6, "six", "x"]),
                RowOp::Truncate,
                ins(row![7, "seven", "x"]),
                ins(row![8, "eight", "x"]),
                RowOp::Delete { key: crate::key![8] },
            ],
        )],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("rows after truncate + inserts", rows(&cx, store, id).await?, vec![row![7, "seven", "x"]])?;
    cx.eq("count", cx.ok("count", store.count(id).await)?, 1)?;
    cx.eq("get of a truncated row", cx.ok("get", store.get(id, &crate::key![1]).await)?, None)?;

    let batch = cx.commit(
        20,
        vec![ops(
            &v,
            Identity::Key,
            vec![ins(row![1, "one", "x"]), RowOp::Truncate, RowOp::Truncate, ins(row![2, "two", "x"])],
        )],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("rows after a double truncate", rows(&cx, store, id).await?, vec![row![2, "two", "x"]])?;

    // The copy keeps working normally afterwards.
    let batch = cx.commit(30, vec![ops(&v, Identity::Key, vec![ins(row![3, "three", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("rows after a later insert", rows(&cx, store, id).await?, vec![row![2, "two", "x"], row![3, "three", "x"]])?;
    cx.ok("persist", store.persist().await)?;

    let f = published(&cx, store, 2, &full2(), vec![row![1, "x"], row![1, "x"], row![9, "z"]]).await?;
    let batch = cx.commit(
        40,
        vec![ops(&f, Identity::FullRow, vec![RowOp::Truncate, ins_full(row![1, "x"]), ins_full(row![1, "x"])])],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq(
        "full-row rows after truncate + inserts",
        rows(&cx, store, f.relation_id).await?,
        vec![row![1, "x"], row![1, "x"]],
    )
}

/// Two `ViewOps` for the same view in one batch see each other's writes.
pub async fn same_view_twice_in_a_batch<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("same_view_twice_in_a_batch");
    let v = published(&cx, store, 1, &keyed3(), vec![]).await?;
    let batch = cx.commit(
        10,
        vec![
            ops(&v, Identity::Key, vec![ins(row![1, "a", "x"])]),
            ops(
                &v,
                Identity::Key,
                vec![RowOp::Update {
                    old_key: None,
                    key: crate::key![1],
                    new: vec![Cell::Set(1.into()), Cell::Unchanged, Cell::Set("y".into())],
                }],
            ),
        ],
    )?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("rows", rows(&cx, store, v.relation_id).await?, vec![row![1, "a", "y"]])
}

/// Operations that do not fit the local copy are reported as conflicts
/// (naming view and key), and the rest of the batch still applies.
pub async fn conflicts_are_reported<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("conflicts_are_reported");
    let k = published(&cx, store, 1, &keyed3(), vec![row![1, "a", "x"]]).await?;
    let f = published(&cx, store, 2, &full2(), vec![row![1, "x"]]).await?;
    let batch = cx.commit(
        10,
        vec![
            ops(
                &k,
                Identity::Key,
                vec![
                    RowOp::Update {
                        old_key: None,
                        key: crate::key![9],
                        new: vec![Cell::Set(9.into()), Cell::Unchanged, Cell::Set("n".into())],
                    },
                    ins(row![2, "b", "y"]),
                ],
            ),
            ops(&f, Identity::FullRow, vec![RowOp::Delete { key: crate::key![5, "q"] }, ins_full(row![2, "y"])]),
        ],
    )?;
    let report = apply(&cx, store, batch).await?;
    let mut got: Vec<(RelationId, Key)> = report.conflicts.iter().map(|c| (c.relation_id, c.key.clone())).collect();
    got.sort();
    cx.eq("conflicts (view, key)", got, vec![(k.relation_id, crate::key![9]), (f.relation_id, crate::key![5, "q"])])?;
    cx.eq(
        "the conflicting update created no row",
        cx.ok("get", store.get(k.relation_id, &crate::key![9]).await)?,
        None,
    )?;
    cx.eq(
        "keyed rows after the batch",
        rows(&cx, store, k.relation_id).await?,
        vec![row![1, "a", "x"], row![2, "b", "y"]],
    )?;
    cx.eq("full-row rows after the batch", rows(&cx, store, f.relation_id).await?, vec![row![1, "x"], row![2, "y"]])?;
    cx.eq("origin progress still moves", load(&cx, store).await?.origins, vec![progress(&cx.origin(ORIGIN)?, 10)])
}

/// A batch that fails (here: it names a view without a published copy)
/// changes nothing at all: no rows, no job, no progress.
pub async fn batches_are_atomic<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("batches_are_atomic");
    let a = published(&cx, store, 1, &keyed3(), vec![row![1, "a", "x"]]).await?;
    let b = define(&cx, store, 2).await?; // in the catalog, never published
    let before = load(&cx, store).await?;

    let mut batch = cx.commit(
        50,
        vec![
            ops(&a, Identity::Key, vec![ins(row![2, "b", "y"]), RowOp::Delete { key: crate::key![1] }]),
            ops(&b, Identity::Key, vec![ins(row![1, "z", "z"])]),
        ],
    )?;
    batch.jobs.push(job(&a, JobState::Failed, 99));
    let result = store.apply(batch).await;
    cx.err_kind("apply naming an unpublished view", result, StoreErrorKind::NotFound)?;

    let mut batch = cx.commit(60, vec![ops(&a, Identity::Key, vec![ins(row![3, "c", "z"])])])?;
    batch.views.push(ViewOps {
        relation_id: RelationId(999_999),
        identity: Identity::Key,
        ops: vec![ins(row![1, "q", "q"])],
    });
    let result = store.apply(batch).await;
    cx.err_kind("apply naming an unknown view", result, StoreErrorKind::NotFound)?;

    cx.eq("rows after failed batches", rows(&cx, store, a.relation_id).await?, vec![row![1, "a", "x"]])?;
    cx.eq("stored state after failed batches", load(&cx, store).await?, before)?;

    // A successful batch writes its job records together with its rows.
    let new_job = job(&a, JobState::Running, 100);
    let mut batch = cx.commit(70, vec![ops(&a, Identity::Key, vec![ins(row![4, "d", "w"])])])?;
    batch.jobs.push(new_job.clone());
    apply_clean(&cx, store, batch).await?;
    let state = load(&cx, store).await?;
    cx.eq("jobs after a batch carrying one", state.jobs, vec![new_job])?;
    cx.eq("origins after a batch", state.origins, vec![progress(&cx.origin(ORIGIN)?, 70)])
}

/// Batch sequence numbers must increase; a repeated or older one is refused
/// (`Invalid`) and changes nothing.
pub async fn sequence_numbers_increase<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("sequence_numbers_increase");
    let v = published(&cx, store, 1, &keyed3(), vec![]).await?;
    cx.skip_to(5);
    let batch = cx.commit(10, vec![ops(&v, Identity::Key, vec![ins(row![1, "a", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    for seq in [5, 3] {
        cx.skip_to(seq);
        let batch = cx.commit(20, vec![ops(&v, Identity::Key, vec![ins(row![2, "b", "y"])])])?;
        let result = store.apply(batch).await;
        cx.err_kind(&format!("apply with sequence number {seq} after 5"), result, StoreErrorKind::Invalid)?;
    }
    cx.eq("rows", rows(&cx, store, v.relation_id).await?, vec![row![1, "a", "x"]])?;
    cx.eq("origins", load(&cx, store).await?.origins, vec![progress(&cx.origin(ORIGIN)?, 10)])
}

/// `Partial` batches mark their views dirty without moving progress; the
/// origin's `Commit` clears the marks; so do `publish` and `forget` for their
/// view; `Replay` leaves marks alone.
pub async fn dirty_markers<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("dirty_markers");
    let a = published(&cx, store, 1, &keyed3(), vec![]).await?;
    let b = published(&cx, store, 2, &keyed3(), vec![]).await?;
    let (ia, ib) = (a.relation_id, b.relation_id);
    apply_clean(&cx, store, cx.commit(10, vec![])?).await?;

    let batch = cx.batch(ORIGIN, Progress::Partial, vec![ops(&a, Identity::Key, vec![ins(row![1, "a", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    let batch = cx.batch(ORIGIN, Progress::Partial, vec![ops(&b, Identity::Key, vec![ins(row![1, "b", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    let state = load(&cx, store).await?;
    cx.eq("dirty after two partial batches", state.dirty, vec![ia, ib])?;
    cx.eq("origins after partial batches", state.origins, vec![progress(&cx.origin(ORIGIN)?, 10)])?;
    cx.eq("partial rows are visible", rows(&cx, store, ia).await?, vec![row![1, "a", "x"]])?;

    let batch = cx.batch(ORIGIN, Progress::Replay, vec![ops(&a, Identity::Key, vec![ins(row![2, "a", "y"])])])?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("dirty after a replay", load(&cx, store).await?.dirty, vec![ia, ib])?;

    let batch = cx.commit(20, vec![ops(&a, Identity::Key, vec![ins(row![3, "a", "z"])])])?;
    apply_clean(&cx, store, batch).await?;
    let state = load(&cx, store).await?;
    cx.eq("dirty after the commit", state.dirty, vec![])?;
    cx.eq("origins after the commit", state.origins, vec![progress(&cx.origin(ORIGIN)?, 20)])?;

    let batch = cx.batch(
        ORIGIN,
        Progress::Partial,
        vec![
            ops(&a, Identity::Key, vec![ins(row![4, "a", "x"])]),
            ops(&b, Identity::Key, vec![ins(row![4, "b", "x"])]),
        ],
    )?;
    apply_clean(&cx, store, batch).await?;
    materialize(&cx, store, &a, &keyed3(), vec![row![1, "fresh", "x"]], &job(&a, JobState::Running, 2)).await?;
    cx.eq("dirty after republishing a", load(&cx, store).await?.dirty, vec![ib])?;
    cx.ok("forget", store.forget(ib).await)?;
    cx.eq("dirty after forgetting b", load(&cx, store).await?.dirty, vec![])
}

/// `Replay` batches change rows but never the origin's applied LSN.
pub async fn replay_keeps_progress<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("replay_keeps_progress");
    let v = published(&cx, store, 1, &keyed3(), vec![]).await?;
    apply_clean(&cx, store, cx.commit(100, vec![])?).await?;
    let batch = cx.batch(ORIGIN, Progress::Replay, vec![ops(&v, Identity::Key, vec![ins(row![1, "a", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    let origin = cx.origin(ORIGIN)?;
    cx.eq("origins after a replay", load(&cx, store).await?.origins, vec![progress(&origin, 100)])?;
    cx.eq("replayed rows", rows(&cx, store, v.relation_id).await?, vec![row![1, "a", "x"]])?;
    apply_clean(&cx, store, cx.commit(200, vec![])?).await?;
    cx.eq("origins after the next commit", load(&cx, store).await?.origins, vec![progress(&origin, 200)])
}

/// A generation is invisible while it fills (reads and applies keep using the
/// published copy); `publish` switches rows, schema and job in one step.
pub async fn generation_publish_is_atomic<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("generation_publish_is_atomic");
    let old_rows: Vec<Row> = (1..=3).map(|i| row![i, format!("old{i}"), "x"]).collect();
    let v = published(&cx, store, 1, &keyed3(), old_rows.clone()).await?;
    let id = v.relation_id;
    let old_job = cx.ok("load", store.load().await)?.jobs.into_iter().find(|j| j.relation_id == id);

    let wide = RelationSchema::keyed(SourceRelId(3), columns(&["id", "name", "note", "extra"]), vec![0]);
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &wide).await)?;
    cx.ok("generation write", generation.write(vec![row![10, "new10", "x", 1], row![11, "new11", "x", 2]]).await)?;
    cx.ok("generation write", generation.write(vec![row![12, "new12", "x", 3]]).await)?;

    // While the generation fills, everything reads the published copy...
    cx.eq("rows during the generation", rows(&cx, store, id).await?, old_rows.clone())?;
    cx.eq("get of a new row during the generation", cx.ok("get", store.get(id, &crate::key![10]).await)?, None)?;
    cx.eq("count during the generation", cx.ok("count", store.count(id).await)?, 3)?;
    let state = load(&cx, store).await?;
    cx.eq("schemas during the generation", state.schemas, vec![(id, keyed3())])?;
    cx.eq("job during the generation", state.jobs.into_iter().find(|j| j.relation_id == id), old_job)?;
    // ...and the feed keeps updating it.
    let batch = cx.commit(10, vec![ops(&v, Identity::Key, vec![ins(row![4, "live", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    cx.eq(
        "get of a live row during the generation",
        cx.ok("get", store.get(id, &crate::key![4]).await)?,
        Some(row![4, "live", "x"]),
    )?;

    let new_job = job(&v, JobState::Synced, 50);
    cx.ok("publish", generation.publish(&new_job).await)?;
    let new_rows = vec![row![10, "new10", "x", 1], row![11, "new11", "x", 2], row![12, "new12", "x", 3]];
    cx.eq("rows after publish", rows(&cx, store, id).await?, new_rows)?;
    cx.eq("old row after publish", cx.ok("get", store.get(id, &crate::key![1]).await)?, None)?;
    cx.eq("live row after publish", cx.ok("get", store.get(id, &crate::key![4]).await)?, None)?;
    let state = load(&cx, store).await?;
    cx.eq("schemas after publish", state.schemas, vec![(id, wide)])?;
    cx.eq("jobs after publish", state.jobs, vec![new_job])
}

/// Discarded and abandoned (dropped) generations leave no trace; a view's
/// first generation is invisible until published.
pub async fn generation_discard_and_abandon<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("generation_discard_and_abandon");
    let v = published(&cx, store, 1, &keyed3(), vec![row![1, "a", "x"]]).await?;
    let id = v.relation_id;

    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok("generation write", generation.write(vec![row![2, "b", "y"]]).await)?;
    cx.ok("discard", generation.discard().await)?;
    cx.eq("rows after discard", rows(&cx, store, id).await?, vec![row![1, "a", "x"]])?;

    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok("generation write", generation.write(vec![row![3, "c", "z"]]).await)?;
    drop(generation);
    cx.eq("rows after abandoning a generation", rows(&cx, store, id).await?, vec![row![1, "a", "x"]])?;
    cx.eq("count after abandoning a generation", cx.ok("count", store.count(id).await)?, 1)?;

    materialize(&cx, store, &v, &keyed3(), vec![row![4, "d", "w"]], &job(&v, JobState::Running, 3)).await?;
    cx.eq("rows after a later publish", rows(&cx, store, id).await?, vec![row![4, "d", "w"]])?;

    // A view that was never published has no copy, even while one fills.
    let fresh = define(&cx, store, 2).await?;
    let mut generation = cx.ok("begin_generation", store.begin_generation(fresh.relation_id, &keyed3()).await)?;
    cx.ok("generation write", generation.write(vec![row![1, "a", "x"]]).await)?;
    cx.err_kind(
        "get from a view whose first generation is filling",
        store.get(fresh.relation_id, &crate::key![1]).await,
        StoreErrorKind::NotFound,
    )?;
    cx.ok("discard", generation.discard().await)?;
    cx.err_kind("count of a never-published view", store.count(fresh.relation_id).await, StoreErrorKind::NotFound)?;
    cx.eq("schemas", load(&cx, store).await?.schemas, vec![(id, keyed3())])
}

/// Generations refuse unknown views, malformed schemas and rows of the wrong
/// width; publishing a generation of a view forgotten meanwhile fails and
/// resurrects nothing.
pub async fn generation_errors<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("generation_errors");
    cx.err_kind(
        "begin_generation for an unknown view",
        store.begin_generation(RelationId(404), &keyed3()).await.map(|_| ()),
        StoreErrorKind::NotFound,
    )?;
    let v = define(&cx, store, 1).await?;
    let bad = RelationSchema::keyed(SourceRelId(1), columns(&["id"]), vec![]);
    cx.err_kind(
        "begin_generation with a schema without key",
        store.begin_generation(v.relation_id, &bad).await.map(|_| ()),
        StoreErrorKind::Invalid,
    )?;
    let mut generation = cx.ok("begin_generation", store.begin_generation(v.relation_id, &keyed3()).await)?;
    cx.err_kind(
        "write of a row of the wrong width",
        generation.write(vec![row![1, "too short"]]).await,
        StoreErrorKind::Invalid,
    )?;
    cx.ok("generation write", generation.write(vec![row![1, "a", "x"]]).await)?;
    cx.ok("forget", store.forget(v.relation_id).await)?;
    cx.err_kind(
        "publish after the view was forgotten",
        generation.publish(&job(&v, JobState::Running, 1)).await,
        StoreErrorKind::NotFound,
    )?;
    cx.eq("stored state", load(&cx, store).await?, StoredState::default())?;
    cx.err_kind(
        "get from the forgotten view",
        store.get(v.relation_id, &crate::key![1]).await,
        StoreErrorKind::NotFound,
    )
}

/// Rows written with [`RowSink::write_encoded`](crate::RowSink::write_encoded)
/// — mixed with plain writes, repeated keys included — read back exactly as
/// the same rows written plainly; a batch encoded for another width is
/// refused (`Invalid`).
pub async fn generation_encoded_rows<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("generation_encoded_rows");
    let encode = |schema: &RelationSchema, rows: &[Row]| {
        let mut batch = crate::EncodedRowsBuilder::new(schema);
        for row in rows {
            for v in &row.0 {
                batch.push(v.as_value_ref());
            }
            // Rows of the wrong width are dropped here; none are written.
            let _ = batch.finish_row();
        }
        batch.take()
    };
    for (id, schema) in [(1, keyed3()), (2, full2())] {
        let width = schema.columns.len();
        let wide = |i: i64, v: &str| {
            let mut r = row![i, v, "n"];
            r.0.truncate(width);
            r
        };
        let first = vec![wide(3, "c"), wide(1, "a"), wide(2, "b"), wide(1, "a")];
        let second = vec![wide(2, "b"), wide(0, "z")];
        // The reference: everything written plainly.
        let plain = define(&cx, store, id).await?;
        let all_rows: Vec<Row> = first.iter().chain(&second).cloned().collect();
        materialize(&cx, store, &plain, &schema, all_rows, &job(&plain, JobState::Running, 1)).await?;
        let expected = rows(&cx, store, plain.relation_id).await?;
        // The same rows, encoded and plain in turn, into a new copy.
        let mut generation = cx.ok("begin_generation", store.begin_generation(plain.relation_id, &schema).await)?;
        cx.ok("write_encoded", generation.write_encoded(encode(&schema, &first)).await)?;
        cx.ok("generation write", generation.write(second.clone()).await)?;
        cx.ok("publish", generation.publish(&job(&plain, JobState::Running, 2)).await)?;
        cx.eq("rows written encoded", rows(&cx, store, plain.relation_id).await?, expected)?;
    }
    // A batch built for a narrower schema.
    let v = define(&cx, store, 3).await?;
    let narrow = RelationSchema::keyed(SourceRelId(1), columns(&["id", "name"]), vec![0]);
    let mut generation = cx.ok("begin_generation", store.begin_generation(v.relation_id, &keyed3()).await)?;
    cx.err_kind(
        "write_encoded of rows encoded for another width",
        generation.write_encoded(encode(&narrow, &[row![1, "a"]])).await,
        StoreErrorKind::Invalid,
    )?;
    cx.ok("discard", generation.discard().await)
}

/// Scans return rows in key order (the order of `Key`, which the byte
/// encoding preserves) for integers incl. negatives and extremes, text incl.
/// empty strings and NULs, floats incl. signed zeros, infinities and NaN,
/// and composite keys; ranges are `[start, end)`; limits cut the result.
pub async fn scan_order_and_ranges<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("scan_order_and_ranges");
    let one_col = |name: &str| RelationSchema::keyed(SourceRelId(9), columns(&[name, "v"]), vec![0]);

    // Each case: view id, values in insertion order (shuffled on purpose).
    let ints: Vec<Value> = [42, -1, i64::MAX, 0, i64::MIN, 3, -5].map(Value::Int).to_vec();
    let texts: Vec<Value> = ["b", "", "a\0b", "a", "ab", "é", "B", "a\u{1}"].map(|s| Value::Text(s.into())).to_vec();
    let floats: Vec<Value> =
        [2.5, f64::NAN, -0.0, f64::NEG_INFINITY, 1e-300, 0.0, f64::INFINITY, -1.5].map(Value::Float).to_vec();
    let bytes: Vec<Value> = [vec![1u8, 0], vec![], vec![0], vec![1], vec![0xFF], vec![0, 0]].map(Value::Bytes).to_vec();
    for (id, values) in [(1, ints), (2, texts), (3, floats), (4, bytes)] {
        let view = published(&cx, store, id, &one_col("k"), vec![]).await?;
        let inserts = values.iter().map(|k| ins(Row(vec![k.clone(), Value::Int(id as i64)]))).collect();
        let batch = cx.commit(id * 10, vec![ops(&view, Identity::Key, inserts)])?;
        apply_clean(&cx, store, batch).await?;
        let mut want: Vec<Row> = values.iter().map(|k| Row(vec![k.clone(), Value::Int(id as i64)])).collect();
        want.sort();
        cx.eq(&format!("scan order of view {id}"), rows(&cx, store, view.relation_id).await?, want.clone())?;
        for key in &values {
            let got = cx.ok("get", store.get(view.relation_id, &Key(vec![key.clone()])).await)?;
            cx.ensure(got.is_some(), || format!("get of key {key} in view {id} found nothing"))?;
        }
        cx.eq(
            &format!("scan of view {id} with limit 3"),
            cx.ok("scan", store.scan(view.relation_id, &all(), 3).await)?,
            want[..3].to_vec(),
        )?;
    }

    // Ranges over the integer view.
    let id = RelationId(1);
    let range = |start: Option<i64>, end: Option<i64>| KeyRange {
        start: start.map(|s| crate::key![s]),
        end: end.map(|e| crate::key![e]),
    };
    let keys = |rows: Vec<Row>| -> Vec<Value> { rows.into_iter().filter_map(|r| r.0.into_iter().next()).collect() };
    for (start, end, limit, want) in [
        (Some(-1), Some(42), usize::MAX, vec![-1, 0, 3]),
        (Some(-1), Some(43), usize::MAX, vec![-1, 0, 3, 42]),
        (Some(-2), None, 2, vec![-1, 0]),
        (None, Some(0), usize::MAX, vec![i64::MIN, -5, -1]),
        (Some(i64::MIN), Some(i64::MIN), usize::MAX, vec![]),
        (Some(5), Some(1), usize::MAX, vec![]),
        (Some(i64::MAX), None, usize::MAX, vec![i64::MAX]),
        (None, None, 0, vec![]),
    ] {
        let got = keys(cx.ok("scan", store.scan(id, &range(start, end), limit).await)?);
        cx.eq(
            &format!("keys of scan [{start:?}, {end:?}) limit {limit}"),
            got,
            want.into_iter().map(Value::Int).collect(),
        )?;
    }

    // Composite keys: (text, int), compared column by column; a shorter key
    // sorts before every longer key it prefixes.
    let composite = RelationSchema::keyed(SourceRelId(10), columns(&["a", "b", "v"]), vec![0, 1]);
    let view = published(&cx, store, 5, &composite, vec![]).await?;
    let pairs = [("a", 2), ("a", -1), ("b", 0), ("", 5), ("a", 10), ("ab", -3)];
    let inserts = pairs.iter().map(|(a, b)| insert(row![*a, *b, "v"], &[0, 1])).collect();
    let batch = cx.commit(100, vec![ops(&view, Identity::Key, inserts)])?;
    apply_clean(&cx, store, batch).await?;
    let mut want: Vec<Row> = pairs.iter().map(|(a, b)| row![*a, *b, "v"]).collect();
    want.sort();
    cx.eq("composite scan order", rows(&cx, store, view.relation_id).await?, want)?;
    let prefix = KeyRange { start: Some(crate::key!["a"]), end: Some(crate::key!["ab"]) };
    cx.eq(
        "composite scan of the \"a\" prefix",
        cx.ok("scan", store.scan(view.relation_id, &prefix, usize::MAX).await)?,
        vec![row!["a", -1, "v"], row!["a", 2, "v"], row!["a", 10, "v"]],
    )?;
    let bounded = KeyRange { start: Some(crate::key!["a", 0]), end: Some(crate::key!["b", 0]) };
    cx.eq(
        "composite scan [(a, 0), (b, 0))",
        cx.ok("scan", store.scan(view.relation_id, &bounded, usize::MAX).await)?,
        vec![row!["a", 2, "v"], row!["a", 10, "v"], row!["ab", -3, "v"]],
    )
}

/// `count` is the number of rows, copies of full-row rows counted.
pub async fn count_rows<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("count_rows");
    let k = published(&cx, store, 1, &keyed3(), vec![]).await?;
    cx.eq("count of an empty copy", cx.ok("count", store.count(k.relation_id).await)?, 0)?;
    let inserts = (0..250).map(|i| ins(row![i, "n", "x"])).collect();
    apply_clean(&cx, store, cx.commit(10, vec![ops(&k, Identity::Key, inserts)])?).await?;
    cx.eq("count after 250 inserts", cx.ok("count", store.count(k.relation_id).await)?, 250)?;
    let f = published(&cx, store, 2, &full2(), vec![row![1, "x"]; 4]).await?;
    cx.eq("count of 4 identical rows", cx.ok("count", store.count(f.relation_id).await)?, 4)?;
    cx.eq("scan of 4 identical rows", rows(&cx, store, f.relation_id).await?, vec![row![1, "x"]; 4])
}

/// `forget` removes the catalog entry, job, copy and dirty marker, and only
/// those of its view; afterwards the view is unknown. Forgetting twice is fine.
pub async fn forget_removes_everything<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("forget_removes_everything");
    let a = published(&cx, store, 1, &keyed3(), vec![row![1, "a", "x"]]).await?;
    let b = published(&cx, store, 2, &keyed3(), vec![row![1, "b", "x"]]).await?;
    let batch = cx.batch(ORIGIN, Progress::Partial, vec![ops(&a, Identity::Key, vec![ins(row![2, "a", "y"])])])?;
    apply_clean(&cx, store, batch).await?;
    let before = load(&cx, store).await?;

    cx.ok("forget", store.forget(a.relation_id).await)?;
    let state = load(&cx, store).await?;
    cx.eq("views", state.views, vec![b.clone()])?;
    cx.eq("jobs", state.jobs, before.jobs.into_iter().filter(|j| j.relation_id == b.relation_id).collect())?;
    cx.eq("schemas", state.schemas, vec![(b.relation_id, keyed3())])?;
    cx.eq("dirty", state.dirty, vec![])?;
    cx.eq("rows of the other view", rows(&cx, store, b.relation_id).await?, vec![row![1, "b", "x"]])?;

    let id = a.relation_id;
    cx.err_kind("get", store.get(id, &crate::key![1]).await, StoreErrorKind::NotFound)?;
    cx.err_kind("scan", store.scan(id, &all(), 10).await, StoreErrorKind::NotFound)?;
    cx.err_kind("count", store.count(id).await, StoreErrorKind::NotFound)?;
    let batch = cx.commit(10, vec![ops(&a, Identity::Key, vec![ins(row![3, "a", "z"])])])?;
    cx.err_kind("apply", store.apply(batch).await, StoreErrorKind::NotFound)?;
    cx.err_kind("begin_generation", store.begin_generation(id, &keyed3()).await.map(|_| ()), StoreErrorKind::NotFound)?;
    cx.ok("forget again", store.forget(id).await)?;
    cx.ok("forget of an unknown view", store.forget(RelationId(404)).await)
}

/// Reads and applies of views that do not exist, or have no published copy
/// yet, are `NotFound` errors.
pub async fn unknown_views_are_errors<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("unknown_views_are_errors");
    let defined = define(&cx, store, 1).await?;
    for (what, id) in [("unknown view", RelationId(404)), ("unpublished view", defined.relation_id)] {
        cx.err_kind(&format!("get from {what}"), store.get(id, &crate::key![1]).await, StoreErrorKind::NotFound)?;
        cx.err_kind(&format!("scan of {what}"), store.scan(id, &all(), 10).await, StoreErrorKind::NotFound)?;
        cx.err_kind(&format!("count of {what}"), store.count(id).await, StoreErrorKind::NotFound)?;
        let batch = cx.commit(
            10,
            vec![ViewOps { relation_id: id, identity: Identity::Key, ops: vec![ins(row![1, "a", "x"])] }],
        )?;
        cx.err_kind(&format!("apply to {what}"), store.apply(batch).await, StoreErrorKind::NotFound)?;
    }
    Ok(())
}

/// `persist` reports the last applied batch (nothing before any batch).
pub async fn persist_reports_last_batch<S: Store>(store: &S) -> Result<(), Failure> {
    let cx = Ctx::new("persist_reports_last_batch");
    cx.eq("persist before any batch", cx.ok("persist", store.persist().await)?, None)?;
    cx.skip_to(3);
    apply_clean(&cx, store, cx.commit(10, vec![])?).await?;
    cx.skip_to(7);
    apply_clean(&cx, store, cx.commit(20, vec![])?).await?;
    cx.eq("persist after batches 3 and 7", cx.ok("persist", store.persist().await)?, Some(BatchSeq(7)))?;
    cx.eq("persist again", cx.ok("persist", store.persist().await)?, Some(BatchSeq(7)))
}

/// `apply_many` applies a run of batches in order; after a failing batch no
/// later batch of the run is applied, and each batch gets its own result.
pub async fn apply_many_stops_at_a_failure<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("apply_many_stops_at_a_failure");
    let v = published(&cx, store, 1, &keyed3(), vec![]).await?;
    let first = cx.commit(10, vec![ops(&v, Identity::Key, vec![ins(row![1, "a", "x"])])])?;
    let second = cx.commit(20, vec![ops(&v, Identity::Key, vec![ins(row![2, "b", "y"])])])?;
    let mut failing = cx.commit(30, vec![ops(&v, Identity::Key, vec![ins(row![3, "c", "z"])])])?;
    failing.views.push(ViewOps { relation_id: RelationId(404), identity: Identity::Key, ops: vec![] });
    let after = cx.commit(40, vec![ops(&v, Identity::Key, vec![ins(row![4, "d", "w"])])])?;
    let results = store.apply_many(vec![first, second, failing, after]).await;
    let shape: Vec<bool> = results.iter().map(Result::is_ok).collect();
    cx.eq("which batches of the run succeeded", shape, vec![true, true, false, false])?;
    if let Some(Err(e)) = results.get(2) {
        cx.eq("kind of the failing batch's error", e.kind, StoreErrorKind::NotFound)?;
    }
    cx.eq("rows after the run", rows(&cx, store, v.relation_id).await?, vec![row![1, "a", "x"], row![2, "b", "y"]])?;
    cx.eq("origins after the run", load(&cx, store).await?.origins, vec![progress(&cx.origin(ORIGIN)?, 20)])
}

// ---------------------------------------------------------------------------
// Crash checks.

/// Persisted batches survive a crash; unpersisted ones survive whole or not
/// at all (rows and progress together); a persisted partial transaction
/// leaves its view marked dirty; the store works normally afterwards.
pub async fn crash_keeps_persisted_batches<S: Store>(store: S, crash: &mut impl FnMut(S) -> S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("crash_keeps_persisted_batches");
    let origin = cx.origin(ORIGIN)?;
    let v = published(&cx, &store, 1, &keyed3(), vec![]).await?;
    let id = v.relation_id;
    apply_clean(&cx, &store, cx.commit(10, vec![ops(&v, Identity::Key, vec![ins(row![1, "a", "x"])])])?).await?;
    cx.ok("persist", store.persist().await)?;
    apply_clean(&cx, &store, cx.commit(20, vec![ops(&v, Identity::Key, vec![ins(row![2, "b", "y"])])])?).await?;
    apply_clean(
        &cx,
        &store,
        cx.commit(30, vec![ops(&v, Identity::Key, vec![RowOp::Truncate, ins(row![3, "c", "z"])])])?,
    )
    .await?;

    let store = crash(store);
    let state = load(&cx, &store).await?;
    let lsn = state.origins.first().map(|p| p.applied.0);
    let want = match lsn {
        Some(10) => vec![row![1, "a", "x"]],
        Some(20) => vec![row![1, "a", "x"], row![2, "b", "y"]],
        Some(30) => vec![row![3, "c", "z"]],
        other => {
            return Err(cx
                .fail(format!("after the crash the origin's LSN is {other:?}: the persisted batch (LSN 10) was lost")))
        }
    };
    cx.eq("rows after the crash (must match the surviving LSN)", rows(&cx, &store, id).await?, want)?;

    // A persisted partial transaction is flagged for re-bootstrap.
    let batch = cx.batch(ORIGIN, Progress::Partial, vec![ops(&v, Identity::Key, vec![ins(row![4, "d", "w"])])])?;
    apply_clean(&cx, &store, batch).await?;
    cx.ok("persist", store.persist().await)?;
    let store = crash(store);
    let state = load(&cx, &store).await?;
    cx.eq("dirty after a crash in a partial transaction", state.dirty, vec![id])?;
    cx.ensure(state.origins.len() == 1 && state.origins.iter().all(|p| p.origin == origin), || {
        format!("origins after the second crash: {:?}", state.origins)
    })?;

    // The store carries on: re-bootstrap and apply.
    materialize(&cx, &store, &v, &keyed3(), vec![row![9, "boot", "x"]], &job(&v, JobState::Running, 9)).await?;
    cx.skip_to(cx.next_seq.load(Ordering::Relaxed) + 100);
    apply_clean(&cx, &store, cx.commit(40, vec![ops(&v, Identity::Key, vec![ins(row![10, "e", "v"])])])?).await?;
    let through = cx.ok("persist", store.persist().await)?;
    cx.ensure(through.is_some(), || "persist after a batch reported nothing durable".into())?;
    let store = crash(store);
    let state = load(&cx, &store).await?;
    cx.eq("dirty after re-bootstrap", state.dirty, vec![])?;
    cx.eq("origins after the last crash", state.origins, vec![progress(&origin, 40)])?;
    cx.eq("rows after the last crash", rows(&cx, &store, id).await?, vec![row![9, "boot", "x"], row![10, "e", "v"]])
}

/// `put_view`, `put_job`, `publish`, `forget` and `forget_origin` are durable
/// on return (no `persist` needed); an unpublished generation leaves nothing.
pub async fn crash_keeps_durable_mutations<S: Store>(store: S, crash: &mut impl FnMut(S) -> S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("crash_keeps_durable_mutations");
    let a = published(&cx, &store, 1, &keyed3(), vec![row![1, "a", "x"]]).await?;
    let b = published(&cx, &store, 2, &full2(), vec![row![1, "x"], row![1, "x"]]).await?;
    let c = define(&cx, &store, 3).await?;
    let a_job = job(&a, JobState::Failed, 77);
    cx.ok("put_job", store.put_job(&a_job).await)?;
    cx.ok("forget", store.forget(c.relation_id).await)?;
    let other = cx.origin("conformance:other")?;
    apply_clean(&cx, &store, cx.batch(other.as_str(), Progress::Commit { end_lsn: Lsn(5) }, vec![])?).await?;
    cx.ok("persist", store.persist().await)?;
    cx.ok("forget_origin", store.forget_origin(&other).await)?;
    let mut generation = cx.ok("begin_generation", store.begin_generation(a.relation_id, &keyed3()).await)?;
    cx.ok("generation write", generation.write(vec![row![2, "never", "published"]]).await)?;
    drop(generation);

    let store = crash(store);
    let state = load(&cx, &store).await?;
    cx.eq("views after the crash", state.views, vec![a.clone(), b.clone()])?;
    cx.eq("jobs after the crash", state.jobs, vec![a_job, job(&b, JobState::Running, 1)])?;
    cx.eq("schemas after the crash", state.schemas, vec![(a.relation_id, keyed3()), (b.relation_id, full2())])?;
    cx.eq("origins after the crash", state.origins, vec![])?;
    cx.eq("rows of a after the crash", rows(&cx, &store, a.relation_id).await?, vec![row![1, "a", "x"]])?;
    cx.eq("count of b after the crash", cx.ok("count", store.count(b.relation_id).await)?, 2)?;
    Ok(())
}
