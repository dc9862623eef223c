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
//! An eviction reads the local row, and a table of many filtered views
//! would pay one read per view for every update. When the source sends the
//! whole old row (Postgres `REPLICA IDENTITY FULL`, [`OldRow::Full`]), or
//! the filter reads key columns only, the old row's verdict is known too and
//! a view the row was never in gets no operation at all
//! ([`ViewShape::skips`]).
//!
//! Values an update did not carry (Postgres' unchanged TOAST values) come
//! from the whole old row when there is one, else from the local row. When
//! the filter reads such a value the verdict is left to the store, which
//! holds the local row ([`RowOp::UpdateIf`]); when the row is not local
//! either, nothing can decide it and the store reports a conflict, so the
//! view is copied again: never a guess, never a NULL.

mod decide;
mod follow;
mod images;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use images::ChangeImages;

use crate::change::Cell;
#[cfg(doc)]
use crate::change::{OldRow, RowOp};
use crate::predicate::{BoundPredicate, Predicate};
use crate::schema::{Identity, RelationSchema};
use crate::value::{Row, Value};
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
        let mut local = match &projection {
            None => upstream.clone(),
            Some(p) => RelationSchema {
                source_id: upstream.source_id,
                columns: p.iter().filter_map(|&i| upstream.columns.get(i).cloned()).collect(),
                identity: upstream.identity,
                // Present by the check above.
                key: upstream.key.iter().filter_map(|k| p.iter().position(|i| i == k)).collect(),
                column_ids: p.iter().filter_map(|&i| upstream.column_ids.get(i).copied()).collect(),
                filter_column_ids: Vec::new(),
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
                if let (Some(p), false) = (&projection, kept) {
                    // What the copy's rows were chosen by is part of what
                    // it is a copy of (`RelationSchema::fits`).
                    let mut read: Vec<usize> =
                        on_upstream.columns().iter().copied().filter(|c| !p.contains(c)).collect();
                    read.sort_unstable();
                    read.dedup();
                    let ids: Option<Vec<u32>> = read.iter().map(|&i| upstream.column_ids.get(i).copied()).collect();
                    local.filter_column_ids = ids.unwrap_or_default();
                }
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

    /// The local columns of an update's new image.
    fn project_cells(&self, cells: &[Cell]) -> Vec<Cell> {
        match &self.projection {
            None => cells.to_vec(),
            Some(p) => p.iter().map(|&i| cells.get(i).cloned().unwrap_or(Cell::Set(Value::Null))).collect(),
        }
    }

    /// The local columns of upstream values.
    fn project_values(&self, values: &[Value]) -> Row {
        match &self.projection {
            None => Row(values.to_vec()),
            Some(p) => Row(p.iter().map(|&i| values.get(i).cloned().unwrap_or(Value::Null)).collect()),
        }
    }
}
