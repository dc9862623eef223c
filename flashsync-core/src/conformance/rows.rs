//! Row-operation checks: what `apply` does to a published copy for every
//! `RowOp` kind, keyed and full-row, and how it reports conflicts.

use super::fixtures::{
    all, apply, apply_clean, full2, ins, ins_full, keyed3, load, ops, progress, published, rows, set, Ctx, ORIGIN,
};
use super::Failure;
use crate::change::{Cell, RowOp};
use crate::schema::Identity;
use crate::store::Store;
use crate::value::{Key, Row};
use crate::view::RelationId;

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

/// `UpdateIf` (an update of a filtered view that did not carry what its
/// filter reads): merged with the local row, kept if the filter holds,
/// removed if not, moved with its key; reported as a conflict when the row
/// is not local (nothing can decide it).
pub async fn filtered_updates<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("filtered_updates");
    let filter = crate::predicate::Predicate::parse("note LIKE 'k%'")
        .and_then(|p| p.bind(&keyed3().columns))
        .map_err(|e| cx.fail(format!("binding the test filter: {e}")))?;
    let filter = std::sync::Arc::new(filter);
    let v = published(
        &cx,
        store,
        1,
        &keyed3(),
        vec![row![1, "a", "keep"], row![2, "b", "drop"], row![3, "c", "keep"], row![4, "d", "keep"]],
    )
    .await?;
    let upd =
        |old_key: Option<Key>, key: Key, new: Vec<Cell>| RowOp::UpdateIf { old_key, key, new, filter: filter.clone() };
    let batch = cx.commit(
        10,
        vec![ops(
            &v,
            Identity::Key,
            vec![
                upd(None, crate::key![1], vec![Cell::Set(1.into()), Cell::Set("a2".into()), Cell::Unchanged]),
                upd(None, crate::key![2], vec![Cell::Set(2.into()), Cell::Unchanged, Cell::Unchanged]),
                upd(
                    Some(crate::key![3]),
                    crate::key![30],
                    vec![Cell::Set(30.into()), Cell::Unchanged, Cell::Unchanged],
                ),
                upd(None, crate::key![4], vec![Cell::Set(4.into()), Cell::Unchanged, Cell::Set("gone".into())]),
                upd(None, crate::key![9], vec![Cell::Set(9.into()), Cell::Set("n".into()), Cell::Unchanged]),
            ],
        )],
    )?;
    let report = apply(&cx, store, batch).await?;
    let got: Vec<Key> = report.conflicts.iter().map(|c| c.key.clone()).collect();
    cx.eq("conflicts: only the row that is not local", got, vec![crate::key![9]])?;
    cx.eq(
        "rows after the batch",
        rows(&cx, store, v.relation_id).await?,
        vec![row![1, "a2", "keep"], row![30, "c", "keep"]],
    )?;
    // The view is untrusted from the batch on, whatever commits follow,
    // until it is copied again.
    cx.eq("a diverged view is dirty", load(&cx, store).await?.dirty, vec![v.relation_id])?;
    apply_clean(&cx, store, cx.commit(20, vec![ops(&v, Identity::Key, vec![ins(row![5, "e", "k"])])])?).await?;
    cx.eq("and stays dirty after a later commit", load(&cx, store).await?.dirty, vec![v.relation_id])
}
