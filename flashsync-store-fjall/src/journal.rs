//! Syncing fjall's journal without holding its journal lock.
//!
//! fjall's `Database::persist(SyncAll)` fsyncs the active journal file while
//! it holds the journal lock, and every write to the database takes that
//! lock — so each periodic persist stalled the writer thread, and with it
//! every other view's batches, for the length of an fsync (5–35 ms on the
//! benchmark machine, more while a copy keeps the disk busy): outside
//! copies, the largest source of commit-latency outliers in `flashsync
//! bench latency`.
//!
//! So [`persist`](crate::FjallStore) syncs in two steps. On the writer
//! thread, `persist(Buffer)` hands the journal's buffered bytes to the OS
//! (a `write`, no fsync); then, off the writer thread, [`sync_active`]
//! fsyncs the active journal file through a descriptor of its own — an
//! fsync writes a file's dirty pages whichever descriptor asks. Meanwhile
//! the writer thread goes on applying batches.
//!
//! Why that covers every byte the first step flushed: the bytes went to the
//! journal file that was active then. fjall switches files only in
//! `Writer::rotate`, which fsyncs the old file first, and only ever deletes
//! a sealed journal once its memtables are flushed (durable in tables). So
//! the highest-numbered journal found *after* the first step is either
//! that file, or a newer one — and then that file was synced by the
//! rotation.
//!
//! This leans on fjall's layout (`<store>/<n>.jnl`, version pinned in the
//! workspace), not its API; the rule "the highest number is the active
//! journal" is the one fjall's own recovery uses. If no journal file can
//! be found or opened, [`sync_active`] says so and the caller falls back
//! to fjall's own `persist(SyncAll)`, and a test fails if the layout moves
//! (so a fjall upgrade cannot silently turn every persist slow). An
//! fsync that *fails* is a failure, never retried through another path
//! (after a failed fsync the kernel may have dropped the dirty pages, and a
//! second fsync would report success for data that is gone).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// What [`sync_active`] did.
#[derive(Debug)]
pub(crate) enum JournalSync {
    /// The active journal file is synced.
    Synced,
    /// No journal file could be found or opened: the caller must sync
    /// through fjall.
    Unavailable,
    /// The fsync failed: whatever the journal held since the last sync
    /// may be lost.
    Failed(io::Error),
}

/// fsyncs the highest-numbered journal file in `dir`. Call it only after
/// `persist(PersistMode::Buffer)` returned (see the module docs).
pub(crate) fn sync_active(dir: &Path) -> JournalSync {
    let Some(path) = active(dir) else {
        return JournalSync::Unavailable;
    };
    let Ok(file) = File::open(&path) else {
        // Deleted meanwhile (sealed and flushed, so durable) or unreadable:
        // let fjall sync whatever is active now.
        return JournalSync::Unavailable;
    };
    match file.sync_all() {
        Ok(()) => JournalSync::Synced,
        Err(e) => JournalSync::Failed(e),
    }
}

/// The highest-numbered `<n>.jnl` file in `dir`: fjall's active journal.
fn active(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".jnl")).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| id > *b) {
            best = Some((id, entry.path()));
        }
    }
    best.map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_numbered_journal_and_reports_none_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(sync_active(dir.path()), JournalSync::Unavailable), "no journal: fall back to fjall");
        for name in ["2.jnl", "10.jnl", "9.jnl", "11.txt", "x.jnl", "lock"] {
            std::fs::write(dir.path().join(name), b"j").expect("write");
        }
        assert_eq!(active(dir.path()), Some(dir.path().join("10.jnl")), "numeric order, not text order");
        assert!(matches!(sync_active(dir.path()), JournalSync::Synced));
    }

    #[test]
    fn persist_falls_back_to_fjall_when_no_journal_file_is_found() {
        use flashsync_core::Store;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::FjallStore::open(dir.path(), crate::Options::default()).expect("open");
        crate::tests::block_on(crate::tests::publish(&store, 1, Vec::new())).expect("publish");
        // fjall keeps writing through its open descriptor; only the name is
        // gone, so `sync_active` finds nothing and fjall's own sync must do.
        let journal = active(&store.inner.shared.journal_dir).expect("a journal");
        std::fs::remove_file(&journal).expect("unlink the journal");
        assert!(matches!(sync_active(&store.inner.shared.journal_dir), JournalSync::Unavailable));
        crate::tests::block_on(store.persist()).expect("persist through fjall's SyncAll");
    }

    #[test]
    fn a_store_keeps_its_journal_where_this_module_looks() {
        // Pins the layout guess to the fjall version in use: if fjall moved
        // its journals, persist would silently fall back to the slow path.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::FjallStore::open(dir.path(), crate::Options::default()).expect("open");
        assert!(
            active(&store.inner.shared.journal_dir).is_some(),
            "fjall's active journal is a <n>.jnl file in the store directory"
        );
    }
}
