//! The shape of an upstream relation as a source describes it.

use serde::{Deserialize, Serialize};

use crate::value::{Key, Row, Value};

/// A source's own handle for an upstream relation (the table's OID for
/// Postgres). Change events name relations by this id; if a table is dropped
/// and re-created under the same name it gets a new id, so stale events can
/// never be routed into the new table's views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceRelId(pub u64);

/// One column of an upstream relation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name, verbatim.
    pub name: String,
    /// The upstream type's name (e.g. `int8`, `text`, `_int4`, or an enum's
    /// name); informational, and part of schema-change detection.
    pub type_name: String,
}

/// How rows of a relation are identified, and so how changes address them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    /// A primary key (or another unique, non-null key used as replica
    /// identity). Key columns are listed in [`RelationSchema::key`].
    Key,
    /// No key: rows are identified by all their columns (Postgres `REPLICA
    /// IDENTITY FULL`). Identical rows can occur more than once, so the local
    /// copy keeps a count per distinct row (a multiset).
    FullRow,
}

/// A column of a relation after its shape changed upstream, matched to the
/// columns the relation had before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMatch {
    /// Its name now.
    pub name: String,
    /// The index of the same column before the change — the same name, type
    /// and type modifier, the same part in the replica identity — if the
    /// relation had it. "Before" is the relation as the source last
    /// described or announced it, which a view's copy may not share; the
    /// machine follows only where the column at that index of its own shape
    /// has this name ([`RelationSchema::after_change`]).
    pub before: Option<usize>,
}

impl ColumnMatch {
    /// Each of `now`'s columns matched to the column of `was` equal to it,
    /// if any. What "equal" takes in is the caller's column type: name and
    /// type for a [`Column`], which is all a memory upstream knows; the
    /// Postgres source's own description adds the type modifier and the
    /// part in the replica identity. Equal columns are not told apart by
    /// position: a column dropped and one of the same name and type added
    /// match here. A source that can tell them apart unmatches them after
    /// (the Postgres source checks attribute numbers in the catalog, which
    /// its `Relation` messages do not carry).
    ///
    /// ```
    /// use flashsync_core::{Column, ColumnMatch};
    /// let col = |n: &str| Column { name: n.into(), type_name: "int8".into() };
    /// let was = [col("id"), col("gone"), col("v")];
    /// let now = [col("id"), col("v"), col("new")];
    /// let matched = ColumnMatch::between(&was, &now, |c| c.name.as_str());
    /// let before: Vec<Option<usize>> = matched.iter().map(|m| m.before).collect();
    /// assert_eq!(before, [Some(0), Some(2), None]);
    /// ```
    pub fn between<C: PartialEq>(was: &[C], now: &[C], name: impl Fn(&C) -> &str) -> Vec<ColumnMatch> {
        now.iter().map(|c| ColumnMatch { name: name(c).to_owned(), before: was.iter().position(|w| w == c) }).collect()
    }
}

/// What a source reports about an upstream relation: enough to route its
/// changes, key its rows and notice when it changes shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationSchema {
    /// The source's handle for this relation.
    pub source_id: SourceRelId,
    /// Columns in upstream order; every [`Row`] of the relation has exactly
    /// this many values, in this order.
    pub columns: Vec<Column>,
    /// How rows are identified.
    pub identity: Identity,
    /// Indices into `columns` of the key, in key order. For
    /// [`Identity::FullRow`] this is every column.
    pub key: Vec<usize>,
    /// The source's own number for each column (Postgres: its attribute
    /// number), one per column in order, or none when the source has no
    /// such numbers or they are not known. A source never gives a number
    /// to two columns, so a column dropped and another of the same name
    /// and type added get different ones: a copy made of the first is not
    /// a copy of the second, though names and types say they are the same
    /// ([`fits`](Self::fits)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_ids: Vec<u32>,
    /// For a view's copy (its local schema): the source's numbers of the
    /// upstream columns its filter reads that it does not keep, in upstream
    /// order. Empty for a relation as the source describes it, for a view
    /// whose filter reads only what it keeps, and where numbers are not
    /// known. A copy filtered by a column that was dropped and added again
    /// under its name is not a copy of the view as it now reads, though it
    /// keeps every column it did ([`fits`](Self::fits)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_column_ids: Vec<u32>,
}

/// A row's shape does not fit its relation's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row has {got} values but the relation has {expected} columns")]
pub struct ShapeError {
    /// Number of columns in the schema.
    pub expected: usize,
    /// Number of values in the row.
    pub got: usize,
}

impl RelationSchema {
    /// A schema keyed by the columns at `key` (must be non-empty, in range).
    pub fn keyed(source_id: SourceRelId, columns: Vec<Column>, key: Vec<usize>) -> Self {
        RelationSchema {
            source_id,
            columns,
            identity: Identity::Key,
            key,
            column_ids: Vec::new(),
            filter_column_ids: Vec::new(),
        }
    }

    /// A schema identified by full rows.
    pub fn full_row(source_id: SourceRelId, columns: Vec<Column>) -> Self {
        let key = (0..columns.len()).collect();
        RelationSchema {
            source_id,
            columns,
            identity: Identity::FullRow,
            key,
            column_ids: Vec::new(),
            filter_column_ids: Vec::new(),
        }
    }

    /// The same schema with the source's numbers for its columns (see
    /// [`column_ids`](Self::column_ids)); ignored unless there is one per
    /// column.
    pub fn with_column_ids(mut self, ids: Vec<u32>) -> Self {
        debug_assert!(ids.is_empty() || ids.len() == self.columns.len(), "one number per column, or none");
        if ids.len() == self.columns.len() {
            self.column_ids = ids;
        }
        self
    }

    /// Whether a copy stored with the schema `stored` is a copy of the
    /// relation as this schema describes it: the same columns, keyed the
    /// same way, from the same relation — and the same columns by the
    /// source's numbers where both schemas have them (a copy stored before
    /// they were recorded has none, and is taken at its names), its filter
    /// reading the same columns by their numbers too.
    pub fn fits(&self, stored: &RelationSchema) -> bool {
        let same = |a: &[u32], b: &[u32]| a.is_empty() || b.is_empty() || a == b;
        self.source_id == stored.source_id
            && self.same_shape(stored)
            && same(&self.column_ids, &stored.column_ids)
            && same(&self.filter_column_ids, &stored.filter_column_ids)
    }

    /// Whether the schema is internally consistent: a non-empty key of
    /// distinct, in-range column indices (all columns for `FullRow`).
    pub fn is_well_formed(&self) -> bool {
        let n = self.columns.len();
        let mut seen = vec![false; n];
        for &k in &self.key {
            match seen.get_mut(k) {
                Some(s) if !*s => *s = true,
                _ => return false,
            }
        }
        match self.identity {
            Identity::Key => !self.key.is_empty(),
            Identity::FullRow => self.key.len() == n,
        }
    }

    /// This relation after a shape change that left it with the columns
    /// `after`, as far as the columns that survived tell: those keep their
    /// description, new ones are named only (their type is not known here,
    /// and nothing that reads this reads them), and no column has a
    /// source number (the new ones' are not known). `None` when a key column did
    /// not survive, or for a keyless relation, whose identity takes in every
    /// column, new ones too.
    ///
    /// `after` counts its `before` positions in the relation as the source
    /// last described or announced it, which need not be this schema: a
    /// copy made before a later `prepare` described the relation anew (the
    /// feed still sending rows of the older shape), or after one the feed
    /// has not reached yet. A source matches a column only to one of the
    /// same name, so a position whose column here has another name proves
    /// the two disagree, and the positions mean nothing here: `None` then,
    /// rather than reading one column's values as another's.
    pub fn after_change(&self, after: &[ColumnMatch]) -> Option<RelationSchema> {
        if self.identity != Identity::Key {
            return None;
        }
        let columns = after
            .iter()
            .map(|m| match m.before {
                Some(i) => self.columns.get(i).filter(|c| c.name == m.name).cloned(),
                None => Some(Column { name: m.name.clone(), type_name: "?".into() }),
            })
            .collect::<Option<Vec<Column>>>()?;
        let key =
            self.key.iter().map(|&k| after.iter().position(|m| m.before == Some(k))).collect::<Option<Vec<usize>>>()?;
        let schema = RelationSchema::keyed(self.source_id, columns, key);
        schema.is_well_formed().then_some(schema)
    }

    /// Same columns and keying, ignoring the source handle and the
    /// source's column numbers.
    pub fn same_shape(&self, other: &RelationSchema) -> bool {
        self.columns == other.columns && self.identity == other.identity && self.key == other.key
    }

    /// The key of `row`.
    pub fn key_of(&self, row: &Row) -> Result<Key, ShapeError> {
        self.check(row.0.len())?;
        Ok(Key(self.key.iter().map(|&i| row.0.get(i).cloned().unwrap_or(Value::Null)).collect()))
    }

    /// Appends the encoded key of `row` to `out` (what
    /// [`encode_key_into`](crate::codec::encode_key_into) of
    /// [`key_of`](Self::key_of) appends), without cloning its values.
    pub fn encode_key_of(&self, row: &Row, out: &mut Vec<u8>) -> Result<(), ShapeError> {
        self.check(row.0.len())?;
        static NULL: Value = Value::Null;
        crate::codec::encode_key_parts_into(self.key.iter().map(|&i| row.0.get(i).unwrap_or(&NULL)), out);
        Ok(())
    }

    /// Checks a row's width.
    pub fn check(&self, width: usize) -> Result<(), ShapeError> {
        if width == self.columns.len() {
            Ok(())
        } else {
            Err(ShapeError { expected: self.columns.len(), got: width })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(n: usize) -> Vec<Column> {
        (0..n).map(|i| Column { name: format!("c{i}"), type_name: "int8".into() }).collect()
    }

    #[test]
    fn well_formedness() {
        assert!(RelationSchema::keyed(SourceRelId(1), cols(3), vec![2, 0]).is_well_formed());
        assert!(!RelationSchema::keyed(SourceRelId(1), cols(3), vec![]).is_well_formed());
        assert!(!RelationSchema::keyed(SourceRelId(1), cols(3), vec![3]).is_well_formed());
        assert!(!RelationSchema::keyed(SourceRelId(1), cols(3), vec![1, 1]).is_well_formed());
        assert!(RelationSchema::full_row(SourceRelId(1), cols(2)).is_well_formed());
        let s = RelationSchema::keyed(SourceRelId(1), cols(3), vec![2, 0]);
        assert_eq!(s.key_of(&crate::row![1, 2, 3]).unwrap(), crate::key![3, 1]);
        assert!(s.key_of(&crate::row![1]).is_err());
    }
}
