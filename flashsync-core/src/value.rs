//! Values, rows and keys as flashsync stores them.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One column value of a mirrored row.
///
/// Sources map upstream types onto these variants and must do it the same way
/// on every path (snapshot and stream), so a row reads back identically
/// however it arrived. The Postgres source keeps integers and booleans typed,
/// `float4`/`float8` as [`Value::Float`], `bytea` as [`Value::Bytes`], and
/// every other type (numeric, dates and times, intervals, uuid, json, arrays,
/// enums, ...) as its canonical Postgres text form in [`Value::Text`] — exact,
/// and lossless by construction.
///
/// Equality and ordering are total: `NaN == NaN`, and floats order by IEEE 754
/// `totalOrder`. Across variants the order is the declaration order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer type up to 64 bits.
    Int(i64),
    /// A binary floating-point value (NaN and the infinities included).
    Float(f64),
    /// Text, or the canonical text form of a type without its own variant.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// A borrowed view of a [`Value`]: what a source that parses its own wire
/// format hands an encoder without allocating (see
/// [`EncodedRowsBuilder`](crate::encoded::EncodedRowsBuilder)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Bytes(&'a [u8]),
}

impl ValueRef<'_> {
    /// The owned value.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(x) => Value::Float(x),
            ValueRef::Text(s) => Value::Text(s.to_owned()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
        }
    }
}

impl Value {
    /// A borrowed view of this value.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(x) => ValueRef::Float(*x),
            Value::Text(s) => ValueRef::Text(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Text(_) => 4,
            Value::Bytes(_) => 5,
        }
    }

    /// A rough count of the heap and inline bytes this value holds; used to
    /// bound buffers, not for exact accounting.
    pub fn approx_size(&self) -> usize {
        16 + match self {
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => {
                f.write_str("\\x")?;
                b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A full row: one value per column of the view's schema, in column order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Rough size in bytes (see [`Value::approx_size`]).
    pub fn approx_size(&self) -> usize {
        24 + self.0.iter().map(Value::approx_size).sum::<usize>()
    }
}

/// The identity of a row inside a view: the values of its key columns, in key
/// order. Stored with an order-preserving encoding
/// ([`encode_key`](crate::codec::encode_key)), so scans return rows in key order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Key(pub Vec<Value>);

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            // Hash agrees with total_cmp equality: bit patterns compare equal
            // exactly when total_cmp says Equal.
            Value::Float(x) => x.to_bits().hash(state),
            Value::Text(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
        }
    }
}

/// Builds a [`Row`] from anything convertible to [`Value`]s.
///
/// ```
/// use flashsync_core::{row, Value};
/// let r = row![1, "ada", None::<i64>];
/// assert_eq!(r.0, vec![Value::Int(1), Value::Text("ada".into()), Value::Null]);
/// ```
#[macro_export]
macro_rules! row {
    ($($v:expr),* $(,)?) => { $crate::Row(vec![$($crate::Value::from($v)),*]) };
}

/// Builds a [`Key`] from anything convertible to [`Value`]s.
#[macro_export]
macro_rules! key {
    ($($v:expr),* $(,)?) => { $crate::Key(vec![$($crate::Value::from($v)),*]) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_equals_itself_and_orders_last_among_positive_floats() {
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
        assert!(Value::Float(f64::INFINITY) < Value::Float(f64::NAN));
        assert!(Value::Null < Value::Int(i64::MIN));
    }
}
