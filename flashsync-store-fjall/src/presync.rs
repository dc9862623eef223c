//! Writing an ingestion's tables to disk before fjall registers them.
//!
//! fjall finishes a bulk ingestion under its journal lock — so every other
//! write to the database, other views' batches included, waits — and most
//! of that time goes to the fsync of the table just written: the whole
//! table's data, left dirty in the page cache while it was written. A chunk
//! of a copy finishes its ingestion at every chunk end, and each finish
//! stalled the feed of every other view by tens of milliseconds.
//!
//! So the loader syncs the files of the keyspace's tables folder written
//! since it started, before it asks fjall to finish: the data reaches the
//! disk while nothing waits for it, and the fsync under the lock finds only
//! what `finish` itself writes (the last block, the index and the filter).
//! Building that filter was the other half of the stall; the rows keyspace
//! partitions its filters so `finish` builds one partition of it (see
//! `open::create_options`).
//!
//! This is only a head start. The folder is fjall's layout
//! (`<keyspace>/tables`, one file per table), not its API: if it moves or a
//! file cannot be synced, nothing is synced here and fjall's own fsync does
//! all of it, as before. Durability never depends on this module. Files
//! other than the ingestion's (a flush or a compaction writing at the same
//! moment) are synced early too, which fjall would do anyway.

use std::fs::File;
use std::path::Path;
use std::time::SystemTime;

/// Seals the keyspace's memtable and waits until fjall's background
/// workers have flushed it, so the flush `finish` does under the journal
/// lock finds only what was written since. Best effort, like the rest.
pub(crate) fn memtable(keyspace: &fjall::Keyspace) {
    // `#[doc(hidden)]` in fjall 3.1 (as `rotate_memtable`, used for
    // reclamation): pinned in the workspace.
    let _ = keyspace.rotate_memtable_and_wait();
}

/// The folder of a keyspace's tables, in fjall's layout.
const TABLES: &str = "tables";

/// Syncs the data of every table file of the keyspace at `keyspace_dir`
/// modified at or after `since`. Best effort: errors are ignored (see the
/// module docs). Returns how many files it synced.
pub(crate) fn tables_since(keyspace_dir: &Path, since: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(keyspace_dir.join(TABLES)) else {
        return 0;
    };
    let mut synced = 0;
    for entry in entries.flatten() {
        let recent = entry.metadata().is_ok_and(|m| m.is_file() && m.modified().is_ok_and(|t| t >= since));
        // An fsync through any descriptor writes the file's dirty pages; a
        // read-only one will do.
        if recent && File::open(entry.path()).and_then(|f| f.sync_data()).is_ok() {
            synced += 1;
        }
    }
    synced
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn syncs_recent_table_files_and_ignores_a_missing_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(tables_since(dir.path(), SystemTime::UNIX_EPOCH), 0, "no tables folder: nothing to do");
        std::fs::create_dir(dir.path().join(TABLES)).expect("tables folder");
        std::fs::write(dir.path().join(TABLES).join("1"), b"table").expect("write");
        std::fs::write(dir.path().join(TABLES).join("2"), b"table").expect("write");
        assert_eq!(tables_since(dir.path(), SystemTime::UNIX_EPOCH), 2);
        let future = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(tables_since(dir.path(), future), 0, "files older than the ingestion are left alone");
    }
}
