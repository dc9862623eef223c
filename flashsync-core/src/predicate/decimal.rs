//! Exact decimals with Postgres `numeric` semantics: compared exactly (never
//! through a binary float), `NaN` equal to itself and above everything, and
//! `±Infinity` (Postgres 14+) beyond every finite value.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A `numeric` value. Finite values are `0.d₁d₂… × 10^exp` with no leading or
/// trailing zero digit (zero has no digits and is never negative), so equal
/// values have equal representations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Decimal {
    NegInf,
    Finite { neg: bool, digits: Vec<u8>, exp: i64 },
    PosInf,
    NaN,
}

/// Largest decimal exponent a literal may have: far inside Postgres' numeric
/// range, so nothing the parser accepts can overflow on the server.
const MAX_LITERAL_EXP: i64 = 1000;
/// Most fraction digits a literal may have (Postgres allows 16383).
const MAX_LITERAL_SCALE: i64 = 1000;

impl Decimal {
    pub(crate) fn zero() -> Decimal {
        Decimal::Finite { neg: false, digits: Vec::new(), exp: 0 }
    }

    pub(crate) fn from_i64(v: i64) -> Decimal {
        let digits: Vec<u8> = i128::from(v).unsigned_abs().to_string().bytes().map(|b| b - b'0').collect();
        let len = digits.len() as i64;
        Decimal::normalized(v < 0, digits, len)
    }

    /// Builds from raw digits `d₁d₂…` and `exp` (value `0.d₁d₂… × 10^exp`),
    /// stripping leading and trailing zeros.
    fn normalized(neg: bool, mut digits: Vec<u8>, mut exp: i64) -> Decimal {
        let lead = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..lead);
        exp = exp.saturating_sub(lead as i64);
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Decimal::zero();
        }
        Decimal::Finite { neg, digits, exp }
    }

    /// Parses `[+-]digits[.digits][e[+-]digits]` (either digit run may be
    /// empty, not both), returning the value and its display scale (fraction
    /// digits as Postgres counts them). `None` if the text has another form.
    fn parse_finite(s: &str) -> Option<(Decimal, i64)> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut neg = false;
        if let Some(&c) = b.first() {
            if c == b'+' || c == b'-' {
                neg = c == b'-';
                i = 1;
            }
        }
        let mut digits = Vec::with_capacity(b.len());
        let mut int_len: i64 = 0;
        let mut frac_len: i64 = 0;
        let mut seen_point = false;
        while let Some(&c) = b.get(i) {
            match c {
                b'0'..=b'9' => {
                    digits.push(c - b'0');
                    if seen_point {
                        frac_len += 1;
                    } else {
                        int_len += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            i += 1;
        }
        if digits.is_empty() {
            return None;
        }
        let mut exp10: i64 = 0;
        if let Some(&c) = b.get(i) {
            if c != b'e' && c != b'E' {
                return None;
            }
            i += 1;
            let mut eneg = false;
            if let Some(&c) = b.get(i) {
                if c == b'+' || c == b'-' {
                    eneg = c == b'-';
                    i += 1;
                }
            }
            let start = i;
            while let Some(&c) = b.get(i) {
                if !c.is_ascii_digit() {
                    return None;
                }
                // Saturate: callers bound the exponent long before this.
                exp10 = exp10.saturating_mul(10).saturating_add(i64::from(c - b'0'));
                i += 1;
            }
            if i == start {
                return None;
            }
            if eneg {
                exp10 = -exp10;
            }
        }
        let scale = frac_len.saturating_sub(exp10).max(0);
        Some((Decimal::normalized(neg, digits, int_len.saturating_add(exp10)), scale))
    }

    /// Reads `numeric` output text (`-12.340`, `NaN`, `Infinity`,
    /// `-Infinity`), as a row carries it.
    pub(crate) fn parse_output(s: &str) -> Option<Decimal> {
        match s {
            "NaN" => Some(Decimal::NaN),
            "Infinity" => Some(Decimal::PosInf),
            "-Infinity" => Some(Decimal::NegInf),
            _ => Decimal::parse_finite(s).map(|(d, _)| d),
        }
    }

    /// Reads a literal the way `numeric_in` does, for the forms accepted
    /// here: decimal notation with an optional exponent, and the spellings of
    /// NaN and the infinities `numeric_in` (and `float8in`) recognize.
    /// Whitespace and other forms are refused (`None`), as are values beyond
    /// a comfortable range (Postgres would fail on much larger ones).
    pub(crate) fn parse_literal(s: &str) -> Option<Decimal> {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "nan" => return Some(Decimal::NaN),
            "infinity" | "+infinity" | "inf" | "+inf" => return Some(Decimal::PosInf),
            "-infinity" | "-inf" => return Some(Decimal::NegInf),
            _ => {}
        }
        let (d, scale) = Decimal::parse_finite(s)?;
        if scale > MAX_LITERAL_SCALE {
            return None;
        }
        if let Decimal::Finite { exp, .. } = &d {
            if exp.abs() > MAX_LITERAL_EXP {
                return None;
            }
        }
        Some(d)
    }

    pub(crate) fn negated(&self) -> Decimal {
        match self {
            Decimal::NegInf => Decimal::PosInf,
            Decimal::PosInf => Decimal::NegInf,
            Decimal::NaN => Decimal::NaN,
            Decimal::Finite { neg, digits, exp } => {
                if digits.is_empty() {
                    Decimal::zero()
                } else {
                    Decimal::Finite { neg: !neg, digits: digits.clone(), exp: *exp }
                }
            }
        }
    }

    /// The integer value, if the value is integral and fits an i64.
    pub(crate) fn to_i64(&self) -> Option<i64> {
        let Decimal::Finite { neg, digits, exp } = self else { return None };
        if *exp < digits.len() as i64 || *exp > 19 {
            return None;
        }
        let mut v: i128 = 0;
        for k in 0..*exp {
            let d = digits.get(k as usize).copied().unwrap_or(0);
            v = v * 10 + i128::from(d);
        }
        i64::try_from(if *neg { -v } else { v }).ok()
    }

    /// Scientific text Rust's float parser reads with correct rounding (as
    /// glibc's `strtod`/`strtof` do for Postgres' `numeric_float8`/`float4`).
    fn sci_text(&self) -> Option<String> {
        let Decimal::Finite { neg, digits, exp } = self else { return None };
        let mut s = String::with_capacity(digits.len() + 24);
        if *neg {
            s.push('-');
        }
        s.push_str("0.");
        if digits.is_empty() {
            s.push('0');
        }
        s.extend(digits.iter().map(|d| char::from(b'0' + d)));
        s.push('e');
        s.push_str(&exp.to_string());
        Some(s)
    }

    /// The nearest float8, as `numeric_float8` computes it; `None` where
    /// Postgres raises "out of range" (overflow, or a non-zero value that
    /// underflows to zero).
    pub(crate) fn to_f64(&self) -> Option<f64> {
        match self {
            Decimal::NaN => Some(f64::NAN),
            Decimal::PosInf => Some(f64::INFINITY),
            Decimal::NegInf => Some(f64::NEG_INFINITY),
            Decimal::Finite { digits, .. } => {
                let v: f64 = self.sci_text()?.parse().ok()?;
                (v.is_finite() && (v != 0.0 || digits.is_empty())).then_some(v)
            }
        }
    }

    /// The nearest float4 (widened to f64, exactly), as `numeric_float4`
    /// computes it; `None` where Postgres raises "out of range".
    pub(crate) fn to_f32(&self) -> Option<f64> {
        match self {
            Decimal::NaN => Some(f64::NAN),
            Decimal::PosInf => Some(f64::INFINITY),
            Decimal::NegInf => Some(f64::NEG_INFINITY),
            Decimal::Finite { digits, .. } => {
                let v: f32 = self.sci_text()?.parse().ok()?;
                (v.is_finite() && (v != 0.0 || digits.is_empty())).then_some(f64::from(v))
            }
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        use Decimal::*;
        let rank = |d: &Decimal| match d {
            NegInf => 0,
            Finite { .. } => 1,
            PosInf => 2,
            NaN => 3,
        };
        match (self, other) {
            (Finite { neg: an, digits: ad, exp: ae }, Finite { neg: bn, digits: bd, exp: be }) => {
                let sign = |neg: bool, digits: &[u8]| {
                    if digits.is_empty() {
                        0
                    } else if neg {
                        -1
                    } else {
                        1
                    }
                };
                let (sa, sb) = (sign(*an, ad), sign(*bn, bd));
                if sa != sb || sa == 0 {
                    return sa.cmp(&sb);
                }
                // Same sign, both non-zero: compare magnitudes.
                let mag = ae.cmp(be).then_with(|| ad.as_slice().cmp(bd.as_slice()));
                if sa < 0 {
                    mag.reverse()
                } else {
                    mag
                }
            }
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
