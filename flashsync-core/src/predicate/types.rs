//! Postgres' type rules for the types a filter can read: which operator a
//! comparison resolves to, and the common type of an IN list.
//!
//! Postgres picks an operator by its input types (`func_select_candidate`:
//! most exact matches, then preferred types), and the choice changes the
//! result: `float4_col = 1.1` resolves to `float4 = float8` and compares the
//! column widened with 1.1 as a double (false for a stored 1.1), while
//! `float4_col = '1.1'` reads the literal as a float4 (true). These tables are
//! that resolution worked out for the built-in operators of these types; the
//! differential test against a real server (`flashsync/tests/pg/predicate.rs`)
//! checks them.

use serde::{Deserialize, Serialize};

/// A Postgres type a filter can read or write as a literal. `Unknown` is the
/// type of an undecorated string literal (and of NULL) until context decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum SqlType {
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Text,
    Varchar,
    Bpchar,
    Date,
    Timestamp,
    Timestamptz,
    Uuid,
    Unknown,
}

/// Postgres' type categories (`typcategory`), which bound implicit casts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    Numeric,
    String,
    DateTime,
    Boolean,
    User,
    Unknown,
}

impl SqlType {
    /// The column type for a Postgres `typname`, if a filter can read it.
    /// Domains, enums, `citext` and the rest keep their own names and so are
    /// refused: their comparison semantics are not these.
    pub(crate) fn from_typname(name: &str) -> Option<SqlType> {
        Some(match name {
            "int2" => SqlType::Int2,
            "int4" => SqlType::Int4,
            "int8" => SqlType::Int8,
            "numeric" => SqlType::Numeric,
            "float4" => SqlType::Float4,
            "float8" => SqlType::Float8,
            "bool" => SqlType::Bool,
            "text" => SqlType::Text,
            "varchar" => SqlType::Varchar,
            "bpchar" => SqlType::Bpchar,
            "date" => SqlType::Date,
            "timestamp" => SqlType::Timestamp,
            "timestamptz" => SqlType::Timestamptz,
            "uuid" => SqlType::Uuid,
            _ => return None,
        })
    }

    /// The Postgres name, as rendered in casts and messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SqlType::Int2 => "int2",
            SqlType::Int4 => "int4",
            SqlType::Int8 => "int8",
            SqlType::Numeric => "numeric",
            SqlType::Float4 => "float4",
            SqlType::Float8 => "float8",
            SqlType::Bool => "bool",
            SqlType::Text => "text",
            SqlType::Varchar => "varchar",
            SqlType::Bpchar => "bpchar",
            SqlType::Date => "date",
            SqlType::Timestamp => "timestamp",
            SqlType::Timestamptz => "timestamptz",
            SqlType::Uuid => "uuid",
            SqlType::Unknown => "unknown",
        }
    }

    pub(crate) fn category(self) -> Category {
        match self {
            SqlType::Int2 | SqlType::Int4 | SqlType::Int8 | SqlType::Numeric | SqlType::Float4 | SqlType::Float8 => {
                Category::Numeric
            }
            SqlType::Text | SqlType::Varchar | SqlType::Bpchar => Category::String,
            SqlType::Date | SqlType::Timestamp | SqlType::Timestamptz => Category::DateTime,
            SqlType::Bool => Category::Boolean,
            SqlType::Uuid => Category::User,
            SqlType::Unknown => Category::Unknown,
        }
    }

    /// `typispreferred`.
    fn is_preferred(self) -> bool {
        matches!(self, SqlType::Float8 | SqlType::Text | SqlType::Timestamptz | SqlType::Bool)
    }

    pub(crate) fn is_int(self) -> bool {
        matches!(self, SqlType::Int2 | SqlType::Int4 | SqlType::Int8)
    }

    pub(crate) fn is_string(self) -> bool {
        self.category() == Category::String
    }

    /// Types whose values have a sign (unary minus and plus apply).
    pub(crate) fn is_numeric_family(self) -> bool {
        self.category() == Category::Numeric
    }
}

/// Whether `pg_cast` has an implicit cast (or binary coercion usable
/// implicitly) from `from` to `to`, among these types.
pub(crate) fn implicit_cast(from: SqlType, to: SqlType) -> bool {
    use SqlType::*;
    if from == to || from == Unknown {
        return true;
    }
    match from {
        Int2 => matches!(to, Int4 | Int8 | Numeric | Float4 | Float8),
        Int4 => matches!(to, Int8 | Numeric | Float4 | Float8),
        Int8 => matches!(to, Numeric | Float4 | Float8),
        Numeric => matches!(to, Float4 | Float8),
        Float4 => to == Float8,
        Text | Varchar | Bpchar => to.is_string(),
        Date => matches!(to, Timestamp | Timestamptz),
        Timestamp => to == Timestamptz,
        _ => false,
    }
}

/// The input types of the comparison operator (`=`, `<`, ...) Postgres picks
/// for operands of types `l` and `r`, or `None` when it has none (Postgres
/// reports "operator does not exist").
///
/// - An unknown literal takes the other side's type (the exact operator
///   exists for every type here but `varchar`, which compares as text).
/// - Integers of any width compare exactly (cross-type operators exist);
///   integers against numeric compare as numeric.
/// - With a float on either side the comparison is done in float8, with a
///   float4 operand widened (exactly): `float4 = numeric` is `float48eq`,
///   `int4 = float4` is `float84eq`, `float8 = int8` is `float8eq`.
/// - `text` against `bpchar` is `texteq` (the bpchar loses its trailing
///   spaces); `varchar` against `bpchar` is `bpchareq`.
/// - date, timestamp and timestamptz all have cross-type operators.
pub(crate) fn resolve_cmp(l: SqlType, r: SqlType) -> Option<(SqlType, SqlType)> {
    use SqlType::*;
    let text_if_varchar = |t: SqlType| if t == Varchar { Text } else { t };
    match (l, r) {
        (Unknown, Unknown) => Some((Text, Text)),
        (Unknown, t) | (t, Unknown) => {
            let t = text_if_varchar(t);
            Some((t, t))
        }
        _ if l == r => {
            let t = text_if_varchar(l);
            Some((t, t))
        }
        _ if l.is_int() && r.is_int() => Some((l, r)),
        _ if l.is_numeric_family() && r.is_numeric_family() => Some(match (l, r) {
            (Float4 | Float8, Float4 | Float8) => (l, r),
            (Float4, _) => (Float4, Float8),
            (_, Float4) => (Float8, Float4),
            (Float8, _) | (_, Float8) => (Float8, Float8),
            _ => (Numeric, Numeric),
        }),
        _ if l.is_string() && r.is_string() => Some(match (l, r) {
            (Bpchar, Varchar) | (Varchar, Bpchar) => (Bpchar, Bpchar),
            _ => (Text, Text),
        }),
        _ if l.category() == Category::DateTime && r.category() == Category::DateTime => Some((l, r)),
        _ => None,
    }
}

/// Postgres' `select_common_type` followed by `verify_common_type`, as the
/// IN-list transformation calls it (returning `None` instead of an error):
/// the first type, replaced by a later one of the same category when that is
/// reachable by an implicit cast but not the other way, unless the current one
/// is preferred. All unknown: text.
pub(crate) fn common_type(types: &[SqlType]) -> Option<SqlType> {
    let (&first, rest) = types.split_first()?;
    let mut p = first;
    for &n in rest {
        if n == SqlType::Unknown || n == p {
            continue;
        }
        if p == SqlType::Unknown {
            p = n;
        } else if n.category() != p.category() {
            return None;
        } else if !p.is_preferred() && implicit_cast(p, n) && !implicit_cast(n, p) {
            p = n;
        }
    }
    if p == SqlType::Unknown {
        p = SqlType::Text;
    }
    types.iter().all(|&t| implicit_cast(t, p)).then_some(p)
}
