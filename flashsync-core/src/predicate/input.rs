//! Constants: what a literal means, as Postgres' lexer and input functions
//! read it, and how Postgres casts it.
//!
//! Every input function here accepts a strict subset of what the server
//! accepts and refuses the rest: a literal flashsync reads one way and the
//! server another would split the snapshot from the stream, while a refused
//! literal only asks the user to write it plainly.

use super::datetime::{self, Kind};
use super::decimal::Decimal;
use super::expr::Literal;
use super::scalar::Scalar;
use super::types::SqlType;
use super::PredicateError;

/// A constant with its Postgres type; `val` None is a (typed) NULL.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Datum {
    pub(crate) ty: SqlType,
    pub(crate) val: Option<Scalar>,
}

/// Why a constant cannot become a value of some type (completes "… but X is
/// …" messages).
pub(crate) type Why = String;

fn int_range(ty: SqlType) -> (i64, i64) {
    match ty {
        SqlType::Int2 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        SqlType::Int4 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    }
}

fn checked_int(ty: SqlType, v: i64) -> Result<Scalar, Why> {
    let (lo, hi) = int_range(ty);
    if (lo..=hi).contains(&v) {
        Ok(Scalar::Int(v))
    } else {
        Err(format!("out of range for type {}", ty.name()))
    }
}

/// The type and value of a numeric constant as the Postgres 15 lexer and
/// `make_const` type it: integers that fit int4 are int4, then int8, then
/// numeric; anything with a point or an exponent is numeric.
pub(crate) fn number(text: &str) -> Result<Datum, Why> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(v) = text.parse::<i64>() {
            let ty = if i32::try_from(v).is_ok() { SqlType::Int4 } else { SqlType::Int8 };
            return Ok(Datum { ty, val: Some(Scalar::Int(v)) });
        }
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") {
        return Err("not a number".into());
    }
    let d = Decimal::parse_literal(text).ok_or_else(|| "not a number flashsync reads exactly".to_owned())?;
    Ok(Datum { ty: SqlType::Numeric, val: Some(Scalar::Num(d)) })
}

/// `float4in` / `float8in` on the accepted forms; Postgres raises "out of
/// range" when a finite input overflows or a non-zero one underflows to 0.
fn float(s: &str, single: bool) -> Result<Scalar, Why> {
    let v = match s.to_ascii_lowercase().as_str() {
        "nan" => f64::NAN,
        "infinity" | "+infinity" | "inf" | "+inf" => f64::INFINITY,
        "-infinity" | "-inf" => f64::NEG_INFINITY,
        _ => {
            let d = Decimal::parse_literal(s).ok_or_else(|| "not a number".to_owned())?;
            let v = if single { d.to_f32() } else { d.to_f64() };
            v.ok_or_else(|| format!("out of range for type {}", if single { "float4" } else { "float8" }))?
        }
    };
    Ok(Scalar::Float(v))
}

/// `boolin` on its full words (and `1`/`0`), case-insensitive; Postgres also
/// takes unique prefixes and surrounding spaces, refused here.
fn boolean(s: &str) -> Result<Scalar, Why> {
    match s.to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(Scalar::Bool(true)),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(Scalar::Bool(false)),
        _ => Err("not a boolean (true, false, t, f, yes, no, on, off, 1, 0)".into()),
    }
}

/// A uuid: 32 hex digits, plain or hyphenated 8-4-4-4-12, optionally in
/// braces, any case (all forms `uuid_in` accepts).
pub(crate) fn uuid(s: &str) -> Option<u128> {
    let inner = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')).unwrap_or(s);
    let hex: String = match inner.len() {
        32 => inner.to_owned(),
        36 => {
            let b = inner.as_bytes();
            if [8, 13, 18, 23].iter().any(|&i| b.get(i) != Some(&b'-')) {
                return None;
            }
            inner.chars().filter(|&c| c != '-').collect()
        }
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

fn time_kind(ty: SqlType) -> Option<Kind> {
    match ty {
        SqlType::Date => Some(Kind::Date),
        SqlType::Timestamp => Some(Kind::Timestamp),
        SqlType::Timestamptz => Some(Kind::Timestamptz),
        _ => None,
    }
}

/// The type's input function applied to `s` (an unknown literal becoming a
/// value of `ty`).
pub(crate) fn parse_input(ty: SqlType, s: &str) -> Result<Scalar, Why> {
    match ty {
        SqlType::Int2 | SqlType::Int4 | SqlType::Int8 => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err("not an integer".into());
            }
            let v = s.parse::<i64>().map_err(|_| format!("out of range for type {}", ty.name()))?;
            checked_int(ty, v)
        }
        SqlType::Numeric => Decimal::parse_literal(s).map(Scalar::Num).ok_or_else(|| "not a number".into()),
        SqlType::Float4 => float(s, true),
        SqlType::Float8 => float(s, false),
        SqlType::Bool => boolean(s),
        SqlType::Text | SqlType::Varchar | SqlType::Bpchar | SqlType::Unknown => Ok(Scalar::Text(s.to_owned())),
        SqlType::Date | SqlType::Timestamp | SqlType::Timestamptz => {
            let kind = time_kind(ty).ok_or_else(|| "not a time".to_owned())?;
            datetime::parse_literal(kind, s).map(Scalar::Time)
        }
        SqlType::Uuid => uuid(s).map(Scalar::Uuid).ok_or_else(|| "not a uuid".into()),
    }
}

/// An implicit cast of a constant (Postgres coercing an operand or an IN
/// item): unknown literals go through the input function; the rest convert
/// as the cast functions do.
pub(crate) fn coerce(d: &Datum, to: SqlType) -> Result<Datum, Why> {
    let Some(val) = &d.val else { return Ok(Datum { ty: to, val: None }) };
    if d.ty == to {
        return Ok(d.clone());
    }
    let out = match (d.ty, val) {
        (SqlType::Unknown, Scalar::Text(s)) => parse_input(to, s)?,
        (from, Scalar::Int(v)) if from.is_int() => match to {
            SqlType::Int2 | SqlType::Int4 | SqlType::Int8 => checked_int(to, *v)?,
            SqlType::Numeric => Scalar::Num(Decimal::from_i64(*v)),
            // C casts, rounding to nearest like `(float4) i` / `(float8) i`.
            SqlType::Float4 => Scalar::Float(f64::from(*v as f32)),
            SqlType::Float8 => Scalar::Float(*v as f64),
            _ => return Err(format!("not a {}", to.name())),
        },
        (SqlType::Numeric, Scalar::Num(n)) => match to {
            SqlType::Float4 => Scalar::Float(n.to_f32().ok_or("out of range for type float4")?),
            SqlType::Float8 => Scalar::Float(n.to_f64().ok_or("out of range for type float8")?),
            _ => return Err(format!("not a {}", to.name())),
        },
        (SqlType::Float4, Scalar::Float(f)) if to == SqlType::Float8 => Scalar::Float(*f),
        (SqlType::Date, Scalar::Time(t)) if matches!(to, SqlType::Timestamp | SqlType::Timestamptz) => {
            // A date past the timestamp range fails to cast in Postgres.
            datetime::within_timestamp_range(*t).then_some(Scalar::Time(*t)).ok_or("out of range for timestamp")?
        }
        (SqlType::Timestamp, Scalar::Time(t)) if to == SqlType::Timestamptz => Scalar::Time(*t),
        (from, Scalar::Text(s)) if from.is_string() && to.is_string() => Scalar::Text(s.clone()),
        _ => return Err(format!("not a {}", to.name())),
    };
    Ok(Datum { ty: to, val: Some(out) })
}

/// An explicit cast of a constant (`'…'::date`, `1.5::float8`), as far as
/// the language allows casts: from strings through the input function,
/// between numeric types, and NULL to anything.
fn cast(d: &Datum, to: SqlType) -> Result<Datum, Why> {
    let Some(val) = &d.val else { return Ok(Datum { ty: to, val: None }) };
    if d.ty == to || d.ty == SqlType::Unknown {
        return coerce(d, to);
    }
    match (d.ty, val, to) {
        (from, _, SqlType::Int2 | SqlType::Int4 | SqlType::Int8) if from.is_numeric_family() => {
            let v = match val {
                Scalar::Int(v) => Some(*v),
                // numeric → integer rounds in Postgres; only integral values
                // are accepted here, so nothing rounds.
                Scalar::Num(n) => n.to_i64(),
                _ => None,
            };
            let v = v.ok_or_else(|| format!("not an integral value for type {}", to.name()))?;
            Ok(Datum { ty: to, val: Some(checked_int(to, v)?) })
        }
        (from, _, SqlType::Numeric | SqlType::Float4 | SqlType::Float8)
            if from.is_int() || from == SqlType::Numeric =>
        {
            coerce(d, to)
        }
        _ => Err(format!("cannot be cast from {} to {} in a filter", d.ty.name(), to.name())),
    }
}

/// Unary minus on a typed constant (`-('1.5'::float8)`), within its type.
fn negate(d: &Datum) -> Result<Datum, Why> {
    let val = match &d.val {
        None => None,
        Some(Scalar::Int(v)) => {
            Some(v.checked_neg().ok_or("out of range").and_then(|v| checked_int(d.ty, v).map_err(|_| "out of range"))?)
        }
        Some(Scalar::Num(n)) => Some(Scalar::Num(n.negated())),
        Some(Scalar::Float(f)) => Some(Scalar::Float(-f)),
        Some(_) => return Err(format!("cannot be negated (type {})", d.ty.name())),
    };
    if !d.ty.is_numeric_family() {
        return Err(format!("cannot be negated (type {})", d.ty.name()));
    }
    Ok(Datum { ty: d.ty, val })
}

/// The typed value of a literal (an undecorated string stays unknown).
pub(crate) fn literal(lit: &Literal) -> Result<Datum, PredicateError> {
    let fail = |why: Why| PredicateError::type_error(format!("{} is {why}", super::render::shown(lit)));
    Ok(match lit {
        Literal::Null => Datum { ty: SqlType::Unknown, val: None },
        Literal::Bool(b) => Datum { ty: SqlType::Bool, val: Some(Scalar::Bool(*b)) },
        Literal::Number(text) => number(text).map_err(fail)?,
        Literal::Str(s) => Datum { ty: SqlType::Unknown, val: Some(Scalar::Text(s.clone())) },
        Literal::Cast(inner, ty) => cast(&literal(inner)?, *ty).map_err(fail)?,
        Literal::Neg(inner) => negate(&literal(inner)?).map_err(fail)?,
    })
}
