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

    /// `prepare` described the relation like this.
    pub(crate) fn described(&self, oid: u32, shape: Shape) {
        self.lock().insert(oid, shape);
    }

    /// The feed announced this shape: returns what changed, if anything, and
    /// remembers the new shape so the change is reported once.
    pub(crate) fn announced(&self, oid: u32, shape: &Shape) -> Option<String> {
        let mut map = self.lock();
        let diff = map.get(&oid).and_then(|old| old.difference(shape));
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
