//! What flows from a source's change feed, and what the machine asks a store
//! to apply.

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;
use crate::rowchange::Capture;
use crate::schema::{Identity, SourceRelId};
use crate::time::Timestamp;
use crate::value::{Key, Row, Value};
use crate::view::RelationId;

/// One column of an updated row image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cell {
    /// The column's new value.
    Set(Value),
    /// The value did not change and the source did not send it (a Postgres
    /// unchanged TOAST value): keep the current local value.
    Unchanged,
}

/// One row-level change inside an upstream transaction. Rows and old-row
/// images list values in the relation's column order
/// ([`RelationSchema::columns`](crate::RelationSchema::columns)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A new row.
    Insert {
        /// The relation.
        rel: SourceRelId,
        /// The full new row.
        new: Row,
    },
    /// A changed row.
    Update {
        /// The relation.
        rel: SourceRelId,
        /// The old row image when the source sent one: the old key when the
        /// key changed, or the whole old row (Postgres `REPLICA IDENTITY
        /// FULL`). `None` means the key did not change.
        old: Option<OldRow>,
        /// The new row image; unchanged TOAST columns are [`Cell::Unchanged`].
        new: Vec<Cell>,
    },
    /// A removed row.
    Delete {
        /// The relation.
        rel: SourceRelId,
        /// The old row image: its key, or the whole row.
        old: OldRow,
    },
    /// Every listed relation was emptied.
    Truncate {
        /// The relations.
        rels: Vec<SourceRelId>,
    },
}

/// An old row image as the source sent it, saying how much of the row it
/// holds: a filtered view decides from a whole old row, without a lookup,
/// whether the row was in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OldRow {
    /// The replica identity (key) columns; the others are `Null` and mean
    /// nothing.
    Key(Row),
    /// Every column (Postgres `REPLICA IDENTITY FULL`, and every old image
    /// of a full-row identity relation).
    Full(Row),
}

impl OldRow {
    /// The image, whichever kind.
    pub fn row(&self) -> &Row {
        match self {
            OldRow::Key(r) | OldRow::Full(r) => r,
        }
    }

    /// The image, whichever kind.
    pub fn into_row(self) -> Row {
        match self {
            OldRow::Key(r) | OldRow::Full(r) => r,
        }
    }

    /// The whole old row, when the image is one.
    pub fn full(&self) -> Option<&Row> {
        match self {
            OldRow::Full(r) => Some(r),
            OldRow::Key(_) => None,
        }
    }
}

/// One event of an origin's change feed, in feed order. A transaction arrives
/// as `Begin`, its `Change`s, then `Commit`; events of different transactions
/// never interleave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// A transaction starts.
    Begin {
        /// The upstream transaction id as sent on the wire (32 bits for
        /// Postgres; compared against 64-bit snapshot xids wraparound-aware).
        xid: u32,
        /// LSN of the commit record (its start). At or after the end LSN of
        /// every earlier transaction in the feed (Postgres may start a commit
        /// record exactly where the previous one ended).
        final_lsn: Lsn,
        /// Upstream commit time.
        commit_time: Timestamp,
    },
    /// One change of the open transaction.
    Change(Change),
    /// The open transaction committed.
    Commit {
        /// LSN just past the commit record: "applied through `end_lsn`" covers
        /// this transaction. This is the LSN acknowledged upstream.
        end_lsn: Lsn,
    },
    /// The source is alive and has sent everything up to `wal_end`.
    Keepalive {
        /// Every transaction committing at or before this position has been
        /// sent.
        wal_end: Lsn,
        /// The server asked for an immediate status reply.
        reply_requested: bool,
    },
    /// A relation's shape changed upstream (e.g. a column was added), before
    /// any change of it in the new shape. Its views are copied again; a
    /// live view whose columns all survived keeps its copy current
    /// meanwhile, reading them from where `columns` says they are now.
    SchemaChanged {
        /// The relation.
        rel: SourceRelId,
        /// What changed, for `last_error`.
        detail: String,
        /// The relation's columns now, matched to those it had before, when
        /// the source can tell (same name, type and modifier, the same
        /// replica identity); `None` when it cannot, or the relation is
        /// gone or renamed.
        columns: Option<Vec<crate::schema::ColumnMatch>>,
    },
}

/// One operation on one view's local rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RowOp {
    /// Add a row (an upsert for keyed views; one more copy for full-row views).
    Insert {
        /// Its key.
        key: Key,
        /// The row.
        row: Row,
    },
    /// Replace a row, keeping current values where the new image has
    /// [`Cell::Unchanged`]. When `old_key` is set the row moves from `old_key`
    /// to `key`.
    Update {
        /// The previous key, if it differs from `key`.
        old_key: Option<Key>,
        /// The new key.
        key: Key,
        /// The new image.
        new: Vec<Cell>,
    },
    /// An update of a filtered view whose verdict needs values the change
    /// did not carry (unchanged TOAST values): merge `new` with the local
    /// row at `old_key` (or `key`), then keep the result at `key` if
    /// `filter` (bound to the view's local columns) holds, or remove the row
    /// if it does not. When the row is not local the verdict cannot be made:
    /// the store reports a conflict and the view is copied again.
    UpdateIf {
        /// The previous key, if it differs from `key`.
        old_key: Option<Key>,
        /// The new key.
        key: Key,
        /// The new image, in the view's local columns.
        new: Vec<Cell>,
        /// The view's filter over its local columns.
        filter: std::sync::Arc<crate::predicate::BoundPredicate>,
    },
    /// Remove the row under `key` if the view holds it, and do nothing if
    /// not: a row moved out of (or deleted from) a filtered view that may
    /// never have held it. Unlike `Delete`, an absent row is no conflict,
    /// and a store writes nothing for it.
    Evict {
        /// Its key.
        key: Key,
    },
    /// Remove a row (one copy for full-row views).
    Delete {
        /// Its key.
        key: Key,
    },
    /// Remove every row of the view.
    Truncate,
}

/// The row operations for one view inside a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewOps {
    /// The view.
    pub relation_id: RelationId,
    /// How the view's rows are identified (full-row views are multisets).
    pub identity: Identity,
    /// Operations in upstream order.
    pub ops: Vec<RowOp>,
}

/// Orders store batches; the store reports durability as "every batch up to
/// and including this sequence number".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchSeq(pub u64);

/// What a batch does to its origin's recorded progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    /// The batch completes the transaction ending at `end_lsn`: the origin's
    /// applied LSN becomes `end_lsn`. Each view it names gets its staged
    /// operations (from `Stage` batches of the origin) applied first, in the
    /// same atomic batch; the origin's other staged operations are dropped.
    Commit {
        /// The transaction's end LSN.
        end_lsn: Lsn,
    },
    /// The batch is one part of a transaction too large for one batch: the
    /// store *stages* its row operations — applies none, shows none to
    /// readers, keeps none across a reopen — until the `Commit` batch of
    /// the transaction claims them (see [`crate::staging`]). Readers never
    /// see part of a transaction, and a crash in the middle of one leaves
    /// every copy as it was (the feed sends the transaction again).
    Stage {
        /// The transaction's first part: whatever an earlier attempt staged
        /// and never committed (the feed broke) is dropped first.
        first: bool,
    },
    /// A held-back transaction replayed into a view that just bootstrapped;
    /// the origin's applied LSN is already past it and stays as it is.
    Replay,
}

/// One atomic store write: row changes for some views, job records, and the
/// origin's progress — all or nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyBatch {
    /// Sequence number, increasing within one opening of the store (a
    /// restarted machine numbers from 1 again).
    pub seq: BatchSeq,
    /// The origin whose feed produced the batch.
    pub origin: crate::view::OriginId,
    /// What the batch does to the origin's progress.
    pub progress: Progress,
    /// Row operations per view.
    pub views: Vec<ViewOps>,
    /// Job records to write in the same batch.
    pub jobs: Vec<crate::job::JobRecord>,
    /// Which chain of the origin's batches this one belongs to. Each batch
    /// builds on every earlier batch of its origin; when one fails, the ones
    /// the machine emitted after it (before it learnt of the failure) would
    /// land over the hole. So an executor never applies a batch whose chain
    /// is at or below that of a failed batch of the same origin: it answers
    /// it with an error instead. The machine starts a new chain once it has
    /// handled the failure. Stores ignore this field.
    #[serde(default)]
    pub chain: u64,
    /// When the upstream transaction a [`Progress::Commit`] batch completes
    /// committed (`None` for other batches, and for keepalive positions).
    #[serde(default)]
    pub commit_time: Option<Timestamp>,
    /// Whether the store reports what the batch did to each view's rows
    /// ([`ApplyReport::changes`](crate::ApplyReport::changes)). The machine
    /// leaves it off; a driver turns it on while a change feed listens.
    #[serde(default)]
    pub capture: Capture,
}
