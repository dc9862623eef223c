//! `date`, `timestamp` and `timestamptz` as points on one time line, read
//! from their ISO text forms.
//!
//! Postgres compares the three types with each other through cross-type
//! operators: a date is midnight of that day, a timestamp without time zone
//! is read in the session time zone — UTC, which flashsync pins on every
//! session — and the infinities stay infinite. Microseconds since the Unix
//! epoch in an `i128` hold every date Postgres can store (to year 5874897),
//! so a date beyond the timestamp range still compares above every finite
//! timestamp and below `infinity`, as Postgres 13+ compares it.

use serde::{Deserialize, Serialize};

/// A point in time (or one of the infinities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Time {
    NegInf,
    /// Microseconds since 1970-01-01 00:00:00 UTC.
    At(i128),
    PosInf,
}

/// Which of the three types a text is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Date,
    Timestamp,
    Timestamptz,
}

const MICROS_PER_DAY: i128 = 86_400_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date with astronomical year
/// numbering (1 BC is year 0), as Postgres' `date2j` counts them.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// A cursor over ASCII text.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Between `min` and `max` ASCII digits, as a number.
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            if self.i - start == max {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
            self.i += 1;
        }
        let n = self.i - start;
        (n >= min).then_some((v, n))
    }

    fn rest(&self) -> &[u8] {
        self.b.get(self.i..).unwrap_or_default()
    }
}

/// Why a literal is refused.
pub(crate) type Refusal = String;

/// Reads a value of `kind` from a row: its type's output text under
/// `DateStyle = ISO` and `TimeZone = UTC` (`2026-01-01`, `0044-03-15 BC`,
/// `2026-01-01 10:00:00.5`, `2026-01-01 10:00:00+00`, `infinity`, ...).
pub(crate) fn parse_output(kind: Kind, s: &str) -> Option<Time> {
    match s {
        "infinity" => Some(Time::PosInf),
        "-infinity" => Some(Time::NegInf),
        _ => parse(kind, s, false).ok(),
    }
}

/// Reads a literal of `kind` the way the type's input function would, for
/// the forms accepted here: ISO dates `YYYY-MM-DD`, times `HH:MM[:SS[.ffffff]]`
/// after a space or `T`, numeric offsets or `Z` (timestamptz only; without
/// one the session zone UTC applies), a trailing `BC`/`AD`, and the
/// infinities. Everything else is refused rather than risk reading it
/// differently from the server: other date orders (their meaning depends on
/// `DateStyle`), zone names, more than six fraction digits (Postgres
/// rounds), and the non-deterministic `now`/`today`/... .
pub(crate) fn parse_literal(kind: Kind, s: &str) -> Result<Time, Refusal> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        // Postgres' datetime input has no "+infinity".
        "infinity" => return Ok(Time::PosInf),
        "-infinity" => return Ok(Time::NegInf),
        "now" | "today" | "tomorrow" | "yesterday" => {
            return Err("a moment that depends on when it is read (a filter must be fixed)".into())
        }
        _ => {}
    }
    let t = parse(kind, s, true)?;
    // Postgres' ranges: dates from 4714-11-24 BC (Julian day 0) to
    // 5874897-12-31, timestamps from the same day to the end of 294276.
    let min = days_from_civil(-4713, 11, 24) as i128 * MICROS_PER_DAY;
    let max = match kind {
        Kind::Date => (days_from_civil(5_874_898, 1, 1) as i128) * MICROS_PER_DAY,
        Kind::Timestamp | Kind::Timestamptz => (days_from_civil(294_277, 1, 1) as i128) * MICROS_PER_DAY,
    };
    match t {
        Time::At(v) if v < min || v >= max => Err(format!("out of range for type {}", kind_name(kind))),
        _ => Ok(t),
    }
}

/// Whether a (date) value lies within the timestamp range, so it casts to a
/// timestamp without error.
pub(crate) fn within_timestamp_range(t: Time) -> bool {
    match t {
        Time::At(v) => {
            let min = days_from_civil(-4713, 11, 24) as i128 * MICROS_PER_DAY;
            let max = days_from_civil(294_277, 1, 1) as i128 * MICROS_PER_DAY;
            (min..max).contains(&v)
        }
        _ => true,
    }
}

pub(crate) fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Date => "date",
        Kind::Timestamp => "timestamp",
        Kind::Timestamptz => "timestamptz",
    }
}

/// An offset's magnitude after its sign: `HH`, `HH:MM`, `HH:MM:SS`, or (in
/// literals) `HHMM`.
fn offset(c: &mut Cur<'_>, literal: bool) -> Option<i64> {
    let (v, n) = c.digits(2, 4)?;
    let (h, mut m, mut sec) = match n {
        4 if literal => (v / 100, v % 100, 0),
        2 => (v, 0, 0),
        _ => return None,
    };
    if n == 2 && c.eat(b':') {
        m = c.digits(2, 2)?.0;
        if c.eat(b':') {
            sec = c.digits(2, 2)?.0;
        }
    }
    (m <= 59 && sec <= 59).then_some(h * 3600 + m * 60 + sec)
}

fn parse(kind: Kind, s: &str, literal: bool) -> Result<Time, Refusal> {
    let bad = || match kind {
        Kind::Date => "not a date in ISO form (YYYY-MM-DD, without a time of day)".to_owned(),
        _ => format!("not a {} in ISO form (YYYY-MM-DD[ HH:MM[:SS[.ffffff]]])", kind_name(kind)),
    };
    let mut c = Cur { b: s.as_bytes(), i: 0 };
    let (year, _) = c.digits(4, 7).ok_or_else(bad)?;
    let month = if c.eat(b'-') { c.digits(2, 2).map(|d| d.0) } else { None }.ok_or_else(bad)?;
    let day = if c.eat(b'-') { c.digits(2, 2).map(|d| d.0) } else { None }.ok_or_else(bad)?;
    let mut micros: i128 = 0;
    let mut offset_secs: i64 = 0;
    let time_follows = match c.rest() {
        [b' ', d, ..] => d.is_ascii_digit(),
        [b'T', d, ..] => literal && d.is_ascii_digit(),
        _ => false,
    };
    if kind != Kind::Date && time_follows {
        c.i += 1;
        let (h, _) = c.digits(2, 2).ok_or_else(bad)?;
        let m = if c.eat(b':') { c.digits(2, 2).map(|d| d.0) } else { None }.ok_or_else(bad)?;
        let mut sec = 0;
        let mut frac: i128 = 0;
        if c.eat(b':') {
            sec = c.digits(2, 2).ok_or_else(bad)?.0;
            if c.eat(b'.') {
                let (f, n) = c
                    .digits(1, 6)
                    .ok_or_else(|| "more precise than microseconds (Postgres would round it)".to_owned())?;
                frac = i128::from(f) * 10i128.pow(6 - n as u32);
            }
        } else if !literal {
            return Err(bad());
        }
        if h > 23 || m > 59 || sec > 59 {
            return Err("not a valid time of day".into());
        }
        micros = (i128::from(h) * 3600 + i128::from(m) * 60 + i128::from(sec)) * 1_000_000 + frac;
        match c.peek() {
            Some(sign @ (b'+' | b'-')) => {
                if kind != Kind::Timestamptz {
                    return Err("a time with an offset, which timestamp without time zone would ignore".into());
                }
                c.i += 1;
                offset_secs = offset(&mut c, literal).ok_or_else(bad)?;
                if offset_secs.abs() >= 16 * 3600 {
                    return Err("a time with an offset out of range".into());
                }
                if sign == b'-' {
                    offset_secs = -offset_secs;
                }
            }
            Some(b'Z') if literal && kind == Kind::Timestamptz => c.i += 1,
            _ if !literal && kind == Kind::Timestamptz => return Err(bad()),
            _ => {}
        }
    } else if !literal && kind != Kind::Date {
        return Err(bad());
    }
    let mut bc = false;
    let rest = c.rest();
    if rest.eq_ignore_ascii_case(b" BC") && (literal || rest == b" BC") {
        bc = true;
    } else if !(rest.is_empty() || (literal && rest.eq_ignore_ascii_case(b" AD"))) {
        return Err(bad());
    }
    if year == 0
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(if bc { 1 - year } else { year }, month)
    {
        return Err("not a valid date".into());
    }
    let y = if bc { 1 - year } else { year };
    let days = i128::from(days_from_civil(y, month, day));
    Ok(Time::At(days * MICROS_PER_DAY + micros - i128::from(offset_secs) * 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_points() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        // Julian day 0 (Postgres' first date) is 2440588 days before 1970.
        assert_eq!(days_from_civil(-4713, 11, 24), -2_440_588);
    }

    #[test]
    fn reads_output_forms() {
        let d = parse_output(Kind::Date, "1970-01-02").unwrap();
        assert_eq!(d, Time::At(MICROS_PER_DAY));
        let t = parse_output(Kind::Timestamptz, "1970-01-01 01:00:00.5+01").unwrap();
        assert_eq!(t, Time::At(500_000));
        assert_eq!(
            parse_output(Kind::Timestamp, "0001-01-01 00:00:00 BC"),
            parse_literal(Kind::Timestamp, "0001-01-01 bc").ok()
        );
        assert!(parse_literal(Kind::Date, "0000-01-01").is_err());
        assert!(parse_output(Kind::Timestamp, "2026-01-01").is_none());
        assert!(parse_output(Kind::Date, "2026-02-29").is_none());
        assert_eq!(parse_output(Kind::Date, "-infinity"), Some(Time::NegInf));
    }
}
