//! The `pgoutput` messages, as decoded (protocol version 1).

use flashsync_core::Lsn;

/// One decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `B`: a transaction starts.
    Begin(Begin),
    /// `C`: the open transaction committed.
    Commit(Commit),
    /// `O`: the transaction was replicated from another origin.
    Origin(Origin),
    /// `R`: a relation's shape, sent before its first change in a session and
    /// again whenever it changes.
    Relation(Relation),
    /// `Y`: a non-built-in type's name.
    Type(TypeMsg),
    /// `I`: a row was inserted.
    Insert(Insert),
    /// `U`: a row was updated.
    Update(Update),
    /// `D`: a row was deleted.
    Delete(Delete),
    /// `T`: relations were truncated.
    Truncate(Truncate),
    /// `M`: a logical decoding message (`pg_logical_emit_message`).
    Message(LogicalMessage),
}

/// `B`: start of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record (its start).
    pub final_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    /// Transaction id.
    pub xid: u32,
}

/// `C`: end of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Flags (currently always 0).
    pub flags: u8,
    /// LSN of the commit record (equals the `Begin`'s `final_lsn`).
    pub commit_lsn: Lsn,
    /// LSN just past the commit record.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
}

/// `O`: replication origin of the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin server.
    pub commit_lsn: Lsn,
    /// Origin name.
    pub name: String,
}

/// `relreplident` of a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// From the `relreplident` byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(ReplicaIdentity::Default),
            b'n' => Some(ReplicaIdentity::Nothing),
            b'f' => Some(ReplicaIdentity::Full),
            b'i' => Some(ReplicaIdentity::Index),
            _ => None,
        }
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDesc {
    /// Part of the replica identity (key) — every column for `FULL`.
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 for none.
    pub type_modifier: i32,
}

/// `R`: a relation's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID.
    pub oid: u32,
    /// Namespace (empty for `pg_catalog`).
    pub namespace: String,
    /// Relation name.
    pub name: String,
    /// Replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// Published columns, in order (dropped and generated columns excluded).
    pub columns: Vec<ColumnDesc>,
}

/// `Y`: a type's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMsg {
    /// Type OID.
    pub oid: u32,
    /// Namespace (empty for `pg_catalog`).
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged TOASTed value that was not sent.
    UnchangedToast,
    /// `t`: the value in the type's text output form.
    Text(Vec<u8>),
    /// `b`: the value in the type's binary form (only with `binary 'true'`,
    /// which this crate never requests).
    Binary(Vec<u8>),
}

/// A tuple: one value per published column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleData(pub Vec<TupleValue>);

/// The old-row image sent with an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity (key) columns; others are NULL.
    Key(TupleData),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData),
}

impl OldTuple {
    /// The tuple, whichever kind.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `I`: an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Relation OID.
    pub rel: u32,
    /// The new row.
    pub new: TupleData,
}

/// `U`: an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Relation OID.
    pub rel: u32,
    /// The old row image, when the key changed or identity is `FULL`.
    pub old: Option<OldTuple>,
    /// The new row.
    pub new: TupleData,
}

/// `D`: a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Relation OID.
    pub rel: u32,
    /// The old row image.
    pub old: OldTuple,
}

/// `T`: a truncate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Option bits: 1 = `CASCADE`, 2 = `RESTART IDENTITY`.
    pub options: u8,
    /// Relation OIDs.
    pub rels: Vec<u32>,
}

/// `M`: a logical decoding message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Emitted inside a transaction.
    pub transactional: bool,
    /// LSN of the message.
    pub lsn: Lsn,
    /// Application-chosen prefix.
    pub prefix: String,
    /// Content.
    pub content: Vec<u8>,
}
