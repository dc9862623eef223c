//! A row as serde sees it: a map from column name to value (for structs and
//! maps), or a sequence of values in column order (for tuples and `Vec`s).
//! Hand-written rather than a round trip through JSON, which would lose
//! integer/float distinctions and cost an allocation per value.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};

use super::cell::CellDe;
use super::error::{ExpectedFewer, TypedError, TypedErrorKind};
use crate::schema::{Column, RelationSchema};
use crate::value::{Row, Value};

/// Reads `row` (of a relation with `schema`) as a `T`: a struct by column
/// name, a tuple by position. See the [module docs](super) for what each
/// Postgres type can become.
///
/// Columns the struct does not name are skipped; a field no column fills is
/// an error unless it is an `Option` or has `#[serde(default)]`.
pub fn from_row<T: DeserializeOwned>(schema: &RelationSchema, row: &Row) -> Result<T, TypedError> {
    from_row_borrowed(schema, row)
}

/// [`from_row`] for types that borrow from the row: `&str`, `&[u8]` and
/// `Cow<str>` fields (with `#[serde(borrow)]`) point into its values instead
/// of copying them.
pub fn from_row_borrowed<'r, T: de::Deserialize<'r>>(
    schema: &'r RelationSchema,
    row: &'r Row,
) -> Result<T, TypedError> {
    T::deserialize(RowDeserializer::new(schema, row)?)
}

/// The [`serde::Deserializer`] behind [`from_row`], for callers that drive
/// serde themselves (with a `DeserializeSeed`, or an error-path tracker).
#[derive(Clone, Copy, Debug)]
pub struct RowDeserializer<'r> {
    schema: &'r RelationSchema,
    row: &'r Row,
}

impl<'r> RowDeserializer<'r> {
    /// A deserializer for `row`; fails if the row's width is not the schema's.
    pub fn new(schema: &'r RelationSchema, row: &'r Row) -> Result<Self, TypedError> {
        if schema.columns.len() != row.0.len() {
            return Err(TypedError::new(TypedErrorKind::Width { columns: schema.columns.len(), values: row.0.len() }));
        }
        Ok(RowDeserializer { schema, row })
    }

    fn cells(&self) -> Cells<'r> {
        Cells { columns: self.schema.columns.iter(), values: self.row.0.iter(), pending: None }
    }
}

impl<'r> de::Deserializer<'r> for RowDeserializer<'r> {
    type Error = TypedError;

    fn deserialize_any<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        visitor.visit_map(self.cells())
    }

    fn deserialize_seq<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        let mut cells = self.cells();
        let value = visitor.visit_seq(&mut cells)?;
        // A tuple shorter than the row is a mistake, not a projection: it
        // would read the wrong columns as soon as the schema changes.
        match cells.values.len() {
            0 => Ok(value),
            left => {
                let width = self.row.0.len();
                Err(de::Error::invalid_length(width, &ExpectedFewer(width - left)))
            }
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

    fn deserialize_newtype_struct<V: Visitor<'r>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_option<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        visitor.visit_some(self)
    }

    fn deserialize_ignored_any<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, TypedError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'r>>
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct map struct enum identifier
    }
}

/// The row's (column, value) pairs, as a map or a sequence.
struct Cells<'r> {
    columns: std::slice::Iter<'r, Column>,
    values: std::slice::Iter<'r, Value>,
    /// The cell whose key the map visitor has just read.
    pending: Option<(&'r Column, &'r Value)>,
}

impl<'r> Cells<'r> {
    fn next_cell(&mut self) -> Option<(&'r Column, &'r Value)> {
        Some((self.columns.next()?, self.values.next()?))
    }
}

/// Reads one cell, naming its column in any error.
fn cell<'r, S: DeserializeSeed<'r>>(seed: S, column: &'r Column, value: &'r Value) -> Result<S::Value, TypedError> {
    seed.deserialize(CellDe::new(column, value)).map_err(|e| e.in_column(column))
}

impl<'r> de::MapAccess<'r> for Cells<'r> {
    type Error = TypedError;

    fn next_key_seed<K: DeserializeSeed<'r>>(&mut self, seed: K) -> Result<Option<K::Value>, TypedError> {
        self.pending = self.next_cell();
        match self.pending {
            Some((column, _)) => seed.deserialize(de::value::BorrowedStrDeserializer::new(&column.name)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'r>>(&mut self, seed: V) -> Result<V::Value, TypedError> {
        match self.pending.take() {
            Some((column, value)) => cell(seed, column, value),
            // Only a misbehaving visitor asks for a value before its key.
            None => Err(de::Error::custom("a column value was asked for before its name")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.values.len())
    }
}

impl<'r> de::SeqAccess<'r> for Cells<'r> {
    type Error = TypedError;

    fn next_element_seed<T: DeserializeSeed<'r>>(&mut self, seed: T) -> Result<Option<T::Value>, TypedError> {
        self.next_cell().map(|(column, value)| cell(seed, column, value)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.values.len())
    }
}
