//! Durability checks: what `persist` reports, and (with a crash hook) what
//! survives a crash.

use std::sync::atomic::Ordering;

use super::fixtures::{
    apply_clean, define, full2, ins, job, keyed3, load, materialize, ops, progress, published, rows, Ctx, ORIGIN,
};
use super::Failure;
use crate::change::{BatchSeq, Progress, RowOp};
use crate::job::JobState;
use crate::lsn::Lsn;
use crate::schema::Identity;
use crate::store::Store;

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

// ---------------------------------------------------------------------------
// Crash checks.

/// Persisted batches survive a crash; unpersisted ones survive whole or not
/// at all (rows and progress together); a staged part of a transaction does
/// not survive a crash, even persisted, and marks nothing dirty; the store
/// works normally afterwards.
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

    // A staged part of a transaction, persisted, does not survive a crash:
    // the copy is as it was before the transaction, nothing is dirty, and
    // the next commit has nothing to claim.
    let before = rows(&cx, &store, id).await?;
    let batch =
        cx.batch(ORIGIN, Progress::Stage { first: true }, vec![ops(&v, Identity::Key, vec![ins(row![4, "d", "w"])])])?;
    apply_clean(&cx, &store, batch).await?;
    cx.ok("persist", store.persist().await)?;
    let store = crash(store);
    let state = load(&cx, &store).await?;
    cx.eq("dirty after a crash in a staged transaction", state.dirty, vec![])?;
    cx.eq("rows after a crash in a staged transaction", rows(&cx, &store, id).await?, before.clone())?;
    cx.skip_to(cx.next_seq.load(Ordering::Relaxed) + 100);
    apply_clean(&cx, &store, cx.commit(35, vec![ops(&v, Identity::Key, vec![])])?).await?;
    cx.eq("a commit after the crash claims nothing", rows(&cx, &store, id).await?, before)?;
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
