//! The type mapping: which SQLite column type each upstream type gets, how a
//! [`Value`] is written into it, and how it reads back.
//!
//! A column's [`Kind`] comes from its upstream type name (the Postgres
//! `typname`: `int8`, `timestamptz`, `_int4`, ...). The kind decides the
//! declared SQLite type — and with it SQLite's *affinity*, the conversion
//! SQLite applies to values stored in the column — and the [`Value`] variant
//! the column holds natively. Declared types are SQLite's own (`INTEGER`,
//! `REAL`, `TEXT`, `BLOB`, `BOOLEAN`) rather than the Postgres names, because
//! SQLite derives affinity from substrings: `interval` or `point` would get
//! INTEGER affinity (they contain "INT") and `jsonb` NUMERIC affinity, which
//! would turn the text `"1"` into the integer 1. Text kinds declared `TEXT`
//! keep every string exactly as given.
//!
//! A value stored in its column's native form reads back exactly. The few
//! that cannot be — a `Float` NaN (SQLite stores NULL), a `Float` -0.0
//! (SQLite keeps whole REALs as integers on disk and loses the sign), or a
//! variant other than the column's (an `Int` in a `text` column, which a
//! hand-built schema may have) — still get their closest SQL form in the
//! column, and the row also keeps its exact encoding in the hidden
//! `_flashsync_exact` column, which reads prefer (see
//! [`Plan`](crate::table::Plan)).

use flashsync_core::Value;
use rusqlite::types::ValueRef;

/// What a column holds natively, and so its SQLite type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `int2`, `int4`, `int8`, `oid`: `Value::Int` as INTEGER.
    Integer,
    /// `bool`: `Value::Bool` as INTEGER 0 or 1.
    Boolean,
    /// `float4`, `float8`: `Value::Float` as REAL.
    Real,
    /// `bytea`: `Value::Bytes` as BLOB.
    Blob,
    /// `numeric`: the exact text, plus a generated REAL helper column.
    Numeric,
    /// `timestamptz`: the text as Postgres prints it (UTC under the pinned
    /// session), plus a generated helper in SQLite's own date format.
    Timestamptz,
    /// Everything else (text, uuid, json, jsonb, dates and times, intervals,
    /// arrays, enums, ...): `Value::Text` as TEXT, verbatim.
    Text,
}

/// A generated column next to a user column, for SQL readers.
pub(crate) struct Helper {
    /// Appended to the column's SQL name (`price` gets `price_real`).
    pub suffix: &'static str,
    /// Its declared type.
    pub sql_type: &'static str,
}

impl Kind {
    /// The kind of an upstream type name. Postgres names first; common SQL
    /// spellings too, for schemas built by hand.
    pub(crate) fn of(type_name: &str) -> Kind {
        match type_name.to_ascii_lowercase().as_str() {
            "int2" | "int4" | "int8" | "oid" | "smallint" | "integer" | "int" | "bigint" => Kind::Integer,
            "bool" | "boolean" => Kind::Boolean,
            "float4" | "float8" | "real" | "double precision" | "float" | "double" => Kind::Real,
            "bytea" => Kind::Blob,
            "numeric" | "decimal" => Kind::Numeric,
            "timestamptz" | "timestamp with time zone" => Kind::Timestamptz,
            _ => Kind::Text,
        }
    }

    /// The declared SQLite type (which fixes the column's affinity).
    pub(crate) fn sql_type(self) -> &'static str {
        match self {
            Kind::Integer => "INTEGER",
            // NUMERIC affinity: 0 and 1 stay integers.
            Kind::Boolean => "BOOLEAN",
            Kind::Real => "REAL",
            Kind::Blob => "BLOB",
            Kind::Numeric | Kind::Timestamptz | Kind::Text => "TEXT",
        }
    }

    /// The generated helper column, if the kind has one.
    pub(crate) fn helper(self) -> Option<Helper> {
        match self {
            Kind::Numeric => Some(Helper { suffix: "_real", sql_type: "REAL" }),
            Kind::Timestamptz => Some(Helper { suffix: "_utc", sql_type: "TEXT" }),
            _ => None,
        }
    }

    /// The helper's expression over the (quoted) column `col`.
    pub(crate) fn helper_expr(self, col: &str) -> Option<String> {
        match self {
            // Postgres' numeric specials have no SQL spelling CAST reads
            // (it would make them 0.0); 1e999 is SQLite's infinity.
            Kind::Numeric => Some(format!(
                "CASE {col} WHEN 'NaN' THEN NULL WHEN 'Infinity' THEN 1e999 WHEN '-Infinity' THEN -1e999 \
                 ELSE CAST({col} AS REAL) END"
            )),
            // Postgres prints a whole-hour offset as `+00`; SQLite's date
            // functions want `+00:00`. The result is UTC in SQLite's format,
            // at SQLite's millisecond precision; NULL for `infinity`, BC
            // dates and years past 9999, which SQLite cannot represent.
            Kind::Timestamptz => Some(format!(
                "strftime('%Y-%m-%d %H:%M:%f', CASE WHEN substr({col}, -3, 1) IN ('+', '-') \
                 THEN {col} || ':00' ELSE {col} END)"
            )),
            _ => None,
        }
    }

    /// Whether `v` reads back exactly from its native form in this column.
    pub(crate) fn fits(self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null) => true,
            (Kind::Integer, Value::Int(_)) => true,
            (Kind::Boolean, Value::Bool(_)) => true,
            (Kind::Real, Value::Float(x)) => {
                let negative_zero = *x == 0.0 && x.is_sign_negative();
                !(x.is_nan() || negative_zero)
            }
            (Kind::Blob, Value::Bytes(_)) => true,
            (Kind::Numeric | Kind::Timestamptz | Kind::Text, Value::Text(_)) => true,
            _ => false,
        }
    }

    /// The value read back from its native form; `None` when the column holds
    /// something this kind never writes (the file was changed behind the
    /// store's back).
    pub(crate) fn read(self, v: ValueRef<'_>) -> Option<Value> {
        Some(match (self, v) {
            (_, ValueRef::Null) => Value::Null,
            (Kind::Integer, ValueRef::Integer(i)) => Value::Int(i),
            (Kind::Boolean, ValueRef::Integer(0)) => Value::Bool(false),
            (Kind::Boolean, ValueRef::Integer(1)) => Value::Bool(true),
            (Kind::Real, ValueRef::Real(x)) => Value::Float(x),
            (Kind::Blob, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
            (Kind::Numeric | Kind::Timestamptz | Kind::Text, ValueRef::Text(t)) => {
                Value::Text(std::str::from_utf8(t).ok()?.to_owned())
            }
            _ => return None,
        })
    }
}

/// The SQL form of a value, whatever its column: booleans as 0/1, the rest
/// as the matching SQLite storage class (NaN binds as NULL — SQLite has no
/// NaN). The column's affinity may convert it further (an integer stored in
/// a TEXT column becomes its decimal text), which only values that do not
/// [fit](Kind::fits) undergo.
pub(crate) fn to_sql(v: &Value) -> ValueRef<'_> {
    match v {
        Value::Null => ValueRef::Null,
        Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
        Value::Int(i) => ValueRef::Integer(*i),
        Value::Float(x) if x.is_nan() => ValueRef::Null,
        Value::Float(x) => ValueRef::Real(*x),
        Value::Text(s) => ValueRef::Text(s.as_bytes()),
        Value::Bytes(b) => ValueRef::Blob(b),
    }
}

/// SQLite's name of a value's storage class, for error messages.
pub(crate) fn class_name(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rusqlite::Connection;

    const KINDS: [Kind; 7] =
        [Kind::Integer, Kind::Boolean, Kind::Real, Kind::Blob, Kind::Numeric, Kind::Timestamptz, Kind::Text];

    /// Stores `v` in a column of each kind through real SQLite and checks the
    /// claim [`Kind::fits`] makes: what fits reads back exactly.
    fn round_trip(conn: &Connection, v: &Value) {
        for kind in KINDS {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS t; CREATE TABLE t (c {})", kind.sql_type()))
                .expect("create");
            conn.execute("INSERT INTO t (c) VALUES (?1)", [rusqlite::types::ToSqlOutput::Borrowed(to_sql(v))])
                .expect("insert");
            let back = conn.query_row("SELECT c FROM t", [], |r| Ok(kind.read(r.get_ref(0)?))).expect("select");
            if kind.fits(v) {
                assert_eq!(back.as_ref(), Some(v), "{kind:?} claims to fit {v:?}");
            }
        }
    }

    #[test]
    fn values_that_fit_round_trip_through_sqlite() {
        let conn = Connection::open_in_memory().expect("sqlite");
        let specials = [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::Float(-0.0),
            Value::Float(0.0),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(5e-324),
            Value::Float(2.0f64.powi(63)),
            Value::Float(-(2.0f64.powi(63))),
            Value::Float(9_007_199_254_740_993.0),
            Value::Text(String::new()),
            Value::Text("a\0b".into()),
            Value::Text("123".into()),
            Value::Text(" 1.5e3 ".into()),
            Value::Text("é\u{10FFFF}".into()),
            Value::Bytes(vec![]),
            Value::Bytes(vec![0, 0xFF, 0]),
        ];
        for v in &specials {
            round_trip(&conn, v);
        }
        assert!(!Kind::Real.fits(&Value::Float(-0.0)) && !Kind::Real.fits(&Value::Float(f64::NAN)));
        assert!(!Kind::Text.fits(&Value::Int(1)) && !Kind::Integer.fits(&Value::Text("1".into())));
    }

    proptest! {
        #[test]
        fn floats_round_trip_bit_for_bit(bits in any::<u64>()) {
            let conn = Connection::open_in_memory().expect("sqlite");
            round_trip(&conn, &Value::Float(f64::from_bits(bits)));
        }

        #[test]
        fn text_round_trips(s in ".{0,16}") {
            let conn = Connection::open_in_memory().expect("sqlite");
            round_trip(&conn, &Value::Text(s));
        }
    }

    #[test]
    fn kinds_of_postgres_types() {
        assert_eq!(Kind::of("int8"), Kind::Integer);
        assert_eq!(Kind::of("_int4"), Kind::Text);
        assert_eq!(Kind::of("interval"), Kind::Text);
        assert_eq!(Kind::of("jsonb"), Kind::Text);
        assert_eq!(Kind::of("numeric"), Kind::Numeric);
        assert_eq!(Kind::of("timestamptz"), Kind::Timestamptz);
        assert_eq!(Kind::of("float4"), Kind::Real);
        assert_eq!(Kind::of("bytea"), Kind::Blob);
        assert_eq!(Kind::of("bool"), Kind::Boolean);
    }

    #[test]
    fn helpers_make_numeric_and_timestamps_usable_in_sql() {
        let conn = Connection::open_in_memory().expect("sqlite");
        let helper = |kind: Kind, text: &str| -> rusqlite::types::Value {
            let expr = kind.helper_expr("?1").expect("helper");
            conn.query_row(&format!("SELECT {expr}"), [text], |r| r.get(0)).expect("helper value")
        };
        use rusqlite::types::Value as V;
        assert_eq!(helper(Kind::Numeric, "123.4500"), V::Real(123.45));
        assert_eq!(helper(Kind::Numeric, "-7"), V::Real(-7.0));
        assert_eq!(helper(Kind::Numeric, "NaN"), V::Null);
        assert_eq!(helper(Kind::Numeric, "Infinity"), V::Real(f64::INFINITY));
        assert_eq!(helper(Kind::Numeric, "-Infinity"), V::Real(f64::NEG_INFINITY));
        assert_eq!(
            helper(Kind::Timestamptz, "2024-01-02 03:04:05.123456+00"),
            V::Text("2024-01-02 03:04:05.123".into())
        );
        assert_eq!(helper(Kind::Timestamptz, "2024-01-02 03:04:05+05:30"), V::Text("2024-01-01 21:34:05.000".into()));
        assert_eq!(helper(Kind::Timestamptz, "2024-01-02 03:04:05.5-08"), V::Text("2024-01-02 11:04:05.500".into()));
        assert_eq!(helper(Kind::Timestamptz, "infinity"), V::Null);
    }
}
