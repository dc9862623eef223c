//! Evaluation: three-valued logic and Postgres value semantics.

use super::*;

fn col(name: &str, ty: &str) -> Column {
    Column { name: name.into(), type_name: ty.into() }
}

/// Evaluates `text` over one row of `(name, type, value)` columns.
fn eval(text: &str, cols: &[(&str, &str, Value)]) -> Option<bool> {
    let columns: Vec<Column> = cols.iter().map(|(n, t, _)| col(n, t)).collect();
    let row: Vec<Value> = cols.iter().map(|(_, _, v)| v.clone()).collect();
    let p = Predicate::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let b = p.bind(&columns).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    b.eval(&row)
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

const T: Option<bool> = Some(true);
const F: Option<bool> = Some(false);
const N: Option<bool> = None;

#[test]
fn three_valued_logic_tables() {
    let vals = [("TRUE", T), ("FALSE", F), ("NULL", N)];
    for (a, va) in vals {
        assert_eq!(eval(&format!("NOT {a}"), &[]), va.map(|x| !x));
        for (b, vb) in vals {
            let and = match (va, vb) {
                (F, _) | (_, F) => F,
                (T, T) => T,
                _ => N,
            };
            let or = match (va, vb) {
                (T, _) | (_, T) => T,
                (F, F) => F,
                _ => N,
            };
            assert_eq!(eval(&format!("{a} AND {b}"), &[]), and, "{a} AND {b}");
            assert_eq!(eval(&format!("{a} OR {b}"), &[]), or, "{a} OR {b}");
            assert_eq!(eval(&format!("{a} IS NOT DISTINCT FROM {b}"), &[]), Some(va == vb));
        }
        assert_eq!(eval(&format!("{a} IS TRUE"), &[]), Some(va == T));
        assert_eq!(eval(&format!("{a} IS NOT FALSE"), &[]), Some(va != F));
        assert_eq!(eval(&format!("{a} IS UNKNOWN"), &[]), Some(va.is_none()));
        assert_eq!(eval(&format!("{a} IS NULL"), &[]), Some(va.is_none()));
    }
    let x = |v: Value| [("x", "int4", v)];
    assert_eq!(eval("x = 1", &x(Value::Null)), N);
    assert_eq!(eval("x <> 1", &x(Value::Null)), N);
    assert_eq!(eval("NOT x = 1", &x(Value::Null)), N);
    assert_eq!(eval("x = 1 OR TRUE", &x(Value::Null)), T);
    assert_eq!(eval("x = 1 AND FALSE", &x(Value::Null)), F);
    assert_eq!(eval("x IS NULL", &x(Value::Null)), T);
    assert_eq!(eval("x IS DISTINCT FROM NULL", &x(Value::Int(1))), T);
    assert_eq!(eval("x = NULL", &x(Value::Int(1))), N);
}

#[test]
fn in_and_not_in_with_nulls() {
    let x = |v: i64| [("x", "int8", Value::Int(v))];
    assert_eq!(eval("x IN (1, 2)", &x(1)), T);
    assert_eq!(eval("x IN (1, NULL)", &x(1)), T);
    assert_eq!(eval("x IN (2, NULL)", &x(1)), N);
    assert_eq!(eval("x NOT IN (2, 3)", &x(1)), T);
    assert_eq!(eval("x NOT IN (1, NULL)", &x(1)), F);
    // Never true once the list holds a NULL.
    assert_eq!(eval("x NOT IN (2, NULL)", &x(1)), N);
    assert_eq!(eval("x NOT IN (2)", &[("x", "int8", Value::Null)]), N);
    assert_eq!(eval("x IN (1.5, 1)", &x(1)), T);
    assert_eq!(eval("x IN ('1', '2')", &x(2)), T);
}

#[test]
fn integers_against_numerics_compare_exactly() {
    let x = |v: i64| [("x", "int4", Value::Int(v))];
    assert_eq!(eval("x > 1.5", &x(2)), T);
    assert_eq!(eval("x = 1.0", &x(1)), T);
    assert_eq!(eval("x = 1e0", &x(1)), T);
    assert_eq!(eval("x < 1.0000000000000000000000000000000000001", &x(1)), T);
    assert_eq!(eval("x = 9999999999", &x(2147483647)), F);
    assert_eq!(eval("x < 99999999999999999999999999", &x(2147483647)), T);
    assert_eq!(eval("x < 'NaN'::numeric", &x(i64::from(i32::MAX))), T);
    let big = [("b", "int8", Value::Int(9_007_199_254_740_993))];
    // Postgres compares int8 with float8 in float8: 2^53 + 1 rounds to 2^53.
    assert_eq!(eval("b = 9007199254740992::float8", &big), T);
    assert_eq!(eval("b = 9007199254740992", &big), F);
}

#[test]
fn numerics_are_exact_decimals() {
    let n = |s: &str| [("n", "numeric", t(s))];
    assert_eq!(eval("n = 0.1", &n("0.10")), T);
    assert_eq!(eval("n > 0.1", &n("0.1000000000000000000000000000000000000001")), T);
    assert_eq!(eval("n = 0.1000000000000000000000000000000000000001", &n("0.1")), F);
    assert_eq!(
        eval("n = 1234567890123456789012345678901234567890", &n("1234567890123456789012345678901234567890.000")),
        T
    );
    assert_eq!(
        eval("n < 1234567890123456789012345678901234567891", &n("1234567890123456789012345678901234567890.999")),
        T
    );
    assert_eq!(eval("n = -0.0", &n("0")), T);
    assert_eq!(eval("n < -1e-30", &n("-0.000000000000000000000000000001")), F);
    assert_eq!(eval("n <= -1e-30", &n("-0.000000000000000000000000000001")), T);
    // NaN equals NaN and sorts above everything, even Infinity.
    assert_eq!(eval("n = 'NaN'", &n("NaN")), T);
    assert_eq!(eval("n > 'Infinity'::numeric", &n("NaN")), T);
    assert_eq!(eval("n > 1e100", &n("Infinity")), T);
    assert_eq!(eval("n < -1e100", &n("-Infinity")), T);
    assert_eq!(eval("n BETWEEN -1 AND 1", &n("NaN")), F);
    assert_eq!(eval("n = 1", &n("garbage")), N);
}

#[test]
fn floats_follow_postgres_nan_and_zero_rules() {
    let f = |v: f64| [("f", "float8", Value::Float(v))];
    assert_eq!(eval("f = 'NaN'", &f(f64::NAN)), T);
    assert_eq!(eval("f > 'Infinity'::float8", &f(f64::NAN)), T);
    assert_eq!(eval("f < 'NaN'", &f(f64::INFINITY)), T);
    assert_eq!(eval("f = 0", &f(-0.0)), T);
    assert_eq!(eval("f = 0.1", &f(0.1)), T);
    assert_eq!(eval("f >= '-Infinity'", &f(f64::NEG_INFINITY)), T);
    // float4 columns: the source widens the stored float4 exactly.
    let g = [("g", "float4", Value::Float(f64::from(1.1f32)))];
    assert_eq!(eval("g = 1.1", &g), F, "float4 = numeric compares in float8");
    assert_eq!(eval("g = '1.1'", &g), T, "an unknown literal is read as float4");
    assert_eq!(eval("g = 1.1::float4", &g), T);
    assert_eq!(eval("g IN (1.1)", &g), F, "one item: a plain comparison");
    assert_eq!(eval("g IN (1.1, 2)", &g), T, "two items: coerced to the common type float4");
    let h = [("g", "float4", Value::Float(16_777_216.0))];
    assert_eq!(eval("g = 16777217", &h), F);
    assert_eq!(eval("g IN (16777217, 0)", &h), T);
}

#[test]
fn text_is_bytewise_and_bpchar_ignores_trailing_spaces() {
    let s = |v: &str| [("s", "text", t(v)), ("c", "bpchar", t("ab  ")), ("v", "varchar", t("ab "))];
    assert_eq!(eval("s = 'é'", &s("é")), T);
    assert_eq!(eval("s = 'É'", &s("é")), F);
    assert_eq!(eval("s = ''", &s("")), T);
    assert_eq!(eval("s LIKE 'a_c%'", &s("aécd")), T);
    assert_eq!(eval("s ILIKE 'ABC'", &s("abc")), T);
    assert_eq!(eval("s ILIKE 'abc'", &s("ÀBC")), F);
    assert_eq!(eval("c = 'ab'", &s("")), T);
    assert_eq!(eval("c = 'ab   '", &s("")), T);
    assert_eq!(eval("c = 'ab '::text", &s("")), F, "bpchar = text compares as text");
    assert_eq!(eval("c LIKE 'ab'", &s("")), F, "LIKE sees the padding");
    assert_eq!(eval("c LIKE 'ab  '", &s("")), T);
    assert_eq!(eval("v = 'ab'", &s("")), F);
    assert_eq!(eval("c IN ('ab', 'x'::text)", &s("")), T, "the list's type is bpchar");
}

#[test]
fn times_compare_on_one_line() {
    let row = [
        ("d", "date", t("2026-01-01")),
        ("ts", "timestamp", t("2026-01-01 10:00:00.5")),
        ("tz", "timestamptz", t("2026-01-01 10:00:00+00")),
        ("bc", "date", t("0044-03-15 BC")),
        ("inf", "timestamp", t("infinity")),
        ("far", "date", t("5000000-01-01")),
    ];
    assert_eq!(eval("d = '2026-01-01'", &row), T);
    assert_eq!(eval("d < ts", &row), T);
    assert_eq!(eval("d = '2026-01-01 00:00'::timestamp", &row), T);
    assert_eq!(eval("ts > '2026-01-01 10:00:00.499999'", &row), T);
    assert_eq!(eval("tz = '2026-01-01 12:00+02'", &row), T);
    assert_eq!(eval("tz = '2026-01-01 10:00'", &row), T, "no offset: the session zone, UTC");
    assert_eq!(eval("tz = '2026-01-01T10:00:00Z'", &row), T);
    assert_eq!(eval("bc < '0001-01-01'", &row), T);
    assert_eq!(eval("bc = '0044-03-15 BC'", &row), T);
    assert_eq!(eval("inf > '294276-12-31 23:59:59'", &row), T);
    assert_eq!(eval("inf = 'infinity'::date", &row), T);
    assert_eq!(eval("far > '294276-12-31'::timestamp AND far < inf", &row), T);
}

#[test]
fn uuids_and_bools() {
    let row = [("u", "uuid", t("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")), ("b", "bool", Value::Bool(false))];
    assert_eq!(eval("u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", &row), T);
    assert_eq!(eval("u = '{a0eebc999c0b4ef8bb6d6bb9bd380a11}'", &row), T);
    assert_eq!(eval("u > '00000000-0000-0000-0000-000000000000'", &row), T);
    assert_eq!(eval("NOT b", &row), T);
    assert_eq!(eval("b = 'no'", &row), T);
    assert_eq!(eval("b < TRUE", &row), T);
    assert_eq!(eval("(u IS NULL) = b", &row), T);
}

#[test]
fn odd_rows_never_panic() {
    let cols = [col("a", "int4"), col("s", "text"), col("n", "numeric"), col("d", "date")];
    let b = Predicate::parse("a = 1 OR s = 'x' OR n > 1 OR d > '2020-01-01'").unwrap().bind(&cols).unwrap();
    assert_eq!(b.eval(&[]), None);
    assert_eq!(b.eval(&[Value::Int(1)]), Some(true));
    assert_eq!(b.eval(&[Value::Int(2), t("y")]), None);
    assert_eq!(b.eval(&[t("1"), t("y"), t("0"), t("2019-01-01")]), None);
    assert_eq!(b.eval(&[Value::Int(2), t("y"), t("0"), t("2019-01-01")]), Some(false));
    assert_eq!(b.eval(&[Value::Int(2), t("y"), t("zz"), t("2019-01-01")]), None);
    assert_eq!(b.eval(&[Value::Int(2), t("y"), t("0"), t("2019-13-01")]), None);
    assert!(!b.matches(&vec![Value::Bytes(vec![1]); 9]));
}
