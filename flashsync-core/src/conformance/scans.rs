//! Read checks: scan order for every key type, ranges and limits, and
//! `count`.

use super::fixtures::{all, apply_clean, columns, full2, ins, insert, keyed3, ops, published, rows, Ctx};
use super::Failure;
use crate::schema::{Identity, RelationSchema, SourceRelId};
use crate::store::{KeyRange, Store};
use crate::value::{Key, Row, Value};
use crate::view::RelationId;

/// Scans return rows in key order (the order of `Key`, which the byte
/// encoding preserves) for integers incl. negatives and extremes, text incl.
/// empty strings and NULs, floats incl. signed zeros, infinities and NaN,
/// and composite keys; ranges are `[start, end)`; limits cut the result.
pub async fn scan_order_and_ranges<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("scan_order_and_ranges");
    let one_col = |name: &str| RelationSchema::keyed(SourceRelId(9), columns(&[name, "v"]), vec![0]);

    // Each case: view id, values in insertion order (shuffled on purpose).
    let ints: Vec<Value> = [42, -1, i64::MAX, 0, i64::MIN, 3, -5].map(Value::Int).to_vec();
    let texts: Vec<Value> = ["b", "", "a\0b", "a", "ab", "é", "B", "a\u{1}"].map(|s| Value::Text(s.into())).to_vec();
    let floats: Vec<Value> =
        [2.5, f64::NAN, -0.0, f64::NEG_INFINITY, 1e-300, 0.0, f64::INFINITY, -1.5].map(Value::Float).to_vec();
    let bytes: Vec<Value> = [vec![1u8, 0], vec![], vec![0], vec![1], vec![0xFF], vec![0, 0]].map(Value::Bytes).to_vec();
    for (id, values) in [(1, ints), (2, texts), (3, floats), (4, bytes)] {
        let view = published(&cx, store, id, &one_col("k"), vec![]).await?;
        let inserts = values.iter().map(|k| ins(Row(vec![k.clone(), Value::Int(id as i64)]))).collect();
        let batch = cx.commit(id * 10, vec![ops(&view, Identity::Key, inserts)])?;
        apply_clean(&cx, store, batch).await?;
        let mut want: Vec<Row> = values.iter().map(|k| Row(vec![k.clone(), Value::Int(id as i64)])).collect();
        want.sort();
        cx.eq(&format!("scan order of view {id}"), rows(&cx, store, view.relation_id).await?, want.clone())?;
        for key in &values {
            let got = cx.ok("get", store.get(view.relation_id, &Key(vec![key.clone()])).await)?;
            cx.ensure(got.is_some(), || format!("get of key {key} in view {id} found nothing"))?;
        }
        cx.eq(
            &format!("scan of view {id} with limit 3"),
            cx.ok("scan", store.scan(view.relation_id, &all(), 3).await)?,
            want[..3].to_vec(),
        )?;
    }

    // Ranges over the integer view.
    let id = RelationId(1);
    let range = |start: Option<i64>, end: Option<i64>| KeyRange {
        start: start.map(|s| crate::key![s]),
        end: end.map(|e| crate::key![e]),
    };
    let keys = |rows: Vec<Row>| -> Vec<Value> { rows.into_iter().filter_map(|r| r.0.into_iter().next()).collect() };
    for (start, end, limit, want) in [
        (Some(-1), Some(42), usize::MAX, vec![-1, 0, 3]),
        (Some(-1), Some(43), usize::MAX, vec![-1, 0, 3, 42]),
        (Some(-2), None, 2, vec![-1, 0]),
        (None, Some(0), usize::MAX, vec![i64::MIN, -5, -1]),
        (Some(i64::MIN), Some(i64::MIN), usize::MAX, vec![]),
        (Some(5), Some(1), usize::MAX, vec![]),
        (Some(i64::MAX), None, usize::MAX, vec![i64::MAX]),
        (None, None, 0, vec![]),
    ] {
        let got = keys(cx.ok("scan", store.scan(id, &range(start, end), limit).await)?);
        cx.eq(
            &format!("keys of scan [{start:?}, {end:?}) limit {limit}"),
            got,
            want.into_iter().map(Value::Int).collect(),
        )?;
    }

    // Composite keys: (text, int), compared column by column; a shorter key
    // sorts before every longer key it prefixes.
    let composite = RelationSchema::keyed(SourceRelId(10), columns(&["a", "b", "v"]), vec![0, 1]);
    let view = published(&cx, store, 5, &composite, vec![]).await?;
    let pairs = [("a", 2), ("a", -1), ("b", 0), ("", 5), ("a", 10), ("ab", -3)];
    let inserts = pairs.iter().map(|(a, b)| insert(row![*a, *b, "v"], &[0, 1])).collect();
    let batch = cx.commit(100, vec![ops(&view, Identity::Key, inserts)])?;
    apply_clean(&cx, store, batch).await?;
    let mut want: Vec<Row> = pairs.iter().map(|(a, b)| row![*a, *b, "v"]).collect();
    want.sort();
    cx.eq("composite scan order", rows(&cx, store, view.relation_id).await?, want)?;
    let prefix = KeyRange { start: Some(crate::key!["a"]), end: Some(crate::key!["ab"]) };
    cx.eq(
        "composite scan of the \"a\" prefix",
        cx.ok("scan", store.scan(view.relation_id, &prefix, usize::MAX).await)?,
        vec![row!["a", -1, "v"], row!["a", 2, "v"], row!["a", 10, "v"]],
    )?;
    let bounded = KeyRange { start: Some(crate::key!["a", 0]), end: Some(crate::key!["b", 0]) };
    cx.eq(
        "composite scan [(a, 0), (b, 0))",
        cx.ok("scan", store.scan(view.relation_id, &bounded, usize::MAX).await)?,
        vec![row!["a", 2, "v"], row!["a", 10, "v"], row!["ab", -3, "v"]],
    )
}

/// `count` is the number of rows, copies of full-row rows counted.
pub async fn count_rows<S: Store>(store: &S) -> Result<(), Failure> {
    use crate::row;
    let cx = Ctx::new("count_rows");
    let k = published(&cx, store, 1, &keyed3(), vec![]).await?;
    cx.eq("count of an empty copy", cx.ok("count", store.count(k.relation_id).await)?, 0)?;
    let inserts = (0..250).map(|i| ins(row![i, "n", "x"])).collect();
    apply_clean(&cx, store, cx.commit(10, vec![ops(&k, Identity::Key, inserts)])?).await?;
    cx.eq("count after 250 inserts", cx.ok("count", store.count(k.relation_id).await)?, 250)?;
    let f = published(&cx, store, 2, &full2(), vec![row![1, "x"]; 4]).await?;
    cx.eq("count of 4 identical rows", cx.ok("count", store.count(f.relation_id).await)?, 4)?;
    cx.eq("scan of 4 identical rows", rows(&cx, store, f.relation_id).await?, vec![row![1, "x"]; 4])
}
