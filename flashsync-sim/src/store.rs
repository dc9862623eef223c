//! The local store under simulation: the in-memory reference store or the
//! real fjall store in a temporary directory, with crashes that lose exactly
//! what a real crash may lose.
//!
//! # Crashes
//!
//! A crash must keep everything durable and may lose everything else. The two
//! stores get there differently:
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
//!   `put_job`, `forget`, `forget_origin`, `publish`), and after the drop cuts
//!   the journal back to that point before reopening. fjall journals hold
//!   whole checksummed batches, each ending in a non-zero trailer, and are
//!   pre-allocated with zeros, so the end of the data at an fsync is the last
//!   non-zero byte. Rows of unpublished generations and the keyspaces fjall
//!   creates or deletes outside the journal are unaffected, exactly as in a
//!   real crash. If fjall rotated its journal since the last fsync we know of
//!   (it syncs while rotating), the crash loses nothing.
//!
//! Batch numbers are per opening of a store: a restarted
//! [`Machine`](flashsync_core::Machine) numbers from 1 again, and both stores
//! start their numbering afresh when reopened (`MemoryStore::crash` included).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flashsync_core::memory::MemoryStore;
use flashsync_core::rowops::ApplyReport;
use flashsync_core::{
    ApplyBatch, BatchSeq, Generation, JobRecord, KeyRange, OriginId, RelationId, RelationSchema, Row, Store,
    StoreError, StoreErrorKind, StoredState, ViewRecord,
};
use flashsync_store_fjall::{FjallStore, Options};
use futures::executor::block_on;

/// Which store implementation to simulate over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// [`MemoryStore`].
    Memory,
    /// [`FjallStore`] in a temporary directory.
    Fjall,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Memory => "memory",
            StoreKind::Fjall => "fjall",
        })
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "fjall" => Ok(StoreKind::Fjall),
            other => Err(format!("unknown store {other:?} (expected memory or fjall)")),
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

enum Backend {
    Memory(MemoryStore),
    Fjall(FjallStore),
    /// Between a crash and the reopen.
    Closed,
}

/// A store for one simulation run.
pub struct SimStore {
    kind: StoreKind,
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    mark: JournalMark,
    /// Crashes whose journal cut was skipped because fjall rotated it.
    pub lossless_crashes: u64,
}

impl SimStore {
    /// Opens a fresh store. Fjall stores live in a temporary directory under
    /// `/dev/shm` when it exists (fsync is free there) or the system temp dir.
    pub fn open(kind: StoreKind) -> Result<SimStore, StoreError> {
        let io = |e: std::io::Error| StoreError::new(StoreErrorKind::Io, "create a temporary directory", e.to_string());
        let (backend, dir) = match kind {
            StoreKind::Memory => (Backend::Memory(MemoryStore::new()), None),
            StoreKind::Fjall => {
                let shm = Path::new("/dev/shm");
                let dir = if shm.is_dir() {
                    tempfile::Builder::new().prefix("flashsync-sim-").tempdir_in(shm).map_err(io)?
                } else {
                    tempfile::Builder::new().prefix("flashsync-sim-").tempdir().map_err(io)?
                };
                let store = FjallStore::open(dir.path().join("store"), Options::default())?;
                (Backend::Fjall(store), Some(dir))
            }
        };
        let mut s = SimStore { kind, backend, dir, mark: JournalMark::default(), lossless_crashes: 0 };
        s.mark_fsync();
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
            Backend::Closed => Err(StoreError::new(StoreErrorKind::Io, "store", "the store is closed (crashed)")),
        }
    }

    fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("store"))
    }

    /// Records where the journal ends after an fsync (fjall only).
    fn mark_fsync(&mut self) {
        let Some(path) = self.path() else { return };
        let Some(active) = active_journal(&path) else { return };
        let from = if self.mark.file.as_ref() == Some(&active) { self.mark.end } else { 0 };
        if let Ok(end) = data_end(&active, from) {
            self.mark = JournalMark { file: Some(active), end };
        }
    }

    /// What a successful store call made durable.
    fn durable_after(&mut self, memory_scope: Durable) -> Durable {
        match self.kind {
            StoreKind::Memory => memory_scope,
            StoreKind::Fjall => {
                self.mark_fsync();
                Durable::Everything
            }
        }
    }

    /// [`Store::load`].
    pub fn load(&self) -> Result<StoredState, StoreError> {
        block_on(self.store()?.load())
    }

    /// [`Store::put_view`].
    pub fn put_view(&mut self, view: &ViewRecord) -> (Result<(), StoreError>, Durable) {
        let r = self.store().and_then(|s| block_on(s.put_view(view)));
        let d = if r.is_ok() { self.durable_after(Durable::Nothing) } else { Durable::Nothing };
        (r, d)
    }

    /// [`Store::put_job`].
    pub fn put_job(&mut self, job: &JobRecord) -> (Result<(), StoreError>, Durable) {
        let r = self.store().and_then(|s| block_on(s.put_job(job)));
        let d = if r.is_ok() { self.durable_after(Durable::Nothing) } else { Durable::Nothing };
        (r, d)
    }

    /// [`Store::forget`].
    pub fn forget(&mut self, id: RelationId) -> (Result<(), StoreError>, Durable) {
        let r = self.store().and_then(|s| block_on(s.forget(id)));
        let d = if r.is_ok() { self.durable_after(Durable::View(id)) } else { Durable::Nothing };
        (r, d)
    }

    /// [`Store::forget_origin`].
    pub fn forget_origin(&mut self, origin: &OriginId) -> (Result<(), StoreError>, Durable) {
        let r = self.store().and_then(|s| block_on(s.forget_origin(origin)));
        let d = if r.is_ok() { self.durable_after(Durable::Nothing) } else { Durable::Nothing };
        (r, d)
    }

    /// [`Store::begin_generation`].
    pub fn begin_generation(&self, id: RelationId, schema: &RelationSchema) -> Result<Box<dyn Generation>, StoreError> {
        block_on(self.store()?.begin_generation(id, schema))
    }

    /// [`Generation::publish`].
    pub fn publish(&mut self, generation: Box<dyn Generation>, job: &JobRecord) -> (Result<(), StoreError>, Durable) {
        let r = block_on(generation.publish(job));
        let d = if r.is_ok() { self.durable_after(Durable::View(job.relation_id)) } else { Durable::Nothing };
        (r, d)
    }

    /// [`Generation::discard`].
    pub fn discard(&self, generation: Box<dyn Generation>) -> Result<(), StoreError> {
        block_on(generation.discard())
    }

    /// [`Store::apply`].
    pub fn apply(&self, batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
        block_on(self.store()?.apply(batch))
    }

    /// [`Store::persist`].
    pub fn persist(&mut self) -> Result<Option<BatchSeq>, StoreError> {
        let through = block_on(self.store()?.persist())?;
        if self.kind == StoreKind::Fjall {
            self.mark_fsync();
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
    /// have been dropped. The store is open again afterwards.
    pub fn crash(&mut self, lose: bool) -> Result<(), StoreError> {
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
                    self.cut_journal(&path)?;
                }
                let store = reopen(&path)?;
                self.backend = Backend::Fjall(store);
                self.mark = JournalMark::default();
                self.mark_fsync();
            }
            Backend::Closed => {}
        }
        Ok(())
    }

    fn cut_journal(&mut self, path: &Path) -> Result<(), StoreError> {
        let io = |e: std::io::Error| StoreError::new(StoreErrorKind::Io, "crash: cut the journal", e.to_string());
        let active = active_journal(path);
        match (&self.mark.file, active) {
            (Some(marked), Some(active)) if *marked == active => {
                let f = OpenOptions::new().write(true).open(&active).map_err(io)?;
                f.set_len(self.mark.end).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            _ => self.lossless_crashes += 1,
        }
        Ok(())
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
