//! What part of an upstream relation a view keeps — its rows (`where`) and
//! its columns (`columns`) — and what each change of the relation means for
//! it (DESIGN §7).
//!
//! The local copy *is* the view, so "was the old row in the view?" is "is
//! its key local?": a keyed view needs no old row image to decide a
//! move-out. Per change:
//!
//! | change | new row matches | row operations |
//! |---|---|---|
//! | insert | yes / no | upsert / nothing |
//! | update | yes | upsert (a move-in when the key was not local) |
//! | update | no or NULL | evict the old key (a move-out; nothing if not local) |
//! | update changing the key | — | old key removed; new row as above |
//! | delete | — | evict (delete if local) |
//! | truncate | — | empty the view |
//!
//! Values an update did not carry (Postgres' unchanged TOAST values) come
//! from the local row. When the filter reads such a value the verdict is left
//! to the store, which holds the local row ([`RowOp::UpdateIf`]); when the
//! row is not local either, nothing can decide it and the store reports a
//! conflict, so the view is copied again: never a guess, never a NULL.

use std::sync::Arc;

use crate::change::{Cell, Change, RowOp};
use crate::predicate::{BoundPredicate, Predicate};
use crate::schema::{Identity, RelationSchema};
use crate::value::{Key, Row, Value};
use crate::view::ViewDef;

/// A view's definition laid over its upstream relation as described: the
/// upstream schema (what changes carry), the local schema (what the view
/// stores), and the filter bound to both.
///
/// ```
/// use flashsync_core::{Column, Persistence, RelationSchema, SourceRelId, ViewDef, ViewShape};
/// let col = |n: &str, t: &str| Column { name: n.into(), type_name: t.into() };
/// let upstream = RelationSchema::keyed(
///     SourceRelId(7),
///     vec![col("id", "int8"), col("tenant_id", "int4"), col("body", "text")],
///     vec![0],
/// );
/// let def = ViewDef::new("app", "mine", Persistence::Realtime, "postgres:main", "public", "posts")?
///     .with_filter("tenant_id = 42")?
///     .with_columns(["id", "body"])?;
/// let shape = ViewShape::new(&def, upstream).expect("fits");
/// assert_eq!(shape.local().columns.len(), 2);
/// assert_eq!(shape.admit(flashsync_core::row![1, 42, "hi"]), Some(flashsync_core::row![1, "hi"]));
/// assert_eq!(shape.admit(flashsync_core::row![2, 7, "no"]), None);
/// # Ok::<(), flashsync_core::DefinitionError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ViewShape {
    upstream: RelationSchema,
    local: RelationSchema,
    /// Upstream column index of each local column; `None` keeps them all.
    projection: Option<Vec<usize>>,
    filter: Option<Filter>,
}

#[derive(Clone, Debug, PartialEq)]
struct Filter {
    predicate: Predicate,
    /// Over upstream rows: decides inserts, deletes and fully sent updates.
    upstream: BoundPredicate,
    /// Over local rows, when the view keeps every column the filter reads:
    /// decides, in the store, updates that did not carry some of them.
    local: Option<Arc<BoundPredicate>>,
    /// The filter reads key columns only: a row's key alone says whether it
    /// is in the view, so a change of a row outside it needs no operation
    /// at all (not even the removal of a key that cannot be local).
    on_key: bool,
}

impl Filter {
    /// The values of an update the filter reads, in upstream positions (the
    /// other columns NULL: the filter does not read them), or `None` when
    /// the update did not carry them all (unchanged TOAST values).
    fn carried(&self, new: &[Cell]) -> Option<Vec<Value>> {
        let mut row = vec![Value::Null; new.len()];
        for &c in self.upstream.columns() {
            match (new.get(c), row.get_mut(c)) {
                (Some(Cell::Set(v)), Some(slot)) => *slot = v.clone(),
                _ => return None,
            }
        }
        Some(row)
    }
}

/// A view's `where` or `columns` does not fit its upstream relation. The
/// user must change the definition (or the table): retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewShapeError {
    /// `columns` names a column the relation does not have.
    #[error("`columns` names {column:?}, which {relation} does not have")]
    UnknownColumn {
        /// The column.
        column: String,
        /// The upstream relation.
        relation: String,
    },
    /// `columns` leaves out a column of the relation's key.
    #[error("`columns` leaves out {column:?}, part of the key of {relation}: a view keeps what identifies its rows")]
    MissingKey {
        /// The key column.
        column: String,
        /// The upstream relation.
        relation: String,
    },
    /// The filter names unknown columns or compares values of the wrong type.
    #[error("the `where` filter does not fit {relation}: {message}")]
    Filter {
        /// The upstream relation.
        relation: String,
        /// Why.
        message: String,
    },
}

impl ViewShape {
    /// The whole relation: every row, every column.
    pub fn whole(upstream: RelationSchema) -> ViewShape {
        ViewShape { local: upstream.clone(), upstream, projection: None, filter: None }
    }

    /// Lays `def`'s filter and column list over `upstream`.
    pub fn new(def: &ViewDef, upstream: RelationSchema) -> Result<ViewShape, ViewShapeError> {
        let relation = def.upstream.to_string();
        let projection = match &def.columns {
            None => None,
            Some(names) => {
                let mut indices = Vec::with_capacity(names.len());
                for name in names {
                    let Some(i) = upstream.columns.iter().position(|c| &c.name == name) else {
                        return Err(ViewShapeError::UnknownColumn { column: name.clone(), relation });
                    };
                    indices.push(i);
                }
                for &k in &upstream.key {
                    if !indices.contains(&k) {
                        let column = upstream.columns.get(k).map(|c| c.name.clone()).unwrap_or_default();
                        return Err(ViewShapeError::MissingKey { column, relation });
                    }
                }
                // Every upstream column, in upstream order, is no projection.
                (indices.len() != upstream.columns.len() || indices.iter().enumerate().any(|(i, &u)| i != u))
                    .then_some(indices)
            }
        };
        let local = match &projection {
            None => upstream.clone(),
            Some(p) => RelationSchema {
                source_id: upstream.source_id,
                columns: p.iter().filter_map(|&i| upstream.columns.get(i).cloned()).collect(),
                identity: upstream.identity,
                // Present by the check above.
                key: upstream.key.iter().filter_map(|k| p.iter().position(|i| i == k)).collect(),
            },
        };
        let filter = match &def.filter {
            None => None,
            Some(predicate) => {
                let bind = |columns| {
                    predicate
                        .bind(columns)
                        .map_err(|e| ViewShapeError::Filter { relation: relation.clone(), message: e.to_string() })
                };
                let on_upstream = bind(&upstream.columns)?;
                let kept = on_upstream.columns().iter().all(|c| projection.as_ref().is_none_or(|p| p.contains(c)));
                let on_local = if kept { Some(Arc::new(bind(&local.columns)?)) } else { None };
                let on_key = upstream.identity == Identity::Key
                    && on_upstream.columns().iter().all(|c| upstream.key.contains(c));
                Some(Filter { predicate: predicate.clone(), upstream: on_upstream, local: on_local, on_key })
            }
        };
        Ok(ViewShape { upstream, local, projection, filter })
    }

    /// The relation as the source describes it: what changes carry.
    pub fn upstream(&self) -> &RelationSchema {
        &self.upstream
    }

    /// What the view stores: its columns (in `columns` order) and key.
    pub fn local(&self) -> &RelationSchema {
        &self.local
    }

    /// The upstream column index of each local column, when the view keeps
    /// fewer columns (or another order) than upstream.
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// The row filter, if any (a source renders it with
    /// [`Predicate::to_sql`]).
    pub fn filter(&self) -> Option<&Predicate> {
        self.filter.as_ref().map(|f| &f.predicate)
    }

    /// Whether the view keeps every row and every column.
    pub fn is_whole(&self) -> bool {
        self.projection.is_none() && self.filter.is_none()
    }

    /// Whether the view keeps the upstream row `row`.
    pub fn keeps(&self, row: &[Value]) -> bool {
        self.filter.as_ref().is_none_or(|f| f.upstream.matches(row))
    }

    /// The local row of an upstream row the view keeps: for sources that
    /// copy whole relations and filter themselves.
    pub fn admit(&self, row: Row) -> Option<Row> {
        self.keeps(&row.0).then(|| self.project(row))
    }

    /// The local columns of an upstream row.
    pub fn project(&self, row: Row) -> Row {
        match &self.projection {
            None => row,
            Some(p) => Row(p.iter().map(|&i| row.0.get(i).cloned().unwrap_or(Value::Null)).collect()),
        }
    }

    fn project_cells(&self, cells: Vec<Cell>) -> Vec<Cell> {
        match &self.projection {
            None => cells,
            Some(p) => p.iter().map(|&i| cells.get(i).cloned().unwrap_or(Cell::Set(Value::Null))).collect(),
        }
    }

    /// Whether [`row_ops`](Self::row_ops) would do nothing with `change`,
    /// decided without copying it: a change routed to many filtered views
    /// of one table is copied only for the views it concerns. `false` when
    /// unsure.
    pub fn skips(&self, change: &Change) -> bool {
        let Some(filter) = &self.filter else { return false };
        match change {
            Change::Insert { new, .. } => !filter.upstream.matches(&new.0),
            Change::Delete { old, .. } if filter.on_key => {
                self.upstream.key_of(old).is_ok_and(|k| !self.key_may_be_local(&k))
            }
            Change::Update { old, new, .. } if filter.on_key => {
                // Neither the old key nor the new one can be in the view.
                let Some(row) = filter.carried(new) else { return false };
                let old_out =
                    old.as_ref().is_none_or(|o| self.upstream.key_of(o).is_ok_and(|k| !self.key_may_be_local(&k)));
                old_out && !filter.upstream.matches(&row)
            }
            _ => false,
        }
    }

    /// Appends what one change of the upstream relation does to the view.
    /// An error means the change cannot be applied faithfully (it does not
    /// fit the relation, or it needs values nobody has): the view must be
    /// copied again.
    pub fn row_ops(&self, change: Change, out: &mut Vec<RowOp>) -> Result<(), String> {
        let shape = |e: crate::schema::ShapeError| format!("change does not fit the view's columns: {e}");
        let up = &self.upstream;
        if self.is_whole() {
            out.push(whole_op(up, change)?);
            return Ok(());
        }
        match change {
            Change::Truncate { .. } => out.push(RowOp::Truncate),
            Change::Insert { new, .. } => {
                up.check(new.0.len()).map_err(shape)?;
                if self.keeps(&new.0) {
                    let row = self.project(new);
                    out.push(RowOp::Insert { key: self.local.key_of(&row).map_err(shape)?, row });
                }
            }
            Change::Delete { old, .. } => {
                up.check(old.0.len()).map_err(shape)?;
                // A keyed view deletes by key whether or not the row is
                // local (a no-op if not) unless the key says it cannot be; a
                // full-row view must only remove a copy it holds, and its old
                // image is the whole row.
                let keyed = up.identity == Identity::Key;
                if (keyed && self.key_may_be_local(&self.upstream.key_of(&old).map_err(shape)?)) || self.keeps(&old.0) {
                    let key = self.local.key_of(&self.project(old)).map_err(shape)?;
                    // A keyed partial view may never have held the row.
                    out.push(if keyed { RowOp::Evict { key } } else { RowOp::Delete { key } });
                }
            }
            Change::Update { old, new, .. } => {
                up.check(new.len()).map_err(shape)?;
                match up.identity {
                    Identity::Key => self.update_keyed(old, new, out)?,
                    Identity::FullRow => self.update_full_row(old, new, out)?,
                }
            }
        }
        Ok(())
    }

    fn update_keyed(&self, old: Option<Row>, new: Vec<Cell>, out: &mut Vec<RowOp>) -> Result<(), String> {
        let shape = |e: crate::schema::ShapeError| format!("change does not fit the view's columns: {e}");
        let old_key = match old {
            Some(o) => Some(self.upstream.key_of(&o).map_err(shape)?),
            None => None,
        };
        let key = new_key(&self.upstream, &new, old_key.as_ref())?;
        let old_key = old_key.filter(|k| *k != key);
        let Some(filter) = &self.filter else {
            let new = self.project_cells(new);
            // Every row is local: an update that changed none of the kept
            // columns (all of them unchanged TOAST values) changes nothing.
            let key_cols = &self.local.key;
            let untouched = self.projection.is_some()
                && new.iter().enumerate().all(|(i, c)| key_cols.contains(&i) || matches!(c, Cell::Unchanged));
            if old_key.is_none() && untouched {
                return Ok(());
            }
            out.push(RowOp::Update { old_key, key, new });
            return Ok(());
        };
        if let Some(row) = filter.carried(&new) {
            if filter.upstream.matches(&row) {
                // An upsert when all values came; otherwise the store takes
                // the rest from the local row, or reports that the row is
                // not local (a move-in it cannot complete).
                // An old key the view cannot hold has nothing to move.
                let old_key = old_key.filter(|k| self.key_may_be_local(k));
                out.push(RowOp::Update { old_key, key, new: self.project_cells(new) });
            } else {
                let from = old_key.unwrap_or(key);
                if self.key_may_be_local(&from) {
                    out.push(RowOp::Evict { key: from });
                }
            }
            return Ok(());
        }
        match &filter.local {
            Some(local) => {
                out.push(RowOp::UpdateIf { old_key, key, new: self.project_cells(new), filter: local.clone() });
                Ok(())
            }
            None => Err(format!(
                "an update of key {key:?} did not carry a value the `where` filter reads (an unchanged TOAST value) \
                 and the view does not keep that column, so nothing can tell whether the row belongs to the view"
            )),
        }
    }

    /// Whether a row with upstream key `key` may be in the view: false only
    /// when the filter reads key columns alone and rejects this key.
    fn key_may_be_local(&self, key: &Key) -> bool {
        let Some(f) = self.filter.as_ref().filter(|f| f.on_key) else {
            return true;
        };
        let mut row = vec![Value::Null; self.upstream.columns.len()];
        for (&col, v) in self.upstream.key.iter().zip(&key.0) {
            if let Some(slot) = row.get_mut(col) {
                *slot = v.clone();
            }
        }
        f.upstream.matches(&row)
    }

    fn update_full_row(&self, old: Option<Row>, new: Vec<Cell>, out: &mut Vec<RowOp>) -> Result<(), String> {
        let Some(old) = old else {
            return Err("update of a full-row identity relation without its old row".into());
        };
        self.upstream.check(old.0.len()).map_err(|e| format!("change does not fit the view's columns: {e}"))?;
        // The old image of a full-row relation is the whole old row: it
        // supplies every value the new image left out.
        let new_row = Row(new
            .into_iter()
            .zip(&old.0)
            .map(|(c, o)| match c {
                Cell::Set(v) => v,
                Cell::Unchanged => o.clone(),
            })
            .collect());
        let (was_in, is_in) = (self.keeps(&old.0), self.keeps(&new_row.0));
        let (old_row, new_row) = (self.project(old), self.project(new_row));
        match (was_in, is_in) {
            (true, true) => out.push(RowOp::Update {
                old_key: Some(Key(old_row.0)),
                key: Key(new_row.0.clone()),
                new: new_row.0.into_iter().map(Cell::Set).collect(),
            }),
            (true, false) => out.push(RowOp::Delete { key: Key(old_row.0) }),
            (false, true) => out.push(RowOp::Insert { key: Key(new_row.0.clone()), row: new_row }),
            (false, false) => {}
        }
        Ok(())
    }
}

/// The one row operation of a change for a view that keeps its whole
/// relation: no decision, the store does the rest.
fn whole_op(schema: &RelationSchema, change: Change) -> Result<RowOp, String> {
    let shape = |e: crate::schema::ShapeError| format!("change does not fit the view's columns: {e}");
    match change {
        Change::Insert { new, .. } => Ok(RowOp::Insert { key: schema.key_of(&new).map_err(shape)?, row: new }),
        Change::Delete { old, .. } => Ok(RowOp::Delete { key: schema.key_of(&old).map_err(shape)? }),
        Change::Truncate { .. } => Ok(RowOp::Truncate),
        Change::Update { old, new, .. } => {
            schema.check(new.len()).map_err(shape)?;
            let old_key = match old {
                Some(o) => Some(schema.key_of(&o).map_err(shape)?),
                None => None,
            };
            let key = new_key(schema, &new, old_key.as_ref())?;
            let old_key = old_key.filter(|k| *k != key || schema.identity == Identity::FullRow);
            if schema.identity == Identity::FullRow && old_key.is_none() {
                return Err("update of a full-row identity relation without its old row".into());
            }
            Ok(RowOp::Update { old_key, key, new })
        }
    }
}

/// The key of an updated row: from the new image, taking unchanged key
/// columns from the old key. For full-row identity with unchanged columns the
/// new key is only known after merging; the store computes it.
fn new_key(schema: &RelationSchema, new: &[Cell], old_key: Option<&Key>) -> Result<Key, String> {
    let mut values = Vec::with_capacity(schema.key.len());
    for (pos, &col) in schema.key.iter().enumerate() {
        match new.get(col) {
            Some(Cell::Set(v)) => values.push(v.clone()),
            Some(Cell::Unchanged) | None => match old_key.and_then(|k| k.0.get(pos)) {
                Some(v) => values.push(v.clone()),
                None if schema.identity == Identity::FullRow => return Ok(old_key.cloned().unwrap_or_default()),
                None => return Err(format!("update leaves key column {col} unchanged without an old key")),
            },
        }
    }
    Ok(Key(values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, SourceRelId};
    use crate::view::Persistence;
    use crate::{key, row};

    fn col(name: &str, type_name: &str) -> Column {
        Column { name: name.into(), type_name: type_name.into() }
    }

    /// `(id int8 key, tenant int4, body text)`.
    fn upstream() -> RelationSchema {
        RelationSchema::keyed(
            SourceRelId(9),
            vec![col("id", "int8"), col("tenant", "int4"), col("body", "text")],
            vec![0],
        )
    }

    fn shape(filter: Option<&str>, columns: Option<&[&str]>) -> ViewShape {
        let mut def = ViewDef::new("app", "v", Persistence::Realtime, "postgres:main", "public", "t").unwrap();
        if let Some(f) = filter {
            def = def.with_filter(f).unwrap();
        }
        if let Some(c) = columns {
            def = def.with_columns(c.iter().copied()).unwrap();
        }
        ViewShape::new(&def, upstream()).unwrap()
    }

    fn ops(shape: &ViewShape, change: Change) -> Vec<RowOp> {
        let mut out = Vec::new();
        shape.row_ops(change, &mut out).unwrap();
        out
    }

    fn update(old: Option<Row>, new: Vec<Cell>) -> Change {
        Change::Update { rel: SourceRelId(9), old, new }
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
        assert_eq!(
            ops(&s, Change::Delete { rel: SourceRelId(9), old: row![3, Value::Null, Value::Null] }),
            [RowOp::Evict { key: key![3] }]
        );
        assert_eq!(ops(&s, Change::Truncate { rels: vec![SourceRelId(9)] }), [RowOp::Truncate]);
    }

    #[test]
    fn unchanged_toast_values_are_taken_from_the_local_row_or_refused() {
        let unchanged_body =
            |id: i64, tenant: i64| vec![Cell::Set(id.into()), Cell::Set(tenant.into()), Cell::Unchanged];
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
        assert_eq!(ops(&s, Change::Delete { rel: SourceRelId(9), old: row![50, Value::Null, Value::Null] }), []);
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
            Change::Delete { rel: SourceRelId(9), old: row![50, Value::Null, Value::Null] },
            Change::Delete { rel: SourceRelId(9), old: row![5, Value::Null, Value::Null] },
            Change::Truncate { rels: vec![SourceRelId(9)] },
        ];
        for filter in ["id < 10", "tenant = 42", "id < 10 AND tenant = 42"] {
            let s = shape(Some(filter), None);
            for c in &changes {
                if s.skips(c) {
                    assert_eq!(ops(&s, c.clone()), [], "{filter}: skipped {c:?} but it has operations");
                }
            }
        }
        let s = shape(Some("id < 10"), None);
        assert!(s.skips(&update(None, set(row![50, 7, "x"]))), "a key outside the range is skipped");
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
}
