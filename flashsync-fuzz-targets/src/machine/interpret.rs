//! Interpretation helpers: turn the arbitrary input types into the
//! machine's values (schemas, rows, changes, errors, names, selectors).

use flashsync_core::{
    Cell, Change, Column, ColumnMatch, Identity, OldRow, OriginId, RelationSchema, Row, Selector, SourceError,
    SourceErrorKind, SourceRelId, StoreError, StoreErrorKind, UpstreamRelation, Value, ViewName,
};

use super::inputs::{FuzzCell, FuzzChange, FuzzRow, FuzzValue, PatPick, RelPick, Sel, ShapePick, Width};
use super::{NAMES, NAMESPACES, ORIGINS, TABLES};

// ----- interpretation helpers ------------------------------------------------------

fn columns(n: usize) -> Vec<Column> {
    (0..n).map(|i| Column { name: format!("c{i}"), type_name: "int8".into() }).collect()
}

/// The universe table `i`'s shape.
pub(super) fn table_schema(i: usize) -> RelationSchema {
    match i % TABLES.len() {
        0 => RelationSchema::keyed(SourceRelId(101), columns(2), vec![0]),
        1 => RelationSchema::full_row(SourceRelId(102), columns(3)),
        _ => RelationSchema::keyed(SourceRelId(103), columns(3), vec![1, 0]),
    }
}

pub(super) fn table_of(rel: &UpstreamRelation) -> usize {
    TABLES.iter().position(|(s, t)| rel.schema == *s && rel.table == *t).unwrap_or(0)
}

pub(super) fn shape(pick: &ShapePick, table: usize) -> RelationSchema {
    match pick {
        ShapePick::Canonical => table_schema(table),
        ShapePick::Other(i) => table_schema(usize::from(*i)),
        ShapePick::SourceId(id) => {
            let mut s = table_schema(table);
            s.source_id = SourceRelId(u64::from(*id) + 100);
            s
        }
        ShapePick::Wider => {
            let mut s = table_schema(table);
            s.columns.push(Column { name: "extra".into(), type_name: "text".into() });
            if s.identity == Identity::FullRow {
                s.key.push(s.columns.len() - 1);
            }
            s
        }
        ShapePick::IllFormed => {
            let mut s = table_schema(table);
            s.key = vec![7];
            s
        }
    }
}

fn value(v: FuzzValue) -> Value {
    match v {
        FuzzValue::Null => Value::Null,
        FuzzValue::Int(i) => Value::Int(i64::from(i % 4)),
        FuzzValue::Text(i) => Value::Text(format!("v{}", i % 4)),
        FuzzValue::Big(n) => Value::Text("x".repeat(usize::from(n))),
    }
}

pub(super) fn rel_id(pick: RelPick) -> SourceRelId {
    match pick {
        RelPick::Table(i) => table_schema(usize::from(i)).source_id,
        RelPick::Raw(r) => SourceRelId(u64::from(r)),
    }
}

/// A universe table's columns after one was added at the end (what a
/// source says with `SchemaChanged`); nothing for a raw relation id.
pub(super) fn column_added(pick: RelPick) -> Option<Vec<ColumnMatch>> {
    let RelPick::Table(i) = pick else { return None };
    let schema = table_schema(usize::from(i));
    let kept = schema.columns.iter().enumerate().map(|(i, c)| ColumnMatch { name: c.name.clone(), before: Some(i) });
    Some(kept.chain(std::iter::once(ColumnMatch { name: "added".into(), before: None })).collect())
}

fn width_of(rel: SourceRelId, w: Width) -> usize {
    match w {
        Width::Fit => (0..TABLES.len()).map(table_schema).find(|s| s.source_id == rel).map_or(2, |s| s.columns.len()),
        Width::Raw(n) => usize::from(n % 6),
    }
}

fn row(rel: SourceRelId, r: &FuzzRow) -> Row {
    let n = width_of(rel, r.width);
    Row((0..n).map(|i| r.values.get(i).copied().map_or(Value::Null, value)).collect())
}

pub(super) fn change(c: &FuzzChange) -> Change {
    match c {
        FuzzChange::Insert { rel, row: r } => {
            let rel = rel_id(*rel);
            Change::Insert { rel, new: row(rel, r) }
        }
        FuzzChange::Update { rel, old, new, width } => {
            let rel = rel_id(*rel);
            let n = width_of(rel, *width);
            let cells = (0..n)
                .map(|i| match new.get(i) {
                    Some(FuzzCell::Set(v)) => Cell::Set(value(*v)),
                    Some(FuzzCell::Unchanged) => Cell::Unchanged,
                    None => Cell::Set(Value::Null),
                })
                .collect();
            Change::Update { rel, old: old.as_ref().map(|o| old_image(rel, row(rel, o))), new: cells }
        }
        FuzzChange::Delete { rel, old } => {
            let rel = rel_id(*rel);
            Change::Delete { rel, old: old_image(rel, row(rel, old)) }
        }
        FuzzChange::Truncate { rels } => Change::Truncate { rels: rels.iter().map(|r| rel_id(*r)).collect() },
    }
}

/// Old images of the full-row table are whole rows; the keyed tables send
/// keys (whatever else the fuzzer put in them).
fn old_image(rel: SourceRelId, row: Row) -> OldRow {
    if rel == SourceRelId(102) {
        OldRow::Full(row)
    } else {
        OldRow::Key(row)
    }
}

pub(super) fn source_error(code: u8) -> SourceError {
    let kind = match code % 8 {
        0 => SourceErrorKind::Connection,
        1 => SourceErrorKind::RelationMissing,
        2 => SourceErrorKind::ReplicaIdentity,
        3 => SourceErrorKind::Unsupported,
        4 => SourceErrorKind::Protocol,
        5 => SourceErrorKind::Refused,
        6 => SourceErrorKind::Sink,
        _ => SourceErrorKind::Other,
    };
    SourceError::new(kind, format!("injected {kind:?}"))
}

pub(super) fn store_error(code: u8) -> StoreError {
    let kind = match code % 8 {
        0 => StoreErrorKind::Io,
        1 => StoreErrorKind::Corrupt,
        2 => StoreErrorKind::Locked,
        3 => StoreErrorKind::Incompatible,
        4 => StoreErrorKind::Poisoned,
        5 => StoreErrorKind::NotFound,
        6 => StoreErrorKind::Invalid,
        _ => StoreErrorKind::Closed,
    };
    StoreError::new(kind, "fuzz", format!("injected {kind:?}"))
}

pub(super) fn origin_id(i: u8) -> OriginId {
    // The universe's origin ids are valid.
    OriginId::new(ORIGINS[usize::from(i) % ORIGINS.len()]).unwrap_or_else(|e| panic!("origin id: {e}"))
}

pub(super) fn view_name(ns: u8, name: u8) -> ViewName {
    ViewName { namespace: NAMESPACES[usize::from(ns) % 2].into(), name: NAMES[usize::from(name) % 3].into() }
}

fn pattern(p: &PatPick, known: &[&str]) -> String {
    match p {
        PatPick::Known(i) => known[usize::from(*i) % known.len()].into(),
        PatPick::Star => "*".into(),
        PatPick::Prefix(i) => {
            let k = known[usize::from(*i) % known.len()];
            format!("{}*", &k[..1])
        }
        PatPick::Raw(s) => s.clone(),
    }
}

pub(super) fn selector(sel: &Sel) -> Option<Selector> {
    match sel {
        Sel::All => Some(Selector::All),
        Sel::Names(names) => Some(Selector::Names(names.iter().map(|(ns, n)| view_name(*ns, *n)).collect())),
        Sel::Map(entries) => Selector::from_map(entries.iter().map(|(ns, names)| {
            (pattern(ns, &NAMESPACES), names.iter().map(|n| pattern(n, &NAMES)).collect::<Vec<_>>())
        }))
        .ok(),
        Sel::Text(t) => t.parse().ok(),
    }
}
