//! Turning Postgres and transport failures into [`SourceError`]s with
//! context. Messages name the step and the server's own words; connection
//! strings and passwords never appear (they are never formatted here).

use flashsync_core::{SourceError, SourceErrorKind};

/// Classifies a Postgres SQLSTATE.
pub(crate) fn kind_for_sqlstate(code: &str) -> SourceErrorKind {
    match code {
        // undefined_table, undefined_schema (invalid_schema_name)
        "42P01" | "3F000" => SourceErrorKind::RelationMissing,
        // object_in_use (slot active elsewhere), admin/crash shutdown,
        // cannot_connect_now, too_many_connections, serialization failures
        "55006" | "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" => SourceErrorKind::Connection,
        c if c.starts_with("08") => SourceErrorKind::Connection,
        // invalid authorization, insufficient privilege, prerequisite state
        // (e.g. wal_level), configuration limits (max_replication_slots)
        c if c.starts_with("28") || c == "42501" || c == "55000" || c.starts_with("53") => SourceErrorKind::Refused,
        "0A000" | "42809" => SourceErrorKind::Unsupported,
        _ => SourceErrorKind::Other,
    }
}

/// A tokio-postgres failure during `step`.
pub(crate) fn pg(step: impl std::fmt::Display, e: &tokio_postgres::Error) -> SourceError {
    if let Some(db) = e.as_db_error() {
        let mut msg = format!("{step}: {}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            msg.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = db.hint() {
            msg.push_str(&format!(" (hint: {hint})"));
        }
        return SourceError::new(kind_for_sqlstate(db.code().code()), msg);
    }
    // No SQLSTATE: I/O, closed connection, TLS, protocol — all retryable.
    // The causes say what actually went wrong (e.g. which certificate
    // check failed); they are I/O and TLS errors, never connection strings.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    SourceError::connection(format!("{step}: {text}"))
}

/// A SQLSTATE to test errors against.
pub(crate) fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

/// A malformed reply from the server during `step`.
pub(crate) fn protocol(step: impl std::fmt::Display, what: impl std::fmt::Display) -> SourceError {
    SourceError::new(SourceErrorKind::Protocol, format!("{step}: {what}"))
}
