//! How a [`SqliteStore`](crate::SqliteStore) is opened: durability and tuning.

use std::time::Duration;

/// When applied batches reach stable storage.
///
/// Whatever the mode, [`Store::apply`](flashsync_core::Store::apply) is
/// atomic (one SQLite transaction), and every other mutation (`put_view`,
/// `put_job`, `forget`, `forget_origin`, `Generation::publish`) is durable
/// (its commit fsyncs the write-ahead log) when it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Batches are committed with `PRAGMA synchronous = NORMAL`: written to
    /// the write-ahead log (so a killed process loses nothing) but not
    /// fsynced, so an OS crash or power loss may lose the batches applied
    /// since the last [`Store::persist`](flashsync_core::Store::persist) —
    /// always a suffix, never part of one (WAL mode stays consistent).
    /// `persist` fsyncs the log. This is what the flashsync driver wants: it
    /// persists every few batches and acknowledges upstream only what
    /// `persist` reported durable, so lost batches are replayed from the
    /// origin.
    #[default]
    Explicit,
    /// Every commit runs with `PRAGMA synchronous = FULL` (the log is fsynced
    /// before `apply` returns). Much slower; for callers that apply without
    /// ever calling `persist`.
    Batch,
}

/// Options for [`SqliteStore::open`](crate::SqliteStore::open).
///
/// ```
/// use flashsync_store_sqlite::{Durability, Options};
/// let options = Options::default().durability(Durability::Batch).cache_size(64 << 20).reader_threads(4);
/// assert_eq!(options.durability, Durability::Batch);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// When applied batches become durable. Default: [`Durability::Explicit`].
    pub durability: Durability,
    /// Bytes of SQLite page cache for each of the store's connections (the
    /// writer's and each reader's). Default: 32 MiB.
    pub cache_size: u64,
    /// Threads (each with its own read-only connection) that serve `get`,
    /// `scan` and `count`, so reads neither block the caller's executor nor
    /// wait behind writes. At least 1. Default: 2.
    pub reader_threads: usize,
    /// How long a statement waits for a lock another connection holds (a
    /// reader running WAL recovery, say) before failing with
    /// `StoreErrorKind::Locked`. Default: 5 s.
    pub busy_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Explicit,
            cache_size: 32 << 20,
            reader_threads: 2,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl Options {
    /// Sets [`Options::durability`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`Options::cache_size`].
    #[must_use]
    pub fn cache_size(mut self, bytes: u64) -> Self {
        self.cache_size = bytes;
        self
    }

    /// Sets [`Options::reader_threads`] (at least 1).
    #[must_use]
    pub fn reader_threads(mut self, threads: usize) -> Self {
        self.reader_threads = threads.max(1);
        self
    }

    /// Sets [`Options::busy_timeout`].
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// `PRAGMA cache_size` takes negative numbers as KiB.
    pub(crate) fn cache_size_pragma(&self) -> i64 {
        -i64::try_from((self.cache_size / 1024).max(64)).unwrap_or(i64::MAX)
    }
}
