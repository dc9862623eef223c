//! Batch checks: atomicity, increasing sequence numbers, staged parts of
//! `Stage` batches, `Replay` progress, and `apply_many` stopping at a
//! failure.

use super::fixtures::{apply_clean, define, ins, job, keyed3, load, ops, progress, published, rows, Ctx, ORIGIN};
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

/// `Stage` batches change no row and no progress, and nothing of them is
/// visible; the origin's `Commit` applies the staged operations of the views
/// it names first, atomically with its own, and drops the rest; a `first`
/// part drops what an unfinished attempt staged; `Replay` batches apply at
/// once and leave staging alone; no view is ever marked dirty by staging.
pub async fn staged_transactions<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("staged_transactions");
    let a = published(&cx, store, 1, &keyed3(), vec![]).await?;
    let b = published(&cx, store, 2, &keyed3(), vec![]).await?;
    let (ia, ib) = (a.relation_id, b.relation_id);
    apply_clean(&cx, store, cx.commit(10, vec![])?).await?;
    let stage = |first| Progress::Stage { first };

    let batch = cx.batch(ORIGIN, stage(true), vec![ops(&a, Identity::Key, vec![ins(row![1, "a", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    let batch = cx.batch(ORIGIN, stage(false), vec![ops(&b, Identity::Key, vec![ins(row![1, "b", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    let batch = cx.batch(ORIGIN, stage(false), vec![ops(&a, Identity::Key, vec![ins(row![2, "a", "x"])])])?;
    apply_clean(&cx, store, batch).await?;
    let state = load(&cx, store).await?;
    cx.eq("dirty after staged parts", state.dirty, vec![])?;
    cx.eq("origins after staged parts", state.origins, vec![progress(&cx.origin(ORIGIN)?, 10)])?;
    cx.eq("staged rows are invisible (a)", rows(&cx, store, ia).await?, vec![])?;
    cx.eq("staged rows are invisible (b)", rows(&cx, store, ib).await?, vec![])?;
    cx.eq("count sees no staged row", cx.ok("count", store.count(ia).await)?, 0)?;

    let batch = cx.batch(ORIGIN, Progress::Replay, vec![ops(&a, Identity::Key, vec![ins(row![7, "a", "r"])])])?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("a replay applies at once", rows(&cx, store, ia).await?, vec![row![7, "a", "r"]])?;

    // The commit names a (with an operation of its own) but not b.
    let batch = cx.commit(20, vec![ops(&a, Identity::Key, vec![ins(row![3, "a", "z"])])])?;
    apply_clean(&cx, store, batch).await?;
    let want = vec![row![1, "a", "x"], row![2, "a", "x"], row![3, "a", "z"], row![7, "a", "r"]];
    cx.eq("the commit applied a's staged parts with its own", rows(&cx, store, ia).await?, want.clone())?;
    cx.eq("b was not named: its part was dropped", rows(&cx, store, ib).await?, vec![])?;
    let state = load(&cx, store).await?;
    cx.eq("origins after the commit", state.origins, vec![progress(&cx.origin(ORIGIN)?, 20)])?;
    cx.eq("dirty after the commit", state.dirty, vec![])?;
    let batch = cx.commit(30, vec![ops(&b, Identity::Key, vec![ins(row![5, "b", "y"])])])?;
    apply_clean(&cx, store, batch).await?;
    cx.eq("a dropped part does not come back", rows(&cx, store, ib).await?, vec![row![5, "b", "y"]])?;

    // An attempt the feed cut short, then the transaction again: only the
    // second attempt's parts apply. A view named with no operations of its
    // own claims its part.
    let batch = cx.batch(ORIGIN, stage(true), vec![ops(&b, Identity::Key, vec![ins(row![8, "b", "lost"])])])?;
    apply_clean(&cx, store, batch).await?;
    let batch = cx.batch(ORIGIN, stage(true), vec![ops(&b, Identity::Key, vec![ins(row![9, "b", "kept"])])])?;
    apply_clean(&cx, store, batch).await?;
    apply_clean(&cx, store, cx.commit(40, vec![ops(&b, Identity::Key, vec![])])?).await?;
    cx.eq(
        "only the last attempt's part applies",
        rows(&cx, store, ib).await?,
        vec![row![5, "b", "y"], row![9, "b", "kept"]],
    )?;
    cx.eq("a is untouched", rows(&cx, store, ia).await?, want)
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
