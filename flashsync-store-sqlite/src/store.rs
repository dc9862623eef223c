//! [`SqliteStore`] and its [`Store`] implementation: wiring calls to the
//! writer thread (mutations, `load`) or to the reader threads (reads).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flashsync_core::codec::encode_key;
use flashsync_core::rowops::ApplyReport;
use flashsync_core::{
    ApplyBatch, BatchSeq, Generation, JobRecord, Key, KeyRange, OriginId, RelationId, RelationSchema, Row, Store,
    StoreError, StoreErrorKind, StoredState, ViewRecord,
};

use crate::generation::{self, SqliteGeneration};
use crate::options::Options;
use crate::read::Reader;
use crate::worker::Worker;
use crate::writer::Writer;
use crate::{apply, catalog, checkpoint, open};

/// A [`Store`] in one SQLite database file. See the [crate docs](crate).
///
/// Cheap to clone: clones share one writer thread and one pool of reader
/// threads. The database closes when the last clone (and the last
/// [`Generation`] from it) is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
}

/// What clones share. Fields drop in order: the readers' connections close
/// first, so the writer's is the last and SQLite checkpoints the log and
/// removes it; the lock goes last.
pub(crate) struct Inner {
    pub(crate) readers: Worker<Reader>,
    pub(crate) writer: Worker<Writer>,
    /// The highest batch whose `apply` has returned to its caller. `persist`
    /// reports no further than this as of its call, as the contract asks
    /// (a batch still queued when `persist` is called is not claimed).
    returned: Mutex<Option<BatchSeq>>,
    path: PathBuf,
    options: Options,
    store_id: Option<String>,
    _lock: std::fs::File,
}

impl Inner {
    fn returned(&self) -> Option<BatchSeq> {
        *self.returned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_returned(&self, seq: BatchSeq) {
        let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        *returned = (*returned).max(Some(seq));
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store in the SQLite database file `path`, creating the file
    /// (and its folder) if it does not exist.
    ///
    /// Fails with a [`StoreError`] whose kind says why:
    /// - [`Io`](StoreErrorKind::Io): `path` is a directory, lies below a
    ///   file, cannot be created or written, or another I/O failure;
    /// - [`Locked`](StoreErrorKind::Locked): another process (or another
    ///   `SqliteStore` in this one) has the store open;
    /// - [`Incompatible`](StoreErrorKind::Incompatible): the file is not a
    ///   SQLite database, is another application's database, or is a store
    ///   written in a format version this build does not read;
    /// - [`Corrupt`](StoreErrorKind::Corrupt): the file is damaged.
    ///
    /// Beside the database SQLite keeps `<file>-wal` and `<file>-shm` while
    /// it is open, and the store keeps `<file>-flashsync-lock`. Generation
    /// tables a crash left unpublished are dropped on open, but for those a
    /// [checkpoint](flashsync_core::Generation::checkpoint) keeps. A store
    /// of an older format version is migrated (durably, in one
    /// transaction); a build of that older version then refuses it.
    ///
    /// Opening blocks (it may recover the write-ahead log); async callers
    /// should run it where blocking is acceptable.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let lock_existed = open::lock_path(path).exists();
        let opened = match open::open(path, &options) {
            Ok(opened) => opened,
            Err(e) => {
                // Leave someone else's database as it was found.
                if e.kind == StoreErrorKind::Incompatible && !lock_existed {
                    let _ = std::fs::remove_file(open::lock_path(path));
                }
                return Err(e);
            }
        };
        let inner = Inner {
            readers: Worker::start("flashsync-sqlite-reader", opened.readers)?,
            writer: Worker::start("flashsync-sqlite-writer", vec![opened.writer])?,
            returned: Mutex::new(None),
            path: path.to_owned(),
            options,
            store_id: opened.store_id,
            _lock: opened.lock,
        };
        Ok(SqliteStore { inner: Arc::new(inner) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// This store's identity: 12 hex digits created with the store and kept
    /// in it (`_flashsync_meta`). Sources name their upstream resources
    /// after it (`flashsync_source_pg::PgSourceConfig::for_store`), so two
    /// stores syncing one database never share a replication slot. `None`
    /// for a store created before ids.
    pub fn store_id(&self) -> Option<&str> {
        self.inner.store_id.as_deref()
    }

    /// The SQLite table holding a view's published copy (its qualified name,
    /// `namespace.name`), or `None` if the view has none.
    pub async fn table_name(&self, id: RelationId) -> Result<Option<String>, StoreError> {
        self.inner.writer.run("table name".into(), move |w| Ok(w.copies.get(&id).map(|p| p.table.clone()))).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<StoredState, StoreError> {
        self.inner.writer.run("load".into(), catalog::load).await
    }

    async fn put_view(&self, view: &ViewRecord) -> Result<(), StoreError> {
        let view = view.clone();
        self.inner.writer.run(format!("put view {}", view.relation_id), move |w| catalog::put_view(w, view)).await
    }

    async fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let job = job.clone();
        self.inner.writer.run(format!("put job {}", job.relation_id), move |w| catalog::put_job(w, job)).await
    }

    async fn forget(&self, id: RelationId) -> Result<(), StoreError> {
        self.inner.writer.run(format!("forget view {id}"), move |w| catalog::forget(w, id)).await
    }

    async fn forget_origin(&self, origin: &OriginId) -> Result<(), StoreError> {
        let origin = origin.clone();
        self.inner.writer.run(format!("forget origin {origin}"), move |w| catalog::forget_origin(w, origin)).await
    }

    async fn begin_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
    ) -> Result<Box<dyn Generation>, StoreError> {
        let op = format!("begin generation of view {id}");
        if !schema.is_well_formed() {
            return Err(StoreError::new(StoreErrorKind::Invalid, op, "schema key does not fit its columns"));
        }
        let schema = schema.clone();
        let worker_op = op.clone();
        let (plan, number) = self.inner.writer.run(op, move |w| generation::begin(w, id, &schema, &worker_op)).await?;
        Ok(Box::new(SqliteGeneration {
            inner: Arc::clone(&self.inner),
            view: id,
            plan: Arc::new(plan),
            number,
            live: true,
        }))
    }

    /// A generation is a table like a published copy: amendments write
    /// into it as `apply` writes into those.
    fn amends_generations(&self) -> bool {
        true
    }

    /// A checkpoint records the generation's table in
    /// `_flashsync_checkpoints`, and opening the store keeps the tables it
    /// names (see [the crate docs](crate#resumable-copies)).
    fn resumes_generations(&self) -> bool {
        true
    }

    async fn resume_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
        after: &Key,
    ) -> Result<Option<Box<dyn Generation>>, StoreError> {
        let op = format!("resume generation of view {id}");
        // Compared with the table's keys as bytes: see `checkpoint`.
        let (schema, after) = (schema.clone(), encode_key(after));
        let worker_op = op.clone();
        let resumed =
            self.inner.writer.run(op, move |w| checkpoint::resume(w, id, &schema, &after, &worker_op)).await?;
        Ok(resumed.map(|(plan, number)| {
            Box::new(SqliteGeneration { inner: Arc::clone(&self.inner), view: id, plan, number, live: true })
                as Box<dyn Generation>
        }))
    }

    async fn apply(&self, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
        let seq = batch.seq;
        let report = self.inner.writer.run(format!("apply batch {}", seq.0), move |w| apply::apply(w, batch)).await?;
        self.inner.note_returned(seq);
        Ok(report)
    }

    /// One writer-thread job and one SQLite transaction for the whole run
    /// (a savepoint per batch): a driver draining a backlog pays one thread
    /// round trip and one commit per run instead of per batch.
    async fn apply_many(&self, batches: Vec<ApplyBatch>) -> Vec<Result<ApplyReport, StoreError>> {
        let Some(last) = batches.last().map(|b| b.seq) else {
            return Vec::new();
        };
        let count = batches.len();
        let seqs: Vec<BatchSeq> = batches.iter().map(|b| b.seq).collect();
        let results = self
            .inner
            .writer
            .run(format!("apply batches up to {}", last.0), move |w| Ok(apply::apply_run(w, batches)))
            .await;
        match results {
            Ok(results) => {
                for (seq, result) in seqs.into_iter().zip(&results) {
                    if result.is_ok() {
                        self.inner.note_returned(seq);
                    }
                }
                results
            }
            // The writer thread is gone or panicked: nothing is known about
            // any of the batches.
            Err(e) => (0..count).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn persist(&self) -> Result<Option<BatchSeq>, StoreError> {
        let through = self.inner.returned();
        // Every batch whose apply returned before this call was committed
        // before this job runs (one writer thread, in call order), so the
        // sync covers it.
        self.inner
            .writer
            .run("persist".into(), move |w| {
                w.sync("persist")?;
                Ok(through)
            })
            .await
    }

    async fn get(&self, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError> {
        let key = key.clone();
        self.inner.readers.run(format!("get from view {id}"), move |r| r.get(id, &key)).await
    }

    async fn scan(&self, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError> {
        let range = range.clone();
        self.inner.readers.run(format!("scan view {id}"), move |r| r.scan(id, &range, limit)).await
    }

    async fn count(&self, id: RelationId) -> Result<u64, StoreError> {
        self.inner.readers.run(format!("count view {id}"), move |r| r.count(id)).await
    }
}
