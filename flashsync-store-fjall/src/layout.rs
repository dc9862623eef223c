//! How the store lays its data out in fjall: keyspace names, keys, and the
//! encodings of the records it keeps.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `flashsync.meta` | `format_version` | on-disk format version, `u32` big-endian |
//! | `flashsync.catalog` | relation id, `u64` BE | [`ViewRecord`](flashsync_core::ViewRecord), JSON |
//! | `flashsync.jobs` | relation id, `u64` BE | [`JobRecord`](flashsync_core::JobRecord), JSON |
//! | `flashsync.origins` | origin id, UTF-8 | applied LSN, `u64` BE |
//! | `flashsync.copies` | relation id, `u64` BE | [`CopyRecord`] (published generation + schema), JSON |
//! | `flashsync.dirty` | relation id, `u64` BE | origin id of the unfinished transaction, UTF-8 |
//! | `flashsync.rows.<view>.<generation>` | [`encode_key`](flashsync_core::codec::encode_key) bytes | [`encode_stored_row`](flashsync_core::codec::encode_stored_row) bytes |
//!
//! Rows live in one keyspace per generation. A keyspace is its own LSM tree,
//! so dropping a generation (after a re-materialization, a truncate, or a
//! `forget`) is a metadata operation plus file deletion — O(1) in the number
//! of rows, with no tombstones left behind to slow later scans. Catalog
//! records are small and rarely written, so they are JSON: readable with any
//! fjall tool, and tolerant of added fields.

use flashsync_core::{Lsn, RelationId, RelationSchema, StoreError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::corrupt;

/// The on-disk format this build writes and reads. Bump it on any change a
/// previous build could misread; [`open`](crate::FjallStore::open) refuses
/// other versions with `StoreErrorKind::Incompatible`.
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) const KS_META: &str = "flashsync.meta";
pub(crate) const KS_CATALOG: &str = "flashsync.catalog";
pub(crate) const KS_JOBS: &str = "flashsync.jobs";
pub(crate) const KS_ORIGINS: &str = "flashsync.origins";
pub(crate) const KS_COPIES: &str = "flashsync.copies";
pub(crate) const KS_DIRTY: &str = "flashsync.dirty";
const ROWS_PREFIX: &str = "flashsync.rows.";

/// Every fixed keyspace, in creation order.
pub(crate) const FIXED_KEYSPACES: [&str; 6] = [KS_META, KS_CATALOG, KS_JOBS, KS_ORIGINS, KS_COPIES, KS_DIRTY];

pub(crate) const META_FORMAT_VERSION: &[u8] = b"format_version";

/// The keyspace holding generation `generation` of `view`'s rows.
pub(crate) fn rows_keyspace(view: RelationId, generation: u64) -> String {
    format!("{ROWS_PREFIX}{}.{generation}", view.0)
}

/// The view and generation of a rows keyspace, or `None` for other names.
pub(crate) fn parse_rows_keyspace(name: &str) -> Option<(RelationId, u64)> {
    let rest = name.strip_prefix(ROWS_PREFIX)?;
    let (view, generation) = rest.split_once('.')?;
    Some((RelationId(view.parse().ok()?), generation.parse().ok()?))
}

/// Whether `name` is one of ours (fixed or rows).
pub(crate) fn is_ours(name: &str) -> bool {
    FIXED_KEYSPACES.contains(&name) || name.starts_with(ROWS_PREFIX)
}

/// The key of a per-view record.
pub(crate) fn view_key(id: RelationId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// Decodes a per-view record key.
pub(crate) fn decode_view_key(what: &str, bytes: &[u8]) -> Result<RelationId, StoreError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("read {what}"), format!("key of {} bytes, expected 8", bytes.len())))?;
    Ok(RelationId(u64::from_be_bytes(raw)))
}

/// A view's published copy: which generation holds its rows, and their shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CopyRecord {
    /// The generation (suffix of the rows keyspace name).
    pub generation: u64,
    /// The schema the rows were written with.
    pub schema: RelationSchema,
}

/// Encodes a record as JSON. Our records always serialize; an error here would
/// be a bug in a `Serialize` impl, reported rather than unwrapped.
pub(crate) fn encode_json<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::new(flashsync_core::StoreErrorKind::Invalid, format!("encode {what}"), e.to_string()))
}

/// Decodes a JSON record read from disk; failure means damage.
pub(crate) fn decode_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(format!("read {what}"), format!("undecodable record: {e}")))
}

/// Encodes an applied LSN.
pub(crate) fn encode_lsn(lsn: Lsn) -> [u8; 8] {
    lsn.0.to_be_bytes()
}

/// Decodes an applied LSN.
pub(crate) fn decode_lsn(what: &str, bytes: &[u8]) -> Result<Lsn, StoreError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("read {what}"), format!("LSN of {} bytes, expected 8", bytes.len())))?;
    Ok(Lsn(u64::from_be_bytes(raw)))
}

/// Decodes the stored format version.
pub(crate) fn decode_format_version(bytes: &[u8]) -> Result<u32, StoreError> {
    let raw: [u8; 4] =
        bytes.try_into().map_err(|_| corrupt("read format version", format!("{} bytes, expected 4", bytes.len())))?;
    Ok(u32::from_be_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keyspace_names_round_trip_and_reject_others() {
        let name = rows_keyspace(RelationId(42), 7);
        assert_eq!(parse_rows_keyspace(&name), Some((RelationId(42), 7)));
        assert!(is_ours(&name));
        assert_eq!(parse_rows_keyspace("flashsync.rows.x.1"), None);
        assert_eq!(parse_rows_keyspace("flashsync.rows.1"), None);
        assert_eq!(parse_rows_keyspace(KS_CATALOG), None);
        assert!(!is_ours("someone.else"));
    }

    #[test]
    fn damaged_scalars_are_corrupt_not_panics() {
        assert!(decode_view_key("catalog", &[1, 2, 3]).is_err());
        assert!(decode_lsn("origin", &[]).is_err());
        assert!(decode_format_version(&[0; 9]).is_err());
        assert!(decode_json::<CopyRecord>("copy", b"{not json").is_err());
    }
}
