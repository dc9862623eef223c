//! Reading Postgres's text output forms (the source sets `DateStyle=ISO`,
//! `TimeZone=UTC`), without any of the optional crates: the deserializer
//! needs these whatever the features, and the conversions build on them.

use std::fmt::Write as _;

use super::error::TypedError;

/// What the deserializer treats specially among the text-carried types,
/// by the column's upstream type name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextKind {
    /// `numeric`.
    Numeric,
    /// `date`, `timestamp` or `timestamptz`.
    Temporal(Shape),
    /// `json` or `jsonb`.
    Json,
    /// Everything else.
    Other,
}

impl TextKind {
    pub(crate) fn of(type_name: &str) -> Self {
        let is = |name: &str| type_name.eq_ignore_ascii_case(name);
        if is("numeric") || is("decimal") {
            TextKind::Numeric
        } else if is("date") {
            TextKind::Temporal(Shape::Date)
        } else if is("timestamp") || is("timestamp without time zone") {
            TextKind::Temporal(Shape::Timestamp)
        } else if is("timestamptz") || is("timestamp with time zone") {
            TextKind::Temporal(Shape::TimestampTz)
        } else if is("json") || is("jsonb") {
            TextKind::Json
        } else {
            TextKind::Other
        }
    }
}

// ---------------------------------------------------------------- numeric

/// The most fractional digits a `rust_decimal::Decimal` holds.
pub(crate) const MAX_SCALE: usize = 28;
/// A `Decimal`'s mantissa is 96 bits.
const MANTISSA_LIMIT: u128 = 1 << 96;

/// A finite numeric that fits a `Decimal` exactly: `(-1)^negative ×
/// mantissa × 10^-scale`, with `mantissa < 2^96` and `scale <= 28`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fixed {
    pub(crate) negative: bool,
    pub(crate) mantissa: u128,
    pub(crate) scale: u32,
}

/// Why a numeric's text is not a [`Fixed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumericError {
    NaN,
    Infinite,
    /// Finite, but `Decimal::from_str` would round it.
    TooPrecise(&'static str),
    Malformed,
}

impl NumericError {
    pub(crate) fn into_typed(self) -> TypedError {
        match self {
            NumericError::NaN => TypedError::unrepresentable("Decimal", "NaN"),
            NumericError::Infinite => TypedError::unrepresentable("Decimal", "an infinity"),
            NumericError::TooPrecise(reason) => TypedError::unrepresentable("Decimal", reason),
            NumericError::Malformed => TypedError::malformed("numeric", "expected [-]digits[.digits]"),
        }
    }
}

/// Parses numeric output (`-12.340`, `NaN`, `Infinity`) exactly. Trailing
/// fractional zeros are dropped only where the value would not fit with them
/// (so `1.50` keeps its scale of 2); nothing is ever rounded.
pub(crate) fn parse_numeric(s: &str) -> Result<Fixed, NumericError> {
    match s {
        "NaN" => return Err(NumericError::NaN),
        "Infinity" | "-Infinity" => return Err(NumericError::Infinite),
        _ => {}
    }
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((int, frac)) if !frac.is_empty() => (int, frac),
        Some(_) => return Err(NumericError::Malformed),
        None => (body, ""),
    };
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return Err(NumericError::Malformed);
    }
    let fixed = |frac: &str| -> Result<Fixed, NumericError> {
        if frac.len() > MAX_SCALE {
            return Err(NumericError::TooPrecise("more than 28 fractional digits"));
        }
        let mut mantissa: u128 = 0;
        for digit in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(digit - b'0')))
                .filter(|m| *m < MANTISSA_LIMIT)
                .ok_or(NumericError::TooPrecise("more significant digits than 96 bits hold"))?;
        }
        // `frac.len() <= 28` was checked above.
        let scale = u32::try_from(frac.len()).map_err(|_| NumericError::Malformed)?;
        Ok(Fixed { negative, mantissa, scale })
    };
    fixed(frac).or_else(|e| {
        let trimmed = frac.trim_end_matches('0');
        if trimmed.len() < frac.len() {
            fixed(trimmed)
        } else {
            Err(e)
        }
    })
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

// ------------------------------------------------------- dates and times

/// Which of the three date/time types a text value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `date`: `YYYY-MM-DD[ BC]`.
    Date,
    /// `timestamp`: `YYYY-MM-DD HH:MM:SS[.ffffff][ BC]`.
    Timestamp,
    /// `timestamptz`: a timestamp with a UTC offset (`+00`, `+05:30`)
    /// before the ` BC`.
    TimestampTz,
}

/// A parsed date, timestamp or timestamptz, with the year made astronomical
/// (`1 BC` is year 0, `44 BC` is year -43).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DateTimeText<'a> {
    pub(crate) year: i64,
    pub(crate) month: u32,
    pub(crate) day: u32,
    /// Hour, minute, second and the fraction's digits (maybe empty).
    pub(crate) time: Option<(u32, u32, u32, &'a str)>,
    /// Seconds east of UTC.
    pub(crate) offset: Option<i32>,
}

impl DateTimeText<'_> {
    /// The fraction of a second in nanoseconds (`.5` is 500 000 000).
    #[cfg(feature = "chrono")]
    pub(crate) fn nanos(&self) -> u32 {
        let digits = self.time.map_or("", |t| t.3);
        // At most 9 digits (checked in `parse_datetime`), so this fits.
        digits.bytes().chain(std::iter::repeat(b'0')).take(9).fold(0, |n, d| n * 10 + u32::from(d - b'0'))
    }

    /// The RFC 3339 / ISO 8601 form chrono's `serde` impls read: `T` between
    /// date and time, a `+HH:MM` offset, and a signed year where four digits
    /// do not do (`-0043-03-15`, `+10000-01-01`).
    pub(crate) fn rfc3339(&self) -> String {
        let mut out = String::with_capacity(32);
        // Writing to a String cannot fail.
        let _ = match self.year {
            0..=9999 => write!(out, "{:04}", self.year),
            y if y < 0 => write!(out, "-{:04}", y.unsigned_abs()),
            y => write!(out, "+{y}"),
        };
        let _ = write!(out, "-{:02}-{:02}", self.month, self.day);
        if let Some((h, m, s, frac)) = self.time {
            let _ = write!(out, "T{h:02}:{m:02}:{s:02}");
            if !frac.is_empty() {
                let _ = write!(out, ".{frac}");
            }
        }
        if let Some(offset) = self.offset {
            let sign = if offset < 0 { '-' } else { '+' };
            let abs = offset.unsigned_abs();
            let _ = write!(out, "{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60);
            if abs % 60 != 0 {
                // Not RFC 3339 (which has no offset seconds); only local mean
                // time offsets have them, never the source's UTC.
                let _ = write!(out, ":{:02}", abs % 60);
            }
        }
        out
    }
}

/// Parses Postgres's ISO output of a `date`, `timestamp` or `timestamptz`.
/// `target` names the type being made, for the error about `infinity`.
pub(crate) fn parse_datetime<'a>(
    s: &'a str,
    shape: Shape,
    target: &'static str,
) -> Result<DateTimeText<'a>, TypedError> {
    if s == "infinity" || s == "-infinity" {
        return Err(TypedError::unrepresentable(target, "an infinity"));
    }
    let form = match shape {
        Shape::Date => "date",
        Shape::Timestamp => "timestamp",
        Shape::TimestampTz => "timestamptz",
    };
    let bad = |detail| TypedError::malformed(form, detail);
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (date, rest) = s.split_once(' ').map_or((s, None), |(d, r)| (d, Some(r)));
    let mut parts = date.splitn(3, '-');
    let (year, month, day) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) if y.len() >= 4 && m.len() == 2 && d.len() == 2 => (y, m, d),
        _ => return Err(bad("expected YYYY-MM-DD")),
    };
    let year: i64 = number(year).ok_or_else(|| bad("year is not a number"))?;
    if year == 0 {
        return Err(bad("there is no year 0 in AD/BC years"));
    }
    let year = if bc { 1 - year } else { year };
    let month = number(month).ok_or_else(|| bad("month is not a number"))?;
    let day = number(day).ok_or_else(|| bad("day is not a number"))?;
    let mut out = DateTimeText { year, month, day, time: None, offset: None };
    let Some(rest) = rest else {
        return match shape {
            Shape::Date => Ok(out),
            _ => Err(bad("no time of day")),
        };
    };
    if shape == Shape::Date {
        return Err(bad("unexpected text after the date"));
    }
    // The offset starts at the first sign after the time.
    let (time, offset) = match rest.find(['+', '-']) {
        Some(at) => (&rest[..at], Some(&rest[at..])),
        None => (rest, None),
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.split(':');
    let (h, m, sec) = match (hms.next(), hms.next(), hms.next(), hms.next()) {
        (Some(h), Some(m), Some(s), None) if h.len() == 2 && m.len() == 2 && s.len() == 2 => (h, m, s),
        _ => return Err(bad("expected HH:MM:SS")),
    };
    if frac.len() > 9 || (time.contains('.') && frac.is_empty()) || !all_digits(frac) {
        return Err(bad("fraction of a second is not 1 to 9 digits"));
    }
    let field = |t: &str| number::<u32>(t).ok_or_else(|| bad("time of day is not numeric"));
    out.time = Some((field(h)?, field(m)?, field(sec)?, frac));
    out.offset = match (shape, offset) {
        (Shape::TimestampTz, Some(offset)) => Some(parse_offset(offset).ok_or_else(|| bad("malformed UTC offset"))?),
        (Shape::TimestampTz, None) => return Err(bad("no UTC offset")),
        (_, None) => None,
        (_, Some(_)) => return Err(bad("unexpected UTC offset (a timestamptz?)")),
    };
    Ok(out)
}

/// `+HH`, `-HH:MM` or `+HH:MM:SS`, in seconds east of UTC.
fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let mut secs = 0;
    let mut unit = 3600;
    for part in rest.split(':') {
        if part.len() != 2 || unit == 0 {
            return None;
        }
        let n: i32 = number(part)?;
        if n >= 60 && unit < 3600 {
            return None;
        }
        secs += n * unit;
        unit /= 60;
    }
    Some(sign * secs)
}

/// Parses ASCII digits only (no sign, no `+`, unlike `str::parse`).
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !all_digits(s) {
        return None;
    }
    s.parse().ok()
}
