//! Our own decoder for the `pgoutput` logical replication protocol
//! (protocol version 1), the payload of replication `XLogData` frames.
//!
//! [`decode`] turns one message's bytes into a [`Message`]. It never panics
//! and never allocates more than the input justifies: every length read from
//! the wire is checked against the bytes that remain, so arbitrary or hostile
//! input yields a [`DecodeError`]. This is a fuzz target.
//!
//! ```
//! use flashsync_source_pg::pgoutput::{decode, Message};
//! // Begin: final LSN 0/10, commit time 0, xid 7.
//! let mut bytes = vec![b'B'];
//! bytes.extend_from_slice(&0x10u64.to_be_bytes());
//! bytes.extend_from_slice(&0i64.to_be_bytes());
//! bytes.extend_from_slice(&7u32.to_be_bytes());
//! match decode(&bytes)? {
//!     Message::Begin(b) => assert_eq!(b.xid, 7),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), flashsync_source_pg::pgoutput::DecodeError>(())
//! ```
//!
//! Streaming (protocol 2+) and two-phase (protocol 3+) messages are never
//! requested by this crate; they are recognised and rejected with
//! [`DecodeError::Unsupported`] rather than misread.

mod cursor;
mod decode;
mod message;

pub use decode::decode;
pub use message::{
    Begin, ColumnDesc, Commit, Delete, Insert, LogicalMessage, Message, OldTuple, Origin, Relation, ReplicaIdentity,
    Truncate, TupleData, TupleValue, TypeMsg, Update,
};

/// Why bytes could not be decoded as a `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message is empty.
    #[error("empty pgoutput message")]
    Empty,
    /// The message ended before a field was complete.
    #[error("pgoutput {message} message truncated while reading {field}")]
    Truncated {
        /// Which message.
        message: &'static str,
        /// Which field.
        field: &'static str,
    },
    /// Bytes remained after the message was complete.
    #[error("pgoutput {message} message has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Which message.
        message: &'static str,
        /// How many bytes.
        extra: usize,
    },
    /// A field held a value the protocol does not allow.
    #[error("pgoutput {message} message: invalid {field}: {detail}")]
    Invalid {
        /// Which message.
        message: &'static str,
        /// Which field.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A message type this decoder does not handle.
    #[error("unsupported pgoutput message type {tag:?}: {detail}")]
    Unsupported {
        /// The message type byte, as a character.
        tag: char,
        /// Why it is not handled.
        detail: &'static str,
    },
}
