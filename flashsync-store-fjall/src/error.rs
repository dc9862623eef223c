//! Turning fjall's errors (and our own decoding failures) into the core's
//! typed [`StoreError`], so callers can react by kind without parsing text.

use flashsync_core::{StoreError, StoreErrorKind};

/// Classifies a fjall error. `op` names what we were doing (e.g. `"apply
/// batch 7"`), so the message says where it failed.
pub(crate) fn engine(op: impl Into<String>, e: fjall::Error) -> StoreError {
    use fjall::Error as E;
    let kind = match &e {
        E::Io(_) => StoreErrorKind::Io,
        E::Storage(inner) => lsm_kind(inner),
        E::Locked => StoreErrorKind::Locked,
        E::InvalidVersion(_) => StoreErrorKind::Incompatible,
        E::Poisoned => StoreErrorKind::Poisoned,
        // We never touch a keyspace after deleting it; if fjall says we did,
        // the generation is gone.
        E::KeyspaceDeleted => StoreErrorKind::NotFound,
        // Journal checksum failures, bad tags and trailers, failed
        // decompression, "unrecoverable": the bytes on disk are damaged.
        _ => StoreErrorKind::Corrupt,
    };
    let message = match kind {
        StoreErrorKind::Locked => {
            "the store is locked: another process (or another FjallStore in this process) has it open".to_owned()
        }
        StoreErrorKind::Poisoned => "an earlier write failed (possibly a hardware fault); reopen the store".to_owned(),
        _ => format!("fjall: {e}"),
    };
    StoreError::new(kind, op, message)
}

fn lsm_kind(e: &fjall::LsmError) -> StoreErrorKind {
    match e {
        fjall::LsmError::Io(_) => StoreErrorKind::Io,
        fjall::LsmError::InvalidVersion(_) => StoreErrorKind::Incompatible,
        _ => StoreErrorKind::Corrupt,
    }
}

/// Stored bytes that do not decode.
pub(crate) fn corrupt(op: impl Into<String>, what: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, op, what.to_string())
}

/// The error every call returns once a write failed in a way that may have
/// left the journal and our in-memory view of it disagreeing.
pub(crate) fn poisoned(op: impl Into<String>, cause: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Poisoned,
        op,
        format!("the store is unusable until reopened: an earlier write failed ({cause})"),
    )
}

/// Input the store refuses (a row or batch that does not fit its schema).
pub(crate) fn invalid(op: impl Into<String>, detail: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Invalid, op, detail.to_string())
}

/// A panic inside fjall (it asserts on some malformed on-disk states) turned
/// into an error, so damaged stores never take the caller down.
pub(crate) fn panicked(op: impl Into<String>, payload: &(dyn std::any::Any + Send)) -> StoreError {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    StoreError::new(StoreErrorKind::Corrupt, op, format!("the storage engine panicked (damaged files?): {detail}"))
}

/// Runs `f`, turning a panic into a `Corrupt` error (see [`panicked`]).
pub(crate) fn guard<T>(op: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(panicked(op, payload.as_ref())))
}
