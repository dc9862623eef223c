//! Values as Postgres prints them (its text output, as `COPY … TO STDOUT`
//! writes them in text and CSV), for `dump`: `t`/`f` for booleans, and
//! floats in Postgres's own notation rather than Rust's or JSON's.
//!
//! Rows reach the dump as JSON (also from a running process, through its
//! admin socket), where a boolean is `true` and `100.0` a float; a dump that
//! says it writes what Postgres writes must not print either.

use serde_json::Value as Json;

/// The text of a non-NULL value of upstream type `type_name`; `None` for
/// NULL.
pub fn value(v: &Json, type_name: &str) -> Option<String> {
    Some(match v {
        Json::Null => return None,
        Json::Bool(b) => (if *b { "t" } else { "f" }).to_owned(),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(x)) => float(x, type_name == "float4"),
            (None, None, None) => n.to_string(),
        },
        Json::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// A float as Postgres 12 and later prints it (`extra_float_digits` above
/// zero, the default): the shortest digits that read back as the same
/// value — of a `real`'s 32 bits when `real` — in fixed notation while the
/// decimal exponent is at least -4 and below 15 (below 6 for a `real`),
/// otherwise as `1.5e+300`; `NaN`, `Infinity`, `-Infinity` and `-0` as
/// such.
pub fn float(x: f64, real: bool) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return (if x > 0.0 { "Infinity" } else { "-Infinity" }).into();
    }
    if x == 0.0 {
        return (if x.is_sign_negative() { "-0" } else { "0" }).into();
    }
    // Rust's shortest round-trip digits, in `d.ddde±x` form. A `real` is
    // held widened to 64 bits: narrowing it back is exact.
    #[allow(clippy::cast_possible_truncation)]
    let sci = if real { format!("{:e}", x as f32) } else { format!("{x:e}") };
    let Some((mantissa, exp)) = sci.split_once('e') else { return sci };
    let Ok(exp) = exp.parse::<i32>() else { return sci };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let fixed_below = if real { 6 } else { 15 };
    let body = if exp < -4 || exp >= fixed_below {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{first}{point}e{exp_sign}{:02}", exp.unsigned_abs())
    } else if exp >= 0 {
        let whole = usize::try_from(exp).unwrap_or(0) + 1;
        if digits.len() <= whole {
            format!("{digits}{}", "0".repeat(whole - digits.len()))
        } else {
            format!("{}.{}", &digits[..whole], &digits[whole..])
        }
    } else {
        let zeros = usize::try_from(-exp - 1).unwrap_or(0);
        format!("0.{}{digits}", "0".repeat(zeros))
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each expected text is what Postgres 15 printed for the value
    /// (`SELECT 1e15::float8, …`).
    #[test]
    fn floats_print_as_postgres_prints_them() {
        let float8 = [
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (123_456_789_012_345.6, "123456789012345.6"),
            (1_234_567_890_123_456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (100.0, "100"),
            (1.5e300, "1.5e+300"),
            (-0.0, "-0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1.23e-10, "1.23e-10"),
            (-2.5, "-2.5"),
        ];
        for (x, text) in float8 {
            assert_eq!(float(x, false), text, "float8 {x:?}");
        }
        let float4 = [
            (1e6, "1e+06"),
            (1e5, "100000"),
            (123_456.0, "123456"),
            (1_234_567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (f64::from(1.1f32), "1.1"),
            (f64::from(3.4e38f32), "3.4e+38"),
            (16_777_216.0, "1.6777216e+07"),
            (12_345_678.0, "1.2345678e+07"),
        ];
        for (x, text) in float4 {
            assert_eq!(float(x, true), text, "float4 {x:?}");
        }
    }

    #[test]
    fn booleans_and_integers_print_as_postgres_prints_them() {
        assert_eq!(value(&json!(true), "bool").as_deref(), Some("t"));
        assert_eq!(value(&json!(false), "bool").as_deref(), Some("f"));
        assert_eq!(value(&json!(-42), "int8").as_deref(), Some("-42"));
        assert_eq!(value(&json!(100.0), "float8").as_deref(), Some("100"));
        assert_eq!(value(&json!("NaN"), "float8").as_deref(), Some("NaN"));
        assert_eq!(value(&json!("2026-01-01 00:00:01+00"), "timestamptz").as_deref(), Some("2026-01-01 00:00:01+00"));
        assert_eq!(value(&Json::Null, "text"), None);
    }
}
