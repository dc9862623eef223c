//! Typed errors. Messages name what failed and why, never secrets.

use crate::view::{RelationId, UpstreamRelation};

/// A view definition (or one of its names) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// A required part is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which part.
        what: &'static str,
    },
    /// A part is too long.
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which part.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A part contains a control character (or NUL).
    #[error("{what} must not contain control characters")]
    ControlCharacter {
        /// Which part.
        what: &'static str,
    },
    /// A view's namespace or name contains `*`, which every selector reads
    /// as a wildcard: the view could never be named alone.
    #[error("{what} must not contain `*`: selectors read it as a wildcard, so the view could not be named alone")]
    Wildcard {
        /// Which part.
        what: &'static str,
    },
    /// An origin id with characters outside `[A-Za-z0-9_.:-]`.
    #[error("origin id {0:?} may only contain ASCII letters, digits, '_', '-', '.' and ':'")]
    BadOrigin(String),
    /// A persistence other than `materialized` or `realtime`.
    #[error("unknown persistence {0:?}: expected \"materialized\" or \"realtime\"")]
    UnknownPersistence(String),
    /// No source is configured for the view's origin.
    #[error("view {view} names origin {origin:?}, which is not configured")]
    UnknownOrigin {
        /// The view.
        view: String,
        /// The origin it names.
        origin: String,
    },
    /// The `where` filter is not in the language flashsync evaluates.
    #[error("the view's `where` filter is refused: {0}")]
    Filter(String),
    /// The `columns` list is malformed (empty, or a column named twice).
    #[error("the view's `columns` list {0}")]
    Columns(String),
}

/// A selector that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Nothing to parse.
    #[error("empty selector: use \"*\" for every view, or namespace.name patterns separated by commas")]
    Empty,
    /// A namespace or name is empty.
    #[error("empty namespace or name in selector (expected namespace.name)")]
    EmptyPart,
    /// Something else than what the grammar allows.
    #[error("unexpected {found:?} at byte {at} of selector; expected {expected}")]
    Unexpected {
        /// Offset.
        at: usize,
        /// What was found.
        found: char,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// Input ended early.
    #[error("selector ended early; expected {expected}")]
    UnexpectedEnd {
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A quote was opened and never closed.
    #[error("unterminated quote starting at byte {at} of selector")]
    UnterminatedQuote {
        /// Offset of the opening quote.
        at: usize,
    },
    /// Too much text.
    #[error("selector is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// What a store failure was about, so callers can react without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// An I/O failure (disk full, permissions, ...). Possibly transient.
    Io,
    /// Stored bytes do not decode: the store is damaged.
    Corrupt,
    /// The store is held by another process.
    Locked,
    /// The store was written by an incompatible format version.
    Incompatible,
    /// An earlier fatal failure left the store unusable until reopened.
    Poisoned,
    /// The view or generation does not exist.
    NotFound,
    /// The caller broke the contract (e.g. a row of the wrong width).
    Invalid,
    /// The store was closed.
    Closed,
}

/// A store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store {op} failed: {message}")]
pub struct StoreError {
    /// Classification.
    pub kind: StoreErrorKind,
    /// The operation, e.g. `"apply batch 17"`.
    pub op: String,
    /// What went wrong.
    pub message: String,
}

impl StoreError {
    /// A new error.
    pub fn new(kind: StoreErrorKind, op: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError { kind, op: op.into(), message: message.into() }
    }

    /// A `NotFound` error for a view.
    pub fn no_view(op: impl Into<String>, id: RelationId) -> Self {
        StoreError::new(StoreErrorKind::NotFound, op, format!("no view with relation id {id}"))
    }

    /// The refusal of batch `seq` in an apply run after an earlier batch of
    /// the run failed ([`Store::apply_many`](crate::Store::apply_many)).
    pub fn earlier_batch_failed(seq: crate::change::BatchSeq) -> Self {
        StoreError::new(
            StoreErrorKind::Invalid,
            format!("apply batch {}", seq.0),
            "an earlier batch of the same run failed",
        )
    }
}

/// What a source failure was about; the machine decides what to do by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// Could not reach the origin, or the connection broke. Retried with back-off.
    Connection,
    /// The upstream relation does not exist (or is not visible to us).
    RelationMissing,
    /// The relation cannot be mirrored in realtime: no primary key and no
    /// `REPLICA IDENTITY FULL`.
    ReplicaIdentity,
    /// A type, shape or protocol detail flashsync cannot handle.
    Unsupported,
    /// The origin sent something malformed.
    Protocol,
    /// The origin refused (permissions, configuration such as `wal_level`).
    Refused,
    /// Writing snapshot rows into the store failed.
    Sink,
    /// Anything else.
    Other,
}

/// A source operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// Classification.
    pub kind: SourceErrorKind,
    /// What went wrong, with context (relation names, the failing step) and
    /// never a password or connection string.
    pub message: String,
}

impl SourceError {
    /// A new error.
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        SourceError { kind, message: message.into() }
    }

    /// The relation does not exist upstream.
    pub fn relation_missing(rel: &UpstreamRelation) -> Self {
        SourceError::new(SourceErrorKind::RelationMissing, format!("upstream relation {rel} does not exist"))
    }

    /// A connection-level failure.
    pub fn connection(message: impl Into<String>) -> Self {
        SourceError::new(SourceErrorKind::Connection, message)
    }
}

impl From<StoreError> for SourceError {
    fn from(e: StoreError) -> Self {
        SourceError::new(SourceErrorKind::Sink, e.to_string())
    }
}

/// A control call (`sync`, `stop`, ...) could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The selector did not parse.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// The view definition was refused.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// A store write the call depends on failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine is shutting down or shut down.
    #[error("the sync engine is shut down")]
    ShutDown,
}
