//! Values as a filter compares them: each comparison runs in one domain (the
//! operator Postgres resolved to), with that operator's semantics.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::datetime::Time;
use super::decimal::Decimal;
use super::types::SqlType;

/// An owned value: a constant of a bound filter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Scalar {
    Bool(bool),
    /// int2, int4 or int8.
    Int(i64),
    Num(Decimal),
    /// float8, or a float4 widened (exactly).
    Float(f64),
    /// Any string type, and unknown-typed literals.
    Text(String),
    /// date, timestamp or timestamptz.
    Time(Time),
    Uuid(u128),
}

/// A value during evaluation: borrowed from the row or the filter where it
/// can be, so evaluating a row allocates only for numerics it must parse.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum V<'a> {
    Bool(bool),
    Int(i64),
    Num(Cow<'a, Decimal>),
    Float(f64),
    Text(&'a str),
    Time(Time),
    Uuid(u128),
}

impl Scalar {
    pub(crate) fn as_v(&self) -> V<'_> {
        match self {
            Scalar::Bool(b) => V::Bool(*b),
            Scalar::Int(i) => V::Int(*i),
            Scalar::Num(d) => V::Num(Cow::Borrowed(d)),
            Scalar::Float(f) => V::Float(*f),
            Scalar::Text(s) => V::Text(s),
            Scalar::Time(t) => V::Time(*t),
            Scalar::Uuid(u) => V::Uuid(*u),
        }
    }
}

/// Which comparison semantics apply (decided when binding, from the
/// operator's input types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Domain {
    /// Integers of any width: exact.
    Int,
    /// numeric: exact decimals, NaN above everything.
    Num,
    /// float8 (float4 widened): NaN equal to NaN and above everything, -0 = 0.
    Float,
    Bool,
    /// Bytewise (UTF-8 byte order is code point order); the filter's SQL
    /// pins the collation to "C" so the server agrees.
    Text,
    Time,
    Uuid,
}

impl Domain {
    /// The domain of an operator whose (left) input type is `t`.
    pub(crate) fn of(t: SqlType) -> Domain {
        match t {
            SqlType::Int2 | SqlType::Int4 | SqlType::Int8 => Domain::Int,
            SqlType::Numeric => Domain::Num,
            SqlType::Float4 | SqlType::Float8 => Domain::Float,
            SqlType::Bool => Domain::Bool,
            SqlType::Text | SqlType::Varchar | SqlType::Bpchar | SqlType::Unknown => Domain::Text,
            SqlType::Date | SqlType::Timestamp | SqlType::Timestamptz => Domain::Time,
            SqlType::Uuid => Domain::Uuid,
        }
    }
}

/// `float8_cmp_internal`: NaNs are equal to each other and greater than
/// any other value; otherwise IEEE order (so -0 equals 0).
pub(crate) fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Compares two values of one domain; `None` when they are not both of it
/// (a filter built by hand, or a row of the wrong shape).
pub(crate) fn compare(a: &V<'_>, b: &V<'_>) -> Option<Ordering> {
    Some(match (a, b) {
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        (V::Int(x), V::Int(y)) => x.cmp(y),
        (V::Num(x), V::Num(y)) => x.as_ref().cmp(y.as_ref()),
        (V::Float(x), V::Float(y)) => float_cmp(*x, *y),
        (V::Text(x), V::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (V::Time(x), V::Time(y)) => x.cmp(y),
        (V::Uuid(x), V::Uuid(y)) => x.cmp(y),
        _ => return None,
    })
}
