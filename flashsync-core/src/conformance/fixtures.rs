//! Fixtures and assertion helpers shared by the checks: the per-check
//! context ([`Ctx`]), schemas, row operations and store shortcuts.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Failure;
use crate::change::{ApplyBatch, BatchSeq, Cell, Progress, RowOp, ViewOps};
use crate::error::{StoreError, StoreErrorKind};
use crate::job::{JobRecord, JobState};
use crate::lsn::Lsn;
use crate::rowops::ApplyReport;
use crate::schema::{Column, Identity, RelationSchema, SourceRelId};
use crate::store::{KeyRange, OriginProgress, Store, StoredState, ViewRecord};
use crate::time::Timestamp;
use crate::value::{Key, Row};
use crate::view::{OriginId, Persistence, RelationId, ViewDef};

pub(super) const ORIGIN: &str = "conformance:main";

/// Per-check context: names failures and hands out batch sequence numbers.
pub(super) struct Ctx {
    check: &'static str,
    /// Atomic (not `Cell`) so the checks' futures stay `Send`.
    pub(super) next_seq: AtomicU64,
}

impl Ctx {
    pub(super) fn new(check: &'static str) -> Self {
        Ctx { check, next_seq: AtomicU64::new(1) }
    }

    pub(super) fn fail(&self, message: impl Into<String>) -> Failure {
        Failure { check: self.check, message: message.into() }
    }

    pub(super) fn ensure(&self, cond: bool, message: impl FnOnce() -> String) -> Result<(), Failure> {
        if cond {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    pub(super) fn eq<T: PartialEq + fmt::Debug>(&self, what: &str, got: T, want: T) -> Result<(), Failure> {
        self.ensure(got == want, || format!("{what}: expected {want:?}, got {got:?}"))
    }

    pub(super) fn ok<T>(&self, what: &str, result: Result<T, StoreError>) -> Result<T, Failure> {
        result.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    pub(super) fn err_kind<T: fmt::Debug>(
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

    pub(super) fn seq(&self) -> BatchSeq {
        BatchSeq(self.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn skip_to(&self, seq: u64) {
        self.next_seq.store(seq, Ordering::Relaxed);
    }

    pub(super) fn origin(&self, name: &str) -> Result<OriginId, Failure> {
        OriginId::new(name).map_err(|e| self.fail(format!("fixture origin: {e}")))
    }

    pub(super) fn view(&self, id: u64, origin: &str) -> Result<ViewRecord, Failure> {
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

    pub(super) fn batch(&self, origin: &str, progress: Progress, views: Vec<ViewOps>) -> Result<ApplyBatch, Failure> {
        Ok(ApplyBatch {
            seq: self.seq(),
            origin: self.origin(origin)?,
            progress,
            views,
            jobs: Vec::new(),
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        })
    }

    pub(super) fn commit(&self, lsn: u64, views: Vec<ViewOps>) -> Result<ApplyBatch, Failure> {
        self.batch(ORIGIN, Progress::Commit { end_lsn: Lsn(lsn) }, views)
    }
}

pub(super) fn columns(names: &[&str]) -> Vec<Column> {
    names.iter().map(|n| Column { name: (*n).to_owned(), type_name: "text".to_owned() }).collect()
}

/// `(id, name, note)` keyed by `id`.
pub(super) fn keyed3() -> RelationSchema {
    RelationSchema::keyed(SourceRelId(1), columns(&["id", "name", "note"]), vec![0])
}

/// `(a, b)` identified by the full row.
pub(super) fn full2() -> RelationSchema {
    RelationSchema::full_row(SourceRelId(2), columns(&["a", "b"]))
}

pub(super) fn job(view: &ViewRecord, state: JobState, at: u64) -> JobRecord {
    let mut job = JobRecord::new(view.relation_id, &view.def.name, view.def.persistence, Timestamp(at));
    job.state = state;
    job
}

pub(super) fn ops(view: &ViewRecord, identity: Identity, ops: Vec<RowOp>) -> ViewOps {
    ViewOps { relation_id: view.relation_id, identity, ops }
}

pub(super) fn insert(row: Row, key_cols: &[usize]) -> RowOp {
    let key = Key(key_cols.iter().filter_map(|&i| row.0.get(i).cloned()).collect());
    RowOp::Insert { key, row }
}

/// Insert into a keyed view whose key is column 0.
pub(super) fn ins(row: Row) -> RowOp {
    insert(row, &[0])
}

/// Insert into a full-row view (the key is the row).
pub(super) fn ins_full(row: Row) -> RowOp {
    RowOp::Insert { key: Key(row.0.clone()), row }
}

pub(super) fn set(row: Row) -> Vec<Cell> {
    row.0.into_iter().map(Cell::Set).collect()
}

pub(super) fn all() -> KeyRange {
    KeyRange::default()
}

pub(super) async fn define<S: Store>(cx: &Ctx, store: &S, id: u64) -> Result<ViewRecord, Failure> {
    let view = cx.view(id, ORIGIN)?;
    cx.ok("put_view", store.put_view(&view).await)?;
    Ok(view)
}

/// Fills and publishes a generation.
pub(super) async fn materialize<S: Store>(
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
pub(super) async fn published<S: Store>(
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

pub(super) async fn apply<S: Store>(cx: &Ctx, store: &S, batch: ApplyBatch) -> Result<ApplyReport, Failure> {
    let what = format!("apply batch {}", batch.seq.0);
    cx.ok(&what, store.apply(batch).await)
}

/// Applies and requires no conflicts.
pub(super) async fn apply_clean<S: Store>(cx: &Ctx, store: &S, batch: ApplyBatch) -> Result<(), Failure> {
    let seq = batch.seq.0;
    let report = apply(cx, store, batch).await?;
    cx.ensure(report.conflicts.is_empty(), || {
        format!("batch {seq} reported unexpected conflicts: {:?}", report.conflicts)
    })
}

pub(super) async fn rows<S: Store>(cx: &Ctx, store: &S, id: RelationId) -> Result<Vec<Row>, Failure> {
    cx.ok("scan", store.scan(id, &all(), usize::MAX).await)
}

pub(super) async fn load<S: Store>(cx: &Ctx, store: &S) -> Result<StoredState, Failure> {
    let mut state = cx.ok("load", store.load().await)?;
    // The contract fixes no order for these lists.
    state.views.sort_by_key(|v| v.relation_id);
    state.jobs.sort_by_key(|j| j.relation_id);
    state.origins.sort_by(|a, b| a.origin.cmp(&b.origin));
    state.schemas.sort_by_key(|(id, _)| *id);
    state.dirty.sort();
    Ok(state)
}

pub(super) fn progress(origin: &OriginId, lsn: u64) -> OriginProgress {
    OriginProgress { origin: origin.clone(), applied: Lsn(lsn) }
}
