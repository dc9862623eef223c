//! One value of a row, presented to serde. The rules (documented on the
//! [module](super)) in one place:
//!
//! - NULL is `none` to an `Option` and unit to everything else (which then
//!   fails with [`TypedErrorKind::Null`]).
//! - Integers and floats narrow only when exact; otherwise an error.
//! - Text is the verbatim Postgres text, with three exceptions by column type:
//!   `json`/`jsonb` (with the `json` feature) is the parsed document except to
//!   string targets; `date`/`timestamp`/`timestamptz` are RFC 3339 to targets
//!   that ask for a `str` (chrono's types do, `String` does not); `numeric`
//!   too precise for a `Decimal` is refused to `deserialize_any` (which
//!   `Decimal` uses, and whose parser would round it).

use serde::de::{self, Visitor};

use super::error::{TypedError, TypedErrorKind};
use super::pgtext::{self, NumericError, TextKind};
use crate::schema::Column;
use crate::value::Value;

/// 2^63: every `i64` is below it, and it is exact as a float.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

pub(crate) struct CellDe<'r> {
    value: &'r Value,
    kind: TextKind,
}

impl<'r> CellDe<'r> {
    pub(crate) fn new(column: &Column, value: &'r Value) -> Self {
        CellDe { value, kind: TextKind::of(&column.type_name) }
    }

    fn text_any<V: Visitor<'r>>(self, text: &'r str, visitor: V) -> Result<V::Value, TypedError> {
        match self.kind {
            #[cfg(feature = "json")]
            TextKind::Json => {
                de::Deserializer::deserialize_any(super::json::JsonDe(&super::json::parse(text)?), visitor)
            }
            TextKind::Numeric => match pgtext::parse_numeric(text) {
                // rust_decimal's serde impl asks for `any` and would round
                // this; refusing is the only way to keep it exact.
                Err(e @ NumericError::TooPrecise(_)) => Err(e.into_typed()),
                _ => visitor.visit_borrowed_str(text),
            },
            _ => visitor.visit_borrowed_str(text),
        }
    }
}

fn out_of_range(found: &'static str, target: &'static str) -> TypedError {
    TypedError::new(TypedErrorKind::OutOfRange { found, target })
}

/// An `i64` as `f64`, if the float is exactly that integer.
fn exact_f64(i: i64) -> Option<f64> {
    let f = i as f64;
    // `f as i64` saturates, so also rule out 2^63 (what i64::MAX rounds to).
    (f < TWO_POW_63 && f as i64 == i).then_some(f)
}

/// Integer targets: checked narrowing, never truncation.
macro_rules! narrow {
    ($($method:ident $visit:ident $ty:ty;)*) => {$(
        fn $method<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
            match self.value {
                Value::Int(i) => match <$ty>::try_from(*i) {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(out_of_range("an integer", stringify!($ty))),
                },
                _ => self.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'r> de::Deserializer<'r> for CellDe<'r> {
    type Error = TypedError;

    fn deserialize_any<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Text(s) => self.text_any(s, visitor),
            Value::Bytes(b) => visitor.visit_borrowed_bytes(b),
        }
    }

    narrow! {
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i128 visit_i128 i128;
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
        deserialize_u128 visit_u128 u128;
    }

    fn deserialize_f64<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.value {
            Value::Int(i) => {
                exact_f64(*i).map_or_else(|| Err(out_of_range("an integer", "f64")), |f| visitor.visit_f64(f))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.value {
            // float4 columns arrive widened to f64; narrowing back is exact
            // for them, and refused for float8 values an f32 would round.
            Value::Float(x) => {
                let narrow = *x as f32;
                if x.is_nan() || f64::from(narrow) == *x {
                    visitor.visit_f32(narrow)
                } else {
                    Err(out_of_range("a float", "f32"))
                }
            }
            Value::Int(i) => {
                let narrow = *i as f32;
                let wide = f64::from(narrow);
                if wide < TWO_POW_63 && narrow as i64 == *i {
                    visitor.visit_f32(narrow)
                } else {
                    Err(out_of_range("an integer", "f32"))
                }
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match (self.value, self.kind) {
            // chrono's serde impls ask for a `str` and read RFC 3339 only.
            (Value::Text(s), TextKind::Temporal(shape)) => match pgtext::parse_datetime(s, shape, "RFC 3339 date/time")
            {
                Ok(parsed) => {
                    let rfc3339 = parsed.rfc3339();
                    if rfc3339 == *s {
                        visitor.visit_borrowed_str(s)
                    } else {
                        visitor.visit_string(rfc3339)
                    }
                }
                Err(e @ TypedError { kind: TypedErrorKind::Unrepresentable { .. }, .. }) => Err(e),
                // Not the ISO form we know: leave it to the target.
                Err(_) => visitor.visit_borrowed_str(s),
            },
            (Value::Text(s), _) => visitor.visit_borrowed_str(s),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.value {
            Value::Text(s) => visitor.visit_borrowed_str(s),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_char<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_bytes<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            // JSON `null` in a json column is not SQL NULL: it is `Some`.
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'r>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.value {
            // `Vec<u8>` asks for a sequence.
            Value::Bytes(bytes) => {
                let mut seq = de::value::SeqDeserializer::<_, TypedError>::new(bytes.iter().copied());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'r>>(self, _len: usize, visitor: V) -> Result<V::Value, TypedError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'r>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'r>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        let _ = (name, variants); // only the json arm needs them
        match (self.value, self.kind) {
            #[cfg(feature = "json")]
            (Value::Text(s), TextKind::Json) => de::Deserializer::deserialize_enum(
                super::json::JsonDe(&super::json::parse(s)?),
                name,
                variants,
                visitor,
            ),
            // A Postgres enum (or any text) names a unit variant.
            (Value::Text(s), _) => visitor.visit_enum(de::value::BorrowedStrDeserializer::new(s)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        // Skipped columns are not parsed (a large unread json column costs nothing).
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'r>>
        bool i64 unit unit_struct map struct
    }
}
