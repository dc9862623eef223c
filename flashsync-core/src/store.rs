//! The `Store` contract: where views, jobs, progress and rows live.
//!
//! The machine never calls a store directly; a driver carries out the
//! machine's actions through this trait. Implementations must uphold:
//!
//! 1. **Atomic batches.** [`Store::apply`] writes all of a batch (row ops of
//!    every view, job records, origin progress) or none of it, and batches
//!    become visible in `seq` order.
//! 2. **Explicit durability.** `apply` need not be durable when it returns;
//!    [`Store::persist`] makes everything applied so far durable. A crash may
//!    lose a suffix of non-persisted batches — never a prefix, never part of
//!    one. Every other mutating call (`put_view`, `put_job`, `forget`,
//!    [`Generation::publish`], ...) is durable when it returns.
//! 3. **Atomic replacement.** Rows written through a [`Generation`] (and
//!    the changes [`Generation::amend`] makes to them, for a copy made in
//!    chunks) are invisible until `publish`, which switches the view to them
//!    in one step (together with the job record); readers and crashes see
//!    the old copy or the new one, never a mix. A discarded or abandoned
//!    generation leaves no visible trace and its space is reclaimed.
//! 4. **Row semantics** follow [`apply_ops`](crate::rowops::apply_ops):
//!    keyed views are maps, full-row views are multisets, `Update` keeps
//!    unchanged cells. Stores should implement `apply` with that helper.
//!    A view an operation did not fit (a conflict, reported in the
//!    [`ApplyReport`]) is marked diverged in the same batch, and listed in
//!    [`StoredState::dirty`] until it is published again or forgotten: a
//!    crash before the machine reacts must still bring a copy of it.
//! 5. **Whole transactions.** A [`Progress::Stage`](crate::Progress::Stage)
//!    batch changes no row: its operations are staged (hand them to a
//!    [`Staging`](crate::staging::Staging)), invisible to readers and gone
//!    after a reopen; the origin's next `Commit` batch applies the staged
//!    operations of the views it names before its own, atomically, and
//!    drops the rest; a `first` part drops an unfinished attempt's parts.
//!    A store that writes a large commit in several steps keeps readers out
//!    until the last, marks the views it touched (listed in
//!    [`StoredState::dirty`] if a crash comes between), and refuses service
//!    if a step fails after an earlier one landed.
//! 6. **Key order.** Scans return rows in the order of their keys'
//!    [`encode_key`](crate::codec::encode_key) bytes.
//! 7. **Errors, not panics**, for every failure, including corrupt bytes on disk.
//! 8. **Resumable copies** (stores that [`Store::resumes_generations`]):
//!    [`Generation::checkpoint`] makes the generation's rows and its
//!    changes so far durable together with a job record, in one step. Such
//!    a generation survives a crash or a reopen, invisible and unreclaimed,
//!    and [`Store::resume_generation`] hands it back holding the rows as of
//!    its last checkpoint (rows written after it, all keyed above the
//!    checkpoint's last key, are dropped). It ends with its `publish`, its
//!    `discard`, a `begin_generation` for the same view, or `forget`.
//!
//! The [`conformance`](crate::conformance) suite checks all of this against
//! any implementation.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::change::{ApplyBatch, BatchSeq, ViewOps};
use crate::encoded::EncodedRows;
use crate::error::{StoreError, StoreErrorKind};
use crate::job::JobRecord;
use crate::lsn::Lsn;
use crate::rowops::ApplyReport;
use crate::schema::RelationSchema;
use crate::value::{Key, Row};
use crate::view::{OriginId, RelationId, ViewDef};

/// A view as the catalog holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRecord {
    /// The view's stable id.
    pub relation_id: RelationId,
    /// Its definition.
    pub def: ViewDef,
}

/// How far an origin's feed has been applied locally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginProgress {
    /// The origin.
    pub origin: OriginId,
    /// End LSN of the last transaction applied (in a persisted batch, when
    /// read back by [`Store::load`]).
    pub applied: Lsn,
}

/// Everything a store holds about sync state, as loaded at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredState {
    /// The view catalog.
    pub views: Vec<ViewRecord>,
    /// Job records.
    pub jobs: Vec<JobRecord>,
    /// Per-origin progress.
    pub origins: Vec<OriginProgress>,
    /// Schemas of the published copies, by view.
    pub schemas: Vec<(RelationId, RelationSchema)>,
    /// Views whose copy an applied batch did not fit (diverged), or that a
    /// store written by an earlier version left partly updated by a large
    /// transaction; they must be re-bootstrapped.
    pub dirty: Vec<RelationId>,
    /// The last batch this store object applied, if any: a machine started
    /// on it numbers its batches after it (sequence numbers only increase
    /// for one store object; a reopened store may start afresh).
    #[serde(default)]
    pub last_batch: Option<BatchSeq>,
}

/// Which rows a scan returns: keys `>= start` (if given) and `< end` (if given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRange {
    /// Inclusive lower bound.
    pub start: Option<Key>,
    /// Exclusive upper bound.
    pub end: Option<Key>,
}

/// Receives snapshot rows in batches; sources write into it.
///
/// A sink may write in the background and return before a batch is stored:
/// a failure then surfaces at a later write or at
/// [`publish`](Generation::publish), which is the point where every row must
/// be in.
#[async_trait]
pub trait RowSink: Send {
    /// Takes a batch of full rows (each as wide as the schema).
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError>;

    /// Takes a batch of rows already in the stored encoding, with their
    /// keys (see [`EncodedRows`]) — the allocation-free path a source that
    /// parses its own wire format uses. A batch encoded for another shape
    /// than the sink's schema is refused (`Invalid`).
    ///
    /// The default decodes the rows and calls [`write`](Self::write); a store
    /// that keeps rows in the [`codec`](crate::codec) encodings overrides it
    /// to store the bytes as they are.
    async fn write_encoded(&mut self, rows: EncodedRows) -> Result<(), StoreError> {
        let decoded =
            rows.decode().map_err(|e| StoreError::new(StoreErrorKind::Invalid, "write encoded rows", e.to_string()))?;
        self.write(decoded).await
    }
}

/// A new, invisible copy of a view being filled by a snapshot.
#[async_trait]
pub trait Generation: RowSink {
    /// Atomically makes this the view's copy (with `schema`), writes `job`,
    /// and schedules the old copy for reclamation. Durable on return. A job
    /// record of another view is refused (`Invalid`).
    async fn publish(self: Box<Self>, job: &JobRecord) -> Result<(), StoreError>;

    /// Drops the rows written so far; the view keeps its current copy.
    async fn discard(self: Box<Self>) -> Result<(), StoreError>;

    /// Finishes the work the rows written so far left pending (a store
    /// that writes them behind the caller's back, as the fjall store's
    /// loader does), so that the [`amend`](Self::amend),
    /// [`checkpoint`](Self::checkpoint) or [`publish`](Self::publish) that
    /// follows is short. Drivers call it when a copy (or a chunk of one)
    /// has written its last row, outside the store's step queue, where a
    /// long step would hold back every other view's batches. Optional:
    /// those calls do whatever it would have done themselves. A failure
    /// fails the copy like a failed write. The default does nothing.
    async fn settle(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Applies row operations to the rows written so far, with the
    /// semantics of [`apply_ops`](crate::rowops::apply_ops) — the feed's
    /// changes to the part of a chunked copy already made. Rows written
    /// later (by the next chunk) have keys above every key `ops` touches.
    /// Invisible until `publish`, like the rows. Only called when the store
    /// says it can ([`Store::amends_generations`]); the default refuses.
    async fn amend(&mut self, ops: ViewOps) -> Result<ApplyReport, StoreError> {
        let _ = ops;
        Err(StoreError::new(
            StoreErrorKind::Invalid,
            "amend a generation",
            "this store cannot apply changes to an unpublished copy",
        ))
    }

    /// [`amend`](Self::amend)s with `ops`, then makes the generation — its
    /// rows and every change so far — durable together with `job` (whose
    /// [`copy`](JobRecord::copy) says how far the copy got), in one step:
    /// after a crash the store holds either the previous checkpoint and
    /// job record or both of these (guarantee 8). Only called when the
    /// store says it can ([`Store::resumes_generations`]), and then instead
    /// of `amend`; the default refuses.
    async fn checkpoint(&mut self, ops: ViewOps, job: &JobRecord) -> Result<ApplyReport, StoreError> {
        let _ = (ops, job);
        Err(StoreError::new(
            StoreErrorKind::Invalid,
            "checkpoint a generation",
            "this store cannot keep an unpublished copy across restarts",
        ))
    }
}

/// The durable home of a flashsync instance: catalog, jobs, progress, rows.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads the catalog, jobs, progress and schemas (startup).
    async fn load(&self) -> Result<StoredState, StoreError>;

    /// Inserts or replaces a catalog entry.
    async fn put_view(&self, view: &ViewRecord) -> Result<(), StoreError>;

    /// Inserts or replaces a job record.
    async fn put_job(&self, job: &JobRecord) -> Result<(), StoreError>;

    /// Removes a view entirely: catalog entry, job, every generation of rows.
    async fn forget(&self, id: RelationId) -> Result<(), StoreError>;

    /// Removes an origin's progress (its feed was dropped upstream).
    async fn forget_origin(&self, origin: &OriginId) -> Result<(), StoreError>;

    /// Starts a new copy of a view with `schema`; rows go in through the
    /// returned generation and stay invisible until it is published.
    async fn begin_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
    ) -> Result<Box<dyn Generation>, StoreError>;

    /// Whether its generations take [`Generation::amend`], so a view can
    /// be copied in chunks while its feed flows (otherwise it is copied in
    /// one piece). The default says no.
    fn amends_generations(&self) -> bool {
        false
    }

    /// Whether its generations take [`Generation::checkpoint`] and survive
    /// restarts (guarantee 8), so a copy in chunks continues where it was
    /// after a crash. Implies [`amends_generations`](Self::amends_generations).
    /// The default says no.
    fn resumes_generations(&self) -> bool {
        false
    }

    /// The unfinished copy of view `id` its last checkpoint left, to go on
    /// filling: rows keyed above `after` (written after the checkpoint) are
    /// dropped first. `None` when there is none, or when `schema` does not
    /// fit the one it was made with ([`RelationSchema::fits`]: a checkpoint
    /// stored without the source's column numbers is taken at its names;
    /// it is then dropped). The default has none.
    async fn resume_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
        after: &Key,
    ) -> Result<Option<Box<dyn Generation>>, StoreError> {
        let _ = (id, schema, after);
        Ok(None)
    }

    /// Applies one batch atomically (not necessarily durably).
    async fn apply(&self, batch: ApplyBatch) -> Result<ApplyReport, StoreError>;

    /// Applies consecutive batches, in order, each atomically. Drivers call
    /// this with every batch that is ready, so a store can amortize per-write
    /// costs (one journal entry for the run, say). A store may make the run
    /// all-or-nothing as a whole; it must never apply part of one batch.
    /// The answer has one result per batch; after an `Err`, later batches
    /// must not have been applied. The default applies them one by one.
    async fn apply_many(&self, batches: Vec<ApplyBatch>) -> Vec<Result<ApplyReport, StoreError>> {
        let mut out = Vec::with_capacity(batches.len());
        let mut failed = false;
        for batch in batches {
            if failed {
                out.push(Err(StoreError::earlier_batch_failed(batch.seq)));
                continue;
            }
            let r = self.apply(batch).await;
            failed = r.is_err();
            out.push(r);
        }
        out
    }

    /// Makes every batch applied so far durable; returns the highest
    /// sequence number now durable. Drivers call this concurrently with
    /// `apply` (group commit): the answer must only cover batches whose
    /// `apply` had returned when `persist` started.
    async fn persist(&self) -> Result<Option<BatchSeq>, StoreError>;

    /// One row of a view's published copy, by key.
    async fn get(&self, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError>;

    /// Up to `limit` rows of a view's published copy within `range`, in key
    /// order. Rows of full-row views appear once per copy.
    async fn scan(&self, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError>;

    /// Number of rows in a view's published copy (copies counted).
    async fn count(&self, id: RelationId) -> Result<u64, StoreError>;
}
