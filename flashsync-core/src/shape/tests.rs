//! The decision table of `ViewShape`, case by case.

use super::*;
use crate::change::{Change, OldRow, RowOp};
use crate::schema::{Column, ColumnMatch, SourceRelId};
use crate::view::Persistence;
use crate::{key, row};

fn col(name: &str, type_name: &str) -> Column {
    Column { name: name.into(), type_name: type_name.into() }
}

/// `(id int8 key, tenant int4, body text)`.
fn upstream() -> RelationSchema {
    RelationSchema::keyed(SourceRelId(9), vec![col("id", "int8"), col("tenant", "int4"), col("body", "text")], vec![0])
}

fn shape(filter: Option<&str>, columns: Option<&[&str]>) -> ViewShape {
    ViewShape::new(&def(filter, columns), upstream()).unwrap()
}

fn def(filter: Option<&str>, columns: Option<&[&str]>) -> ViewDef {
    let mut def = ViewDef::new("app", "v", Persistence::Realtime, "postgres:main", "public", "t").unwrap();
    if let Some(f) = filter {
        def = def.with_filter(f).unwrap();
    }
    if let Some(c) = columns {
        def = def.with_columns(c.iter().copied()).unwrap();
    }
    def
}

fn ops(shape: &ViewShape, change: Change) -> Vec<RowOp> {
    let mut out = Vec::new();
    shape.row_ops(change, &mut out).unwrap();
    out
}

/// An update; `old` is a key image (the key changed).
fn update(old: Option<Row>, new: Vec<Cell>) -> Change {
    Change::Update { rel: SourceRelId(9), old: old.map(OldRow::Key), new }
}

/// A delete sending the key.
fn delete(old: Row) -> Change {
    Change::Delete { rel: SourceRelId(9), old: OldRow::Key(old) }
}

fn set(row: Row) -> Vec<Cell> {
    row.0.into_iter().map(Cell::Set).collect()
}

#[test]
fn column_lists_keep_the_key_and_name_existing_columns() {
    let s = shape(None, Some(&["body", "id"]));
    assert_eq!(s.local().columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["body", "id"]);
    assert_eq!(s.local().key, [1], "the key is found in its new place");
    assert_eq!(s.project(row![1, 2, "x"]), row!["x", 1]);
    let def = |cols: &[&str]| {
        ViewDef::new("app", "v", Persistence::Realtime, "postgres:main", "public", "t")
            .unwrap()
            .with_columns(cols.iter().copied())
            .unwrap()
    };
    let missing = ViewShape::new(&def(&["tenant"]), upstream()).unwrap_err();
    assert!(matches!(&missing, ViewShapeError::MissingKey { column, .. } if column == "id"), "{missing}");
    let unknown = ViewShape::new(&def(&["id", "nope"]), upstream()).unwrap_err();
    assert!(matches!(&unknown, ViewShapeError::UnknownColumn { column, .. } if column == "nope"), "{unknown}");
    // Every column in upstream order is no projection at all.
    assert!(ViewShape::new(&def(&["id", "tenant", "body"]), upstream()).unwrap().is_whole());
}

#[test]
fn inserts_and_updates_move_rows_in_and_out() {
    let s = shape(Some("tenant = 42"), None);
    let ins = |r: Row| ops(&s, Change::Insert { rel: SourceRelId(9), new: r });
    assert_eq!(ins(row![1, 42, "a"]), [RowOp::Insert { key: key![1], row: row![1, 42, "a"] }]);
    assert_eq!(ins(row![2, 7, "b"]), []);
    // Update that matches: an upsert (a move-in if the key was not local).
    assert_eq!(
        ops(&s, update(None, set(row![2, 42, "b"]))),
        [RowOp::Update { old_key: None, key: key![2], new: set(row![2, 42, "b"]) }]
    );
    // Update that does not match (or is NULL): a move-out.
    assert_eq!(ops(&s, update(None, set(row![1, 7, "a"]))), [RowOp::Evict { key: key![1] }]);
    assert_eq!(ops(&s, update(None, set(row![1, Value::Null, "a"]))), [RowOp::Evict { key: key![1] }]);
    // A key change removes the old key whatever the new row does.
    assert_eq!(
        ops(&s, update(Some(row![1, Value::Null, Value::Null]), set(row![5, 7, "a"]))),
        [RowOp::Evict { key: key![1] }]
    );
    assert_eq!(
        ops(&s, update(Some(row![1, Value::Null, Value::Null]), set(row![5, 42, "a"]))),
        [RowOp::Update { old_key: Some(key![1]), key: key![5], new: set(row![5, 42, "a"]) }]
    );
    // Deletes remove the key if local; truncate empties.
    assert_eq!(ops(&s, delete(row![3, Value::Null, Value::Null])), [RowOp::Evict { key: key![3] }]);
    assert_eq!(ops(&s, Change::Truncate { rels: vec![SourceRelId(9)] }), [RowOp::Truncate]);
}

#[test]
fn unchanged_toast_values_are_taken_from_the_local_row_or_refused() {
    let unchanged_body = |id: i64, tenant: i64| vec![Cell::Set(id.into()), Cell::Set(tenant.into()), Cell::Unchanged];
    // The filter does not read the body: decided now; the store merges.
    let s = shape(Some("tenant = 42"), None);
    assert_eq!(
        ops(&s, update(None, unchanged_body(1, 42))),
        [RowOp::Update { old_key: None, key: key![1], new: unchanged_body(1, 42) }]
    );
    // The filter reads the body and the view keeps it: the store decides
    // with the local row.
    let s = shape(Some("body LIKE 'a%'"), None);
    let got = ops(&s, update(None, unchanged_body(1, 42)));
    assert!(matches!(got.as_slice(), [RowOp::UpdateIf { key, .. }] if *key == key![1]), "{got:?}");
    // The filter reads the body and the view does not keep it: nothing
    // can decide, and the change says so rather than guess.
    let s = shape(Some("body LIKE 'a%'"), Some(&["id", "tenant"]));
    let mut out = Vec::new();
    assert!(s.row_ops(update(None, unchanged_body(1, 42)), &mut out).is_err());
}

#[test]
fn filters_on_the_key_alone_skip_rows_that_cannot_be_local() {
    let s = shape(Some("id < 10"), None);
    assert_eq!(ops(&s, update(None, set(row![50, 1, "x"]))), [], "key 50 was never in the view");
    assert_eq!(ops(&s, delete(row![50, Value::Null, Value::Null])), []);
    assert_eq!(
        ops(&s, update(Some(row![50, Value::Null, Value::Null]), set(row![5, 1, "x"]))),
        [RowOp::Update { old_key: None, key: key![5], new: set(row![5, 1, "x"]) }],
        "a move-in from a key that was never local"
    );
    assert_eq!(
        ops(&s, update(Some(row![5, Value::Null, Value::Null]), set(row![50, 1, "x"]))),
        [RowOp::Evict { key: key![5] }]
    );
}

#[test]
fn skips_agrees_with_row_ops() {
    let changes = [
        Change::Insert { rel: SourceRelId(9), new: row![1, 42, "a"] },
        Change::Insert { rel: SourceRelId(9), new: row![50, 7, "a"] },
        update(None, set(row![50, 7, "x"])),
        update(None, set(row![5, 7, "x"])),
        update(Some(row![50, Value::Null, Value::Null]), set(row![60, 7, "x"])),
        update(Some(row![5, Value::Null, Value::Null]), set(row![60, 7, "x"])),
        delete(row![50, Value::Null, Value::Null]),
        delete(row![5, Value::Null, Value::Null]),
        Change::Truncate { rels: vec![SourceRelId(9)] },
    ];
    for filter in ["id < 10", "tenant = 42", "id < 10 AND tenant = 42"] {
        let s = shape(Some(filter), None);
        for c in &changes {
            if s.skips(&ChangeImages::new(c)) {
                assert_eq!(ops(&s, c.clone()), [], "{filter}: skipped {c:?} but it has operations");
            }
        }
    }
    let s = shape(Some("id < 10"), None);
    assert!(s.skips(&ChangeImages::new(&update(None, set(row![50, 7, "x"])))), "a key outside the range is skipped");
}

#[test]
fn projected_views_store_only_their_columns() {
    let s = shape(Some("tenant = 42"), Some(&["body", "id"]));
    assert_eq!(
        ops(&s, Change::Insert { rel: SourceRelId(9), new: row![1, 42, "a"] }),
        [RowOp::Insert { key: key![1], row: row!["a", 1] }]
    );
    assert_eq!(
        ops(&s, update(None, set(row![1, 42, "b"]))),
        [RowOp::Update { old_key: None, key: key![1], new: set(row!["b", 1]) }]
    );
    // Without a filter, an update that changed none of the kept columns
    // changes nothing.
    let s = shape(None, Some(&["id", "body"]));
    assert_eq!(ops(&s, update(None, vec![Cell::Set(1.into()), Cell::Set(3.into()), Cell::Unchanged])), []);
}

/// An update sending the whole old row (`REPLICA IDENTITY FULL`).
fn update_full(old: Row, new: Vec<Cell>) -> Change {
    Change::Update { rel: SourceRelId(9), old: Some(OldRow::Full(old)), new }
}

#[test]
fn a_whole_old_row_decides_without_reading_the_local_row() {
    let s = shape(Some("tenant = 42"), None);
    let skips = |c: &Change| s.skips(&ChangeImages::new(c));
    // Neither before nor after: nothing at all (not even an eviction).
    let elsewhere = update_full(row![1, 7, "a"], set(row![1, 8, "a"]));
    assert!(skips(&elsewhere));
    assert_eq!(ops(&s, elsewhere), []);
    // A move-out of a row known to be local.
    assert_eq!(ops(&s, update_full(row![1, 42, "a"], set(row![1, 7, "a"]))), [RowOp::Evict { key: key![1] }]);
    // A move-in takes the values the update did not send from the old row:
    // the store gets a whole row, and needs no local one.
    let toasted = vec![Cell::Set(1.into()), Cell::Set(42.into()), Cell::Unchanged];
    assert_eq!(
        ops(&s, update_full(row![1, 7, "long body"], toasted)),
        [RowOp::Update { old_key: None, key: key![1], new: set(row![1, 42, "long body"]) }]
    );
    // A filter reading the unchanged value is decided too: no `UpdateIf`.
    let s = shape(Some("body LIKE 'long%'"), Some(&["id", "tenant"]));
    let toasted = vec![Cell::Set(1.into()), Cell::Set(42.into()), Cell::Unchanged];
    assert_eq!(
        ops(&s, update_full(row![1, 7, "long body"], toasted)),
        [RowOp::Update { old_key: None, key: key![1], new: set(row![1, 42]) }]
    );
    // Deletes of rows the view never held are skipped.
    let s = shape(Some("tenant = 42"), None);
    let gone = Change::Delete { rel: SourceRelId(9), old: OldRow::Full(row![3, 7, "x"]) };
    assert!(s.skips(&ChangeImages::new(&gone)));
    assert_eq!(ops(&s, gone), []);
    let mine = Change::Delete { rel: SourceRelId(9), old: OldRow::Full(row![3, 42, "x"]) };
    assert_eq!(ops(&s, mine), [RowOp::Evict { key: key![3] }]);
    // A key change out of the view and into it: the old key is not touched.
    assert_eq!(
        ops(&s, update_full(row![3, 7, "x"], set(row![4, 42, "x"]))),
        [RowOp::Update { old_key: None, key: key![4], new: set(row![4, 42, "x"]) }]
    );
}

#[test]
fn held_before_reads_whole_old_rows_and_keys() {
    let s = shape(Some("tenant = 42"), None);
    let held = |c: &Change| s.held_before(&ChangeImages::new(c));
    assert_eq!(held(&update_full(row![1, 42, "a"], set(row![1, 7, "a"]))), Some(true));
    assert_eq!(held(&update_full(row![1, 7, "a"], set(row![1, 42, "a"]))), Some(false));
    assert_eq!(held(&update(None, set(row![1, 42, "a"]))), None, "a key image says nothing of the tenant");
    let s = shape(Some("id < 10"), None);
    assert_eq!(s.held_before(&ChangeImages::new(&update(None, set(row![50, 1, "x"])))), Some(false));
}

/// The columns after a change, as a source matches them: `(name, index before)`.
fn after(cols: &[(&str, Option<usize>)]) -> Vec<crate::schema::ColumnMatch> {
    cols.iter().map(|(n, b)| crate::schema::ColumnMatch { name: (*n).into(), before: *b }).collect()
}

/// A copy follows its relation's change of shape when every column it
/// keeps, filters on or is keyed by survived: it then reads the same rows
/// from where those columns are now. A column added at the end, or one it
/// does not keep dropped in the middle (the later ones move up), can be
/// followed; a kept column dropped or changed, or a keyless relation,
/// cannot.
#[test]
fn a_copy_follows_a_change_of_shape_that_keeps_its_columns() {
    let added = after(&[("id", Some(0)), ("tenant", Some(1)), ("body", Some(2)), ("w", None)]);
    let whole = shape(None, None);
    let followed = whole.follow(&def(None, None), &added).expect("a column added at the end");
    assert_eq!(followed.local(), whole.local());
    let insert = Change::Insert { rel: SourceRelId(9), new: row![1, 7, "b", "wide"] };
    assert_eq!(ops(&followed, insert), vec![RowOp::Insert { key: key![1], row: row![1, 7, "b"] }]);

    // `tenant` dropped: `body` moves up. A view of (id, body) where
    // tenant < 5... cannot (it filters on tenant); one of (id, body) can.
    let dropped = after(&[("id", Some(0)), ("body", Some(2))]);
    let filtered = shape(Some("tenant < 5"), Some(&["id", "body"]));
    assert!(filtered.follow(&def(Some("tenant < 5"), Some(&["id", "body"])), &dropped).is_none());
    let projected = shape(None, Some(&["body", "id"]));
    let followed = projected.follow(&def(None, Some(&["body", "id"])), &dropped).expect("tenant is not kept");
    let insert = Change::Insert { rel: SourceRelId(9), new: row![2, "moved up"] };
    assert_eq!(ops(&followed, insert), vec![RowOp::Insert { key: key![2], row: row!["moved up", 2] }]);

    // `body` retyped: the source matches it to nothing before.
    let retyped = after(&[("id", Some(0)), ("tenant", Some(1)), ("body", None)]);
    assert!(whole.follow(&def(None, None), &retyped).is_none());
    assert!(shape(None, Some(&["id", "tenant"])).follow(&def(None, Some(&["id", "tenant"])), &retyped).is_some());
    // The key column gone.
    assert!(projected.follow(&def(None, Some(&["body", "id"])), &after(&[("body", Some(2))])).is_none());
    // A keyless relation's identity takes in the new column too.
    let bag = RelationSchema::full_row(SourceRelId(9), vec![col("k", "int8"), col("v", "int8")]);
    let bag = ViewShape::new(&def(None, None), bag).unwrap();
    assert!(bag.follow(&def(None, None), &after(&[("k", Some(0)), ("v", Some(1)), ("w", None)])).is_none());
}

/// A source that numbers its columns (Postgres' attribute numbers) gives a
/// copy's shape numbers the relation after a change does not have (the
/// new columns' are not known): the copy follows all the same, and keeps
/// the numbers of the columns it was made of.
#[test]
fn a_copy_of_numbered_columns_follows_a_change_of_shape() {
    let numbered = |columns: Option<&[&str]>| {
        let upstream = RelationSchema::keyed(
            SourceRelId(9),
            vec![col("id", "int8"), col("tenant", "int8"), col("body", "text")],
            vec![0],
        )
        .with_column_ids(vec![1, 2, 3]);
        ViewShape::new(&def(None, columns), upstream).unwrap()
    };
    let added = after(&[("id", Some(0)), ("tenant", Some(1)), ("body", Some(2)), ("w", None)]);
    let whole = numbered(None);
    let followed = whole.follow(&def(None, None), &added).expect("a column added at the end");
    assert_eq!(followed.local(), whole.local());
    assert_eq!(followed.local().column_ids, [1, 2, 3]);
    let dropped = after(&[("id", Some(0)), ("body", Some(2))]);
    let projected = numbered(Some(&["body", "id"]));
    let followed = projected.follow(&def(None, Some(&["body", "id"])), &dropped).expect("tenant is not kept");
    assert_eq!(followed.local().column_ids, [3, 1]);
}

/// A source counts `before` in the relation as it last described it, which
/// may not be the shape a copy was made on. Simulator seed 280038364: a
/// copy of (id, likes, extra2) made on (id, body, likes, extra1, extra2,
/// extra3); `extra1` dropped; a `prepare` for another view described the
/// relation without it; then the feed replayed rows of the older shape, and
/// the source matched them to its description — `extra2` at 3, where the
/// copy has `extra1`. Followed by position, the copy took `extra3`'s
/// values for `extra2`. Positions whose names disagree are not followed.
#[test]
fn a_copy_does_not_follow_positions_counted_in_another_shape() {
    let wide: Vec<Column> =
        ["id", "body", "likes", "extra1", "extra2", "extra3"].iter().map(|n| col(n, "int8")).collect();
    let upstream = RelationSchema::keyed(SourceRelId(9), wide, vec![0]);
    let keep = ["id", "likes", "extra2"];
    let view = def(None, Some(&keep));
    let copy = ViewShape::new(&view, upstream).unwrap();
    let replayed = after(&[
        ("id", Some(0)),
        ("body", Some(1)),
        ("likes", Some(2)),
        ("extra1", None),
        ("extra2", Some(3)),
        ("extra3", Some(4)),
    ]);
    assert!(copy.follow(&view, &replayed).is_none(), "followed positions counted in another shape");
    // Counted in the copy's own shape, the same rows are followed by name.
    let own = after(&[
        ("id", Some(0)),
        ("body", Some(1)),
        ("likes", Some(2)),
        ("extra1", Some(3)),
        ("extra2", Some(4)),
        ("extra3", Some(5)),
    ]);
    let followed = copy.follow(&view, &own).expect("the same shape");
    let insert = Change::Insert { rel: SourceRelId(9), new: row![1, "body", 41, 1, 0, 2] };
    assert_eq!(ops(&followed, insert), vec![RowOp::Insert { key: key![1], row: row![1, 41, 0] }]);
}

/// A view of some columns filtered by another records that column's number
/// with what it keeps: a copy whose rows were chosen by a column since
/// dropped and added again under its name (a migration run while the
/// engine was down) no longer fits, though it keeps every column it did.
#[test]
fn a_copy_filtered_by_a_column_it_does_not_keep_fits_only_that_column() {
    let numbered = |ids: Vec<u32>| upstream().with_column_ids(ids);
    let view = def(Some("tenant = 42 AND body <> ''"), Some(&["id"]));
    let copied = ViewShape::new(&view, numbered(vec![1, 2, 3])).unwrap();
    assert_eq!(copied.local().column_ids, [1]);
    assert_eq!(copied.local().filter_column_ids, [2, 3], "the filter's columns, in upstream order");
    let now = |ids| ViewShape::new(&view, numbered(ids)).unwrap();
    assert!(now(vec![1, 2, 3]).local().fits(copied.local()));
    assert!(!now(vec![1, 4, 3]).local().fits(copied.local()), "tenant is another column now");
    let unnumbered = ViewShape::new(&view, upstream()).unwrap();
    assert!(unnumbered.local().filter_column_ids.is_empty());
    assert!(now(vec![1, 4, 3]).local().fits(unnumbered.local()), "a copy stored without numbers");
    // A filter on kept columns is held by their own numbers.
    let kept = ViewShape::new(&def(Some("tenant = 42"), Some(&["id", "tenant"])), numbered(vec![1, 2, 3])).unwrap();
    assert!(kept.local().filter_column_ids.is_empty());
    // And a copy that follows a change of shape keeps the numbers.
    let after = [
        ColumnMatch { name: "id".into(), before: Some(0) },
        ColumnMatch { name: "tenant".into(), before: Some(1) },
        ColumnMatch { name: "body".into(), before: Some(2) },
        ColumnMatch { name: "extra".into(), before: None },
    ];
    let followed = copied.follow(&view, &after).unwrap();
    assert_eq!(followed.local().filter_column_ids, [2, 3]);
}
