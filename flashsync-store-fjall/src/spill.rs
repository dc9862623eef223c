//! Staged parts of large upstream transactions, in a file beside the
//! store: a transaction of any size waits for its commit in flat memory
//! ([`flashsync_core::staging`]).
//!
//! Nothing in the file outlives the process that wrote it — a reopened
//! store stages nothing, and the feed sends an unfinished transaction
//! again — so it is emptied at open, never fsynced, and its space is given
//! back whenever no transaction is staged. It holds row data: owner-only,
//! like the rest of the store.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use flashsync_core::staging::{Spill, SpillRef};
use flashsync_core::{StoreError, StoreErrorKind};

/// The file's name in the store directory.
pub(crate) const STAGING_FILE: &str = "staging";

/// Parts appended to one file, read back by offset.
pub(crate) struct FileSpill {
    file: File,
    len: u64,
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::new(StoreErrorKind::Io, "staging a large transaction", format!("{what}: {e}"))
}

impl FileSpill {
    /// Creates (or empties) the file in `dir`.
    pub(crate) fn create(dir: &Path) -> Result<FileSpill, StoreError> {
        let path = dir.join(STAGING_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&format!("cannot open {}", path.display()), e))?;
        Ok(FileSpill { file, len: 0 })
    }
}

impl Spill for FileSpill {
    fn write(&mut self, bytes: &[u8]) -> Result<SpillRef, StoreError> {
        self.file.write_all_at(bytes, self.len).map_err(|e| io("cannot write a staged part", e))?;
        let at = SpillRef { offset: self.len, len: bytes.len() as u64 };
        self.len += at.len;
        Ok(at)
    }

    fn read(&mut self, at: SpillRef) -> Result<Vec<u8>, StoreError> {
        let len = usize::try_from(at.len)
            .ok()
            .filter(|_| at.offset.checked_add(at.len).is_some_and(|end| end <= self.len))
            .ok_or_else(|| {
                StoreError::new(StoreErrorKind::Corrupt, "read a staged part", "out of the file's bounds")
            })?;
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, at.offset).map_err(|e| io("cannot read a staged part", e))?;
        Ok(buf)
    }

    fn reset(&mut self) -> Result<(), StoreError> {
        self.file.set_len(0).map_err(|e| io("cannot empty the staging file", e))?;
        self.len = 0;
        Ok(())
    }
}
