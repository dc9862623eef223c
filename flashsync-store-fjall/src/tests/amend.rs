//! Copies made in chunks: rows written (plain or pre-encoded, a little out
//! of order, repeated) with amendments between the chunks publish what the
//! in-memory reference store makes of the same calls, with the same
//! conflicts, whatever the reorder window — so no ingested row shadows an
//! amendment, and copy counts survive the loader's restarts.

use flashsync_core::memory::MemoryStore;
use flashsync_core::rowops::ApplyReport;
use flashsync_core::{
    row, Cell, EncodedRowsBuilder, Generation, JobRecord, Key, KeyRange, RelationSchema, Row, RowOp, SourceRelId,
    Store, Timestamp, ViewOps,
};
use proptest::prelude::*;

use super::{block_on, schema, view};
use crate::{FjallStore, Options};

/// One call on a generation.
#[derive(Clone, Debug)]
enum Step {
    Write { rows: Vec<Row>, encoded: bool },
    Amend(Vec<RowOp>),
}

fn full_schema() -> RelationSchema {
    RelationSchema::full_row(SourceRelId(1), schema().columns)
}

/// Runs `steps` on a new generation of view 1 and publishes it: the rows
/// published and every amendment's report.
async fn run<S: Store>(store: &S, schema: &RelationSchema, steps: &[Step]) -> (Vec<Row>, Vec<ApplyReport>) {
    let v = view(1);
    store.put_view(&v).await.unwrap();
    let mut generation: Box<dyn Generation> = store.begin_generation(v.relation_id, schema).await.unwrap();
    let mut reports = Vec::new();
    for step in steps {
        match step {
            Step::Write { rows, encoded: true } => {
                let mut b = EncodedRowsBuilder::new(schema);
                for row in rows {
                    for value in &row.0 {
                        b.push(value.as_value_ref());
                    }
                    b.finish_row().unwrap();
                }
                generation.write_encoded(b.take()).await.unwrap();
            }
            Step::Write { rows, encoded: false } => generation.write(rows.clone()).await.unwrap(),
            Step::Amend(ops) => {
                let ops = ViewOps { relation_id: v.relation_id, identity: schema.identity, ops: ops.clone() };
                reports.push(generation.amend(ops).await.unwrap());
            }
        }
    }
    let job = JobRecord::new(v.relation_id, &v.def.name, v.def.persistence, Timestamp(1));
    generation.publish(&job).await.unwrap();
    (store.scan(v.relation_id, &KeyRange::default(), usize::MAX).await.unwrap(), reports)
}

fn check(steps: &[Step], full_row: bool, window: usize) {
    let schema = if full_row { full_schema() } else { schema() };
    let expected = block_on(run(&MemoryStore::new(), &schema, steps));
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Options::default().reorder_window(window)).unwrap();
    let got = block_on(run(&store, &schema, steps));
    assert_eq!(got, expected, "window {window}, full row {full_row}");
    // Prefixes a truncating amendment left behind are garbage, not leaks:
    // once reclaimed, the published rows (a full-row copy's repeats in one
    // entry) are all the keyspace holds.
    block_on(store.reclaim()).unwrap();
    let mut distinct = expected.0.clone();
    distinct.dedup();
    assert_eq!(store.shared().ks.rows.iter().count(), distinct.len(), "rows left outside the published copy");
    assert_eq!(store.generation_count(), 1, "generations left after publish");
    drop(store);
    let store = FjallStore::open(dir.path(), Options::default().reorder_window(window)).unwrap();
    let reopened = block_on(store.scan(view(1).relation_id, &KeyRange::default(), usize::MAX)).unwrap();
    assert_eq!(reopened, expected.0, "after reopening");
}

/// A write and the amendment after it: rows as `(key offset, value)`,
/// whether they go in pre-encoded, and operations as `(kind, key, value)`
/// (see [`op`] and [`steps`]).
type Chunk = (Vec<(u8, u8)>, bool, Vec<(u8, u8, u8)>);

fn id(k: u8) -> String {
    format!("{k:03}")
}

/// Operation `kind` on key `k` with value `v`, for either identity.
fn op(kind: u8, k: u8, v: u8, full_row: bool) -> RowOp {
    let row = row![id(k), format!("v{v}")];
    let key = if full_row { Key(row.0.clone()) } else { Key(vec![id(k).into()]) };
    match kind {
        0 => RowOp::Insert { key, row },
        1 => RowOp::Delete { key },
        2 => RowOp::Evict { key },
        // Keeps the stored name: a conflict when the row is missing.
        3 if full_row => RowOp::Update {
            old_key: Some(key),
            key: Key(vec![id(k).into(), format!("v{}", v + 1).into()]),
            new: vec![Cell::Unchanged, Cell::Set(format!("v{}", v + 1).into())],
        },
        3 => RowOp::Update { old_key: None, key, new: vec![Cell::Set(id(k).into()), Cell::Unchanged] },
        _ => RowOp::Truncate,
    }
}

/// Write `i` has keys `5 i .. 5 i + 10` (in the order given, repeats
/// included), the amendment after it keys below `5 (i + 1)`: every later
/// row is above every key an amendment touches, as the contract says, yet
/// a write may repeat and precede keys of the one before (the rows of one
/// chunk written in several batches, say).
fn steps(chunks: Vec<Chunk>, full_row: bool) -> Vec<Step> {
    let mut out = Vec::new();
    for (i, (rows, encoded, ops)) in chunks.into_iter().enumerate() {
        let base = 5 * i as u8;
        let rows = rows.into_iter().map(|(k, v)| row![id(base + k), format!("v{v}")]).collect();
        out.push(Step::Write { rows, encoded });
        let limit = base + 5;
        out.push(Step::Amend(ops.into_iter().map(|(kind, k, v)| op(kind, k % limit, v, full_row)).collect()));
    }
    out
}

#[test]
fn amendments_between_writes_publish_what_the_reference_store_does() {
    let repeats = vec![
        (vec![(0, 0), (2, 0), (1, 0), (2, 0), (3, 1), (7, 0)], false, vec![(3, 2, 0), (1, 1, 0), (0, 2, 0)]),
        // Repeats (7, v0) of the write before, above every key amended.
        (vec![(5, 0), (2, 0), (4, 1), (5, 0)], true, vec![(3, 8, 0), (1, 8, 0), (0, 3, 1), (2, 7, 1)]),
        (vec![(9, 2), (0, 2)], false, vec![(0, 11, 2), (3, 14, 0)]),
    ];
    let truncated = vec![
        (vec![(0, 0), (2, 0), (1, 0)], false, vec![(1, 1, 0), (4, 0, 0), (0, 2, 1)]),
        (vec![(5, 0), (4, 1), (3, 1)], true, vec![(3, 8, 0), (0, 2, 1)]),
    ];
    for chunks in [repeats, truncated] {
        for window in [0, 4, 4096] {
            for full_row in [false, true] {
                check(&steps(chunks.clone(), full_row), full_row, window);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any chunks and amendments, in keyed and full-row views, with any window.
    #[test]
    fn chunked_copies_publish_what_the_reference_store_does(
        chunks in proptest::collection::vec(
            (
                proptest::collection::vec((0u8..10, 0u8..3), 0..12),
                any::<bool>(),
                proptest::collection::vec((prop_oneof![8 => 0u8..4, 1 => Just(4u8)], any::<u8>(), 0u8..3), 0..8),
            ),
            0..5,
        ),
        full_row in any::<bool>(),
        window in prop_oneof![Just(0usize), 1usize..8, Just(4096)],
    ) {
        check(&steps(chunks, full_row), full_row, window);
    }
}
