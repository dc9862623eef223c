//! What can be wrong with a filter: it does not parse, uses something outside
//! the language, or does not fit the relation it is bound to.

/// A row filter that cannot be used. Messages name the offending construct or
/// column, so a user can fix the definition without reading code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredicateError {
    /// The filter is empty (or only whitespace and comments).
    #[error("the filter is empty")]
    Empty,
    /// The text is not a SQL expression.
    #[error("syntax error: {message}")]
    Syntax {
        /// What the parser expected and found.
        message: String,
    },
    /// Valid SQL, but outside the language a filter may use (functions,
    /// subqueries, `;`, CASE, arithmetic, casts to unsupported types, ...):
    /// only what flashsync evaluates exactly like Postgres is accepted.
    #[error("{construct} is not supported in a row filter")]
    Unsupported {
        /// The construct, e.g. "subquery", "function call lower()", "`;`".
        construct: String,
    },
    /// A column the relation does not have.
    #[error("column \"{name}\" does not exist")]
    UnknownColumn {
        /// The column name, as resolved (unquoted names folded to lower case).
        name: String,
    },
    /// Values of incompatible types, or a literal that is not a value of the
    /// type it is compared with (Postgres would refuse the query).
    #[error("{message}")]
    Type {
        /// What does not fit, naming the column or literal.
        message: String,
    },
    /// `<`, `<=`, `>`, `>=` or BETWEEN on text.
    #[error("column \"{column}\": ordering text depends on the server's collation; use =, <>, IN or LIKE")]
    TextOrdering {
        /// The column (or literal) that was ordered.
        column: String,
    },
    /// The filter reads a column of a type it cannot evaluate exactly.
    #[error("column \"{column}\" has type {type_name}, which a row filter cannot read")]
    UnsupportedType {
        /// The column.
        column: String,
        /// Its Postgres type name.
        type_name: String,
    },
}

impl PredicateError {
    pub(crate) fn syntax(message: impl Into<String>) -> Self {
        PredicateError::Syntax { message: message.into() }
    }

    pub(crate) fn unsupported(construct: impl Into<String>) -> Self {
        PredicateError::Unsupported { construct: construct.into() }
    }

    pub(crate) fn type_error(message: impl Into<String>) -> Self {
        PredicateError::Type { message: message.into() }
    }
}
