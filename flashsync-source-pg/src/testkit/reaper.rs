//! A watchdog process that outlives the test process: when the test process
//! is gone (however it died), it stops the server and removes its directory.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::os::unix::process::CommandExt;

use super::TestkitError;

const SCRIPT: &str = r#"
parent=$1; pg=$2; dir=$3
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
kill -QUIT "$pg" 2>/dev/null
i=0
while kill -0 "$pg" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$pg" 2>/dev/null
rm -rf "$dir"
"#;

/// Starts the watchdog for server `pg_pid` with data under `dir`. It runs in
/// its own process group so a terminal's Ctrl-C, which also stops the test
/// process, does not stop it before it has cleaned up.
pub(super) fn spawn(pg_pid: u32, dir: &Path) -> Result<Child, TestkitError> {
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("flashsync-pg-reaper")
        .arg(std::process::id().to_string())
        .arg(pg_pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| TestkitError(format!("cannot start the reaper process: {e}")))
}
