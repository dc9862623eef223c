//! A deserializer over a parsed JSON document (the `json` feature), so a
//! `json`/`jsonb` column can fill a `serde_json::Value` or any `Deserialize`
//! type. It is ours rather than serde_json's own `&Value` deserializer so that
//! errors are [`TypedError`]s, which name the column and leave the document's
//! contents out of the message.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::Value as Json;

use super::error::{ExpectedFewer, TypedError};

/// Parses a json/jsonb column's text.
pub(crate) fn parse(text: &str) -> Result<Json, TypedError> {
    // serde_json's error could quote the document; say only what failed.
    serde_json::from_str(text).map_err(|_| TypedError::malformed("JSON", "does not parse"))
}

/// Presents one JSON value.
pub(crate) struct JsonDe<'j>(pub(crate) &'j Json);

impl<'de> de::Deserializer<'de> for JsonDe<'_> {
    type Error = TypedError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Json::Null => visitor.visit_unit(),
            Json::Bool(b) => visitor.visit_bool(*b),
            Json::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else if let Some(f) = n.as_f64() {
                    visitor.visit_f64(f)
                } else {
                    Err(TypedError::malformed("JSON", "number out of range"))
                }
            }
            Json::String(s) => visitor.visit_str(s),
            Json::Array(items) => {
                let mut seq = JsonSeq { items: items.iter() };
                let value = visitor.visit_seq(&mut seq)?;
                match seq.items.len() {
                    0 => Ok(value),
                    left => Err(de::Error::invalid_length(items.len(), &ExpectedFewer(items.len() - left))),
                }
            }
            Json::Object(map) => visitor.visit_map(JsonMap { entries: map.iter(), value: None }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Json::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        // serde_json's conventions: `"Variant"` or `{"Variant": content}`.
        match self.0 {
            Json::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Json::Object(map) if map.len() == 1 => match map.iter().next() {
                Some((variant, content)) => visitor.visit_enum(JsonEnum { variant, content }),
                None => Err(TypedError::mismatch("an enum", "an empty map")),
            },
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

struct JsonSeq<'j> {
    items: std::slice::Iter<'j, Json>,
}

impl<'de> de::SeqAccess<'de> for JsonSeq<'_> {
    type Error = TypedError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, TypedError> {
        self.items.next().map(|item| seed.deserialize(JsonDe(item))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct JsonMap<'j> {
    entries: serde_json::map::Iter<'j>,
    value: Option<&'j Json>,
}

impl<'de> de::MapAccess<'de> for JsonMap<'_> {
    type Error = TypedError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TypedError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.as_str().into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TypedError> {
        match self.value.take() {
            Some(value) => seed.deserialize(JsonDe(value)),
            // Only a misbehaving visitor asks for a value before its key.
            None => Err(de::Error::custom("a map value was asked for before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct JsonEnum<'j> {
    variant: &'j str,
    content: &'j Json,
}

impl<'de, 'j> de::EnumAccess<'de> for JsonEnum<'j> {
    type Error = TypedError;
    type Variant = JsonDe<'j>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, JsonDe<'j>), TypedError> {
        let variant = seed.deserialize(self.variant.into_deserializer())?;
        Ok((variant, JsonDe(self.content)))
    }
}

impl<'de> de::VariantAccess<'de> for JsonDe<'_> {
    type Error = TypedError;

    fn unit_variant(self) -> Result<(), TypedError> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, TypedError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, TypedError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}
