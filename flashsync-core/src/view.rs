//! View definitions: what a local view mirrors, from where, and how.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::predicate::Predicate;

use crate::error::DefinitionError;

/// Longest local namespace or view name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest upstream identifier, in bytes. Postgres silently truncates longer
/// identifiers (NAMEDATALEN - 1), so flashsync refuses them instead.
pub const MAX_UPSTREAM_IDENT_BYTES: usize = 63;

/// The stable numeric id of a view's sync job (`relation_id` in status).
/// Assigned by the machine when the view is first defined; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RelationId(pub u64);

impl fmt::Display for RelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A view's local, qualified name: `namespace.name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewName {
    /// The namespace (like a schema), e.g. `public`.
    pub namespace: String,
    /// The view's name inside its namespace, e.g. `users_cache`.
    pub name: String,
}

impl ViewName {
    /// A name, validated: both parts non-empty, at most [`MAX_NAME_BYTES`]
    /// bytes, free of control characters and of `*` (which selectors read
    /// as a wildcard).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Result<Self, DefinitionError> {
        let view = ViewName { namespace: namespace.into(), name: name.into() };
        check_local("namespace", &view.namespace)?;
        check_local("name", &view.name)?;
        Ok(view)
    }
}

impl fmt::Display for ViewName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

fn check_local(what: &'static str, value: &str) -> Result<(), DefinitionError> {
    if value.is_empty() {
        return Err(DefinitionError::Empty { what });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(DefinitionError::TooLong { what, len: value.len(), max: MAX_NAME_BYTES });
    }
    if value.chars().any(char::is_control) {
        return Err(DefinitionError::ControlCharacter { what });
    }
    if value.contains('*') {
        return Err(DefinitionError::Wildcard { what });
    }
    Ok(())
}

/// How a view is kept: a snapshot copy, or a live mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// `sync()` copies the upstream rows and atomically replaces the local
    /// copy; state `synced`. Refreshed again only when forced or after a failure.
    Materialized,
    /// `sync()` bootstraps a copy, then mirrors every upstream commit in commit
    /// order; state `running`.
    Realtime,
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Persistence::Materialized => "materialized",
            Persistence::Realtime => "realtime",
        })
    }
}

impl std::str::FromStr for Persistence {
    type Err = DefinitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "materialized" => Ok(Persistence::Materialized),
            "realtime" => Ok(Persistence::Realtime),
            other => Err(DefinitionError::UnknownPersistence(other.chars().take(64).collect())),
        }
    }
}

/// Names an upstream system, e.g. `postgres:main`. Every origin has one
/// [`Source`](crate::Source) and, for realtime views, one change feed (for
/// Postgres: one replication slot and one publication) shared by all its views.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OriginId(String);

impl OriginId {
    /// An origin id: 1 to 128 bytes of ASCII letters, digits, `_`, `-`, `.`, `:`.
    pub fn new(id: impl Into<String>) -> Result<Self, DefinitionError> {
        let id = id.into();
        if id.is_empty() {
            return Err(DefinitionError::Empty { what: "origin" });
        }
        if id.len() > 128 {
            return Err(DefinitionError::TooLong { what: "origin", len: id.len(), max: 128 });
        }
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')) {
            return Err(DefinitionError::BadOrigin(id.chars().take(64).collect()));
        }
        Ok(OriginId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OriginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The upstream relation a view mirrors: `schema.table` at its origin.
///
/// Identifiers are kept verbatim (case, spaces, quotes and all); sources quote
/// them when they build statements.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UpstreamRelation {
    /// Upstream schema, e.g. `public`.
    pub schema: String,
    /// Upstream table name.
    pub table: String,
}

impl UpstreamRelation {
    /// A relation name, validated: non-empty, at most
    /// [`MAX_UPSTREAM_IDENT_BYTES`] bytes, no NUL.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Result<Self, DefinitionError> {
        let rel = UpstreamRelation { schema: schema.into(), table: table.into() };
        for (what, v) in [("upstream schema", &rel.schema), ("upstream table", &rel.table)] {
            if v.is_empty() {
                return Err(DefinitionError::Empty { what });
            }
            if v.len() > MAX_UPSTREAM_IDENT_BYTES {
                return Err(DefinitionError::TooLong { what, len: v.len(), max: MAX_UPSTREAM_IDENT_BYTES });
            }
            if v.contains('\0') {
                return Err(DefinitionError::ControlCharacter { what });
            }
        }
        Ok(rel)
    }
}

impl fmt::Display for UpstreamRelation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Everything flashsync needs to know about a sync-enabled view.
///
/// ```
/// use flashsync_core::{ViewDef, Persistence};
/// let def = ViewDef::new("public", "users_cache", Persistence::Materialized, "postgres:main", "public", "users")?;
/// assert_eq!(def.name.to_string(), "public.users_cache");
/// # Ok::<(), flashsync_core::DefinitionError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// Local name.
    pub name: ViewName,
    /// Materialized or realtime.
    pub persistence: Persistence,
    /// Where the rows come from.
    pub origin: OriginId,
    /// Which upstream relation.
    pub upstream: UpstreamRelation,
    /// Which rows the view keeps (`where`): only those for which the filter
    /// is true. `None` keeps every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Predicate>,
    /// Which upstream columns the view keeps, in this order (`columns`); it
    /// must include the key. `None` keeps every column in upstream order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

impl ViewDef {
    /// A validated definition.
    pub fn new(
        namespace: &str,
        name: &str,
        persistence: Persistence,
        origin: &str,
        upstream_schema: &str,
        upstream_table: &str,
    ) -> Result<Self, DefinitionError> {
        Ok(ViewDef {
            name: ViewName::new(namespace, name)?,
            persistence,
            origin: OriginId::new(origin)?,
            upstream: UpstreamRelation::new(upstream_schema, upstream_table)?,
            filter: None,
            columns: None,
        })
    }

    /// Keeps only the rows for which `filter` (a SQL boolean expression over
    /// the upstream columns, Postgres semantics) is true.
    ///
    /// ```
    /// use flashsync_core::{ViewDef, Persistence};
    /// let def = ViewDef::new("app", "my_posts", Persistence::Realtime, "postgres:main", "public", "posts")?
    ///     .with_filter("tenant_id = 42 AND status <> 'archived'")?
    ///     .with_columns(["id", "title", "status"])?;
    /// assert_eq!(def.filter.as_ref().map(|f| f.text()), Some("tenant_id = 42 AND status <> 'archived'"));
    /// # Ok::<(), flashsync_core::DefinitionError>(())
    /// ```
    pub fn with_filter(mut self, filter: &str) -> Result<Self, DefinitionError> {
        self.filter = Some(Predicate::parse(filter).map_err(|e| DefinitionError::Filter(e.to_string()))?);
        Ok(self)
    }

    /// Keeps only these upstream columns, in this order. They must include
    /// the upstream key; that, and that each exists, is checked when the
    /// relation is described (the view then fails naming the column).
    pub fn with_columns<I, S>(mut self, columns: I) -> Result<Self, DefinitionError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let columns: Vec<String> = columns.into_iter().map(Into::into).collect();
        check_columns(&columns)?;
        self.columns = Some(columns);
        Ok(self)
    }

    /// Whether the view keeps a subset of its relation (rows or columns).
    pub fn is_partial(&self) -> bool {
        self.filter.is_some() || self.columns.is_some()
    }

    /// Re-checks every part; used on definitions that arrive already built
    /// (deserialized, or constructed field by field).
    pub fn validate(&self) -> Result<(), DefinitionError> {
        ViewName::new(self.name.namespace.as_str(), self.name.name.as_str())?;
        OriginId::new(self.origin.0.as_str())?;
        UpstreamRelation::new(self.upstream.schema.as_str(), self.upstream.table.as_str())?;
        if let Some(filter) = &self.filter {
            // Only what the parser accepts may reach a server or the
            // evaluator.
            Predicate::parse(filter.text()).map_err(|e| DefinitionError::Filter(e.to_string()))?;
        }
        if let Some(columns) = &self.columns {
            check_columns(columns)?;
        }
        Ok(())
    }
}

fn check_columns(columns: &[String]) -> Result<(), DefinitionError> {
    if columns.is_empty() {
        return Err(DefinitionError::Columns("is empty; leave it out to keep every column".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in columns {
        if c.is_empty() || c.len() > MAX_UPSTREAM_IDENT_BYTES || c.contains('\0') {
            return Err(DefinitionError::Columns(format!("names an impossible column {c:?}")));
        }
        if !seen.insert(c.as_str()) {
            return Err(DefinitionError::Columns(format!("names column {c:?} twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names() {
        assert!(ViewName::new("public", "x").is_ok());
        assert!(matches!(ViewName::new("", "x"), Err(DefinitionError::Empty { .. })));
        assert!(matches!(ViewName::new("p", "a".repeat(256)), Err(DefinitionError::TooLong { .. })));
        assert!(matches!(ViewName::new("p", "a\nb"), Err(DefinitionError::ControlCharacter { .. })));
        // A `*` would make the view impossible to select alone.
        assert!(matches!(ViewName::new("p", "posts_*"), Err(DefinitionError::Wildcard { what: "name" })));
        assert!(matches!(ViewName::new("a*", "x"), Err(DefinitionError::Wildcard { what: "namespace" })));
        assert!(UpstreamRelation::new("we\"ird sch", "Tä ble; DROP").is_ok());
        assert!(UpstreamRelation::new("s", "a".repeat(64)).is_err());
        assert!(OriginId::new("postgres:main").is_ok());
        assert!(OriginId::new("postgres main").is_err());
    }
}
