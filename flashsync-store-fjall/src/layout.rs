//! How the store lays its data out in fjall: keyspaces, keys, and the
//! encodings of the records it keeps.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `flashsync.meta` | `format_version` / `next_generation` | `u32` / `u64`, big-endian |
//! | `flashsync.catalog` | relation id, `u64` BE | [`ViewRecord`](flashsync_core::ViewRecord), JSON |
//! | `flashsync.jobs` | relation id, `u64` BE | [`JobRecord`](flashsync_core::JobRecord), JSON |
//! | `flashsync.origins` | origin id, UTF-8 | applied LSN, `u64` BE |
//! | `flashsync.copies` | relation id, `u64` BE | [`CopyRecord`] (published generation + schema), JSON |
//! | `flashsync.dirty` | relation id, `u64` BE | origin id of the unfinished transaction, UTF-8 |
//! | `flashsync.rows` | relation id ‖ generation (`u64` BE each) ‖ [`encode_key`](flashsync_core::codec::encode_key) bytes | [`encode_stored_row`](flashsync_core::codec::encode_stored_row) bytes |
//! | `flashsync.filling` | relation id ‖ generation | empty: a generation being written; a [checkpoint](crate::checkpoint) marker (its schema, JSON): a checkpointed one, kept across restarts |
//! | `flashsync.garbage` | relation id ‖ generation | empty: a generation whose rows are to be deleted |
//!
//! Every generation of every view lives in the one rows keyspace, under its
//! own 16-byte prefix; the published generation is the one `copies` names.
//! The set of keyspaces is fixed when the store is created: fjall 3.1's
//! keyspace creation and deletion are not crash-safe (keyspace ids are reused
//! across restarts, and a crash can leave a new keyspace's name shadowed by a
//! deleted one's, replaying journal entries into the wrong keyspace — found by
//! this crate's SIGKILL test), so the store only ever writes plain batches.
//!
//! Catalog records are small and rarely written, so they are JSON: readable
//! with any fjall tool, and tolerant of added fields.

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
pub(crate) const KS_ROWS: &str = "flashsync.rows";
pub(crate) const KS_FILLING: &str = "flashsync.filling";
pub(crate) const KS_GARBAGE: &str = "flashsync.garbage";

/// Every keyspace of a store, in creation order.
pub(crate) const KEYSPACES: [&str; 9] =
    [KS_META, KS_CATALOG, KS_JOBS, KS_ORIGINS, KS_COPIES, KS_DIRTY, KS_ROWS, KS_FILLING, KS_GARBAGE];

pub(crate) const META_FORMAT_VERSION: &[u8] = b"format_version";
pub(crate) const META_NEXT_GENERATION: &[u8] = b"next_generation";
/// The store's identity (see [`FjallStore::store_id`](crate::FjallStore::store_id)).
pub(crate) const META_STORE_ID: &[u8] = b"store_id";

/// Whether `name` is one of ours.
pub(crate) fn is_ours(name: &str) -> bool {
    KEYSPACES.contains(&name)
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

/// One generation of one view: the prefix of its rows, and the key of its
/// `filling` / `garbage` markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct GenKey {
    pub view: RelationId,
    pub generation: u64,
}

impl GenKey {
    /// The 16-byte prefix of the generation's rows.
    pub fn prefix(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.view.0.to_be_bytes());
        out[8..].copy_from_slice(&self.generation.to_be_bytes());
        out
    }

    /// The rows key of `key` (an `encode_key` encoding) in this generation.
    pub fn row_key(self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + key.len());
        out.extend_from_slice(&self.prefix());
        out.extend_from_slice(key);
        out
    }

    /// The first key after every row of this generation, if there is one.
    pub fn prefix_end(self) -> Option<Vec<u8>> {
        let n = (u128::from(self.view.0) << 64 | u128::from(self.generation)).checked_add(1)?;
        Some(n.to_be_bytes().to_vec())
    }

    /// Decodes a marker key.
    pub fn decode(what: &str, bytes: &[u8]) -> Result<GenKey, StoreError> {
        let raw: [u8; 16] = bytes
            .try_into()
            .map_err(|_| corrupt(format!("read {what}"), format!("key of {} bytes, expected 16", bytes.len())))?;
        let n = u128::from_be_bytes(raw);
        Ok(GenKey { view: RelationId((n >> 64) as u64), generation: n as u64 })
    }
}

/// A view's published copy: which generation holds its rows, and their shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CopyRecord {
    /// The generation.
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

/// Encodes a `u64` (LSNs, counters).
pub(crate) fn encode_u64(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes a `u64`.
pub(crate) fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let raw: [u8; 8] =
        bytes.try_into().map_err(|_| corrupt(format!("read {what}"), format!("{} bytes, expected 8", bytes.len())))?;
    Ok(u64::from_be_bytes(raw))
}

/// Encodes an applied LSN.
pub(crate) fn encode_lsn(lsn: Lsn) -> [u8; 8] {
    encode_u64(lsn.0)
}

/// Decodes an applied LSN.
pub(crate) fn decode_lsn(what: &str, bytes: &[u8]) -> Result<Lsn, StoreError> {
    decode_u64(what, bytes).map(Lsn)
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
    fn generation_keys_round_trip_and_bound_their_rows() {
        let g = GenKey { view: RelationId(42), generation: 7 };
        assert_eq!(GenKey::decode("x", &g.prefix()).ok(), Some(g));
        let row = g.row_key(&[0xFF; 20]);
        let end = g.prefix_end().expect("not the last prefix");
        assert!(row.as_slice() < end.as_slice() && g.prefix().as_slice() <= row.as_slice());
        let next = GenKey { view: RelationId(42), generation: 8 };
        assert_eq!(end, next.prefix().to_vec());
        let last = GenKey { view: RelationId(u64::MAX), generation: u64::MAX };
        assert_eq!(last.prefix_end(), None);
        let wrap = GenKey { view: RelationId(1), generation: u64::MAX };
        assert_eq!(wrap.prefix_end(), Some(GenKey { view: RelationId(2), generation: 0 }.prefix().to_vec()));
    }

    #[test]
    fn damaged_scalars_are_corrupt_not_panics() {
        assert!(decode_view_key("catalog", &[1, 2, 3]).is_err());
        assert!(GenKey::decode("garbage", &[0; 15]).is_err());
        assert!(decode_lsn("origin", &[]).is_err());
        assert!(decode_format_version(&[0; 9]).is_err());
        assert!(decode_json::<CopyRecord>("copy", b"{not json").is_err());
    }
}
