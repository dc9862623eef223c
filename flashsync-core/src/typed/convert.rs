//! Exact conversions of one [`Value`] into a well-known crate's type, one
//! cargo feature per crate. Each reads the Postgres text form the source
//! stores (see the [module docs](super)) and fails rather than round, clamp
//! or guess. The errors do not know the column; add it with
//! [`TypedError::in_column`].

use super::error::{TypedError, TypedErrorKind};
#[cfg(any(feature = "decimal", feature = "chrono"))]
use super::pgtext;
#[cfg(feature = "chrono")]
use super::pgtext::{DateTimeText, Shape};
use crate::value::Value;

impl Value {
    /// The text of a `Text` value; NULL and other variants are errors
    /// naming `target`.
    fn text_for(&self, target: &'static str) -> Result<&str, TypedError> {
        match self {
            Value::Text(s) => Ok(s),
            other => Err(not_text(other, target)),
        }
    }
}

fn not_text(value: &Value, target: &'static str) -> TypedError {
    let found = match value {
        Value::Null => return TypedError::new(TypedErrorKind::Null { expected: target.to_owned() }),
        Value::Bool(_) => "a boolean",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Text(_) => "a string",
        Value::Bytes(_) => "bytes",
    };
    TypedError::mismatch(target, found)
}

#[cfg(feature = "decimal")]
impl Value {
    /// A `numeric` value as a [`rust_decimal::Decimal`], exactly (feature
    /// `decimal`).
    ///
    /// Reads `Text` in Postgres's numeric output form (`-12.340`, scale
    /// kept) and `Int` values. Fails for `NaN` and `±Infinity`, for more than
    /// 28 fractional digits (after dropping trailing zeros), and for more
    /// significant digits than a 96-bit mantissa holds — it never rounds.
    /// `Float` values are refused: their binary fraction rarely has an exact
    /// short decimal form.
    pub fn to_decimal(&self) -> Result<rust_decimal::Decimal, TypedError> {
        const TARGET: &str = "Decimal";
        if let Value::Int(i) = self {
            return Ok(rust_decimal::Decimal::from(*i));
        }
        let fixed = pgtext::parse_numeric(self.text_for(TARGET)?).map_err(pgtext::NumericError::into_typed)?;
        // Below 2^96 (checked by the parser), so within i128.
        let magnitude = i128::try_from(fixed.mantissa)
            .map_err(|_| TypedError::unrepresentable(TARGET, "more significant digits than 96 bits hold"))?;
        let signed = if fixed.negative { -magnitude } else { magnitude };
        rust_decimal::Decimal::try_from_i128_with_scale(signed, fixed.scale)
            .map_err(|_| TypedError::unrepresentable(TARGET, "more significant digits than 96 bits hold"))
    }
}

#[cfg(feature = "chrono")]
impl Value {
    /// A `date` value as a [`chrono::NaiveDate`] (feature `chrono`).
    ///
    /// Reads `YYYY-MM-DD` with an optional ` BC` (`0044-03-15 BC` is
    /// chrono's year -43: there is no year 0 in BC/AD counting, so `n BC` is
    /// year `1 - n`). Fails for `infinity`/`-infinity` and for years outside
    /// chrono's range (about ±262 000; Postgres dates reach 5 874 897 AD).
    pub fn to_naive_date(&self) -> Result<chrono::NaiveDate, TypedError> {
        const TARGET: &str = "NaiveDate";
        let text = pgtext::parse_datetime(self.text_for(TARGET)?, Shape::Date, TARGET)?;
        date(&text, TARGET)
    }

    /// A `timestamp` (without time zone) value as a
    /// [`chrono::NaiveDateTime`] (feature `chrono`).
    ///
    /// Reads `YYYY-MM-DD HH:MM:SS[.ffffff][ BC]`, fractional seconds exact to
    /// the nanosecond. Fails for `infinity`, for years outside chrono's
    /// range, and for text with a UTC offset (a `timestamptz`: use
    /// [`to_datetime_utc`](Self::to_datetime_utc)).
    pub fn to_naive_datetime(&self) -> Result<chrono::NaiveDateTime, TypedError> {
        const TARGET: &str = "NaiveDateTime";
        let text = pgtext::parse_datetime(self.text_for(TARGET)?, Shape::Timestamp, TARGET)?;
        datetime(&text, TARGET)
    }

    /// A `timestamptz` value as a [`chrono::DateTime<Utc>`](chrono::DateTime)
    /// (feature `chrono`).
    ///
    /// Reads `YYYY-MM-DD HH:MM:SS[.ffffff]+00[ BC]` (any offset, `+05:30`
    /// or `-03:00:00` too, converted to UTC). Fails for `infinity`, for
    /// years outside chrono's range, and for text without an offset (a
    /// `timestamp`: use [`to_naive_datetime`](Self::to_naive_datetime)).
    pub fn to_datetime_utc(&self) -> Result<chrono::DateTime<chrono::Utc>, TypedError> {
        const TARGET: &str = "DateTime<Utc>";
        let text = pgtext::parse_datetime(self.text_for(TARGET)?, Shape::TimestampTz, TARGET)?;
        let local = datetime(&text, TARGET)?;
        let offset = text
            .offset
            .and_then(chrono::FixedOffset::east_opt)
            .ok_or_else(|| TypedError::malformed("timestamptz", "UTC offset out of range"))?;
        local
            .checked_sub_offset(offset)
            .map(|utc| utc.and_utc())
            .ok_or_else(|| TypedError::unrepresentable(TARGET, "a year outside chrono's range"))
    }
}

#[cfg(feature = "chrono")]
fn date(text: &DateTimeText<'_>, target: &'static str) -> Result<chrono::NaiveDate, TypedError> {
    use chrono::Datelike as _;
    let year = i32::try_from(text.year)
        .ok()
        .filter(|y| (chrono::NaiveDate::MIN.year()..=chrono::NaiveDate::MAX.year()).contains(y))
        .ok_or_else(|| TypedError::unrepresentable(target, "a year outside chrono's range"))?;
    chrono::NaiveDate::from_ymd_opt(year, text.month, text.day)
        .ok_or_else(|| TypedError::malformed("date", "no such day in the calendar"))
}

#[cfg(feature = "chrono")]
fn datetime(text: &DateTimeText<'_>, target: &'static str) -> Result<chrono::NaiveDateTime, TypedError> {
    let day = date(text, target)?;
    let (h, m, s, _) = text.time.ok_or_else(|| TypedError::malformed("timestamp", "no time of day"))?;
    let time = chrono::NaiveTime::from_hms_nano_opt(h, m, s, text.nanos())
        .ok_or_else(|| TypedError::malformed("timestamp", "no such time of day"))?;
    Ok(day.and_time(time))
}

#[cfg(feature = "uuid")]
impl Value {
    /// A `uuid` value as a [`uuid::Uuid`] (feature `uuid`).
    ///
    /// Reads the hyphenated hex form Postgres prints (and the other forms
    /// `Uuid::try_parse` accepts).
    pub fn to_uuid(&self) -> Result<uuid::Uuid, TypedError> {
        let text = self.text_for("Uuid")?;
        // uuid's error quotes the offending character: keep it out.
        uuid::Uuid::try_parse(text)
            .map_err(|_| TypedError::malformed("uuid", "expected 32 hex digits in 8-4-4-4-12 groups"))
    }
}

#[cfg(feature = "json")]
impl Value {
    /// A `json` or `jsonb` value's document as a [`serde_json::Value`]
    /// (feature `json`).
    ///
    /// Parses the `Text`. Numbers keep what serde_json keeps: integers up
    /// to 64 bits exactly, others as `f64`.
    pub fn to_json(&self) -> Result<serde_json::Value, TypedError> {
        super::json::parse(self.text_for("JSON")?)
    }
}
