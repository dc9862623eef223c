//! What the feed is expected to say about a relation, for schema-change
//! detection.
//!
//! `prepare` records the shape it described; every `Relation` message the
//! walsender sends is compared with the last shape known for that OID. A
//! difference (columns, types, type modifiers, replica identity, name) means
//! the local copy no longer matches what changes will carry: the feed emits
//! `SchemaChanged` before any change of that relation.
//!
//! A `Relation` message names columns but does not number them, so a column
//! dropped and another of the same name and type added (`DROP COLUMN x,
//! ADD COLUMN x int`) reads exactly as before — while every row's value of
//! the new column is new, and no change says so. Postgres never reuses an
//! attribute number, so the shape keeps each column's number where it is
//! known, and an announcement is checked against the catalog as it is when
//! the feed reads it ([`CatalogColumns`]), once the transaction that
//! carried the message is visible there (so the catalog is never behind
//! the stream): a column that still has its number under its name is the
//! same column, however far the catalog is ahead; any other is treated as
//! new. Where that is wrong (the column was dropped only after the message
//! was sent) a view is copied again that need not be — never kept with
//! another column's values.
//!
//! Numbers come from descriptions (`prepare`, which also records them in
//! the schema a copy is stored with) and, for columns an announcement adds
//! or could not vouch for, from the catalog by name — only when that
//! announcement reports a change, after which every view of the relation is
//! copied again at a snapshot later than the catalog read, so a number
//! ahead of the stream is the one the copies hold. A later description
//! never numbers the expected shape: a copy already live may have been
//! made of a column the description no longer sees.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use flashsync_core::ColumnMatch;

use crate::pgoutput::Relation;

/// One column as the feed describes it, and its attribute number.
#[derive(Clone, Debug)]
pub(crate) struct ShapeColumn {
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    pub(crate) type_modifier: i32,
    /// Part of the replica identity (what `pgoutput` flags as key).
    pub(crate) identity: bool,
    /// `pg_attribute.attnum`, where known: a description reads it, a
    /// `Relation` message does not carry it (an announced column gets the
    /// number it keeps, or one from the catalog, [`Shape::number_from`]).
    /// Not part of what the feed says, so not compared with it.
    pub(crate) attnum: Option<i16>,
}

impl ShapeColumn {
    /// What a `Relation` message says of the column.
    fn as_announced(&self) -> (&str, u32, i32, bool) {
        (self.name.as_str(), self.type_oid, self.type_modifier, self.identity)
    }
}

/// A relation's columns as the catalog has them when the feed reads a
/// `Relation` message: names and attribute numbers of the live columns the
/// feed carries (not dropped, not generated), in number order.
#[derive(Clone, Debug, Default)]
pub(crate) struct CatalogColumns(pub(crate) Vec<(String, i16)>);

impl CatalogColumns {
    fn number_of(&self, name: &str) -> Option<i16> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, num)| *num)
    }
}

/// Why a column of the same name and type could not be vouched for as the
/// one copied.
enum Unvouched {
    /// Another attribute number now: dropped and added again.
    Renumbered { name: String, was: i16, now: i16 },
    /// Its number was not known (it was announced while the catalog lacked it).
    Unnumbered { name: String },
    /// No longer in the catalog (dropped since; or the relation is gone).
    Gone { name: String },
    /// The catalog has not caught up with the transaction that announced it.
    CatalogBehind { name: String },
}

impl Unvouched {
    fn new(name: &str, was: Option<i16>, found: Option<Option<i16>>) -> Unvouched {
        let name = name.to_owned();
        match (was, found) {
            (_, None) => Unvouched::CatalogBehind { name },
            (_, Some(None)) => Unvouched::Gone { name },
            (None, Some(Some(_))) => Unvouched::Unnumbered { name },
            (Some(was), Some(Some(now))) => Unvouched::Renumbered { name, was, now },
        }
    }
}

impl std::fmt::Display for Unvouched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unvouched::Renumbered { name, was, now } => {
                write!(f, "column {name} was dropped and added again (attribute number {was}, now {now})")
            }
            Unvouched::Unnumbered { name } => {
                write!(f, "column {name} cannot be told from one dropped and added again (its number is not known)")
            }
            Unvouched::Gone { name } => write!(f, "column {name} is no longer in the catalog"),
            Unvouched::CatalogBehind { name } => {
                write!(f, "column {name} cannot be checked: the catalog does not show the announcing transaction yet")
            }
        }
    }
}

/// A relation's shape in feed terms.
#[derive(Clone, Debug)]
pub(crate) struct Shape {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `relreplident`: `d`, `n`, `f` or `i`.
    pub(crate) replident: u8,
    pub(crate) columns: Vec<ShapeColumn>,
}

impl Shape {
    pub(crate) fn from_relation(r: &Relation) -> Shape {
        use crate::pgoutput::ReplicaIdentity as R;
        Shape {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            replident: match r.replica_identity {
                R::Default => b'd',
                R::Nothing => b'n',
                R::Full => b'f',
                R::Index => b'i',
            },
            columns: r
                .columns
                .iter()
                .map(|c| ShapeColumn {
                    name: c.name.clone(),
                    type_oid: c.type_oid,
                    type_modifier: c.type_modifier,
                    identity: c.key,
                    attnum: None,
                })
                .collect(),
        }
    }

    fn announced_columns(&self) -> impl Iterator<Item = (&str, u32, i32, bool)> {
        self.columns.iter().map(ShapeColumn::as_announced)
    }

    /// Numbers the columns not numbered yet by their names in `now` (see
    /// the module doc for when that is sound). A column `now` lacks stays
    /// unnumbered: the next announcement cannot vouch for it.
    fn number_from(&mut self, now: &CatalogColumns) {
        for c in self.columns.iter_mut().filter(|c| c.attnum.is_none()) {
            c.attnum = now.number_of(&c.name);
        }
    }

    /// `pgoutput` sends an empty namespace for `pg_catalog`; compare names
    /// the way it sends them.
    fn same_name(&self, other: &Shape) -> bool {
        let ns = |s: &str| if s == "pg_catalog" { String::new() } else { s.to_owned() };
        ns(&self.namespace) == ns(&other.namespace) && self.name == other.name
    }

    /// The columns of `new` matched to this shape's: for each, the index of
    /// the same column here (same name, type, modifier and part in the
    /// replica identity). `None` when the relation was renamed or its
    /// replica identity changed: nothing of the old description holds then.
    pub(crate) fn matches(&self, new: &Shape) -> Option<Vec<ColumnMatch>> {
        if !self.same_name(new) || self.replident != new.replident {
            return None;
        }
        let was: Vec<_> = self.announced_columns().collect();
        let now: Vec<_> = new.announced_columns().collect();
        Some(ColumnMatch::between(&was, &now, |c| c.0))
    }

    /// Whether the columns both shapes number have the same numbers (a
    /// column numbered in only one of them is not compared).
    fn same_numbers(&self, other: &Shape) -> bool {
        let numbers = |s: &Shape| s.columns.iter().map(|c| c.attnum).collect::<Vec<_>>();
        numbers(self).iter().zip(numbers(other)).all(|(a, b)| a.is_none() || b.is_none() || *a == b)
    }

    /// `None` when equal; otherwise what changed, for `last_error`.
    pub(crate) fn difference(&self, new: &Shape) -> Option<String> {
        let same_columns = self.announced_columns().eq(new.announced_columns());
        if self.same_name(new) && self.replident == new.replident && same_columns {
            return None;
        }
        let cols = |s: &Shape| {
            s.columns
                .iter()
                .map(|c| {
                    format!(
                        "{} (type {}{}{})",
                        c.name,
                        c.type_oid,
                        if c.type_modifier >= 0 { format!(", typmod {}", c.type_modifier) } else { String::new() },
                        if c.identity { ", identity" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.same_name(new) {
            parts.push(format!("renamed from {}.{} to {}.{}", self.namespace, self.name, new.namespace, new.name));
        }
        if self.replident != new.replident {
            parts.push(format!(
                "replica identity changed from {:?} to {:?}",
                char::from(self.replident),
                char::from(new.replident)
            ));
        }
        if !same_columns {
            parts.push(format!("columns changed from [{}] to [{}]", cols(self), cols(new)));
        }
        Some(format!("upstream relation {}.{} changed shape: {}", new.namespace, new.name, parts.join("; ")))
    }
}

/// Expected shapes by relation OID, shared by the source and its feeds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shapes(Arc<Mutex<Expected>>);

#[derive(Debug, Default)]
struct Expected {
    shapes: HashMap<u32, Shape>,
    /// Relations described otherwise than expected since the feed last
    /// announced them ([`Shapes::described`]).
    unsettled: HashSet<u32>,
}

impl Shapes {
    fn lock(&self) -> MutexGuard<'_, Expected> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `prepare` described the relation like this. A shape already
    /// expected stays: views live on it read the feed by it, and only the
    /// feed's own announcement of the new shape may tell them it changed
    /// (taking the description instead would let the announcement pass in
    /// silence, and those views read rows of the new shape by the old).
    /// One that differs leaves the relation unsettled: a copy is now made
    /// by another shape than the feed expects, so the next announcement is
    /// reported as a change even if it reads as expected — else a column
    /// added while no feed announced it (the slot lost, say), in the copies
    /// made since, and dropped again, would pass in silence.
    pub(crate) fn described(&self, oid: u32, shape: Shape) {
        let mut expected = self.lock();
        match expected.shapes.get(&oid) {
            Some(was) if was.difference(&shape).is_some() || !was.same_numbers(&shape) => {
                expected.unsettled.insert(oid);
            }
            Some(_) => {}
            None => {
                expected.shapes.insert(oid, shape);
            }
        }
    }

    /// The feed announced this shape, the catalog listing `now` (`None`:
    /// not caught up with the stream, so it vouches for nothing): returns
    /// what changed, if anything — for `last_error`, and the columns matched
    /// to the old ones — and remembers the new shape so the change is
    /// reported once. A column matched by name keeps its match only if its
    /// attribute number is known and `now` has it under that name; a shape
    /// that reads the same but loses a match this way has changed.
    pub(crate) fn announced(
        &self,
        oid: u32,
        shape: &Shape,
        now: Option<&CatalogColumns>,
    ) -> Option<(String, Option<Vec<ColumnMatch>>)> {
        let mut expected = self.lock();
        let unsettled = expected.unsettled.remove(&oid);
        let map = &mut expected.shapes;
        let mut new = shape.clone();
        let Some(old) = map.get(&oid) else {
            // Nothing was copied by an expected shape: no number to keep.
            if let Some(now) = now {
                new.number_from(now);
            }
            map.insert(oid, new);
            return None;
        };
        let mut matches = old.matches(&new);
        let mut unvouched = Vec::new();
        for (m, col) in matches.iter_mut().flatten().zip(&mut new.columns) {
            let Some(was) = m.before.and_then(|b| old.columns.get(b)) else { continue };
            let found = now.map(|now| now.number_of(&was.name));
            match (was.attnum, found) {
                (Some(num), Some(Some(found))) if num == found => col.attnum = Some(num),
                (num, found) => {
                    m.before = None;
                    unvouched.push(Unvouched::new(&was.name, num, found));
                }
            }
        }
        let mut detail = old.difference(&new);
        if detail.is_none() && unsettled {
            let described = "described otherwise since the feed announced it";
            detail = Some(format!("upstream relation {}.{} {described}", new.namespace, new.name));
        }
        if !unvouched.is_empty() {
            let what = unvouched.iter().map(Unvouched::to_string).collect::<Vec<_>>().join("; ");
            detail = Some(match detail {
                Some(d) => format!("{d}; {what}"),
                None => format!("upstream relation {}.{} changed: {what}", new.namespace, new.name),
            });
        }
        // Only with a change reported: see the module doc.
        if let (Some(now), true) = (now, detail.is_some()) {
            new.number_from(now);
        }
        map.insert(oid, new);
        detail.map(|d| (d, matches))
    }

    /// The OIDs of every relation with an expected shape.
    pub(crate) fn oids(&self) -> Vec<u32> {
        self.lock().shapes.keys().copied().collect()
    }

    /// The expected shape of `oid`, if any.
    pub(crate) fn get(&self, oid: u32) -> Option<Shape> {
        self.lock().shapes.get(&oid).cloned()
    }

    /// Stops expecting anything of `oid` (it was reported gone).
    pub(crate) fn forget(&self, oid: u32) {
        let mut expected = self.lock();
        expected.shapes.remove(&oid);
        expected.unsettled.remove(&oid);
    }

    /// Forgets everything (the feed was dropped).
    pub(crate) fn clear(&self) {
        *self.lock() = Expected::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shape as `pgoutput` announces it: no attribute numbers.
    fn shape(columns: &[(&str, u32, bool)]) -> Shape {
        Shape {
            namespace: "public".into(),
            name: "t".into(),
            replident: b'd',
            columns: columns
                .iter()
                .map(|&(name, type_oid, identity)| ShapeColumn {
                    name: name.into(),
                    type_oid,
                    type_modifier: -1,
                    identity,
                    attnum: None,
                })
                .collect(),
        }
    }

    /// A shape as `prepare` describes it: numbered 1, 2, … in order.
    fn described(columns: &[(&str, u32, bool)]) -> Shape {
        let mut s = shape(columns);
        for (n, c) in (1..).zip(&mut s.columns) {
            c.attnum = Some(n);
        }
        s
    }

    fn catalog(columns: &[(&str, i16)]) -> CatalogColumns {
        CatalogColumns(columns.iter().map(|&(n, num)| (n.to_owned(), num)).collect())
    }

    fn before(columns: Option<Vec<ColumnMatch>>) -> Vec<Option<usize>> {
        columns.expect("same name and identity").iter().map(|m| m.before).collect()
    }

    /// A column added and another retyped: the announcement says where
    /// each surviving column now is, and which are new or changed.
    #[test]
    fn an_announced_shape_is_matched_to_the_expected_one() {
        let shapes = Shapes::default();
        shapes.described(7, described(&[("id", 20, true), ("v", 25, false), ("n", 23, false)]));
        let now = catalog(&[("id", 1), ("v", 2), ("n", 3), ("w", 4)]);
        let new = shape(&[("id", 20, true), ("v", 25, false), ("n", 20, false), ("w", 16, false)]);
        let (detail, columns) = shapes.announced(7, &new, Some(&now)).expect("a change of shape");
        assert!(detail.contains("columns changed"), "{detail}");
        assert_eq!(before(columns), vec![Some(0), Some(1), None, None]);
        // Reported once.
        assert!(shapes.announced(7, &new, Some(&now)).is_none());
        // A changed replica identity leaves nothing to match by.
        let mut full = shape(&[("id", 20, true)]);
        full.replident = b'f';
        assert_eq!(shapes.announced(7, &full, Some(&catalog(&[("id", 1)]))).map(|(_, c)| c), Some(None));
    }

    /// A `prepare` that describes a relation the feed has not announced in
    /// its new shape yet does not stand in for the announcement: views live
    /// on the old shape must still be told.
    #[test]
    fn a_description_does_not_hide_an_announcement() {
        let shapes = Shapes::default();
        shapes.described(7, described(&[("id", 20, true)]));
        shapes.described(7, described(&[("id", 20, true), ("w", 16, false)]));
        let new = shape(&[("id", 20, true), ("w", 16, false)]);
        let now = catalog(&[("id", 1), ("w", 2)]);
        assert!(shapes.announced(7, &new, Some(&now)).is_some(), "the feed's new shape went unreported");
    }

    /// A description that differs from the expected shape (a column added
    /// while no feed announced it, the slot lost, say) leaves the relation
    /// unsettled: copies are now made by another shape than the feed
    /// expects, so its next announcement is a change even when it reads
    /// as expected — the column dropped again. Once.
    #[test]
    fn a_description_of_another_shape_makes_the_next_announcement_a_change() {
        let shapes = Shapes::default();
        shapes.described(7, described(&[("id", 20, true)]));
        shapes.described(7, described(&[("id", 20, true)]));
        let same = shape(&[("id", 20, true)]);
        let now = catalog(&[("id", 1)]);
        assert!(shapes.announced(7, &same, Some(&now)).is_none(), "the same description settles nothing");
        shapes.described(7, described(&[("id", 20, true), ("w", 16, false)]));
        let (detail, columns) = shapes.announced(7, &same, Some(&now)).expect("the dropped column went unreported");
        assert!(detail.contains("described otherwise"), "{detail}");
        assert_eq!(before(columns), vec![Some(0)]);
        assert!(shapes.announced(7, &same, Some(&now)).is_none(), "reported once");
    }

    /// `DROP COLUMN x, ADD COLUMN x int` as the last column: the feed
    /// announces the relation exactly as before, but `x` is another column
    /// — under another attribute number — and must not be matched to the
    /// old one. Once numbered, the same announcement is no change.
    #[test]
    fn a_column_dropped_and_added_again_is_not_matched() {
        let shapes = Shapes::default();
        let cols = [("id", 20, true), ("note", 25, false), ("x", 23, false)];
        shapes.described(7, described(&cols));
        let now = catalog(&[("id", 1), ("note", 2), ("x", 4)]);
        let (detail, columns) = shapes.announced(7, &shape(&cols), Some(&now)).expect("x is another column");
        assert!(detail.contains("column x was dropped and added again (attribute number 3, now 4)"), "{detail}");
        assert_eq!(before(columns), vec![Some(0), Some(1), None]);
        assert!(shapes.announced(7, &shape(&cols), Some(&now)).is_none(), "x now has its number");
        // The catalog ahead of the stream by a drop: no longer vouched for.
        let (_, columns) = shapes.announced(7, &shape(&cols), Some(&catalog(&[("id", 1), ("note", 2)]))).unwrap();
        assert_eq!(before(columns), vec![Some(0), Some(1), None]);
    }

    /// A column announced while the catalog lacked it (dropped again since)
    /// gets no number, so a later announcement cannot vouch for it; one
    /// the catalog has is numbered by name, whatever else the catalog
    /// lists. A description never numbers the expected shape, and a
    /// catalog that has not caught up with the stream vouches for nothing.
    #[test]
    fn an_unnumbered_column_is_not_vouched_for() {
        let shapes = Shapes::default();
        shapes.described(7, described(&[("id", 20, true)]));
        let w = shape(&[("id", 20, true), ("w", 16, false)]);
        let ahead = catalog(&[("id", 1), ("z", 3)]);
        assert!(shapes.announced(7, &w, Some(&ahead)).is_some(), "w added");
        let (detail, columns) = shapes.announced(7, &w, Some(&ahead)).expect("w has no number");
        assert!(detail.contains("column w is no longer in the catalog"), "{detail}");
        assert_eq!(before(columns), vec![Some(0), None]);

        let shapes = Shapes::default();
        shapes.described(7, described(&[("id", 20, true)]));
        let more = catalog(&[("id", 1), ("w", 2), ("z", 3)]);
        assert!(shapes.announced(7, &w, Some(&more)).is_some(), "w added");
        assert!(shapes.announced(7, &w, Some(&more)).is_none(), "w numbered by name");
        let (detail, columns) = shapes.announced(7, &w, None).expect("nothing vouched for");
        assert!(detail.contains("the catalog does not show the announcing transaction yet"), "{detail}");
        assert_eq!(before(columns), vec![None, None]);

        let shapes = Shapes::default();
        let unnumbered = shape(&[("id", 20, true), ("w", 16, false)]);
        assert!(shapes.announced(7, &unnumbered, None).is_none(), "the first announcement expects nothing");
        shapes.described(7, described(&[("id", 20, true), ("w", 16, false)]));
        let (detail, _) = shapes.announced(7, &w, Some(&more)).expect("not numbered by the description");
        assert!(detail.contains("column w cannot be told from one dropped and added again"), "{detail}");
    }
}
