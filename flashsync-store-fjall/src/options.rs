//! How a [`FjallStore`](crate::FjallStore) is opened: durability and tuning.

/// When applied batches reach stable storage.
///
/// Whatever the mode, [`Store::apply`](flashsync_core::Store::apply) is
/// atomic, and every other mutation (`put_view`, `put_job`, `forget`,
/// `forget_origin`, `Generation::publish`) is durable (fsynced) when it
/// returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Batches become durable only when
    /// [`Store::persist`](flashsync_core::Store::persist) is called (or when
    /// another durable mutation syncs the journal). Between persists the
    /// journal is not even flushed to the OS, so a crash — of the process or
    /// of the machine — may lose the batches applied since the last persist,
    /// always a suffix and never part of one. This is what the flashsync
    /// driver wants: it persists every few batches and acknowledges upstream
    /// only what `persist` reported durable, so lost batches are simply
    /// replayed from the origin.
    #[default]
    Explicit,
    /// Every `apply` is fsynced before it returns. Much slower; for callers
    /// that apply without ever calling `persist`.
    Batch,
}

/// Options for [`FjallStore::open`](crate::FjallStore::open).
///
/// ```
/// use flashsync_store_fjall::{Durability, Options};
/// let options = Options::default()
///     .durability(Durability::Batch)
///     .cache_size(64 << 20);
/// assert_eq!(options.durability, Durability::Batch);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// When applied batches become durable. Default: [`Durability::Explicit`].
    pub durability: Durability,
    /// Bytes of fjall's block cache. Default: 32 MiB.
    pub cache_size: u64,
    /// Upper bound on the bytes of snapshot rows written to a generation in
    /// one fjall batch, so a large `RowSink::write` call never builds one
    /// huge batch in memory. Default: 4 MiB.
    pub generation_batch_bytes: usize,
    /// Upper bound on the bytes of journal fjall keeps before it flushes
    /// memtables to tables; opening a store replays at most about this much.
    /// At least 64 MiB (fjall's minimum). Default: 64 MiB.
    pub journal_size_limit: u64,
    /// Bytes one keyspace's memtable holds before it is sealed and flushed
    /// (fjall's default is 64 MiB; smaller memtables keep memory flat while
    /// large copies and transactions stream in). Applies to keyspaces created
    /// with these options. Default: 16 MiB.
    pub memtable_size: u64,
    /// Snapshot rows held back and sorted before they are ingested as sorted
    /// tables (see "Snapshots bypass the journal" in the crate docs): rows may arrive this
    /// far out of key order and still bypass the journal. Rows further out
    /// of order switch the rest of that copy to ordinary batches. `0`
    /// ingests only strictly ascending rows. Default: 4096.
    pub reorder_window: usize,
}

/// fjall refuses journal limits below this.
pub(crate) const MIN_JOURNAL_SIZE_LIMIT: u64 = 64 << 20;

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Explicit,
            cache_size: 32 << 20,
            generation_batch_bytes: 4 << 20,
            journal_size_limit: MIN_JOURNAL_SIZE_LIMIT,
            memtable_size: 16 << 20,
            reorder_window: 4096,
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

    /// Sets [`Options::journal_size_limit`] (raised to 64 MiB if lower).
    #[must_use]
    pub fn journal_size_limit(mut self, bytes: u64) -> Self {
        self.journal_size_limit = bytes.max(MIN_JOURNAL_SIZE_LIMIT);
        self
    }

    /// Sets [`Options::reorder_window`].
    #[must_use]
    pub fn reorder_window(mut self, rows: usize) -> Self {
        self.reorder_window = rows;
        self
    }

    /// Sets [`Options::generation_batch_bytes`] (at least 1).
    #[must_use]
    pub fn generation_batch_bytes(mut self, bytes: usize) -> Self {
        self.generation_batch_bytes = bytes.max(1);
        self
    }
}
