//! Row filters of partial views (`where`): a small SQL boolean language with
//! Postgres semantics, parsed once, rendered to SQL for the snapshot and
//! evaluated here for the change stream (DESIGN §7).
//!
//! Snapshot and stream must keep exactly the same rows, so the evaluator
//! follows Postgres 15 to the letter where the language reaches, and the
//! language stops where exactness would end:
//!
//! - **Three-valued logic**: comparisons with NULL are NULL; `AND`, `OR`,
//!   `NOT`, `IN` and `NOT IN` combine NULLs as SQL does (`x NOT IN (1, NULL)`
//!   is never true); a row is kept only when the filter is true.
//! - **Postgres' operator resolution**: a literal compared with a column
//!   takes the type Postgres gives it (`int_col > 1.5` compares exact
//!   numerics; `float4_col = 1.1` compares in float8 and is false for a
//!   stored 1.1, while `float4_col = '1.1'` and `float4_col IN (1.1, 2)` read
//!   1.1 as a float4). See `types.rs`.
//! - **Exact values**: numeric as decimals (NaN equal to itself and greatest);
//!   floats with NaN greatest and -0 = 0; timestamps (and infinities, BC dates)
//!   on one time line in UTC, the zone flashsync pins on every session; uuids
//!   as 128-bit numbers.
//! - **Text** compares bytewise: the rendered SQL pins string literals to the
//!   "C" collation. Ordering text (`<`, BETWEEN) is refused, since users
//!   expect their collation's order; `ILIKE` folds ASCII letters only.
//! - Refused: functions, subqueries, arithmetic, `;`, CASE, parameters,
//!   casts other than of literals to the supported types, `now`/`today`,
//!   literals in forms whose reading depends on server settings, and any
//!   comparison whose evaluation could fail on the server for some row.
//!
//! ```
//! use flashsync_core::{Column, Predicate, Value};
//! let p = Predicate::parse("tenant_id = 42 AND status <> 'archived'")?;
//! assert_eq!(p.columns(), ["tenant_id", "status"]);
//! assert_eq!(p.to_sql(), r#"(("tenant_id" = 42) AND ("status" <> ('archived' COLLATE "C")))"#);
//! let col = |n: &str, t: &str| Column { name: n.into(), type_name: t.into() };
//! let bound = p.bind(&[col("id", "int8"), col("status", "text"), col("tenant_id", "int4")])?;
//! assert_eq!(bound.columns(), [1, 2]);
//! assert!(bound.matches(&[Value::Int(1), Value::from("open"), Value::Int(42)]));
//! assert_eq!(bound.eval(&[Value::Int(2), Value::Null, Value::Int(42)]), None);
//! # Ok::<(), flashsync_core::PredicateError>(())
//! ```

mod bind;
mod datetime;
mod decimal;
mod error;
mod eval;
mod expr;
mod input;
mod like;
mod parse;
mod render;
mod scalar;
mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_semantics;

use serde::{Deserialize, Serialize};

pub use error::PredicateError;

use crate::schema::Column;
use crate::value::Value;

/// A parsed row filter: what the user wrote, validated.
///
/// Serialized as its text (parsed again, and so validated again, when
/// deserialized).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Predicate {
    text: String,
    /// Boxed: view definitions carry an `Option<Predicate>`, and stay small.
    expr: Box<expr::Expr>,
}

impl Predicate {
    /// Parses a filter: a SQL boolean expression over the relation's
    /// columns. Refuses everything outside the language (see the
    /// [module docs](self)) with an error naming it.
    pub fn parse(text: &str) -> Result<Predicate, PredicateError> {
        let text = text.trim();
        let expr = parse::parse(text)?;
        Ok(Predicate { text: text.to_owned(), expr: Box::new(expr) })
    }

    /// The text as the user wrote it (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Distinct column names the filter reads, in first-appearance order
    /// (unquoted identifiers folded to lower case as Postgres does, quoted
    /// ones verbatim).
    pub fn columns(&self) -> Vec<&str> {
        let mut all = Vec::new();
        self.expr.visit_columns(&mut all);
        let mut out: Vec<&str> = Vec::with_capacity(all.len());
        for c in all {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// SQL for a `WHERE` clause with the meaning the evaluator gives the
    /// filter: every identifier quoted, every literal escaped, every
    /// operation parenthesized. Safe to splice after `WHERE` on a session
    /// with flashsync's pinned settings (`TimeZone = UTC`).
    pub fn to_sql(&self) -> String {
        let mut out = String::with_capacity(self.text.len() * 2);
        render::expr(&mut out, &self.expr);
        out
    }

    /// Resolves column names against the upstream relation's columns and
    /// type-checks the filter, as Postgres would on that relation.
    pub fn bind(&self, columns: &[Column]) -> Result<BoundPredicate, PredicateError> {
        let mut binder = bind::Binder::new(columns);
        let root = binder.boolean(&self.expr)?;
        let used: Vec<usize> = binder.used.into_iter().collect();
        let bound_columns = used.iter().filter_map(|&i| columns.get(i).map(|c| (i, c.clone()))).collect();
        Ok(BoundPredicate {
            root,
            columns: used,
            source: BoundSource { predicate: self.clone(), columns: bound_columns },
        })
    }
}

impl TryFrom<String> for Predicate {
    type Error = PredicateError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Predicate::parse(&text)
    }
}

impl From<Predicate> for String {
    fn from(p: Predicate) -> String {
        p.text
    }
}

/// A filter bound to the column positions (and types) of one relation.
///
/// Serialized as the filter and the columns it was bound to; deserializing
/// binds again, so a stored filter is never evaluated with stale decisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BoundSource", into = "BoundSource")]
pub struct BoundPredicate {
    root: eval::Node,
    columns: Vec<usize>,
    source: BoundSource,
}

/// What a [`BoundPredicate`] was made from: its serialized form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct BoundSource {
    predicate: Predicate,
    /// The columns the filter reads: position and definition.
    columns: Vec<(usize, Column)>,
}

impl TryFrom<BoundSource> for BoundPredicate {
    type Error = PredicateError;

    fn try_from(s: BoundSource) -> Result<Self, Self::Error> {
        // Only the columns read matter; the others are placeholders no
        // identifier can name (a filter's identifiers are never empty).
        let width = s.columns.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        let mut columns = vec![Column { name: String::new(), type_name: String::new() }; width];
        for (i, c) in &s.columns {
            if let Some(slot) = columns.get_mut(*i) {
                *slot = c.clone();
            }
        }
        s.predicate.bind(&columns)
    }
}

impl From<BoundPredicate> for BoundSource {
    fn from(b: BoundPredicate) -> BoundSource {
        b.source
    }
}

impl BoundPredicate {
    /// Upstream column indices the filter reads, ascending and distinct.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// The filter this was bound from.
    pub fn predicate(&self) -> &Predicate {
        &self.source.predicate
    }

    /// The three-valued verdict on a row in upstream column order: true,
    /// false, or `None` for SQL NULL. Never panics: an index past the row's
    /// end reads as NULL, and a value its column's type cannot produce (the
    /// wrong variant, unparseable text) makes the verdict `None`.
    pub fn eval(&self, row: &[Value]) -> Option<bool> {
        self.root.eval(row).unwrap_or(None)
    }

    /// Whether the row is kept: the verdict is true.
    pub fn matches(&self, row: &[Value]) -> bool {
        self.eval(row) == Some(true)
    }
}
