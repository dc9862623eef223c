//! Turning SQLite's errors (and our own decoding failures) into the core's
//! typed [`StoreError`], so callers can react by kind without parsing text.

use flashsync_core::{StoreError, StoreErrorKind};
use rusqlite::ErrorCode;

/// Classifies a rusqlite error. `op` names what we were doing (e.g. `"apply
/// batch 7"`), so the message says where it failed.
pub(crate) fn sql(op: impl Into<String>, e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    let kind = match &e {
        E::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::NotADatabase => StoreErrorKind::Incompatible,
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreErrorKind::Locked,
            // A string or blob beyond SQLite's limit (1 GB): the caller's value.
            ErrorCode::TooBig => StoreErrorKind::Invalid,
            // Damaged pages; a constraint or type our own tables cannot break
            // unless someone else wrote to them; a table or column our
            // bookkeeping names that is not there (SQLITE_ERROR).
            ErrorCode::DatabaseCorrupt
            | ErrorCode::ConstraintViolation
            | ErrorCode::TypeMismatch
            | ErrorCode::InternalMalfunction
            | ErrorCode::Unknown => StoreErrorKind::Corrupt,
            // Cannot open, disk full, I/O failures, read-only file system,
            // permissions, out of memory, lock protocol failures, ...
            _ => StoreErrorKind::Io,
        },
        E::FromSqlConversionFailure(..)
        | E::InvalidColumnType(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..) => StoreErrorKind::Corrupt,
        E::InvalidPath(_) => StoreErrorKind::Io,
        _ => StoreErrorKind::Io,
    };
    let message = match kind {
        StoreErrorKind::Locked => format!("sqlite: the database is busy (another connection holds a lock): {e}"),
        _ => format!("sqlite: {e}"),
    };
    StoreError::new(kind, op, message)
}

/// Stored bytes or values that do not decode.
pub(crate) fn corrupt(op: impl Into<String>, what: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, op, what.to_string())
}

/// Input the store refuses (a row or batch that does not fit its schema).
pub(crate) fn invalid(op: impl Into<String>, detail: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Invalid, op, detail.to_string())
}

/// A failure of the file system around the database (lock file, folders).
pub(crate) fn io(op: impl Into<String>, detail: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Io, op, detail.to_string())
}

/// The error every call returns once a commit failed in a way that may have
/// left the database file and our in-memory view of it disagreeing.
pub(crate) fn poisoned(op: impl Into<String>, cause: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Poisoned,
        op,
        format!("the store is unusable until reopened: an earlier write failed ({cause})"),
    )
}

/// A panic on a store thread turned into an error, so a bug never takes the
/// caller down with it.
pub(crate) fn panicked(op: impl Into<String>, payload: &(dyn std::any::Any + Send)) -> StoreError {
    let detail = panic_message(payload);
    StoreError::new(StoreErrorKind::Corrupt, op, format!("a store thread panicked: {detail}"))
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
