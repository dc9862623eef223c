//! `run` says it is starting, so that other commands wait for its admin
//! socket instead of opening the store in its way.
//!
//! A command that finds no `run` serving opens the store itself, for a
//! moment. Polled from a script (`status` every tenth of a second, say),
//! those moments can hold the store lock every time a starting `run`
//! tries to take it, and `run` gives up. So `run` leaves a marker beside
//! its socket before it opens the store, and a command that finds the
//! marker of a live process waits for the socket (bounded) instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::CliError;

/// Longer than any start should take; a marker older than this is stale
/// (its process may have been killed and the pid reused).
const STALE: Duration = Duration::from_secs(120);

fn marker_path(admin_dir: &Path) -> PathBuf {
    admin_dir.join("run.starting")
}

/// The marker of a starting `run`; removed when dropped (the socket is
/// served, or the start failed).
pub struct Starting {
    path: PathBuf,
}

impl Starting {
    /// Leaves the marker (owner-only, in an owner-only directory).
    pub fn announce(admin_dir: &Path) -> Result<Starting, CliError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let failed = |e: std::io::Error| CliError(format!("cannot write to {}: {e}", admin_dir.display()));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(admin_dir).map_err(failed)?;
        let path = marker_path(admin_dir);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        std::io::Write::write_all(&mut f, std::process::id().to_string().as_bytes()).map_err(failed)?;
        Ok(Starting { path })
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a `run` is starting in `admin_dir`: its marker is recent and
/// names a live process.
pub fn run_starting(admin_dir: &Path) -> bool {
    let path = marker_path(admin_dir);
    let Ok(meta) = std::fs::metadata(&path) else { return false };
    let recent =
        meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).is_some_and(|age| age < STALE);
    let pid = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok());
    recent && pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}
