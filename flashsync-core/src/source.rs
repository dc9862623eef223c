//! The `Source` contract: where rows and changes come from.
//!
//! A source serves one origin. It describes relations, copies them
//! ([`Source::snapshot`]), and serves the origin's single change feed
//! ([`Source::subscribe`]), shared by every realtime view of the origin. The
//! machine owns every decision (which transactions a bootstrapping view
//! skips, when to acknowledge, when to re-bootstrap); a source reports facts:
//!
//! 1. `prepare` makes the relation part of the feed **before** returning, so
//!    every transaction committing after it returns is delivered.
//! 2. `snapshot` copies the relation in one consistent snapshot and returns
//!    its [`SnapshotPoint`]; a transaction is in the copy exactly when
//!    [`SnapshotPoint::contains`] says so. A transaction whose commit the feed
//!    already delivered must not be reported as in progress (`xip`): sources
//!    that cannot rule this out detect it and take the snapshot again.
//! 3. The feed delivers whole transactions in commit order, each `Begin`,
//!    `Change`s, `Commit`, never interleaved, starting after the requested
//!    position; it may repeat transactions at or before it (the machine skips
//!    them).
//! 4. [`SlotReport`] says truthfully whether the feed can resume from the
//!    requested position; if history was lost, say so.
//! 5. Acknowledgements ([`Feedback::ack`]) tell the origin it may discard
//!    history up to that LSN; the machine only acknowledges what is durable.

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::change::StreamEvent;
use crate::error::{SourceError, SourceErrorKind};
use crate::lsn::Lsn;
use crate::schema::RelationSchema;
use crate::shape::ViewShape;
use crate::snapshot::SnapshotPoint;
use crate::store::RowSink;
use crate::value::Key;
use crate::view::UpstreamRelation;

/// Where a feed (re)starts, as found when subscribing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedStart {
    /// The feed did not exist and was created; it starts at `consistent_point`
    /// and nothing before it can be replayed.
    Created {
        /// First position the new feed covers.
        consistent_point: Lsn,
    },
    /// The feed existed; it can replay everything after `confirmed_flush`.
    Existing {
        /// The position acknowledged last (replay starts after it).
        confirmed_flush: Lsn,
    },
    /// The feed existed but was unusable (e.g. invalidated) and was re-created;
    /// history before `consistent_point` is lost.
    Recreated {
        /// First position the new feed covers.
        consistent_point: Lsn,
        /// Why the old feed was unusable, for `last_error`.
        reason: String,
    },
}

/// The outcome of subscribing to an origin's feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReport {
    /// The feed's name (the Postgres replication slot), shown as `slot_id`.
    pub slot_id: String,
    /// Whether, and from where, the feed can replay.
    pub start: FeedStart,
}

/// Where an origin's server is, for measuring how far behind the mirror is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPosition {
    /// The server's current end of WAL (Postgres `pg_current_wal_lsn()`).
    pub current: Lsn,
    /// Bytes of WAL the origin's feed holds back on the server (from the
    /// slot's restart LSN), if the feed exists.
    pub retained_bytes: Option<u64>,
    /// The last position the server knows to be durable downstream (the
    /// slot's confirmed flush LSN), if the feed exists. What a process that
    /// cannot be asked (stopped, hung) has acknowledged, from the server's
    /// side.
    pub confirmed: Option<Lsn>,
}

/// Where a chunk of a copy ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkEnd {
    /// The chunk copied every row above its start: the copy is complete.
    Done,
    /// The chunk stopped after the row with this key; rows above it remain.
    After(Key),
}

/// What one chunk of a copy produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedChunk {
    /// The chunk's own snapshot.
    pub point: SnapshotPoint,
    /// Where it ended.
    pub end: ChunkEnd,
}

/// Sends acknowledgements upstream for a live subscription.
pub trait Feedback: Send + Sync {
    /// Everything through `lsn` is durable locally; the origin may discard it.
    /// Never blocks; implementations coalesce and send asynchronously.
    fn ack(&self, lsn: Lsn);
}

/// A live change feed.
pub struct Subscription {
    /// What was found when subscribing.
    pub report: SlotReport,
    /// Feed events in order. An `Err` item, or the end of the stream, means
    /// the feed broke; the machine re-subscribes with back-off.
    pub events: BoxStream<'static, Result<StreamEvent, SourceError>>,
    /// Acknowledgement channel.
    pub feedback: Box<dyn Feedback>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("report", &self.report).finish_non_exhaustive()
    }
}

/// One origin's rows and changes.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// Describes `relation` (columns, key, identity). With `feed = true`, also
    /// makes it part of the origin's change feed before returning, and fails
    /// with [`SourceErrorKind::ReplicaIdentity`](crate::SourceErrorKind) if
    /// its changes cannot identify rows. Idempotent.
    async fn prepare(&self, relation: &UpstreamRelation, feed: bool) -> Result<RelationSchema, SourceError>;

    /// Copies the rows the view keeps into `sink` in bounded batches, from
    /// one consistent snapshot, and returns its visibility point.
    ///
    /// `shape` says which: rows for which its [filter](ViewShape::filter)
    /// holds, in its [local](ViewShape::local) columns ([`ViewShape::admit`]
    /// does both to an upstream row). The upstream relation is expected to be
    /// [`ViewShape::upstream`]; a source that finds it changed fails the
    /// copy (transient: the machine describes it again).
    ///
    /// The point's `xip` never lists a transaction whose commit is already
    /// in the feed's log: such a commit may have been delivered (even in an
    /// earlier process, before a restart) while the snapshot cannot see it,
    /// and the copy would then lack it for good. A source retakes the
    /// snapshot in that case, or fails it (the machine retries). Postgres
    /// shows exactly this window: a commit record is flushed (and decodable)
    /// and the commit log updated before the transaction leaves the proc
    /// array, which with synchronous replication can take arbitrarily long.
    async fn snapshot(
        &self,
        relation: &UpstreamRelation,
        shape: &ViewShape,
        sink: &mut dyn RowSink,
    ) -> Result<SnapshotPoint, SourceError>;

    /// Copies one chunk of the rows the view keeps into `sink`, from a
    /// snapshot of its own: the rows whose key is above `after` (all rows
    /// when `None`), in key order, stopping once at least `rows` rows are
    /// copied — at a key boundary, and reporting the last key — or at the
    /// end of the relation ([`ChunkEnd::Done`]).
    ///
    /// Keys are ordered by their [`encode_key`](crate::codec::encode_key)
    /// bytes: the machine decides by that order which chunk a feed change
    /// belongs to, so a source must split exactly by it. Everything else is
    /// as [`snapshot`](Self::snapshot) (the shape, the point, the rule on
    /// `xip`).
    ///
    /// The default copies the relation whole as one chunk, which is always
    /// correct: a source that cannot split by that order (or a relation
    /// whose key it cannot) does just that.
    async fn copy_chunk(
        &self,
        relation: &UpstreamRelation,
        shape: &ViewShape,
        after: Option<&Key>,
        rows: u64,
        sink: &mut dyn RowSink,
    ) -> Result<CopiedChunk, SourceError> {
        let _ = rows;
        if after.is_some() {
            return Err(SourceError::new(
                SourceErrorKind::Unsupported,
                format!("this source copies {relation} whole; it cannot resume a copy after a key"),
            ));
        }
        let point = self.snapshot(relation, shape, sink).await?;
        Ok(CopiedChunk { point, end: ChunkEnd::Done })
    }

    /// Opens the feed, resuming after `resume` (the origin's durable applied
    /// LSN) when given. Creates the feed if it does not exist.
    async fn subscribe(&self, resume: Option<Lsn>) -> Result<Subscription, SourceError>;

    /// Removes `relation` from the feed (no view of this origin needs it).
    async fn release(&self, relation: &UpstreamRelation) -> Result<(), SourceError>;

    /// Drops the origin's feed entirely (no realtime view of it remains).
    async fn drop_feed(&self) -> Result<(), SourceError>;

    /// The server's current position and what the feed retains, for lag
    /// reporting. Cheap enough to ask once a second. The default says the
    /// source cannot tell (`Unsupported`).
    async fn server_position(&self) -> Result<ServerPosition, SourceError> {
        Err(SourceError::new(SourceErrorKind::Unsupported, "this source does not report its server position"))
    }

    /// About how many rows `relation` holds, from the server's statistics,
    /// for progress reports (an estimate: it may be stale, and a filtered
    /// view copies fewer). `None` when the source cannot tell cheaply; the
    /// default.
    async fn estimate_rows(&self, relation: &UpstreamRelation) -> Option<u64> {
        let _ = relation;
        None
    }
}
