//! Batch checks: atomicity, increasing sequence numbers, dirty markers of
//! `Partial` batches, `Replay` progress, and `apply_many` stopping at a
//! failure.

use super::fixtures::{
    apply_clean, define, ins, job, keyed3, load, materialize, ops, progress, published, rows, Ctx, ORIGIN,
};
use super::Failure;
use crate::change::{Progress, RowOp, ViewOps};
use crate::error::StoreErrorKind;
use crate::job::JobState;
use crate::schema::Identity;
use crate::store::Store;
use crate::view::RelationId;

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
