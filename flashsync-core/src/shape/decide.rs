//! What one change of the upstream relation does to a view: the decision
//! table of the module documentation, case by case.

use crate::change::{Cell, Change, OldRow, RowOp};
use crate::schema::{Identity, RelationSchema, ShapeError};
use crate::value::{Key, Row};

use super::{ChangeImages, Filter, ViewShape};

fn misfit(e: ShapeError) -> String {
    format!("change does not fit the view's columns: {e}")
}

impl ViewShape {
    /// Whether [`row_ops`](Self::row_ops) would do nothing with the change,
    /// decided without copying it: a change routed to many filtered views
    /// of one table is copied only for the views it concerns. `false` when
    /// unsure.
    pub fn skips(&self, images: &ChangeImages<'_>) -> bool {
        let Some(f) = &self.filter else { return false };
        match images.change() {
            Change::Insert { .. } => self.new_in(f, images) == Some(false),
            Change::Delete { old, .. } => self.old_in(f, Some(old), None) == Some(false),
            Change::Update { old, .. } => {
                let new_in = self.new_in(f, images);
                new_in == Some(false) && self.old_in(f, old.as_ref(), new_in) == Some(false)
            }
            Change::Truncate { .. } => false,
        }
    }

    /// Whether the changed row was in the view before the change: known
    /// from a whole old row ([`OldRow::Full`]), or from the key when the
    /// filter reads key columns only. `None` when unknown or for a view
    /// without a filter.
    pub fn held_before(&self, images: &ChangeImages<'_>) -> Option<bool> {
        let f = self.filter.as_ref()?;
        match images.change() {
            Change::Delete { old, .. } => self.old_in(f, Some(old), None),
            Change::Update { old, .. } => self.old_in(f, old.as_ref(), self.new_in(f, images)),
            Change::Insert { .. } | Change::Truncate { .. } => None,
        }
    }

    /// Appends what `change` does to the view. An error means the change
    /// cannot be applied faithfully (it does not fit the relation, or it
    /// needs values nobody has): the view must be copied again.
    pub fn row_ops(&self, change: Change, out: &mut Vec<RowOp>) -> Result<(), String> {
        if self.is_whole() {
            // No decision to make: the change moves into the operation.
            out.push(whole_op(&self.upstream, change)?);
            return Ok(());
        }
        self.row_ops_of(&ChangeImages::new(&change), out)
    }

    /// [`row_ops`](Self::row_ops) for a change read once for several views:
    /// only what the view keeps is copied.
    pub fn row_ops_of(&self, images: &ChangeImages<'_>, out: &mut Vec<RowOp>) -> Result<(), String> {
        let up = &self.upstream;
        let change = images.change();
        if self.is_whole() {
            out.push(whole_op(up, change.clone())?);
            return Ok(());
        }
        let Some(f) = &self.filter else {
            return match change {
                Change::Update { old, new, .. } => match up.identity {
                    Identity::Key => self.update_projected(old.as_ref(), new, out),
                    Identity::FullRow => self.update_full_row(None, old.as_ref(), images, out),
                },
                _ => {
                    // A projection alone keeps every row: the whole
                    // relation's operation, with the view's columns.
                    let op = whole_op(up, change.clone())?;
                    out.push(self.project_op(op));
                    Ok(())
                }
            };
        };
        match change {
            Change::Truncate { .. } => out.push(RowOp::Truncate),
            Change::Insert { new, .. } => {
                up.check(new.0.len()).map_err(misfit)?;
                if self.new_in(f, images) == Some(true) {
                    let row = self.project_values(&new.0);
                    out.push(RowOp::Insert { key: self.local.key_of(&row).map_err(misfit)?, row });
                }
            }
            Change::Delete { old, .. } => {
                up.check(old.row().0.len()).map_err(misfit)?;
                if self.old_in(f, Some(old), None) != Some(false) {
                    let key = self.local.key_of(&self.project_values(&old.row().0)).map_err(misfit)?;
                    // A keyed view removes by key, reading first: unless
                    // the old row said so, it may never have held it. A
                    // full-row view removes one copy of a row it holds.
                    out.push(match up.identity {
                        Identity::Key => RowOp::Evict { key },
                        Identity::FullRow => RowOp::Delete { key },
                    });
                }
            }
            Change::Update { old, new, .. } => {
                up.check(new.len()).map_err(misfit)?;
                match up.identity {
                    Identity::Key => self.update_keyed(f, old.as_ref(), new, images, out)?,
                    Identity::FullRow => self.update_full_row(Some(f), old.as_ref(), images, out)?,
                }
            }
        }
        Ok(())
    }

    /// Whether the new row is in the view: `None` when the filter reads a
    /// value the change did not carry.
    fn new_in(&self, f: &Filter, images: &ChangeImages<'_>) -> Option<bool> {
        let new = images.new_values()?;
        if new.len() != self.upstream.columns.len() || !images.carries(f.upstream.columns()) {
            return None;
        }
        Some(f.upstream.matches(new))
    }

    /// Whether the old row was in the view: known from a whole old row, or
    /// from the key alone when the filter reads nothing else (an update
    /// that kept its key has the new row's key, so `new_in` says). `None`
    /// when unknown.
    fn old_in(&self, f: &Filter, old: Option<&OldRow>, new_in: Option<bool>) -> Option<bool> {
        let whole = self.upstream.identity == Identity::FullRow;
        match old {
            Some(o) if o.row().0.len() != self.upstream.columns.len() => None,
            Some(OldRow::Full(row)) => Some(f.upstream.matches(&row.0)),
            // The key columns are set, and they are all the filter reads.
            Some(OldRow::Key(row)) if f.on_key || whole => Some(f.upstream.matches(&row.0)),
            None if f.on_key => new_in,
            _ => None,
        }
    }

    fn update_keyed(
        &self,
        f: &Filter,
        old: Option<&OldRow>,
        new: &[Cell],
        images: &ChangeImages<'_>,
        out: &mut Vec<RowOp>,
    ) -> Result<(), String> {
        let up = &self.upstream;
        let old_key = old.map(|o| up.key_of(o.row())).transpose().map_err(misfit)?;
        let key = new_key(up, new, old_key.as_ref())?;
        let moved = old_key.filter(|k| *k != key);
        let new_in = self.new_in(f, images);
        let old_in = self.old_in(f, old, new_in);
        match new_in {
            Some(true) => {
                // An upsert: a move-in when the row was not local. Values the
                // update did not carry come from the whole old row when
                // there is one, else the store takes them from the local row
                // (or reports that the row is not local: a move-in it cannot
                // complete). An old key the row was not in has nothing to
                // move.
                let new = match images.new_values() {
                    Some(values) if images.complete() => {
                        self.project_values(values).0.into_iter().map(Cell::Set).collect()
                    }
                    _ => self.project_cells(new),
                };
                let old_key = moved.filter(|_| old_in != Some(false));
                out.push(RowOp::Update { old_key, key, new });
            }
            Some(false) => {
                // A move-out, unless the row was not in the view either.
                if old_in != Some(false) {
                    out.push(RowOp::Evict { key: moved.unwrap_or(key) });
                }
            }
            None => match &f.local {
                Some(local) => out.push(RowOp::UpdateIf {
                    old_key: moved,
                    key,
                    new: self.project_cells(new),
                    filter: local.clone(),
                }),
                None => {
                    return Err(format!(
                        "an update of key {key:?} did not carry a value the `where` filter reads (an unchanged \
                         TOAST value) and the view does not keep that column, so nothing can tell whether the \
                         row belongs to the view"
                    ))
                }
            },
        }
        Ok(())
    }

    /// An update of a view with a column list and no filter: every row is
    /// local.
    fn update_projected(&self, old: Option<&OldRow>, new: &[Cell], out: &mut Vec<RowOp>) -> Result<(), String> {
        let up = &self.upstream;
        up.check(new.len()).map_err(misfit)?;
        let old_key = old.map(|o| up.key_of(o.row())).transpose().map_err(misfit)?;
        let key = new_key(up, new, old_key.as_ref())?;
        let old_key = old_key.filter(|k| *k != key);
        let new = self.project_cells(new);
        // An update that changed none of the kept columns (all of them
        // unchanged TOAST values) changes nothing.
        let key_cols = &self.local.key;
        let untouched = new.iter().enumerate().all(|(i, c)| key_cols.contains(&i) || matches!(c, Cell::Unchanged));
        if old_key.is_some() || !untouched {
            out.push(RowOp::Update { old_key, key, new });
        }
        Ok(())
    }

    /// A full-row view: the old image is the whole old row, and it supplies
    /// every value the new image left out.
    fn update_full_row(
        &self,
        f: Option<&Filter>,
        old: Option<&OldRow>,
        images: &ChangeImages<'_>,
        out: &mut Vec<RowOp>,
    ) -> Result<(), String> {
        let Some(old) = old else {
            return Err("update of a full-row identity relation without its old row".into());
        };
        let old = old.row();
        self.upstream.check(old.0.len()).map_err(misfit)?;
        let Some(new) = images.new_values().filter(|_| images.complete()) else {
            return Err("update of a full-row identity relation whose old row does not fill its new one".into());
        };
        let keeps = |row: &[crate::value::Value]| f.is_none_or(|f| f.upstream.matches(row));
        let (was_in, is_in) = (keeps(&old.0), keeps(new));
        let (old_row, new_row) = (self.project_values(&old.0), self.project_values(new));
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

    /// A whole-relation operation, narrowed to the view's columns.
    fn project_op(&self, op: RowOp) -> RowOp {
        let key = |k: Key| -> Key {
            match self.upstream.identity {
                // Keyed: key values are the same, in the same order.
                Identity::Key => k,
                // Full-row: the key is the row.
                Identity::FullRow => Key(self.project(Row(k.0)).0),
            }
        };
        // Updates do not come here: they are decided above.
        match op {
            RowOp::Insert { key: k, row } => RowOp::Insert { key: key(k), row: self.project(row) },
            RowOp::Delete { key: k } => RowOp::Delete { key: key(k) },
            other => other,
        }
    }
}

/// The one row operation of a change for a view that keeps its whole
/// relation: no decision, the store does the rest.
fn whole_op(schema: &RelationSchema, change: Change) -> Result<RowOp, String> {
    match change {
        Change::Insert { new, .. } => Ok(RowOp::Insert { key: schema.key_of(&new).map_err(misfit)?, row: new }),
        Change::Delete { old, .. } => Ok(RowOp::Delete { key: schema.key_of(old.row()).map_err(misfit)? }),
        Change::Truncate { .. } => Ok(RowOp::Truncate),
        Change::Update { old, new, .. } => {
            schema.check(new.len()).map_err(misfit)?;
            let old_key = match old {
                Some(o) => Some(schema.key_of(o.row()).map_err(misfit)?),
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
