//! The local store under simulation: the in-memory reference store, or one
//! of the real stores (fjall in a temporary directory, SQLite in a temporary
//! file), with crashes that lose exactly what a real crash may lose.
//!
//! # Crashes
//!
//! A crash must keep everything durable and may lose everything else. The
//! three stores get there differently:
//!
//! - [`MemoryStore`] models it directly: [`MemoryStore::crash`] rolls the
//!   applied batches back to the last `persist`; every other mutation is
//!   durable on return.
//! - fjall writes a journal. Dropping a `FjallStore` is a *clean* close: fjall
//!   flushes and fsyncs the journal on drop, so a drop and reopen in one
//!   process keeps every unpersisted batch — losing nothing is a legal crash
//!   outcome, but not the interesting one. To lose what a power cut loses, the
//!   simulator remembers where the journal ended at the last fsync (after
//!   `persist` and after every mutation the store syncs: `put_view`,
//!   `put_job`, `forget`, `forget_origin`, `begin_generation`, `publish`,
//!   a checkpoint), and after the drop cuts
//!   the journal back to that point before reopening. fjall journals hold
//!   whole checksummed batches, each ending in a non-zero trailer, and are
//!   pre-allocated with zeros, so the end of the data at an fsync is the last
//!   non-zero byte. Rows of unpublished generations and the keyspaces fjall
//!   creates or deletes outside the journal are unaffected, exactly as in a
//!   real crash. If fjall rotated its journal since the last fsync we know of
//!   (it syncs while rotating), the crash loses nothing (and the checkers are
//!   told so).
//! - SQLite (WAL mode) is like fjall: closing the last connection checkpoints
//!   the write-ahead log into the database and deletes it, so a drop and
//!   reopen keeps every unpersisted batch. To lose what a power cut loses,
//!   the simulator keeps a copy of the database file and its log *as they
//!   were at the last fsync* (beside the store, updated after every call
//!   that fsynced), and after the drop puts that copy in place (without the
//!   `-shm` index, which SQLite rebuilds from the log) before reopening.
//!   SQLite fsyncs the log on a commit with `synchronous = FULL`: the store
//!   commits `put_view`, `put_job`, `forget`, `forget_origin`, `publish` and
//!   `persist` that way. A call counts as an fsync only if the log gained a
//!   commit frame during it: SQLite writes (and syncs) nothing for a
//!   transaction that changed no page, so a call whose commit was empty made
//!   nothing durable, whatever the store believes. The copy is cheap: a log only
//!   grows until SQLite restarts it (committed frames are never rewritten),
//!   so each fsync appends the log's new frames to the copy; when the log
//!   restarted (a new header: a checkpoint copied all of it into the
//!   database file and synced it), the database file and the new log are
//!   copied whole. Applies commit with `synchronous = NORMAL`; a checkpoint
//!   may make them durable in a real crash, and the simulated crash loses
//!   them anyway — losing what was never reported durable is always legal.
//!
//! Batch numbers are per opening of a store: a restarted
//! [`Machine`](flashsync_core::Machine) numbers from 1 again, and every store
//! starts its numbering afresh when reopened (`MemoryStore::crash` included).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flashsync_core::memory::MemoryStore;
use flashsync_core::rowops::ApplyReport;
use flashsync_core::{
    ApplyBatch, BatchSeq, Generation, JobRecord, KeyRange, OriginId, RelationId, RelationSchema, Row, Store,
    StoreError, StoreErrorKind, StoredState, ViewOps, ViewRecord,
};
use flashsync_store_fjall::{FjallStore, Options};
use flashsync_store_sqlite::SqliteStore;
use futures::executor::block_on;

/// Which store implementation to simulate over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// [`MemoryStore`].
    Memory,
    /// [`FjallStore`] in a temporary directory.
    Fjall,
    /// [`SqliteStore`] in a temporary file.
    Sqlite,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Memory => "memory",
            StoreKind::Fjall => "fjall",
            StoreKind::Sqlite => "sqlite",
        })
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "fjall" => Ok(StoreKind::Fjall),
            "sqlite" => Ok(StoreKind::Sqlite),
            other => Err(format!("unknown store {other:?} (expected memory, fjall or sqlite)")),
        }
    }
}

/// What survives a crash, as far as the simulator's mirrors care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durable {
    /// Nothing changed about durability.
    Nothing,
    /// Everything applied so far is durable now.
    Everything,
    /// This view's copy (and only it) is durable as it is now.
    View(RelationId),
}

/// Where the fjall journal ended at the last fsync.
#[derive(Clone, Debug, Default)]
struct JournalMark {
    file: Option<PathBuf>,
    end: u64,
}

/// Where a SQLite write-ahead log's committed frames end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WalEnd {
    /// The log's header (which changes whenever SQLite restarts the log);
    /// `None` when there is no log, or an empty one.
    header: Option<[u8; WAL_HEADER]>,
    /// One past the last commit frame of this log (the header's end if it
    /// has none).
    end: u64,
}

enum Backend {
    Memory(MemoryStore),
    Fjall(FjallStore),
    Sqlite(SqliteStore),
    /// Between a crash and the reopen.
    Closed,
}

/// A store for one simulation run.
pub struct SimStore {
    kind: StoreKind,
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    mark: JournalMark,
    /// SQLite: what the copy of the files as of the last fsync holds.
    synced: WalEnd,
    /// SQLite: why keeping that copy failed, if it did (the next crash
    /// reports it rather than restore a stale copy).
    copy_error: Option<String>,
    /// Crashes whose journal cut was skipped because fjall rotated it.
    pub lossless_crashes: u64,
}

impl SimStore {
    /// Opens a fresh store. Fjall and SQLite stores live in a temporary
    /// directory under `/dev/shm` when it exists (fsync is free there) or the
    /// system temp dir.
    pub fn open(kind: StoreKind) -> Result<SimStore, StoreError> {
        let io = |e: std::io::Error| StoreError::new(StoreErrorKind::Io, "create a temporary directory", e.to_string());
        let tempdir = || {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() {
                tempfile::Builder::new().prefix("flashsync-sim-").tempdir_in(shm).map_err(io)
            } else {
                tempfile::Builder::new().prefix("flashsync-sim-").tempdir().map_err(io)
            }
        };
        let (backend, dir) = match kind {
            StoreKind::Memory => (Backend::Memory(MemoryStore::new()), None),
            StoreKind::Fjall => {
                let dir = tempdir()?;
                let store = FjallStore::open(dir.path().join("store"), Options::default())?;
                (Backend::Fjall(store), Some(dir))
            }
            StoreKind::Sqlite => {
                let dir = tempdir()?;
                let store = SqliteStore::open(sqlite_files(dir.path()).db, flashsync_store_sqlite::Options::default())?;
                (Backend::Sqlite(store), Some(dir))
            }
        };
        let mut s = SimStore {
            kind,
            backend,
            dir,
            mark: JournalMark::default(),
            synced: WalEnd::default(),
            copy_error: None,
            lossless_crashes: 0,
        };
        // A new store is durable as created (SQLite creates it in one
        // synchronous transaction).
        s.mark_fsync();
        s.copy_synced(None);
        Ok(s)
    }

    /// Which implementation this is.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    fn store(&self) -> Result<&dyn Store, StoreError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m),
            Backend::Fjall(f) => Ok(f),
            Backend::Sqlite(s) => Ok(s),
            Backend::Closed => Err(StoreError::new(StoreErrorKind::Io, "store", "the store is closed (crashed)")),
        }
    }

    fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("store"))
    }

    /// Records where the journal ends after an fsync (fjall only).
    fn mark_fsync(&mut self) {
        if self.kind != StoreKind::Fjall {
            return;
        }
        let Some(path) = self.path() else { return };
        let Some(active) = active_journal(&path) else { return };
        let from = if self.mark.file.as_ref() == Some(&active) { self.mark.end } else { 0 };
        if let Ok(end) = data_end(&active, from) {
            self.mark = JournalMark { file: Some(active), end };
        }
    }

    /// Before a call that may fsync: where the SQLite log ends (SQLite
    /// only). Waits for the writer thread first, so that no work queued
    /// earlier (an abandoned generation's table being dropped) lands
    /// between this and the call.
    fn before_sync(&mut self) -> Option<WalEnd> {
        let Backend::Sqlite(store) = &self.backend else { return None };
        // Any call that runs on the writer thread and touches nothing.
        let _ = block_on(store.table_name(RelationId(0)));
        let files = sqlite_files(self.dir.as_ref()?.path());
        match wal_end(&files.wal, &self.synced) {
            Ok(end) => Some(end),
            Err(e) => {
                self.copy_error.get_or_insert_with(|| format!("read the log before a sync: {e}"));
                None
            }
        }
    }

    /// What a store call made durable (`ok`: it succeeded; `before`: from
    /// [`SimStore::before_sync`]), recording it for crashes.
    fn durable_after(&mut self, ok: bool, before: Option<WalEnd>, memory_scope: Durable) -> Durable {
        if !ok {
            return Durable::Nothing;
        }
        match self.kind {
            StoreKind::Memory => memory_scope,
            StoreKind::Fjall => {
                self.mark_fsync();
                Durable::Everything
            }
            StoreKind::Sqlite => {
                if self.copy_synced(before) {
                    Durable::Everything
                } else {
                    Durable::Nothing
                }
            }
        }
    }

    /// SQLite: if the log gained a commit frame since `before` (or, without
    /// `before`, in any case), the call fsynced: brings the copy of the files
    /// as of the last fsync up to date. Returns whether it did.
    fn copy_synced(&mut self, before: Option<WalEnd>) -> bool {
        if self.kind != StoreKind::Sqlite {
            return false;
        }
        let Some(dir) = self.dir.as_ref() else { return false };
        let files = sqlite_files(dir.path());
        let hint = before.unwrap_or(self.synced);
        let now = match wal_end(&files.wal, &hint) {
            Ok(now) => now,
            Err(e) => {
                self.copy_error.get_or_insert_with(|| format!("read the log after a sync: {e}"));
                return false;
            }
        };
        if before.is_some_and(|b| b == now) {
            // No commit frame: SQLite wrote and synced nothing.
            return false;
        }
        let copied = if now.header.is_some() && now.header == self.synced.header && now.end >= self.synced.end {
            // The same log, grown: append its new frames.
            copy_range(&files.wal, &files.synced_wal, self.synced.end, now.end)
        } else {
            // A new log (or none): the database file, synced by the
            // checkpoint that let SQLite restart the log, and the new log.
            copy_range(&files.db, &files.synced_db, 0, u64::MAX).and_then(|_| match now.header {
                Some(_) => copy_range(&files.wal, &files.synced_wal, 0, now.end),
                None => remove_if_there(&files.synced_wal),
            })
        };
        match copied {
            Ok(()) => self.synced = now,
            Err(e) => {
                self.copy_error.get_or_insert_with(|| format!("copy the synced files: {e}"));
            }
        }
        true
    }

    /// [`Store::load`].
    pub fn load(&self) -> Result<StoredState, StoreError> {
        block_on(self.store()?.load())
    }

    /// [`Store::put_view`].
    pub fn put_view(&mut self, view: &ViewRecord) -> (Result<(), StoreError>, Durable) {
        let before = self.before_sync();
        let r = self.store().and_then(|s| block_on(s.put_view(view)));
        let d = self.durable_after(r.is_ok(), before, Durable::Nothing);
        (r, d)
    }

    /// [`Store::put_job`].
    pub fn put_job(&mut self, job: &JobRecord) -> (Result<(), StoreError>, Durable) {
        let before = self.before_sync();
        let r = self.store().and_then(|s| block_on(s.put_job(job)));
        let d = self.durable_after(r.is_ok(), before, Durable::Nothing);
        (r, d)
    }

    /// [`Store::forget`].
    pub fn forget(&mut self, id: RelationId) -> (Result<(), StoreError>, Durable) {
        let before = self.before_sync();
        let r = self.store().and_then(|s| block_on(s.forget(id)));
        let d = self.durable_after(r.is_ok(), before, Durable::View(id));
        (r, d)
    }

    /// [`Store::forget_origin`].
    pub fn forget_origin(&mut self, origin: &OriginId) -> (Result<(), StoreError>, Durable) {
        let before = self.before_sync();
        let r = self.store().and_then(|s| block_on(s.forget_origin(origin)));
        let d = self.durable_after(r.is_ok(), before, Durable::Nothing);
        (r, d)
    }

    /// [`Store::begin_generation`]. A fjall store syncs the generation's
    /// marker and number before it returns (its rows may be registered
    /// before any later fsync the simulator sees), so the journal's end now
    /// is durable: a crash that cut the journal back before it would lose
    /// what no real crash can, and hand the number out again. The batches
    /// applied before it are durable with it.
    pub fn begin_generation(
        &mut self,
        id: RelationId,
        schema: &RelationSchema,
    ) -> (Result<Box<dyn Generation>, StoreError>, Durable) {
        let before = self.before_sync();
        let r = self.store().and_then(|s| block_on(s.begin_generation(id, schema)));
        let d = self.fjall_synced(r.is_ok(), before);
        (r, d)
    }

    /// [`Generation::publish`].
    pub fn publish(&mut self, generation: Box<dyn Generation>, job: &JobRecord) -> (Result<(), StoreError>, Durable) {
        let before = self.before_sync();
        let r = block_on(generation.publish(job));
        let d = self.durable_after(r.is_ok(), before, Durable::View(job.relation_id));
        (r, d)
    }

    /// [`Generation::amend`]. A fjall store finishing the generation's
    /// bulk ingestion here syncs its journal first (`loader::register`),
    /// which the crash model must keep; counted as an fsync whatever the
    /// amendment did (see [`SimStore::settle`] for what that costs).
    pub fn amend(
        &mut self,
        generation: &mut Box<dyn Generation>,
        ops: ViewOps,
    ) -> (Result<ApplyReport, StoreError>, Durable) {
        let before = self.before_sync();
        let r = block_on(generation.amend(ops));
        let d = self.fjall_synced(r.is_ok(), before);
        (r, d)
    }

    /// [`Generation::settle`]. A fjall store has its memtable flushed by
    /// fjall's own worker, which syncs the journal first, and then
    /// finishes the bulk ingestion, syncing it again; the crash model must
    /// keep that too. Counted as an fsync whatever happened: when
    /// nothing needed flushing (or, for `amend`, no ingestion was open)
    /// the model keeps a little more than a real crash might, which no
    /// check relies on — it only narrows what crashes exercise.
    pub fn settle(&mut self, generation: &mut Box<dyn Generation>) -> (Result<(), StoreError>, Durable) {
        let before = self.before_sync();
        let r = block_on(generation.settle());
        let d = self.fjall_synced(r.is_ok(), before);
        (r, d)
    }

    /// What a generation call that may have synced fjall's journal made
    /// durable: everything, for fjall; nothing known otherwise.
    fn fjall_synced(&mut self, ok: bool, before: Option<WalEnd>) -> Durable {
        match self.kind {
            StoreKind::Fjall => self.durable_after(ok, before, Durable::Nothing),
            StoreKind::Memory | StoreKind::Sqlite => Durable::Nothing,
        }
    }

    /// [`Generation::checkpoint`].
    pub fn checkpoint(
        &mut self,
        generation: &mut Box<dyn Generation>,
        ops: ViewOps,
        job: &JobRecord,
    ) -> (Result<ApplyReport, StoreError>, Durable) {
        let before = self.before_sync();
        let r = block_on(generation.checkpoint(ops, job));
        let d = self.durable_after(r.is_ok(), before, Durable::Nothing);
        (r, d)
    }

    /// [`Store::resume_generation`].
    pub fn resume_generation(
        &self,
        id: RelationId,
        schema: &RelationSchema,
        after: &flashsync_core::Key,
    ) -> Result<Option<Box<dyn Generation>>, StoreError> {
        block_on(self.store()?.resume_generation(id, schema, after))
    }

    /// [`Store::resumes_generations`].
    pub fn resumes_generations(&self) -> bool {
        self.store().is_ok_and(|s| s.resumes_generations())
    }

    /// [`Generation::discard`].
    pub fn discard(&self, generation: Box<dyn Generation>) -> Result<(), StoreError> {
        block_on(generation.discard())
    }

    /// [`Store::apply`].
    pub fn apply(&self, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
        block_on(self.store()?.apply(batch))
    }

    /// [`Store::apply_many`]: what the tokio driver calls for a run.
    pub fn apply_many(&self, batches: Vec<ApplyBatch>) -> Vec<Result<ApplyReport, StoreError>> {
        match self.store() {
            Ok(store) => block_on(store.apply_many(batches)),
            Err(e) => batches.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// [`Store::persist`].
    pub fn persist(&mut self) -> Result<Option<BatchSeq>, StoreError> {
        let before = self.before_sync();
        let through = block_on(self.store()?.persist())?;
        match self.kind {
            StoreKind::Memory => {}
            StoreKind::Fjall => self.mark_fsync(),
            // `persist` syncs only if the store knows of an unsynced commit;
            // if it syncs nothing, nothing more is durable in the copy either.
            StoreKind::Sqlite => {
                self.copy_synced(before);
            }
        }
        Ok(through)
    }

    /// Every row of a view's published copy, copies repeated; `None` if the
    /// view has no copy.
    pub fn rows(&self, id: RelationId) -> Result<Option<Vec<Row>>, StoreError> {
        match block_on(self.store()?.scan(id, &KeyRange::default(), usize::MAX)) {
            Ok(rows) => Ok(Some(rows)),
            Err(e) if e.kind == StoreErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Crashes the store: `lose` drops whatever was not durable (otherwise
    /// the crash happens to lose nothing). Every generation handed out must
    /// have been dropped. The store is open again afterwards. Returns whether
    /// the crash lost what was not durable: `lose`, unless the store could
    /// not model the loss (a fjall journal rotated since its last fsync).
    pub fn crash(&mut self, lose: bool) -> Result<bool, StoreError> {
        let mut lost = lose;
        match std::mem::replace(&mut self.backend, Backend::Closed) {
            Backend::Memory(m) => {
                if !lose {
                    block_on(m.persist())?;
                }
                // Closing and reopening: what is not durable is gone, and
                // batch numbering starts afresh.
                m.crash();
                self.backend = Backend::Memory(m);
            }
            Backend::Fjall(f) => {
                drop(f);
                let path = self.path().ok_or_else(|| StoreError::new(StoreErrorKind::Io, "crash", "no directory"))?;
                if lose {
                    lost = self.cut_journal(&path)?;
                }
                let store = reopen(&path)?;
                self.backend = Backend::Fjall(store);
                self.mark = JournalMark::default();
                self.mark_fsync();
            }
            Backend::Sqlite(s) => {
                // The last handle: the store closes (a clean close, which
                // checkpoints the log into the database file).
                drop(s);
                let dir =
                    self.dir.as_ref().ok_or_else(|| StoreError::new(StoreErrorKind::Io, "crash", "no directory"))?;
                let files = sqlite_files(dir.path());
                let io = |what: &str, e: std::io::Error| {
                    StoreError::new(StoreErrorKind::Io, format!("crash: {what}"), e.to_string())
                };
                let free = File::open(&files.lock).and_then(|f| match f.try_lock() {
                    Ok(()) => Ok(()),
                    Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::other(
                        "the store is still open: a generation (or another handle) outlived the crash",
                    )),
                    Err(std::fs::TryLockError::Error(e)) => Err(e),
                });
                free.map_err(|e| io("close the store", e))?;
                if lose {
                    if let Some(e) = self.copy_error.take() {
                        return Err(StoreError::new(StoreErrorKind::Io, "crash: restore the synced files", e));
                    }
                    // What the disk held at the last fsync: the database file
                    // and the log, without the index SQLite rebuilds from it.
                    for path in [&files.db, &files.wal, &files.shm] {
                        remove_if_there(path).map_err(|e| io("remove the files", e))?;
                    }
                    copy_range(&files.synced_db, &files.db, 0, u64::MAX).map_err(|e| io("restore the database", e))?;
                    if self.synced.header.is_some() {
                        copy_range(&files.synced_wal, &files.wal, 0, u64::MAX).map_err(|e| io("restore the log", e))?;
                    }
                }
                let store = SqliteStore::open(&files.db, flashsync_store_sqlite::Options::default())?;
                self.backend = Backend::Sqlite(store);
                if !lose {
                    // Everything was synced by the close: copy it afresh.
                    self.synced = WalEnd::default();
                    self.copy_error = None;
                    self.copy_synced(None);
                }
                // After a loss the files are the copy: it stays what is
                // synced (the log grows from where the copy ends).
            }
            Backend::Closed => {}
        }
        Ok(lost)
    }

    /// Cuts the journal back to the last fsync; returns whether it could
    /// (not if fjall rotated the journal since: nothing is lost then).
    fn cut_journal(&mut self, path: &Path) -> Result<bool, StoreError> {
        let io = |e: std::io::Error| StoreError::new(StoreErrorKind::Io, "crash: cut the journal", e.to_string());
        let active = active_journal(path);
        match (&self.mark.file, active) {
            (Some(marked), Some(active)) if *marked == active => {
                let f = OpenOptions::new().write(true).open(&active).map_err(io)?;
                f.set_len(self.mark.end).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(true)
            }
            _ => {
                self.lossless_crashes += 1;
                Ok(false)
            }
        }
    }
}

/// The files of a simulated SQLite store, and the copy of the database and
/// its log as they were at the last fsync.
struct SqliteFiles {
    db: PathBuf,
    wal: PathBuf,
    shm: PathBuf,
    lock: PathBuf,
    synced_db: PathBuf,
    synced_wal: PathBuf,
}

fn sqlite_files(dir: &Path) -> SqliteFiles {
    SqliteFiles {
        db: dir.join("store.db"),
        wal: dir.join("store.db-wal"),
        shm: dir.join("store.db-shm"),
        lock: dir.join("store.db-flashsync-lock"),
        synced_db: dir.join("synced.db"),
        synced_wal: dir.join("synced.db-wal"),
    }
}

/// Size of a SQLite write-ahead log's header.
const WAL_HEADER: usize = 32;
/// Size of a log frame's header (the page follows).
const FRAME_HEADER: u64 = 24;

/// Where the committed frames of the log at `path` end. `known` is an
/// earlier answer: if the log still has the same header (SQLite has not
/// restarted it since), frames before `known.end` are unchanged and the
/// scan starts there.
///
/// The format (sqlite.org/fileformat2.html#walformat): a 32-byte header —
/// magic, version, page size, checkpoint number, two salts, a checksum —
/// then frames of a 24-byte header (page number; database size in pages
/// for the last frame of a commit, 0 otherwise; the log's salts; a
/// checksum) and one page. A restart writes a new header with new salts over
/// the old log, so a frame left over from before has other salts and ends
/// the scan, as it ends SQLite's recovery.
fn wal_end(path: &Path, known: &WalEnd) -> std::io::Result<WalEnd> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(WalEnd::default()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len < WAL_HEADER as u64 {
        return Ok(WalEnd::default());
    }
    let mut header = [0u8; WAL_HEADER];
    f.read_exact(&mut header)?;
    if header[..4] != [0x37, 0x7f, 0x06, 0x82] && header[..4] != [0x37, 0x7f, 0x06, 0x83] {
        return Err(std::io::Error::other("the log does not start with SQLite's magic number"));
    }
    let page = match u32::from_be_bytes([header[8], header[9], header[10], header[11]]) {
        1 => 65536,
        n => u64::from(n),
    };
    let frame = FRAME_HEADER + page;
    let same = known.header == Some(header) && known.end >= WAL_HEADER as u64 && known.end <= len;
    let mut pos = if same { known.end } else { WAL_HEADER as u64 };
    let mut end = pos;
    let mut frame_header = [0u8; FRAME_HEADER as usize];
    while pos + frame <= len {
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut frame_header)?;
        if frame_header[8..16] != header[16..24] {
            break;
        }
        pos += frame;
        if frame_header[4..8] != [0; 4] {
            end = pos;
        }
    }
    Ok(WalEnd { header: Some(header), end })
}

/// Copies bytes `from..to` of `src` (to its end at most) to the same place
/// in `dst`, which is cut there: with `from` 0 a fresh copy, otherwise an
/// append to a copy that holds `from` bytes.
fn copy_range(src: &Path, dst: &Path, from: u64, to: u64) -> std::io::Result<()> {
    let mut src = File::open(src)?;
    let mut dst = OpenOptions::new().write(true).create(true).truncate(from == 0).open(dst)?;
    if from > 0 {
        if dst.metadata()?.len() != from {
            return Err(std::io::Error::other("the copy of the log is not where it was left"));
        }
        src.seek(SeekFrom::Start(from))?;
        dst.seek(SeekFrom::Start(from))?;
    }
    let want = to.saturating_sub(from);
    let copied = std::io::copy(&mut (&mut src).take(want), &mut dst)?;
    if to != u64::MAX && copied != want {
        return Err(std::io::Error::other("the log ended before its last commit frame"));
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// fjall keeps the directory locked until its background threads are gone;
/// a reopen right after the drop can race that.
fn reopen(path: &Path) -> Result<FjallStore, StoreError> {
    let mut last = None;
    for _ in 0..50 {
        match FjallStore::open(path, Options::default()) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind == StoreErrorKind::Locked => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::new(StoreErrorKind::Locked, "reopen", "store stayed locked")))
}

/// The journal fjall appends to: the highest-numbered `*.jnl` file.
fn active_journal(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let n: u64 = name.strip_suffix(".jnl")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// One past the last non-zero byte at or after `from`, reading until a block
/// of zeros (the pre-allocated tail) or the end of the file.
fn data_end(path: &Path, from: u64) -> std::io::Result<u64> {
    const BLOCK: usize = 64 << 10;
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; BLOCK];
    let mut pos = from;
    let mut end = from;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(end);
        }
        match buf[..n].iter().rposition(|&b| b != 0) {
            Some(i) => end = pos + i as u64 + 1,
            None => return Ok(end),
        }
        pos += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsync_core::{Lsn, Persistence, Progress, ViewDef};

    fn batch(seq: u64, lsn: u64) -> ApplyBatch {
        ApplyBatch {
            seq: BatchSeq(seq),
            origin: OriginId::new("postgres:main").expect("origin"),
            progress: Progress::Commit { end_lsn: Lsn(lsn) },
            views: vec![],
            jobs: vec![],
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        }
    }

    fn progress(s: &SimStore) -> Option<Lsn> {
        s.load().expect("load").origins.first().map(|o| o.applied)
    }

    #[test]
    fn a_fjall_crash_loses_exactly_the_unpersisted_batches() {
        let mut s = SimStore::open(StoreKind::Fjall).expect("open");
        let def = ViewDef::new("public", "v", Persistence::Realtime, "postgres:main", "public", "t").expect("def");
        assert!(s.put_view(&ViewRecord { relation_id: RelationId(1), def }).0.is_ok());
        s.apply(batch(1, 100)).expect("apply 1");
        assert_eq!(s.persist().expect("persist"), Some(BatchSeq(1)));
        s.apply(batch(2, 200)).expect("apply 2");
        s.apply(batch(3, 300)).expect("apply 3");
        s.crash(true).expect("crash");
        assert_eq!(progress(&s), Some(Lsn(100)), "unpersisted batches are gone");
        // A clean crash keeps everything; batch numbers start again.
        s.apply(batch(1, 400)).expect("apply after restart");
        s.crash(false).expect("crash");
        assert_eq!(progress(&s), Some(Lsn(400)));
        // A durable mutation syncs everything before it.
        s.apply(batch(1, 500)).expect("apply");
        let def = ViewDef::new("public", "w", Persistence::Realtime, "postgres:main", "public", "t").expect("def");
        assert!(s.put_view(&ViewRecord { relation_id: RelationId(2), def }).0.is_ok());
        s.apply(batch(2, 600)).expect("apply");
        s.crash(true).expect("crash");
        assert_eq!(progress(&s), Some(Lsn(500)));
        assert_eq!(s.lossless_crashes, 0);
    }

    #[test]
    fn a_sqlite_crash_loses_exactly_the_unpersisted_batches() {
        let mut s = SimStore::open(StoreKind::Sqlite).expect("open");
        let def = ViewDef::new("public", "v", Persistence::Realtime, "postgres:main", "public", "t").expect("def");
        assert_eq!(s.put_view(&ViewRecord { relation_id: RelationId(1), def }).1, Durable::Everything);
        s.apply(batch(1, 100)).expect("apply 1");
        assert_eq!(s.persist().expect("persist"), Some(BatchSeq(1)));
        s.apply(batch(2, 200)).expect("apply 2");
        s.apply(batch(3, 300)).expect("apply 3");
        assert!(s.crash(true).expect("crash"));
        assert_eq!(progress(&s), Some(Lsn(100)), "unpersisted batches are gone");
        assert_eq!(s.load().expect("load").views.len(), 1, "the view stays");
        // A clean crash keeps everything; batch numbers start again.
        s.apply(batch(1, 400)).expect("apply after restart");
        assert!(!s.crash(false).expect("crash"));
        assert_eq!(progress(&s), Some(Lsn(400)));
        // A durable mutation syncs everything before it.
        s.apply(batch(1, 500)).expect("apply");
        let def = ViewDef::new("public", "w", Persistence::Realtime, "postgres:main", "public", "t").expect("def");
        assert_eq!(s.put_view(&ViewRecord { relation_id: RelationId(2), def }).1, Durable::Everything);
        s.apply(batch(2, 600)).expect("apply");
        assert!(s.crash(true).expect("crash"));
        assert_eq!(progress(&s), Some(Lsn(500)));
        // Twice in a row, from the restored files.
        s.apply(batch(1, 700)).expect("apply");
        s.crash(true).expect("crash");
        assert_eq!(progress(&s), Some(Lsn(500)));
        s.apply(batch(1, 800)).expect("apply");
        assert_eq!(s.persist().expect("persist"), Some(BatchSeq(1)));
        s.apply(batch(2, 900)).expect("apply");
        s.crash(true).expect("crash");
        assert_eq!(progress(&s), Some(Lsn(800)));
    }

    /// Thousands of commits: SQLite checkpoints the log into the database
    /// file and restarts it; the copy follows.
    #[test]
    fn a_sqlite_crash_loses_exactly_the_unpersisted_batches_across_checkpoints() {
        let mut s = SimStore::open(StoreKind::Sqlite).expect("open");
        let mut restarts = 0;
        let mut header = s.synced.header;
        for round in 0..6u64 {
            let base = round * 1_000_000;
            for seq in 1..=700u64 {
                s.apply(batch(seq, base + seq * 10)).expect("apply");
                if seq % 97 == 0 {
                    assert_eq!(s.persist().expect("persist"), Some(BatchSeq(seq)));
                    if s.synced.header != header {
                        restarts += 1;
                        header = s.synced.header;
                    }
                }
            }
            // Durable through batch 679 (7 × 97).
            s.crash(true).expect("crash");
            assert_eq!(progress(&s), Some(Lsn(base + 6790)), "round {round}");
        }
        assert!(restarts > 0, "SQLite never restarted its log");
    }

    #[test]
    fn a_memory_crash_loses_the_unpersisted_batches_and_restarts_numbering() {
        let mut s = SimStore::open(StoreKind::Memory).expect("open");
        s.apply(batch(1, 100)).expect("apply");
        s.persist().expect("persist");
        s.apply(batch(2, 200)).expect("apply");
        s.crash(true).expect("crash");
        assert_eq!(progress(&s), Some(Lsn(100)));
        s.apply(batch(1, 300)).expect("a restarted machine numbers from 1 again");
        assert_eq!(s.persist().expect("persist"), Some(BatchSeq(1)));
        // A clean close keeps everything, and numbering starts afresh too.
        s.apply(batch(2, 400)).expect("apply");
        s.crash(false).expect("crash");
        assert_eq!(progress(&s), Some(Lsn(400)));
        s.apply(batch(1, 500)).expect("numbering starts afresh after a clean close");
    }
}
