//! The type matrix: every Postgres text form the source produces, into the
//! types apps ask for, with the edge values (NaN, infinities, BC, 40-digit
//! numerics, narrowing) and the errors.

use std::collections::BTreeMap;
use std::fmt;

use proptest::prelude::*;
use serde::de::{Deserializer, Visitor};
use serde::Deserialize;

use super::pgtext::{parse_datetime, parse_numeric, Fixed, NumericError, Shape};
use super::{from_row, from_row_borrowed, TypedError, TypedErrorKind};
use crate::schema::{Column, RelationSchema, SourceRelId};
use crate::value::{Row, Value};

fn schema(cols: &[(&str, &str)]) -> RelationSchema {
    let columns = cols.iter().map(|(n, t)| Column { name: (*n).into(), type_name: (*t).into() }).collect();
    RelationSchema::full_row(SourceRelId(1), columns)
}

/// One value of type `type_name`, read by position as a `T`.
fn one<T: serde::de::DeserializeOwned>(type_name: &str, value: impl Into<Value>) -> Result<T, TypedError> {
    from_row::<(T,)>(&schema(&[("v", type_name)]), &Row(vec![value.into()])).map(|(t,)| t)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// What a target that asks serde for a `str` receives (chrono's types do).
#[derive(Debug, PartialEq)]
struct AsStr(String);

/// What a target that asks serde for anything receives, when it is text
/// (rust_decimal's `Decimal` does).
#[derive(Debug, PartialEq)]
struct AnyText(String);

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("text")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

impl<'de> Deserialize<'de> for AsStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor).map(AsStr)
    }
}

impl<'de> Deserialize<'de> for AnyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(AnyText)
    }
}

// ------------------------------------------------------------ rows

#[derive(Debug, PartialEq, Deserialize)]
struct User {
    id: i64,
    email: String,
    score: Option<f64>,
    #[serde(rename = "created_at")]
    created: String,
    nickname: Option<String>,
}

fn users() -> RelationSchema {
    schema(&[("id", "int8"), ("email", "text"), ("score", "float8"), ("created_at", "timestamptz"), ("bio", "text")])
}

#[test]
fn a_struct_reads_by_column_name_skipping_unknown_columns() {
    let row = crate::row![7, "ada@example.com", 2.5, "2026-01-02 03:04:05.123456+00", "unread"];
    let user: User = from_row(&users(), &row).unwrap();
    assert_eq!(
        user,
        User {
            id: 7,
            email: "ada@example.com".into(),
            score: Some(2.5),
            created: "2026-01-02 03:04:05.123456+00".into(),
            nickname: None, // no such column: an Option is None
        }
    );
    let row = crate::row![7, "ada@example.com", None::<f64>, "x", "unread"];
    assert_eq!(from_row::<User>(&users(), &row).unwrap().score, None);
}

#[test]
fn a_missing_required_field_is_named() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct NeedsName {
        id: i64,
        name: String,
    }
    let err = from_row::<NeedsName>(&users(), &crate::row![1, "a", 1.0, "t", "b"]).unwrap_err();
    assert_eq!(err.kind, TypedErrorKind::MissingField { field: "name" });
    assert_eq!(err.to_string(), "missing field `name`");
}

#[test]
fn null_into_a_non_option_names_the_column() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Strict {
        email: String,
    }
    let s = schema(&[("email", "text")]);
    let err = from_row::<Strict>(&s, &Row(vec![Value::Null])).unwrap_err();
    assert!(matches!(err.kind, TypedErrorKind::Null { .. }), "{err:?}");
    assert_eq!(err.column.as_deref(), Some("email"));
    assert_eq!(err.to_string(), "column `email` (text): NULL, but a string is not optional (use Option)");
    assert!(matches!(one::<i32>("int4", Value::Null).unwrap_err().kind, TypedErrorKind::Null { .. }));
    assert_eq!(one::<Option<i32>>("int4", Value::Null).unwrap(), None);
    assert_eq!(one::<()>("int4", Value::Null).unwrap(), ());
}

#[test]
fn tuples_and_sequences_read_by_position() {
    let s = schema(&[("a", "int4"), ("b", "text"), ("c", "bool")]);
    let row = crate::row![1, "x", true];
    assert_eq!(from_row::<(i32, String, bool)>(&s, &row).unwrap(), (1, "x".into(), true));
    #[derive(Debug, PartialEq, Deserialize)]
    struct Triple(i16, String, Option<bool>);
    assert_eq!(from_row::<Triple>(&s, &row).unwrap(), Triple(1, "x".into(), Some(true)));
    // Too short a tuple would read the wrong columns after a schema change.
    let err = from_row::<(i32, String)>(&s, &row).unwrap_err();
    assert!(matches!(err.kind, TypedErrorKind::Length { len: 3, .. }), "{err:?}");
    let err = from_row::<(i32, String, bool, bool)>(&s, &row).unwrap_err();
    assert!(matches!(err.kind, TypedErrorKind::Length { len: 3, .. }), "{err:?}");
    let texts = schema(&[("a", "text"), ("b", "text")]);
    assert_eq!(from_row::<Vec<String>>(&texts, &crate::row!["p", "q"]).unwrap(), ["p", "q"]);
}

#[test]
fn a_map_gets_every_column() {
    let s = schema(&[("a", "int8"), ("b", "int8")]);
    let map: BTreeMap<String, Option<i64>> = from_row(&s, &Row(vec![Value::Int(1), Value::Null])).unwrap();
    assert_eq!(map, BTreeMap::from([("a".into(), Some(1)), ("b".into(), None)]));
}

#[test]
fn a_row_of_the_wrong_width_is_refused() {
    let err = from_row::<BTreeMap<String, i64>>(&users(), &crate::row![1]).unwrap_err();
    assert_eq!(err.kind, TypedErrorKind::Width { columns: 5, values: 1 });
}

#[test]
fn newtypes_enums_and_deny_unknown_fields() {
    #[derive(Debug, PartialEq, Deserialize)]
    struct UserId(i64);
    assert_eq!(one::<UserId>("int8", 5).unwrap(), UserId(5));

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mood {
        Happy,
        Sad,
    }
    assert_eq!(one::<Mood>("mood", "sad").unwrap(), Mood::Sad);
    let err = one::<Mood>("mood", "secret-label").unwrap_err();
    assert_eq!(err.kind, TypedErrorKind::UnknownVariant { expected: &["happy", "sad"] });
    assert!(!err.to_string().contains("secret"), "{err}");

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct OnlyId {
        id: i64,
    }
    let err = from_row::<OnlyId>(&schema(&[("id", "int8"), ("x", "int8")]), &crate::row![1, 2]).unwrap_err();
    assert_eq!(err.kind, TypedErrorKind::UnknownField { field: "x".into() });
}

#[test]
fn borrowed_fields_point_into_the_row() {
    #[derive(Deserialize)]
    struct Borrowed<'a> {
        name: &'a str,
        blob: &'a [u8],
    }
    let s = schema(&[("name", "text"), ("blob", "bytea")]);
    let row = crate::row!["ada", vec![1u8, 2, 3]];
    let b: Borrowed<'_> = from_row_borrowed(&s, &row).unwrap();
    let (Value::Text(name), Value::Bytes(blob)) = (&row.0[0], &row.0[1]) else { unreachable!() };
    assert_eq!(b.name.as_ptr(), name.as_ptr());
    assert_eq!(b.blob.as_ptr(), blob.as_ptr());
}

#[test]
fn flatten_and_borrowed_cow() {
    use std::borrow::Cow;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Audit {
        created_at: String,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct WithAudit<'a> {
        id: i64,
        #[serde(borrow)]
        email: Cow<'a, str>,
        #[serde(flatten)]
        audit: Audit,
    }
    let row = crate::row![7, "ada@example.com", 2.5, "2026-01-02 03:04:05+00", "unread"];
    let schema = users();
    let w: WithAudit<'_> = from_row_borrowed(&schema, &row).unwrap();
    assert!(matches!(w.email, Cow::Borrowed("ada@example.com")));
    assert_eq!((w.id, w.audit.created_at.as_str()), (7, "2026-01-02 03:04:05+00"));
}

// ---------------------------------------------------------- scalars

#[test]
fn integers_narrow_only_when_they_fit() {
    assert_eq!(one::<i16>("int8", 32767).unwrap(), 32767);
    assert_eq!(one::<u64>("int8", i64::MAX).unwrap(), i64::MAX as u64);
    assert_eq!(one::<i128>("int8", i64::MIN).unwrap(), i128::from(i64::MIN));
    for (target, err) in [
        ("i16", one::<i16>("int8", 32768).unwrap_err()),
        ("u8", one::<u8>("int4", 300).unwrap_err()),
        ("u64", one::<u64>("int8", -1).unwrap_err()),
        ("u128", one::<u128>("int8", -1).unwrap_err()),
        ("i32", one::<i32>("int8", i64::MAX).unwrap_err()),
    ] {
        assert_eq!(err.kind, TypedErrorKind::OutOfRange { found: "an integer", target }, "{err}");
        assert_eq!(err.column.as_deref(), Some("v"));
        assert!(!err.to_string().contains("300") && !err.to_string().contains("32768"), "{err}");
    }
}

#[test]
fn integers_become_floats_only_when_exact() {
    assert_eq!(one::<f64>("int8", 1i64 << 53).unwrap(), 9_007_199_254_740_992.0);
    assert!(one::<f64>("int8", (1i64 << 53) + 1).is_err());
    assert!(one::<f64>("int8", i64::MAX).is_err());
    assert_eq!(one::<f64>("int8", i64::MIN).unwrap(), -9_223_372_036_854_775_808.0);
    assert_eq!(one::<f32>("int4", 1 << 24).unwrap(), 16_777_216.0);
    assert!(one::<f32>("int4", (1 << 24) + 1).is_err());
}

#[test]
fn float8_special_values_survive() {
    assert!(one::<f64>("float8", f64::NAN).unwrap().is_nan());
    assert_eq!(one::<f64>("float8", f64::INFINITY).unwrap(), f64::INFINITY);
    assert_eq!(one::<f64>("float8", f64::NEG_INFINITY).unwrap(), f64::NEG_INFINITY);
    assert_eq!(one::<f64>("float8", -0.0).unwrap().to_bits(), (-0.0f64).to_bits());
    // f32: exact (float4 values widened to f64) or refused.
    assert_eq!(one::<f32>("float4", 0.5).unwrap(), 0.5);
    assert_eq!(one::<f32>("float4", f64::from(0.1f32)).unwrap(), 0.1f32);
    assert!(one::<f32>("float4", f64::NAN).unwrap().is_nan());
    assert_eq!(one::<f32>("float4", f64::NEG_INFINITY).unwrap(), f32::NEG_INFINITY);
    assert_eq!(one::<f32>("float4", -0.0).unwrap().to_bits(), (-0.0f32).to_bits());
    let err = one::<f32>("float8", 0.1).unwrap_err();
    assert_eq!(err.kind, TypedErrorKind::OutOfRange { found: "a float", target: "f32" });
    // Floats never become integers.
    assert!(matches!(one::<i64>("float8", 1.0).unwrap_err().kind, TypedErrorKind::Mismatch { .. }));
}

#[test]
fn text_is_not_parsed_into_numbers_and_errors_hide_it() {
    let err = one::<f64>("numeric", "12345.678").unwrap_err();
    assert_eq!(err.kind, TypedErrorKind::Mismatch { expected: "f64".into(), found: "a string" });
    assert_eq!(err.to_string(), "column `v` (numeric): expected f64, found a string");
    let err = one::<i32>("text", "hunter2").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = one::<String>("int8", 5).unwrap_err();
    assert!(matches!(err.kind, TypedErrorKind::Mismatch { found: "an integer", .. }), "{err:?}");
}

#[test]
fn bool_bytea_and_char() {
    assert!(one::<bool>("bool", true).unwrap());
    assert_eq!(one::<Vec<u8>>("bytea", vec![0u8, 255]).unwrap(), [0, 255]);
    assert_eq!(one::<char>("bpchar", text("y")).unwrap(), 'y');
    assert!(one::<char>("text", "yes").is_err());
}

// ------------------------------------------- text forms, without features

#[test]
fn a_string_field_always_gets_the_verbatim_text() {
    for (type_name, text) in [
        ("timestamptz", "0044-03-15 12:00:00+00 BC"),
        ("timestamp", "infinity"),
        ("date", "2026-01-02"),
        ("numeric", "NaN"),
        ("numeric", "0.1234567890123456789012345678901234567890"),
        ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("json", r#"{"a": [1, 2]}"#),
        ("jsonb", "null"),
        ("_int4", "{1,2,3}"),
        ("interval", "1 day 02:00:00"),
    ] {
        assert_eq!(one::<String>(type_name, text).unwrap(), text, "{type_name}");
        assert_eq!(one::<Option<String>>(type_name, text).unwrap().as_deref(), Some(text), "{type_name}");
    }
}

#[test]
fn str_targets_get_rfc3339_on_date_and_time_columns() {
    for (type_name, pg, rfc3339) in [
        ("timestamptz", "2026-01-02 03:04:05.123456+00", "2026-01-02T03:04:05.123456+00:00"),
        ("timestamptz", "2026-01-02 03:04:05+05:30", "2026-01-02T03:04:05+05:30"),
        ("timestamptz", "0044-03-15 12:00:00+00 BC", "-0043-03-15T12:00:00+00:00"),
        ("timestamp", "2026-01-02 03:04:05.5", "2026-01-02T03:04:05.5"),
        ("timestamp", "0001-01-01 00:00:00 BC", "0000-01-01T00:00:00"),
        ("date", "2026-01-02", "2026-01-02"),
        ("date", "4713-11-24 BC", "-4712-11-24"),
        ("date", "10000-01-01", "+10000-01-01"),
        // Other columns: verbatim.
        ("text", "2026-01-02 03:04:05+00", "2026-01-02 03:04:05+00"),
        ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ] {
        assert_eq!(one::<AsStr>(type_name, pg).unwrap(), AsStr(rfc3339.into()), "{pg}");
        // `any` (and String) still get the verbatim text.
        assert_eq!(one::<AnyText>(type_name, pg).unwrap(), AnyText(pg.into()), "{pg}");
    }
    let err = one::<AsStr>("timestamptz", "-infinity").unwrap_err();
    assert!(matches!(err.kind, TypedErrorKind::Unrepresentable { reason: "an infinity", .. }), "{err:?}");
    assert_eq!(one::<AnyText>("timestamptz", "-infinity").unwrap(), AnyText("-infinity".into()));
}

#[test]
fn numeric_too_precise_for_a_decimal_is_refused_to_any() {
    // rust_decimal's serde impl asks for `any`, and its parser would round.
    let forty = "0.1234567890123456789012345678901234567890";
    let err = one::<AnyText>("numeric", forty).unwrap_err();
    assert!(matches!(err.kind, TypedErrorKind::Unrepresentable { target: "Decimal", .. }), "{err:?}");
    assert_eq!(err.column.as_deref(), Some("v"));
    for fine in ["NaN", "Infinity", "-0.5", "0.00000000000000000001", "12.340"] {
        assert_eq!(one::<AnyText>("numeric", fine).unwrap(), AnyText(fine.into()));
    }
    // Only numeric columns are checked.
    assert_eq!(one::<AnyText>("text", forty).unwrap(), AnyText(forty.into()));
}

// ----------------------------------------------------------- pgtext

#[test]
fn numeric_text_parses_exactly() {
    let fixed = |negative, mantissa, scale| Ok(Fixed { negative, mantissa, scale });
    assert_eq!(parse_numeric("12.340"), fixed(false, 12340, 3));
    assert_eq!(parse_numeric("-0.5"), fixed(true, 5, 1));
    assert_eq!(parse_numeric("0.00000000000000000001"), fixed(false, 1, 20));
    assert_eq!(parse_numeric("007"), fixed(false, 7, 0));
    assert_eq!(parse_numeric("79228162514264337593543950335"), fixed(false, (1 << 96) - 1, 0));
    // Trailing zeros go only when they do not fit: the value stays exact.
    let zeros = format!("1.{}", "0".repeat(40));
    assert_eq!(parse_numeric(&zeros), fixed(false, 1, 0));
    assert_eq!(parse_numeric("70000000000000000000000000000.00"), fixed(false, 7 * 10u128.pow(28), 0));
    assert_eq!(parse_numeric("NaN"), Err(NumericError::NaN));
    assert_eq!(parse_numeric("-Infinity"), Err(NumericError::Infinite));
    assert!(matches!(parse_numeric("79228162514264337593543950336"), Err(NumericError::TooPrecise(_))));
    assert!(matches!(parse_numeric(&format!("0.{}1", "0".repeat(28))), Err(NumericError::TooPrecise(_))));
    assert!(matches!(parse_numeric("1234567890123456789012345678901234567890"), Err(NumericError::TooPrecise(_))));
    for bad in ["", "-", "1.", ".5", "1e5", "+1", "1.2.3", " 1", "١"] {
        assert_eq!(parse_numeric(bad), Err(NumericError::Malformed), "{bad:?}");
    }
}

#[test]
fn date_time_text_parses_and_rejects() {
    let t = parse_datetime("0044-03-15 12:30:00.25-03:30 BC", Shape::TimestampTz, "x").unwrap();
    assert_eq!((t.year, t.month, t.day, t.time, t.offset), (-43, 3, 15, Some((12, 30, 0, "25")), Some(-12600)));
    let t = parse_datetime("1890-01-01 00:00:00+05:53:28", Shape::TimestampTz, "x").unwrap();
    assert_eq!(t.offset, Some(5 * 3600 + 53 * 60 + 28));
    assert_eq!(t.rfc3339(), "1890-01-01T00:00:00+05:53:28");
    for (s, shape) in [
        ("2026-01-02 03:04:05", Shape::Date),
        ("2026-01-02", Shape::Timestamp),
        ("2026-01-02 03:04:05+00", Shape::Timestamp),
        ("2026-01-02 03:04:05", Shape::TimestampTz),
        ("2026-1-02", Shape::Date),
        ("26-01-02", Shape::Date),
        ("0000-01-01", Shape::Date),
        ("2026-01-02 3:04:05", Shape::Timestamp),
        ("2026-01-02 03:04:05.", Shape::Timestamp),
        ("2026-01-02 03:04:05.1234567890", Shape::Timestamp),
        ("2026-01-02 03:04:05+0", Shape::TimestampTz),
        ("2026-01-02 03:04:05+00:60", Shape::TimestampTz),
        ("2026-01-02 03:04:05+00:00:00:00", Shape::TimestampTz),
        ("+2026-01-02", Shape::Date),
        ("", Shape::Date),
    ] {
        let err = parse_datetime(s, shape, "x").unwrap_err();
        assert!(matches!(err.kind, TypedErrorKind::Malformed { .. }), "{s:?}: {err:?}");
    }
    let err = parse_datetime("infinity", Shape::Date, "NaiveDate").unwrap_err();
    assert_eq!(err.kind, TypedErrorKind::Unrepresentable { target: "NaiveDate", reason: "an infinity" });
}

proptest! {
    #[test]
    fn i64_round_trips(i in any::<i64>()) {
        prop_assert_eq!(one::<i64>("int8", i).unwrap(), i);
        // Narrowing agrees with TryFrom: the value or an error, never a truncation.
        prop_assert_eq!(one::<i32>("int8", i).ok(), i32::try_from(i).ok());
        prop_assert_eq!(one::<u16>("int8", i).ok(), u16::try_from(i).ok());
    }

    #[test]
    fn f64_round_trips_bit_for_bit(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        prop_assert_eq!(one::<f64>("float8", x).unwrap().to_bits(), bits);
        if let Ok(narrow) = one::<f32>("float8", x) {
            prop_assert!(x.is_nan() || f64::from(narrow) == x);
        }
    }

    #[test]
    fn text_parsers_never_panic(s in "\\PC{0,40}", digits in "-?[0-9]{1,40}(\\.[0-9]{1,40})?") {
        let _ = parse_numeric(&s);
        let _ = parse_numeric(&digits);
        for shape in [Shape::Date, Shape::Timestamp, Shape::TimestampTz] {
            let _ = parse_datetime(&s, shape, "x");
        }
    }

    #[test]
    fn rfc3339_of_a_date_keeps_its_fields(year in 1i64..300_000, month in 1u32..=12, day in 1u32..=28, bc: bool) {
        let pg = format!("{year:04}-{month:02}-{day:02}{}", if bc { " BC" } else { "" });
        let parsed = parse_datetime(&pg, Shape::Date, "x").unwrap();
        let astronomical = if bc { 1 - year } else { year };
        prop_assert_eq!(parsed.year, astronomical);
        let rfc = parsed.rfc3339();
        let sign = if astronomical < 0 { "-" } else if astronomical > 9999 { "+" } else { "" };
        prop_assert_eq!(rfc, format!("{sign}{:04}-{month:02}-{day:02}", astronomical.unsigned_abs()));
    }
}

// ---------------------------------------------------------- decimal

#[cfg(feature = "decimal")]
mod decimal {
    use rust_decimal::Decimal;

    use super::*;

    #[test]
    fn the_numeric_matrix() {
        assert_eq!(text("-0.5").to_decimal().unwrap(), Decimal::new(-5, 1));
        assert_eq!(text("0.00000000000000000001").to_decimal().unwrap(), Decimal::new(1, 20));
        let d = text("12.340").to_decimal().unwrap();
        assert_eq!((d.to_string().as_str(), d.scale()), ("12.340", 3));
        assert_eq!(text("79228162514264337593543950335").to_decimal().unwrap(), Decimal::MAX);
        assert_eq!(text("-79228162514264337593543950335").to_decimal().unwrap(), Decimal::MIN);
        assert_eq!(Value::Int(i64::MIN).to_decimal().unwrap(), Decimal::from(i64::MIN));
        for (s, reason) in [
            ("NaN", "NaN"),
            ("Infinity", "an infinity"),
            ("-Infinity", "an infinity"),
            ("0.1234567890123456789012345678901234567890", "more than 28 fractional digits"),
            ("1234567890123456789012345678901234567890", "more significant digits than 96 bits hold"),
            ("79228162514264337593543950336", "more significant digits than 96 bits hold"),
        ] {
            let err = text(s).to_decimal().unwrap_err();
            assert_eq!(err.kind, TypedErrorKind::Unrepresentable { target: "Decimal", reason }, "{s}");
        }
        assert!(matches!(text("1e5").to_decimal().unwrap_err().kind, TypedErrorKind::Malformed { .. }));
        assert!(matches!(Value::Float(0.5).to_decimal().unwrap_err().kind, TypedErrorKind::Mismatch { .. }));
        assert!(matches!(Value::Null.to_decimal().unwrap_err().kind, TypedErrorKind::Null { .. }));
    }

    #[test]
    fn decimal_fields() {
        assert_eq!(one::<Decimal>("numeric", "-0.5").unwrap(), Decimal::new(-5, 1));
        assert_eq!(one::<Decimal>("numeric", "12.340").unwrap().to_string(), "12.340");
        assert_eq!(one::<Decimal>("numeric", "0.00000000000000000001").unwrap(), Decimal::new(1, 20));
        assert_eq!(one::<Option<Decimal>>("numeric", Value::Null).unwrap(), None);
        assert_eq!(one::<Decimal>("int8", 42).unwrap(), Decimal::from(42));
        // Would round: refused, naming the column.
        let err = one::<Decimal>("numeric", "0.1234567890123456789012345678901234567890").unwrap_err();
        assert!(matches!(err.kind, TypedErrorKind::Unrepresentable { .. }), "{err:?}");
        assert_eq!(err.column.as_deref(), Some("v"));
        let err = one::<Decimal>("numeric", "NaN").unwrap_err();
        assert!(matches!(err.kind, TypedErrorKind::Invalid { found: "a string", .. }), "{err:?}");
    }

    proptest! {
        #[test]
        fn decimal_strings_round_trip(mantissa in -((1i128 << 96) - 1)..(1i128 << 96), scale in 0u32..=28) {
            let d = Decimal::from_i128_with_scale(mantissa, scale);
            let s = d.to_string();
            let back = text(&s).to_decimal().unwrap();
            prop_assert_eq!(back, d);
            prop_assert_eq!(back.to_string(), s.clone());
            prop_assert_eq!(one::<Decimal>("numeric", s.as_str()).unwrap(), d);
        }
    }
}

// ----------------------------------------------------------- chrono

#[cfg(feature = "chrono")]
mod chrono_types {
    use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};

    use super::*;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn dates() {
        assert_eq!(text("2026-01-02").to_naive_date().unwrap(), ymd(2026, 1, 2));
        assert_eq!(text("0044-03-15 BC").to_naive_date().unwrap(), ymd(-43, 3, 15));
        assert_eq!(text("0001-01-01 BC").to_naive_date().unwrap(), ymd(0, 1, 1));
        assert_eq!(text("4713-11-24 BC").to_naive_date().unwrap(), ymd(-4712, 11, 24));
        for s in ["infinity", "-infinity"] {
            let err = text(s).to_naive_date().unwrap_err();
            assert_eq!(err.kind, TypedErrorKind::Unrepresentable { target: "NaiveDate", reason: "an infinity" });
        }
        let err = text("5874897-12-31").to_naive_date().unwrap_err();
        assert!(matches!(err.kind, TypedErrorKind::Unrepresentable { reason: "a year outside chrono's range", .. }));
        let err = text("300000-01-01 BC").to_naive_date().unwrap_err();
        assert!(matches!(err.kind, TypedErrorKind::Unrepresentable { .. }), "{err:?}");
        assert!(matches!(text("2026-02-30").to_naive_date().unwrap_err().kind, TypedErrorKind::Malformed { .. }));
        assert!(matches!(Value::Int(1).to_naive_date().unwrap_err().kind, TypedErrorKind::Mismatch { .. }));
    }

    #[test]
    fn timestamps() {
        let t = text("2026-01-02 03:04:05.123456").to_naive_datetime().unwrap();
        assert_eq!(t, ymd(2026, 1, 2).and_hms_micro_opt(3, 4, 5, 123_456).unwrap());
        assert_eq!(text("2026-01-02 03:04:05.5").to_naive_datetime().unwrap().nanosecond(), 500_000_000);
        assert_eq!(text("2026-01-02 03:04:05").to_naive_datetime().unwrap().nanosecond(), 0);
        let bc = text("0044-03-15 12:00:00 BC").to_naive_datetime().unwrap();
        assert_eq!((bc.year(), bc.hour()), (-43, 12));
        let err = text("infinity").to_naive_datetime().unwrap_err();
        assert_eq!(err.kind, TypedErrorKind::Unrepresentable { target: "NaiveDateTime", reason: "an infinity" });
        // A timestamptz is not a naive timestamp, and vice versa.
        assert!(text("2026-01-02 03:04:05+00").to_naive_datetime().is_err());
        assert!(text("2026-01-02 03:04:05").to_datetime_utc().is_err());
        assert!(text("2026-01-02 24:00:00").to_naive_datetime().is_err());
    }

    #[test]
    fn timestamptz() {
        let utc = |s: &str| text(s).to_datetime_utc().unwrap();
        let want = ymd(2026, 1, 2).and_hms_micro_opt(3, 4, 5, 123_456).unwrap().and_utc();
        assert_eq!(utc("2026-01-02 03:04:05.123456+00"), want);
        assert_eq!(utc("2026-01-02 08:34:05.123456+05:30"), want);
        assert_eq!(utc("2026-01-01 23:04:05.123456-04"), want);
        let bc = utc("0044-03-15 12:00:00+00 BC");
        assert_eq!((bc.year(), bc.month(), bc.day()), (-43, 3, 15));
        let err = text("-infinity").to_datetime_utc().unwrap_err();
        assert_eq!(err.kind, TypedErrorKind::Unrepresentable { target: "DateTime<Utc>", reason: "an infinity" });
    }

    #[derive(Debug, Deserialize)]
    struct Event {
        at: DateTime<Utc>,
        at_offset: DateTime<FixedOffset>,
        local: NaiveDateTime,
        day: NaiveDate,
        time: NaiveTime,
        maybe: Option<DateTime<Utc>>,
        raw: String,
    }

    fn events() -> RelationSchema {
        schema(&[
            ("at", "timestamptz"),
            ("at_offset", "timestamptz"),
            ("local", "timestamp"),
            ("day", "date"),
            ("time", "time"),
            ("maybe", "timestamptz"),
            ("raw", "timestamptz"),
        ])
    }

    #[test]
    fn chrono_fields_read_postgres_text() {
        let row = Row(vec![
            text("2026-01-02 03:04:05.123456+00"),
            text("2026-01-02 08:34:05+05:30"),
            text("0044-03-15 12:00:00.5 BC"),
            text("0044-03-15 BC"),
            text("03:04:05.25"),
            Value::Null,
            text("2026-01-02 03:04:05.123456+00"),
        ]);
        let e: Event = from_row(&events(), &row).unwrap();
        assert_eq!(e.at, text("2026-01-02 03:04:05.123456+00").to_datetime_utc().unwrap());
        assert_eq!(e.at_offset.offset().local_minus_utc(), 5 * 3600 + 30 * 60);
        assert_eq!(e.at_offset.with_timezone(&Utc), ymd(2026, 1, 2).and_hms_opt(3, 4, 5).unwrap().and_utc());
        assert_eq!(e.local, text("0044-03-15 12:00:00.5 BC").to_naive_datetime().unwrap());
        assert_eq!(e.day, ymd(-43, 3, 15));
        assert_eq!(e.time, NaiveTime::from_hms_milli_opt(3, 4, 5, 250).unwrap());
        assert_eq!(e.maybe, None);
        assert_eq!(e.raw, "2026-01-02 03:04:05.123456+00");
    }

    #[test]
    fn an_infinite_timestamp_field_is_a_clear_error() {
        let row = Row(vec![
            text("infinity"),
            text("2026-01-02 03:04:05+00"),
            text("2026-01-02 03:04:05"),
            text("2026-01-02"),
            text("03:04:05"),
            Value::Null,
            text("x"),
        ]);
        let err = from_row::<Event>(&events(), &row).unwrap_err();
        assert_eq!(err.column.as_deref(), Some("at"));
        assert!(matches!(err.kind, TypedErrorKind::Unrepresentable { reason: "an infinity", .. }), "{err:?}");
    }

    proptest! {
        #[test]
        fn the_rfc3339_form_is_what_chrono_reads(
            year in -4712i32..200_000, month in 1u32..=12, day in 1u32..=28,
            h in 0u32..24, m in 0u32..60, s in 0u32..60, micros in proptest::option::of(0u32..1_000_000),
        ) {
            let date = ymd(year, month, day);
            let (bc, shown) = if year <= 0 { (" BC", 1 - i64::from(year)) } else { ("", i64::from(year)) };
            let frac = micros.map(|u| format!(".{u:06}")).unwrap_or_default();
            let pg = format!("{shown:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}{frac}+00{bc}");
            let want = date.and_hms_micro_opt(h, m, s, micros.unwrap_or(0)).unwrap().and_utc();
            prop_assert_eq!(text(&pg).to_datetime_utc().unwrap(), want);
            prop_assert_eq!(one::<DateTime<Utc>>("timestamptz", pg.as_str()).unwrap(), want);
        }
    }
}

// ------------------------------------------------------------- uuid

#[cfg(feature = "uuid")]
mod uuids {
    use uuid::Uuid;

    use super::*;

    const ID: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";

    #[test]
    fn uuid_values_and_fields() {
        let want = Uuid::parse_str(ID).unwrap();
        assert_eq!(text(ID).to_uuid().unwrap(), want);
        assert_eq!(one::<Uuid>("uuid", ID).unwrap(), want);
        assert_eq!(one::<Option<Uuid>>("uuid", Value::Null).unwrap(), None);
        let err = text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd38zzzz").to_uuid().unwrap_err();
        assert!(matches!(err.kind, TypedErrorKind::Malformed { form: "uuid", .. }), "{err:?}");
        assert!(!err.to_string().contains("zz"), "{err}");
        assert!(one::<Uuid>("uuid", "not-a-uuid").is_err());
    }
}

// ------------------------------------------------------------- json

#[cfg(feature = "json")]
mod json {
    use serde_json::json;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Prefs {
        theme: String,
        sizes: Vec<u8>,
        inner: Inner,
        shape: Shape,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        on: bool,
        ratio: Option<f64>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Shape {
        Dot,
        Circle { r: u32 },
    }

    const DOC: &str = r#"{"theme": "dark", "sizes": [1, 2], "inner": {"on": true, "ratio": null}, "shape": {"Circle": {"r": 3}}, "extra": [{}]}"#;

    #[test]
    fn json_values() {
        let v = text(DOC).to_json().unwrap();
        assert_eq!(v["inner"]["on"], json!(true));
        assert_eq!(v["extra"], json!([{}]));
        assert!(matches!(text("{").to_json().unwrap_err().kind, TypedErrorKind::Malformed { form: "JSON", .. }));
    }

    #[test]
    fn json_columns_fill_values_and_structs() {
        for type_name in ["json", "jsonb"] {
            let v = one::<serde_json::Value>(type_name, DOC).unwrap();
            assert_eq!(v, serde_json::from_str::<serde_json::Value>(DOC).unwrap());
            let prefs = one::<Prefs>(type_name, DOC).unwrap();
            assert_eq!(
                prefs,
                Prefs {
                    theme: "dark".into(),
                    sizes: vec![1, 2],
                    inner: Inner { on: true, ratio: None },
                    shape: Shape::Circle { r: 3 },
                }
            );
            assert_eq!(one::<Shape>(type_name, r#""Dot""#).unwrap(), Shape::Dot);
            assert_eq!(one::<Vec<i64>>(type_name, "[1, -2]").unwrap(), [1, -2]);
            assert_eq!(one::<i32>(type_name, "5").unwrap(), 5);
            // The text itself, for a String.
            assert_eq!(one::<String>(type_name, DOC).unwrap(), DOC);
        }
        // Other text columns are not parsed.
        assert_eq!(one::<serde_json::Value>("text", DOC).unwrap(), json!(DOC));
    }

    #[test]
    fn sql_null_and_json_null_differ() {
        assert_eq!(one::<Option<serde_json::Value>>("jsonb", Value::Null).unwrap(), None);
        assert_eq!(one::<Option<serde_json::Value>>("jsonb", "null").unwrap(), Some(serde_json::Value::Null));
    }

    #[test]
    fn json_errors_name_the_column_not_the_content() {
        let err = one::<Prefs>("jsonb", r#"{"theme": "dark", "sizes": [300], "inner": {"on": true}, "shape": "Dot"}"#)
            .unwrap_err();
        assert_eq!(err.column.as_deref(), Some("v"));
        assert!(matches!(err.kind, TypedErrorKind::Invalid { found: "an integer", .. }), "{err:?}");
        assert!(!err.to_string().contains("300"), "{err}");
        let err = one::<Prefs>("jsonb", r#"{"theme": 1}"#).unwrap_err();
        assert!(matches!(err.kind, TypedErrorKind::Mismatch { found: "an integer", .. }), "{err:?}");
        let err = one::<Inner>("jsonb", r#"{"ratio": 1.5}"#).unwrap_err();
        assert_eq!(err.kind, TypedErrorKind::MissingField { field: "on" });
        let err = one::<serde_json::Value>("json", "{secret").unwrap_err();
        assert!(matches!(err.kind, TypedErrorKind::Malformed { .. }) && !err.to_string().contains("secret"));
    }

    #[test]
    fn unread_json_columns_are_not_parsed() {
        #[derive(Deserialize)]
        struct Id {
            id: i64,
        }
        let s = schema(&[("id", "int8"), ("doc", "jsonb")]);
        let id: Id = from_row(&s, &crate::row![3, "not json at all"]).unwrap();
        assert_eq!(id.id, 3);
    }
}
