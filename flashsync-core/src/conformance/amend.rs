//! Amend checks: the feed's changes applied to the part of a chunked copy
//! already written ([`Generation::amend`](crate::Generation::amend)), for
//! stores that say they take them ([`Store::amends_generations`]).

use super::fixtures::{full2, ins, ins_full, job, keyed3, load, ops, published, rows, Ctx};
use super::Failure;
use crate::change::{Cell, RowOp, ViewOps};
use crate::encoded::EncodedRows;
use crate::job::{CopyCheckpoint, JobState};
use crate::lsn::Lsn;
use crate::schema::{Identity, RelationSchema};
use crate::store::{Generation, Store};
use crate::value::Row;

/// Rows in the stored encoding, as a source that parses its own wire
/// format hands them over.
fn encoded(schema: &RelationSchema, rows: &[Row]) -> EncodedRows {
    let mut batch = crate::EncodedRowsBuilder::new(schema);
    for row in rows {
        for v in &row.0 {
            batch.push(v.as_value_ref());
        }
        // The fixtures' rows fit their schemas; a row that did not would be
        // dropped here, and the comparison below would say so.
        let _ = batch.finish_row();
    }
    batch.take()
}

/// Amends `generation` and requires no conflicts.
async fn amend_clean(cx: &Ctx, generation: &mut Box<dyn Generation>, ops: ViewOps) -> Result<(), Failure> {
    let report = cx.ok("amend", generation.amend(ops).await)?;
    cx.ensure(report.conflicts.is_empty(), || format!("amend reported unexpected conflicts: {:?}", report.conflicts))
}

/// A generation filled in chunks, amended after each: inserts, updates
/// (with [`Cell::Unchanged`] values and key moves), deletes and evictions
/// apply to the rows written so far — plain and pre-encoded, keyed and
/// full-row (copy counts) — and nothing of it is visible until publish,
/// which shows exactly the amended rows, whether or not the rows were
/// [settled](Generation::settle) first. A truncate in an amendment drops
/// the rows written before it. Skipped by stores that do not amend.
pub async fn generation_amends<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::{key, row};
    let cx = Ctx::new("generation_amends");
    if !store.amends_generations() {
        return Ok(());
    }

    // A keyed view with a published copy, which must stay what readers see.
    let old = vec![row![1, "old", "x"]];
    let v = published(&cx, store, 1, &keyed3(), old.clone()).await?;
    let id = v.relation_id;
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok(
        "generation write",
        generation.write(vec![row![1, "a", "n1"], row![2, "b", "n2"], row![3, "c", "n3"]]).await,
    )?;
    let chunk = [row![4, "d", "n4"], row![5, "e", "n5"], row![6, "f", "n6"]];
    cx.ok("write_encoded", generation.write_encoded(encoded(&keyed3(), &chunk)).await)?;
    let first = vec![
        ins(row![1, "A", "m1"]),
        RowOp::Update {
            old_key: None,
            key: key![2],
            new: vec![Cell::Set(2.into()), Cell::Set("B".into()), Cell::Unchanged],
        },
        RowOp::Delete { key: key![3] },
        RowOp::Evict { key: key![5] },
        // A row the copy never held: nothing to evict, and no conflict.
        RowOp::Evict { key: key![0] },
        // The moved row keeps its unchanged name.
        RowOp::Update {
            old_key: Some(key![6]),
            key: key![0],
            new: vec![Cell::Set(0.into()), Cell::Unchanged, Cell::Set("moved".into())],
        },
        // Read back within the same amendment.
        RowOp::Update {
            old_key: None,
            key: key![1],
            new: vec![Cell::Set(1.into()), Cell::Unchanged, Cell::Set("m2".into())],
        },
    ];
    amend_clean(&cx, &mut generation, ops(&v, Identity::Key, first)).await?;
    cx.eq("rows while amending", rows(&cx, store, id).await?, old.clone())?;
    // The next chunk, above every key amended so far.
    cx.ok("generation write", generation.write(vec![row![7, "g", "n7"], row![8, "h", "n8"]]).await)?;
    cx.ok("write_encoded", generation.write_encoded(encoded(&keyed3(), &[row![9, "i", "n9"]])).await)?;
    // Settled first, as a driver does at the end of a chunk (the first
    // amendment went without): still invisible.
    cx.ok("settle", generation.settle().await)?;
    cx.eq("rows after settle", rows(&cx, store, id).await?, old.clone())?;
    let second = vec![
        RowOp::Update {
            old_key: None,
            key: key![7],
            new: vec![Cell::Set(7.into()), Cell::Set("G".into()), Cell::Unchanged],
        },
        RowOp::Delete { key: key![8] },
        RowOp::Update {
            old_key: None,
            key: key![2],
            new: vec![Cell::Set(2.into()), Cell::Unchanged, Cell::Set("m3".into())],
        },
        ins(row![5, "E", "m5"]),
        RowOp::Evict { key: key![4] },
    ];
    amend_clean(&cx, &mut generation, ops(&v, Identity::Key, second)).await?;
    cx.eq("rows while amending", rows(&cx, store, id).await?, old.clone())?;
    cx.eq("get of an amended row before publish", cx.ok("get", store.get(id, &key![2]).await)?, None)?;
    cx.eq("count before publish", cx.ok("count", store.count(id).await)?, 1)?;
    cx.ok("publish", generation.publish(&job(&v, JobState::Synced, 50)).await)?;
    cx.eq(
        "keyed rows after publish",
        rows(&cx, store, id).await?,
        vec![
            row![0, "f", "moved"],
            row![1, "A", "m2"],
            row![2, "B", "m3"],
            row![5, "E", "m5"],
            row![7, "G", "n7"],
            row![9, "i", "n9"],
        ],
    )?;

    // A full-row view: the key is the row, repeated rows are copies.
    let v = published(&cx, store, 2, &full2(), vec![row![9, "old"]]).await?;
    let id = v.relation_id;
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &full2()).await)?;
    cx.ok("generation write", generation.write(vec![row![1, "a"], row![1, "a"], row![2, "b"]]).await)?;
    let chunk = [row![3, "c"], row![3, "c"], row![4, "d"]];
    cx.ok("write_encoded", generation.write_encoded(encoded(&full2(), &chunk)).await)?;
    let first = vec![
        ins_full(row![2, "b"]),
        RowOp::Delete { key: key![1, "a"] },
        // One copy of (3, c) becomes (3, C).
        RowOp::Update {
            old_key: Some(key![3, "c"]),
            key: key![3, "C"],
            new: vec![Cell::Unchanged, Cell::Set("C".into())],
        },
        RowOp::Evict { key: key![4, "d"] },
        RowOp::Evict { key: key![0, "z"] },
    ];
    amend_clean(&cx, &mut generation, ops(&v, Identity::FullRow, first)).await?;
    cx.eq("full rows while amending", rows(&cx, store, id).await?, vec![row![9, "old"]])?;
    cx.ok("generation write", generation.write(vec![row![5, "e"], row![5, "e"], row![6, "f"]]).await)?;
    let second = vec![
        RowOp::Delete { key: key![5, "e"] },
        ins_full(row![6, "f"]),
        ins_full(row![2, "b"]),
        RowOp::Delete { key: key![3, "c"] },
    ];
    amend_clean(&cx, &mut generation, ops(&v, Identity::FullRow, second)).await?;
    cx.eq("full rows while amending", rows(&cx, store, id).await?, vec![row![9, "old"]])?;
    cx.ok("publish", generation.publish(&job(&v, JobState::Synced, 50)).await)?;
    cx.eq(
        "full rows after publish",
        rows(&cx, store, id).await?,
        vec![
            row![1, "a"],
            row![2, "b"],
            row![2, "b"],
            row![2, "b"],
            row![3, "C"],
            row![5, "e"],
            row![6, "f"],
            row![6, "f"],
        ],
    )?;
    cx.eq("count of full rows after publish", cx.ok("count", store.count(id).await)?, 8)?;

    // A truncate drops every row written before it, amended or not; rows
    // written and amended after it stay.
    let v = published(&cx, store, 3, &keyed3(), old.clone()).await?;
    let id = v.relation_id;
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok(
        "generation write",
        generation.write(vec![row![1, "a", "n1"], row![2, "b", "n2"], row![3, "c", "n3"]]).await,
    )?;
    let truncate = vec![RowOp::Delete { key: key![1] }, RowOp::Truncate, ins(row![2, "B", "m2"])];
    amend_clean(&cx, &mut generation, ops(&v, Identity::Key, truncate)).await?;
    cx.ok("generation write", generation.write(vec![row![4, "d", "n4"], row![5, "e", "n5"]]).await)?;
    let after = vec![RowOp::Update {
        old_key: None,
        key: key![4],
        new: vec![Cell::Set(4.into()), Cell::Unchanged, Cell::Set("m4".into())],
    }];
    amend_clean(&cx, &mut generation, ops(&v, Identity::Key, after)).await?;
    cx.eq("rows while amending", rows(&cx, store, id).await?, old)?;
    cx.ok("publish", generation.publish(&job(&v, JobState::Synced, 50)).await)?;
    cx.eq(
        "rows after a truncating amendment",
        rows(&cx, store, id).await?,
        vec![row![2, "B", "m2"], row![4, "d", "m4"], row![5, "e", "n5"]],
    )
}

/// An operation that does not fit the rows written so far (a delete of a
/// missing row, an update keeping values of one) is a conflict in the
/// report, not an error; a generation discarded after amendments leaves no
/// trace. Skipped by stores that do not amend.
pub async fn generation_amend_conflicts<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::{key, row};
    let cx = Ctx::new("generation_amend_conflicts");
    if !store.amends_generations() {
        return Ok(());
    }
    let keyed = published(&cx, store, 1, &keyed3(), vec![row![1, "old", "x"]]).await?;
    let full = published(&cx, store, 2, &full2(), vec![row![1, "old"]]).await?;
    let before = load(&cx, store).await?;

    let mut generation = cx.ok("begin_generation", store.begin_generation(full.relation_id, &full2()).await)?;
    cx.ok("generation write", generation.write(vec![row![1, "a"], row![2, "b"]]).await)?;
    let report = cx.ok(
        "amend with a delete of a missing row",
        generation.amend(ops(&full, Identity::FullRow, vec![RowOp::Delete { key: key![1, "z"] }])).await,
    )?;
    cx.eq("conflicted keys", report.conflicts.iter().map(|c| c.key.clone()).collect(), vec![key![1, "z"]])?;
    cx.eq("conflicted view", report.conflicts.iter().map(|c| c.relation_id).collect(), vec![full.relation_id])?;
    cx.ok("discard", generation.discard().await)?;

    let mut generation = cx.ok("begin_generation", store.begin_generation(keyed.relation_id, &keyed3()).await)?;
    cx.ok("generation write", generation.write(vec![row![1, "a", "n1"], row![2, "b", "n2"]]).await)?;
    let misfits = vec![
        ins(row![1, "A", "m1"]),
        RowOp::Delete { key: key![2] },
        // Row 3 was never written: its unchanged value cannot be kept.
        RowOp::Update {
            old_key: None,
            key: key![3],
            new: vec![Cell::Set(3.into()), Cell::Unchanged, Cell::Set("m3".into())],
        },
    ];
    let report =
        cx.ok("amend with an update of a missing row", generation.amend(ops(&keyed, Identity::Key, misfits)).await)?;
    cx.eq("conflicted keys", report.conflicts.iter().map(|c| c.key.clone()).collect(), vec![key![3]])?;
    cx.ok("discard", generation.discard().await)?;

    cx.eq("keyed rows after discards", rows(&cx, store, keyed.relation_id).await?, vec![row![1, "old", "x"]])?;
    cx.eq("full rows after discards", rows(&cx, store, full.relation_id).await?, vec![row![1, "old"]])?;
    cx.eq("stored state after discards", load(&cx, store).await?, before)
}

/// A checkpointed generation (guarantee 8) survives a crash with its job
/// record, invisible; resumed, it holds exactly the rows and changes as of
/// its checkpoint (rows written after it dropped) and goes on to publish.
/// Resuming with another schema, or after the copy was discarded or
/// replaced by a new one, finds nothing. Skipped by stores that do not
/// resume generations.
pub async fn checkpoints_survive_a_crash<S: Store>(store: S, crash: &mut impl FnMut(S) -> S) -> Result<(), Failure> {
    use crate::{key, row};
    let cx = Ctx::new("checkpoints_survive_a_crash");
    if !store.resumes_generations() {
        return Ok(());
    }
    let old = vec![row![1, "old", "x"]];
    let v = published(&cx, &store, 1, &keyed3(), old.clone()).await?;
    let id = v.relation_id;
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok(
        "generation write",
        generation.write(vec![row![1, "a", "n1"], row![2, "b", "n2"], row![3, "c", "n3"]]).await,
    )?;
    let mut checkpointed = job(&v, JobState::Idle, 9);
    checkpointed.copy =
        Some(Box::new(CopyCheckpoint { segments: Vec::new(), after: key![3], rows: 3, through: Lsn(40) }));
    let changes = vec![
        RowOp::Update {
            old_key: None,
            key: key![2],
            new: vec![Cell::Set(2.into()), Cell::Set("B".into()), Cell::Unchanged],
        },
        RowOp::Delete { key: key![1] },
    ];
    let report = cx.ok("checkpoint", generation.checkpoint(ops(&v, Identity::Key, changes), &checkpointed).await)?;
    cx.ensure(report.conflicts.is_empty(), || format!("checkpoint reported conflicts: {:?}", report.conflicts))?;
    // The next chunk's rows, written but never checkpointed.
    cx.ok("generation write", generation.write(vec![row![4, "lost", "n4"], row![5, "lost", "n5"]]).await)?;
    drop(generation);

    let store = crash(store);
    let state = load(&cx, &store).await?;
    cx.eq("job after the crash", state.jobs, vec![checkpointed.clone()])?;
    cx.eq("rows after the crash", rows(&cx, &store, id).await?, old.clone())?;
    let other = RelationSchema::keyed(keyed3().source_id, super::fixtures::columns(&["id", "name"]), vec![0]);
    // Resumed with the schema it was made with: the checkpoint's rows.
    let mut generation = match cx.ok("resume_generation", store.resume_generation(id, &keyed3(), &key![3]).await)? {
        Some(g) => g,
        None => return Err(cx.fail("resume_generation found no copy after a checkpoint and a crash")),
    };
    cx.ok("generation write", generation.write(vec![row![4, "d", "n4"], row![6, "f", "n6"]]).await)?;
    let mut done = checkpointed.clone();
    done.copy = None;
    cx.ok("publish", generation.publish(&done).await)?;
    let want = vec![row![2, "B", "n2"], row![3, "c", "n3"], row![4, "d", "n4"], row![6, "f", "n6"]];
    cx.eq("rows after the resumed copy's publish", rows(&cx, &store, id).await?, want)?;
    let again = cx.ok("resume_generation", store.resume_generation(id, &keyed3(), &key![3]).await)?;
    cx.ensure(again.is_none(), || "a published copy was resumed again".into())?;

    // Another schema finds nothing, and drops the copy.
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok("generation write", generation.write(vec![row![7, "g", "n7"]]).await)?;
    cx.ok("checkpoint", generation.checkpoint(ops(&v, Identity::Key, Vec::new()), &checkpointed).await)?;
    drop(generation);
    let store = crash(store);
    let other_schema = cx.ok("resume_generation", store.resume_generation(id, &other, &key![7]).await)?;
    cx.ensure(other_schema.is_none(), || "a copy was resumed with another schema than it was made with".into())?;
    let gone = cx.ok("resume_generation", store.resume_generation(id, &keyed3(), &key![7]).await)?;
    cx.ensure(gone.is_none(), || "a copy refused for its schema was resumed later".into())?;

    // The same names under other column numbers of the source (a column
    // dropped and added again) are another schema too; a copy stored
    // without numbers is taken at its names.
    let numbered = |ids: Vec<u32>| keyed3().with_column_ids(ids);
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &numbered(vec![1, 2, 3])).await)?;
    cx.ok("generation write", generation.write(vec![row![7, "g", "n7"]]).await)?;
    cx.ok("checkpoint", generation.checkpoint(ops(&v, Identity::Key, Vec::new()), &checkpointed).await)?;
    drop(generation);
    let store = crash(store);
    let renumbered =
        cx.ok("resume_generation", store.resume_generation(id, &numbered(vec![1, 2, 4]), &key![7]).await)?;
    cx.ensure(renumbered.is_none(), || "a copy was resumed with other columns of the same names".into())?;
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok("generation write", generation.write(vec![row![7, "g", "n7"]]).await)?;
    cx.ok("checkpoint", generation.checkpoint(ops(&v, Identity::Key, Vec::new()), &checkpointed).await)?;
    drop(generation);
    let store = crash(store);
    match cx.ok("resume_generation", store.resume_generation(id, &numbered(vec![1, 2, 3]), &key![7]).await)? {
        Some(g) => cx.ok("discard", g.discard().await)?,
        None => return Err(cx.fail("a copy stored without column numbers was not resumed by its names")),
    }

    // A new copy of the view replaces a checkpointed one; so does a discard.
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok("checkpoint", generation.checkpoint(ops(&v, Identity::Key, Vec::new()), &checkpointed).await)?;
    drop(generation);
    let newer = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok("discard", newer.discard().await)?;
    let replaced = cx.ok("resume_generation", store.resume_generation(id, &keyed3(), &key![7]).await)?;
    cx.ensure(replaced.is_none(), || "a copy replaced by a newer one was resumed".into())?;
    let mut generation = cx.ok("begin_generation", store.begin_generation(id, &keyed3()).await)?;
    cx.ok("checkpoint", generation.checkpoint(ops(&v, Identity::Key, Vec::new()), &checkpointed).await)?;
    cx.ok("discard", generation.discard().await)?;
    let store = crash(store);
    let discarded = cx.ok("resume_generation", store.resume_generation(id, &keyed3(), &key![7]).await)?;
    cx.ensure(discarded.is_none(), || "a discarded copy was resumed".into())?;
    cx.eq("rows at the end", rows(&cx, &store, id).await?.len(), 4)?;
    Ok(())
}
