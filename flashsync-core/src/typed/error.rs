//! The one error type of the typed layer.
//!
//! Messages name the column, its upstream type and what was expected versus
//! what kind of value was found — never the value itself: rows hold user
//! data, and errors end up in logs. The one exception is
//! [`TypedErrorKind::Custom`], whose text comes from the target type's own
//! `Deserialize` impl, which this crate cannot vet.

use std::fmt;

use serde::de::{Expected, Unexpected};

use crate::schema::Column;

/// Why a value could not become the requested type, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{kind}", Place::of(.column, .type_name))]
#[non_exhaustive]
pub struct TypedError {
    /// The column the value came from, when known (always, from
    /// [`from_row`](super::from_row), except for errors about the row as a
    /// whole such as a missing field).
    pub column: Option<String>,
    /// That column's upstream type name, when known.
    pub type_name: Option<String>,
    /// What went wrong.
    pub kind: TypedErrorKind,
}

/// What went wrong in a [`TypedError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypedErrorKind {
    /// The row does not have one value per column of the schema.
    #[error("row has {values} values but the schema has {columns} columns")]
    Width {
        /// Columns in the schema.
        columns: usize,
        /// Values in the row.
        values: usize,
    },
    /// SQL NULL where the target is not an `Option`.
    #[error("NULL, but {expected} is not optional (use Option)")]
    Null {
        /// What the target expected.
        expected: String,
    },
    /// The value is of a kind the target does not take (an integer for a
    /// `String`, text for an `f64`, ...).
    #[error("expected {expected}, found {found}")]
    Mismatch {
        /// What the target expected.
        expected: String,
        /// The kind of value found (`an integer`, `a string`, ...).
        found: &'static str,
    },
    /// A number outside the target's range, or one the target would round
    /// (an `int8` into an `i16`, a `float8` into an `f32`).
    #[error("{found} out of range for {target}, or not exactly representable in it")]
    OutOfRange {
        /// The kind of value found.
        found: &'static str,
        /// The target type.
        target: &'static str,
    },
    /// A well-formed value the target cannot hold exactly: numeric `NaN`,
    /// more digits than a `Decimal` holds, a timestamp of `infinity`, a year
    /// beyond chrono's range, ...
    #[error("{reason}: no {target} holds it exactly")]
    Unrepresentable {
        /// The target type.
        target: &'static str,
        /// Which property of the value is the problem (`NaN`, `infinity`,
        /// `more than 28 fractional digits`, ...).
        reason: &'static str,
    },
    /// Text that is not in the Postgres output form the conversion reads.
    #[error("not a Postgres {form} text value ({detail})")]
    Malformed {
        /// The form expected (`numeric`, `timestamp`, `uuid`, `JSON`, ...).
        form: &'static str,
        /// What is wrong with it, in general terms.
        detail: &'static str,
    },
    /// A value of the right kind that the target rejected (serde's
    /// `invalid_value`), e.g. a string a `Uuid` does not parse.
    #[error("invalid {found}, expected {expected}")]
    Invalid {
        /// What the target expected.
        expected: String,
        /// The kind of value found.
        found: &'static str,
    },
    /// A sequence (a row read by position, or a JSON array) of the wrong length.
    #[error("{len} elements, expected {expected}")]
    Length {
        /// Elements found.
        len: usize,
        /// What the target expected.
        expected: String,
    },
    /// Text that names none of an enum's variants. The text itself is left
    /// out: it is row data.
    #[error("unknown variant, expected one of {}", OneOf(.expected))]
    UnknownVariant {
        /// The variants the enum has.
        expected: &'static [&'static str],
    },
    /// A column or JSON key the target does not know (only for targets with
    /// `#[serde(deny_unknown_fields)]`; by default unknown columns are skipped).
    #[error("unknown field `{field}`")]
    UnknownField {
        /// The column name or JSON key.
        field: String,
    },
    /// The target needs a field that no column (or JSON key) provides.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field's (serialized) name.
        field: &'static str,
    },
    /// Any other message, from the target type's own `Deserialize` impl.
    #[error("{0}")]
    Custom(String),
}

impl TypedError {
    /// An error not (yet) tied to a column.
    pub fn new(kind: TypedErrorKind) -> Self {
        TypedError { column: None, type_name: None, kind }
    }

    /// Names `column` as the place of the error, unless one is named already
    /// (the innermost place wins). Useful with the `Value::to_*` conversions,
    /// which do not know their column.
    pub fn in_column(mut self, column: &Column) -> Self {
        if self.column.is_none() {
            self.column = Some(column.name.clone());
            self.type_name = Some(column.type_name.clone());
        }
        self
    }

    pub(crate) fn mismatch(expected: impl fmt::Display, found: &'static str) -> Self {
        Self::new(TypedErrorKind::Mismatch { expected: expected.to_string(), found })
    }

    pub(crate) fn malformed(form: &'static str, detail: &'static str) -> Self {
        Self::new(TypedErrorKind::Malformed { form, detail })
    }

    pub(crate) fn unrepresentable(target: &'static str, reason: &'static str) -> Self {
        Self::new(TypedErrorKind::Unrepresentable { target, reason })
    }
}

impl serde::de::Error for TypedError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(TypedErrorKind::Custom(msg.to_string()))
    }

    // The overrides below keep the row's values out of the messages: serde's
    // defaults would print them (`invalid value: string "..."`).

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        match unexp {
            // Only SQL NULL (and JSON null) is presented as unit.
            Unexpected::Unit => Self::new(TypedErrorKind::Null { expected: exp.to_string() }),
            other => Self::mismatch(exp, describe(&other)),
        }
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::new(TypedErrorKind::Invalid { expected: exp.to_string(), found: describe(&unexp) })
    }

    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        Self::new(TypedErrorKind::Length { len, expected: exp.to_string() })
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(TypedErrorKind::UnknownVariant { expected })
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        Self::new(TypedErrorKind::UnknownField { field: field.to_owned() })
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(TypedErrorKind::MissingField { field })
    }
}

/// The kind of an unexpected value, without its content.
pub(crate) fn describe(unexp: &Unexpected<'_>) -> &'static str {
    match unexp {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a float",
        Unexpected::Char(_) => "a character",
        Unexpected::Str(_) => "a string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit => "NULL",
        Unexpected::Option => "an optional value",
        Unexpected::NewtypeStruct => "a newtype struct",
        Unexpected::Seq => "a sequence",
        Unexpected::Map => "a map",
        Unexpected::Enum => "an enum",
        Unexpected::UnitVariant => "a unit variant",
        Unexpected::NewtypeVariant => "a newtype variant",
        Unexpected::TupleVariant => "a tuple variant",
        Unexpected::StructVariant => "a struct variant",
        Unexpected::Other(_) => "another kind of value",
    }
}

/// `column `name` (type): ` before a message, or nothing.
struct Place<'a> {
    column: Option<&'a str>,
    type_name: Option<&'a str>,
}

impl<'a> Place<'a> {
    fn of(column: &'a Option<String>, type_name: &'a Option<String>) -> Self {
        Place { column: column.as_deref(), type_name: type_name.as_deref() }
    }
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.column, self.type_name) {
            (Some(c), Some(t)) => write!(f, "column `{c}` ({t}): "),
            (Some(c), None) => write!(f, "column `{c}`: "),
            (None, Some(t)) => write!(f, "{t} value: "),
            (None, None) => Ok(()),
        }
    }
}

/// `` `a`, `b` `` for a list of variant names.
struct OneOf<'a>(&'a [&'a str]);

impl fmt::Display for OneOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{name}`")?;
        }
        Ok(())
    }
}

/// "`n` elements", for a sequence that had more than its reader took.
pub(crate) struct ExpectedFewer(pub(crate) usize);

impl Expected for ExpectedFewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} elements", self.0)
    }
}
