//! Generation checks: invisible until published, atomic publish, discard
//! and abandon, errors, and pre-encoded rows.

use super::fixtures::{
    apply_clean, columns, define, full2, ins, job, keyed3, load, materialize, ops, published, rows, Ctx,
};
use super::Failure;
use crate::error::StoreErrorKind;
use crate::job::JobState;
use crate::schema::{Identity, RelationSchema, SourceRelId};
use crate::store::{Store, StoredState};
use crate::value::Row;
use crate::view::RelationId;

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
