//! Replication `CopyData` frames: what the walsender sends inside the
//! CopyBoth stream (`w` XLogData, `k` primary keepalive) and the standby
//! status update (`r`) we send back.

use flashsync_core::Lsn;

/// One server → client replication frame (the payload of a `CopyData`
/// message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationFrame<'a> {
    /// `w`: WAL data, here one `pgoutput` message.
    XLogData {
        /// WAL position of the data's start (0 for some messages).
        wal_start: Lsn,
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01 UTC.
        server_time: i64,
        /// The `pgoutput` message; decode with [`crate::pgoutput::decode`].
        data: &'a [u8],
    },
    /// `k`: primary keepalive.
    Keepalive {
        /// The server's sent position: every change before it was sent.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01 UTC.
        server_time: i64,
        /// The server wants a status update at once (or it will time the
        /// connection out).
        reply_requested: bool,
    },
}

/// A replication frame that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is empty.
    #[error("empty replication CopyData frame")]
    Empty,
    /// The frame is shorter than its fixed header.
    #[error("replication {kind} frame is {len} bytes; at least {need} expected")]
    Short {
        /// Which frame.
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The minimum.
        need: usize,
    },
    /// A frame type other than `w` or `k`.
    #[error("unknown replication frame type {0:?}")]
    UnknownType(char),
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Parses one server → client `CopyData` payload. Never panics.
///
/// ```
/// use flashsync_source_pg::replication::{parse_copy_data, ReplicationFrame};
/// let mut k = vec![b'k'];
/// k.extend_from_slice(&0x20u64.to_be_bytes());
/// k.extend_from_slice(&0i64.to_be_bytes());
/// k.push(1);
/// assert!(matches!(
///     parse_copy_data(&k),
///     Ok(ReplicationFrame::Keepalive { reply_requested: true, .. })
/// ));
/// ```
pub fn parse_copy_data(bytes: &[u8]) -> Result<ReplicationFrame<'_>, FrameError> {
    let (&tag, body) = bytes.split_first().ok_or(FrameError::Empty)?;
    match tag {
        b'w' => {
            if body.len() < 24 {
                return Err(FrameError::Short { kind: "XLogData", len: bytes.len(), need: 25 });
            }
            Ok(ReplicationFrame::XLogData {
                wal_start: Lsn(be_u64(body, 0)),
                wal_end: Lsn(be_u64(body, 8)),
                server_time: be_u64(body, 16) as i64,
                data: body.get(24..).unwrap_or_default(),
            })
        }
        b'k' => {
            if body.len() < 17 {
                return Err(FrameError::Short { kind: "keepalive", len: bytes.len(), need: 18 });
            }
            Ok(ReplicationFrame::Keepalive {
                wal_end: Lsn(be_u64(body, 0)),
                server_time: be_u64(body, 8) as i64,
                reply_requested: body.get(16).is_some_and(|&b| b != 0),
            })
        }
        other => Err(FrameError::UnknownType(char::from(other))),
    }
}

/// Encodes a standby status update (`r`): positions written, flushed and
/// applied, the client clock, and whether we ask the server to reply.
pub fn encode_status_update(write: Lsn, flush: Lsn, apply: Lsn, client_time: i64, reply_requested: bool) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[0] = b'r';
    out[1..9].copy_from_slice(&write.0.to_be_bytes());
    out[9..17].copy_from_slice(&flush.0.to_be_bytes());
    out[17..25].copy_from_slice(&apply.0.to_be_bytes());
    out[25..33].copy_from_slice(&client_time.to_be_bytes());
    out[33] = u8::from(reply_requested);
    out
}

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Postgres timestamp (µs since 2000-01-01) → milliseconds since the Unix
/// epoch, clamped at 0.
pub fn pg_micros_to_unix_millis(micros: i64) -> u64 {
    let unix = micros.saturating_add(PG_EPOCH_OFFSET_MICROS);
    u64::try_from(unix.div_euclid(1000)).unwrap_or(0)
}

/// The current time as a Postgres timestamp (µs since 2000-01-01).
pub fn pg_now_micros() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xlogdata_and_rejects_short_frames() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&1u64.to_be_bytes());
        w.extend_from_slice(&2u64.to_be_bytes());
        w.extend_from_slice(&3i64.to_be_bytes());
        w.extend_from_slice(b"B...");
        match parse_copy_data(&w) {
            Ok(ReplicationFrame::XLogData { wal_start, wal_end, server_time, data }) => {
                assert_eq!((wal_start, wal_end, server_time), (Lsn(1), Lsn(2), 3));
                assert_eq!(data, b"B...");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_copy_data(&w[..20]).is_err());
        assert!(parse_copy_data(b"").is_err());
        assert!(parse_copy_data(b"k123").is_err());
        assert!(matches!(parse_copy_data(b"x"), Err(FrameError::UnknownType('x'))));
    }

    #[test]
    fn status_update_layout() {
        let b = encode_status_update(Lsn(1), Lsn(2), Lsn(3), 4, true);
        assert_eq!(b[0], b'r');
        assert_eq!(&b[9..17], &2u64.to_be_bytes());
        assert_eq!(b[33], 1);
        assert_eq!(pg_micros_to_unix_millis(0), 946_684_800_000);
    }
}
