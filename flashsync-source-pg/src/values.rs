//! Postgres text output → [`Value`]: the one mapping both paths use (DESIGN
//! §4.6).
//!
//! The snapshot (`COPY ... TO STDOUT`, text format) and the change feed
//! (`pgoutput`, text tuples) both carry each value as its type's text output
//! function produced it under the pinned session settings
//! ([`crate::session`]). Mapping that text through this single function is
//! what makes a row read by either path identical locally:
//!
//! | Postgres type | [`Value`] |
//! |---|---|
//! | `int2`, `int4`, `int8`, `oid` | `Int` |
//! | `bool` | `Bool` |
//! | `float4`, `float8` (NaN, ±Infinity) | `Float` |
//! | `bytea` (hex or escape output) | `Bytes` |
//! | everything else: numeric, dates and times, interval, uuid, json(b), arrays, enums, text, domains, ... | `Text`, verbatim |
//!
//! Domains are mapped by their own OID, so a domain over `int4` is `Text` —
//! the same on both paths, since both name the column's declared type.

use flashsync_core::{Value, ValueRef};

/// Built-in type OIDs this mapping treats specially.
pub mod oid {
    /// `bool`
    pub const BOOL: u32 = 16;
    /// `bytea`
    pub const BYTEA: u32 = 17;
    /// `int8`
    pub const INT8: u32 = 20;
    /// `int2`
    pub const INT2: u32 = 21;
    /// `int4`
    pub const INT4: u32 = 23;
    /// `oid`
    pub const OID: u32 = 26;
    /// `float4`
    pub const FLOAT4: u32 = 700;
    /// `float8`
    pub const FLOAT8: u32 = 701;
}

/// A value's text did not parse as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read a value of type OID {type_oid} from its text form: {detail}")]
pub struct ValueError {
    /// The column's type.
    pub type_oid: u32,
    /// What was wrong (never the value itself, which may be sensitive).
    pub detail: &'static str,
}

/// Maps one non-NULL value in its type's text output form to a [`Value`].
///
/// ```
/// use flashsync_source_pg::values::{text_to_value, oid};
/// use flashsync_core::{Value, ValueRef};
/// assert_eq!(text_to_value(oid::INT4, b"-42")?, Value::Int(-42));
/// assert_eq!(text_to_value(oid::BYTEA, b"\\x00ff")?, Value::Bytes(vec![0, 255]));
/// assert_eq!(text_to_value(1700, b"NaN")?, Value::Text("NaN".into()));
/// # Ok::<(), flashsync_source_pg::values::ValueError>(())
/// ```
pub fn text_to_value(type_oid: u32, text: &[u8]) -> Result<Value, ValueError> {
    Ok(match parse_text(type_oid, text)? {
        Parsed::Value(v) => v.to_value(),
        Parsed::Bytes(b) => Value::Bytes(b),
    })
}

/// A value parsed from its text form: borrowed from the text where it can be.
#[derive(Debug, PartialEq)]
pub enum Parsed<'a> {
    /// Anything but `bytea`.
    Value(ValueRef<'a>),
    /// `bytea`, decoded.
    Bytes(Vec<u8>),
}

impl Parsed<'_> {
    /// The value, borrowed.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Parsed::Value(v) => *v,
            Parsed::Bytes(b) => ValueRef::Bytes(b),
        }
    }
}

/// [`text_to_value`] without the allocation: the one mapping, which both the
/// snapshot's encoder and the stream's rows go through.
pub fn parse_text(type_oid: u32, text: &[u8]) -> Result<Parsed<'_>, ValueError> {
    let err = |detail| ValueError { type_oid, detail };
    let s = std::str::from_utf8(text).map_err(|_| err("not valid UTF-8"))?;
    if type_oid == oid::BYTEA {
        return Ok(Parsed::Bytes(decode_bytea(text).ok_or_else(|| err("not bytea output"))?));
    }
    Ok(Parsed::Value(match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => {
            ValueRef::Int(s.parse::<i64>().map_err(|_| err("not an integer"))?)
        }
        oid::BOOL => match s {
            "t" => ValueRef::Bool(true),
            "f" => ValueRef::Bool(false),
            _ => return Err(err("not a boolean (expected t or f)")),
        },
        oid::FLOAT4 => ValueRef::Float(f64::from(parse_float::<f32>(s).ok_or_else(|| err("not a float4"))?)),
        oid::FLOAT8 => ValueRef::Float(parse_float::<f64>(s).ok_or_else(|| err("not a float8"))?),
        _ => ValueRef::Text(s),
    }))
}

/// Parses Postgres float output; `extra_float_digits = 3` makes it the
/// shortest text that reads back exactly, so parsing at the column's own
/// width recovers the stored value bit for bit.
fn parse_float<F: std::str::FromStr + FloatSpecials>(s: &str) -> Option<F> {
    match s {
        "NaN" => Some(F::NAN),
        "Infinity" => Some(F::INFINITY),
        "-Infinity" => Some(F::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

trait FloatSpecials {
    const NAN: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
}

impl FloatSpecials for f32 {
    const NAN: Self = f32::NAN;
    const INFINITY: Self = f32::INFINITY;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
}

impl FloatSpecials for f64 {
    const NAN: Self = f64::NAN;
    const INFINITY: Self = f64::INFINITY;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
}

/// Decodes `bytea` output: hex (`\x0aff`, the pinned `bytea_output`) or the
/// legacy escape format (`\\`, `\ooo`, other bytes literal).
pub fn decode_bytea(text: &[u8]) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return None;
        }
        return hex.chunks_exact(2).map(|p| Some(hex_digit(p[0])? << 4 | hex_digit(p[1])?)).collect();
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
        } else if text.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = text.get(i + 1..i + 4)?;
            let mut v: u16 = 0;
            for &d in oct {
                if !(b'0'..=b'7').contains(&d) {
                    return None;
                }
                v = v * 8 + u16::from(d - b'0');
            }
            out.push(u8::try_from(v).ok()?);
            i += 4;
        }
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_scalars_and_specials() {
        assert_eq!(text_to_value(oid::INT8, b"-9223372036854775808"), Ok(Value::Int(i64::MIN)));
        assert_eq!(text_to_value(oid::OID, b"4294967295"), Ok(Value::Int(4_294_967_295)));
        assert_eq!(text_to_value(oid::BOOL, b"t"), Ok(Value::Bool(true)));
        assert!(text_to_value(oid::BOOL, b"true").is_err());
        assert_eq!(text_to_value(oid::FLOAT8, b"NaN"), Ok(Value::Float(f64::NAN)));
        assert_eq!(text_to_value(oid::FLOAT8, b"-Infinity"), Ok(Value::Float(f64::NEG_INFINITY)));
        assert_eq!(text_to_value(oid::FLOAT4, b"1.1"), Ok(Value::Float(f64::from(1.1f32))));
        assert_eq!(text_to_value(oid::FLOAT8, b"0.1"), Ok(Value::Float(0.1)));
        assert!(text_to_value(oid::INT4, b"x").is_err());
        assert!(text_to_value(25, &[0xff]).is_err());
        assert_eq!(text_to_value(25, "tä".as_bytes()), Ok(Value::Text("tä".into())));
    }

    #[test]
    fn decodes_bytea_both_formats() {
        assert_eq!(decode_bytea(b"\\x"), Some(vec![]));
        assert_eq!(decode_bytea(b"\\xDEADbeef"), Some(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(decode_bytea(b"\\x0"), None);
        assert_eq!(decode_bytea(b"\\xzz"), None);
        assert_eq!(decode_bytea(b"a\\\\b\\000\\377"), Some(vec![b'a', b'\\', b'b', 0, 255]));
        assert_eq!(decode_bytea(b"\\400"), None);
        assert_eq!(decode_bytea(b"\\1"), None);
    }
}
