//! Captured changes: a batch that asks ([`ApplyBatch::capture`]) is
//! answered with exactly what it did to each view's rows — what the change
//! feed shows readers, so nothing the mirror does not keep.
//!
//! [`ApplyBatch::capture`]: crate::ApplyBatch::capture

use super::fixtures::{apply_clean, full2, ins, ins_full, keyed3, ops, published, set, Ctx};
use super::Failure;
use crate::change::{Cell, RowOp};
use crate::rowchange::{Capture, RowChange, ViewChanges};
use crate::schema::Identity;
use crate::store::Store;
use crate::value::{Key, Row};

/// Keyed and full-row views: upserts come out as `Insert` or `Update`
/// according to what the view held, deletes and evictions of rows it never
/// held come out as nothing, a key move as a `Delete` and an `Insert`, a
/// truncate as `Truncate`; an uncaptured batch reports nothing.
pub async fn captured_changes<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::{key, row};
    let cx = Ctx::new("captured_changes");
    let v = published(&cx, store, 1, &keyed3(), vec![row![1, "a", "x"], row![2, "b", "y"]]).await?;
    let f = published(&cx, store, 2, &full2(), vec![row![1, "p"]]).await?;
    let keyed = vec![
        ins(row![3, "c", "z"]),
        ins(row![1, "A", "x"]),
        RowOp::Update {
            old_key: None,
            key: key![2],
            new: vec![Cell::Set(2.into()), Cell::Unchanged, Cell::Set("y2".into())],
        },
        RowOp::Delete { key: key![9] },
        RowOp::Evict { key: key![8] },
        RowOp::Evict { key: key![3] },
        RowOp::Update { old_key: Some(key![1]), key: key![10], new: set(row![10, "A", "x"]) },
        // Rewriting a row with what it holds changes nothing a reader sees.
        ins(row![10, "A", "x"]),
    ];
    let full =
        vec![ins_full(row![1, "p"]), ins_full(row![2, "q"]), RowOp::Delete { key: Key(vec![1.into(), "p".into()]) }];
    let mut batch = cx.commit(10, vec![ops(&v, Identity::Key, keyed.clone()), ops(&f, Identity::FullRow, full)])?;
    batch.capture = Capture::On;
    let seq = batch.seq.0;
    let report = cx.ok("apply", store.apply(batch).await)?;
    cx.ensure(report.conflicts.is_empty(), || format!("batch {seq} reported conflicts: {:?}", report.conflicts))?;
    let upsert = |k: i64, row: Row, existed: bool| {
        if existed {
            RowChange::Update { key: key![k], row }
        } else {
            RowChange::Insert { key: key![k], row }
        }
    };
    let whole = |r: Row| Key(r.0);
    cx.eq(
        "changes of a captured batch",
        report.changes,
        vec![
            ViewChanges {
                relation_id: v.relation_id,
                changes: vec![
                    upsert(3, row![3, "c", "z"], false),
                    upsert(1, row![1, "A", "x"], true),
                    upsert(2, row![2, "b", "y2"], true),
                    RowChange::Delete { key: key![3] },
                    RowChange::Delete { key: key![1] },
                    upsert(10, row![10, "A", "x"], false),
                ],
            },
            ViewChanges {
                relation_id: f.relation_id,
                changes: vec![
                    RowChange::Insert { key: whole(row![1, "p"]), row: row![1, "p"] },
                    RowChange::Insert { key: whole(row![2, "q"]), row: row![2, "q"] },
                    RowChange::Delete { key: whole(row![1, "p"]) },
                ],
            },
        ],
    )?;

    // A truncate, then a row in the same batch.
    let mut batch = cx.commit(20, vec![ops(&v, Identity::Key, vec![RowOp::Truncate, ins(row![4, "d", "w"])])])?;
    batch.capture = Capture::On;
    let report = cx.ok("apply", store.apply(batch).await)?;
    cx.eq(
        "changes of a truncate",
        report.changes,
        vec![ViewChanges {
            relation_id: v.relation_id,
            changes: vec![RowChange::Truncate, RowChange::Insert { key: key![4], row: row![4, "d", "w"] }],
        }],
    )?;

    // Not asked: nothing.
    let batch = cx.commit(30, vec![ops(&v, Identity::Key, vec![ins(row![5, "e", "v"])])])?;
    let seq = batch.seq.0;
    let report = cx.ok("apply", store.apply(batch).await)?;
    cx.ensure(report.changes.is_empty(), || {
        format!("batch {seq} did not ask for changes but got {:?}", report.changes)
    })?;
    apply_clean(&cx, store, cx.commit(40, Vec::new())?).await
}
