//! Catalog checks: views, jobs, origin progress and published schemas
//! round-trip through `load`; `forget` removes a view entirely; unknown or
//! unpublished views are `NotFound` errors.

use super::fixtures::{
    all, apply_clean, define, ins, job, keyed3, load, materialize, ops, progress, published, rows, Ctx, ORIGIN,
};
use super::Failure;
use crate::change::{ApplyBatch, Progress, ViewOps};
use crate::error::StoreErrorKind;
use crate::job::JobState;
use crate::lsn::Lsn;
use crate::schema::Identity;
use crate::store::{Store, StoredState};
use crate::time::Timestamp;
use crate::view::{OriginId, Persistence, RelationId};

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

/// `forget` removes the catalog entry, job, copy and dirty marker, and only
/// those of its view; afterwards the view is unknown. Forgetting twice is fine.
pub async fn forget_removes_everything<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("forget_removes_everything");
    let a = published(&cx, store, 1, &keyed3(), vec![row![1, "a", "x"]]).await?;
    let b = published(&cx, store, 2, &keyed3(), vec![row![1, "b", "x"]]).await?;
    let batch =
        cx.batch(ORIGIN, Progress::Stage { first: true }, vec![ops(&a, Identity::Key, vec![ins(row![2, "a", "y"])])])?;
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
