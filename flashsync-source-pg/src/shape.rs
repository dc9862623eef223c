//! What the feed is expected to say about a relation, for schema-change
//! detection.
//!
//! `prepare` records the shape it described; every `Relation` message the
//! walsender sends is compared with the last shape known for that OID. A
//! difference (columns, types, type modifiers, replica identity, name) means
//! the local copy no longer matches what changes will carry: the feed emits
//! `SchemaChanged` before any change of that relation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use flashsync_core::ColumnMatch;

use crate::pgoutput::Relation;

/// One column as the feed describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShapeColumn {
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    pub(crate) type_modifier: i32,
    /// Part of the replica identity (what `pgoutput` flags as key).
    pub(crate) identity: bool,
}

/// A relation's shape in feed terms.
#[derive(Clone, Debug, PartialEq, Eq)]
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
                })
                .collect(),
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
        Some(ColumnMatch::between(&self.columns, &new.columns, |c| c.name.as_str()))
    }

    /// `None` when equal; otherwise what changed, for `last_error`.
    pub(crate) fn difference(&self, new: &Shape) -> Option<String> {
        if self.same_name(new) && self.replident == new.replident && self.columns == new.columns {
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
        if self.columns != new.columns {
            parts.push(format!("columns changed from [{}] to [{}]", cols(self), cols(new)));
        }
        Some(format!("upstream relation {}.{} changed shape: {}", new.namespace, new.name, parts.join("; ")))
    }
}

/// Expected shapes by relation OID, shared by the source and its feeds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shapes(Arc<Mutex<HashMap<u32, Shape>>>);

impl Shapes {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Shape>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `prepare` described the relation like this. A shape already
    /// expected stays: views live on it read the feed by it, and only the
    /// feed's own announcement of the new shape may tell them it changed
    /// (taking the description instead would let the announcement pass in
    /// silence, and those views read rows of the new shape by the old).
    pub(crate) fn described(&self, oid: u32, shape: Shape) {
        self.lock().entry(oid).or_insert(shape);
    }

    /// The feed announced this shape: returns what changed, if anything —
    /// for `last_error`, and the columns matched to the old ones — and
    /// remembers the new shape so the change is reported once.
    pub(crate) fn announced(&self, oid: u32, shape: &Shape) -> Option<(String, Option<Vec<ColumnMatch>>)> {
        let mut map = self.lock();
        let diff = map.get(&oid).and_then(|old| Some((old.difference(shape)?, old.matches(shape))));
        map.insert(oid, shape.clone());
        diff
    }

    /// The OIDs of every relation with an expected shape.
    pub(crate) fn oids(&self) -> Vec<u32> {
        self.lock().keys().copied().collect()
    }

    /// The expected shape of `oid`, if any.
    pub(crate) fn get(&self, oid: u32) -> Option<Shape> {
        self.lock().get(&oid).cloned()
    }

    /// Stops expecting anything of `oid` (it was reported gone).
    pub(crate) fn forget(&self, oid: u32) {
        self.lock().remove(&oid);
    }

    /// Forgets everything (the feed was dropped).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                })
                .collect(),
        }
    }

    /// A column added and another retyped: the announcement says where
    /// each surviving column now is, and which are new or changed.
    #[test]
    fn an_announced_shape_is_matched_to_the_expected_one() {
        let shapes = Shapes::default();
        shapes.described(7, shape(&[("id", 20, true), ("v", 25, false), ("n", 23, false)]));
        let (detail, columns) = shapes
            .announced(7, &shape(&[("id", 20, true), ("v", 25, false), ("n", 20, false), ("w", 16, false)]))
            .expect("a change of shape");
        assert!(detail.contains("columns changed"), "{detail}");
        let before: Vec<Option<usize>> = columns.expect("same name and identity").iter().map(|m| m.before).collect();
        assert_eq!(before, vec![Some(0), Some(1), None, None]);
        // Reported once.
        assert!(shapes
            .announced(7, &shape(&[("id", 20, true), ("v", 25, false), ("n", 20, false), ("w", 16, false)]))
            .is_none());
        // A changed replica identity leaves nothing to match by.
        let mut full = shape(&[("id", 20, true)]);
        full.replident = b'f';
        assert_eq!(shapes.announced(7, &full).map(|(_, c)| c), Some(None));
    }

    /// A `prepare` that describes a relation the feed has not announced in
    /// its new shape yet does not stand in for the announcement: views live
    /// on the old shape must still be told.
    #[test]
    fn a_description_does_not_hide_an_announcement() {
        let shapes = Shapes::default();
        let old = shape(&[("id", 20, true)]);
        let new = shape(&[("id", 20, true), ("w", 16, false)]);
        shapes.described(7, old);
        shapes.described(7, new.clone());
        assert!(shapes.announced(7, &new).is_some(), "the feed's new shape went unreported");
    }
}
