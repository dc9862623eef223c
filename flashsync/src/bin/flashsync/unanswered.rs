//! `status` when a `flashsync run` holds the store but does not answer —
//! stopped (SIGSTOP, a debugger), swapped out or wedged. The store cannot be
//! opened (the process holds it), so what status can still say comes from
//! the config and from each origin's server: how far the slot's confirmed
//! position — what the process last acknowledged as durable — is behind the
//! server's WAL. That is exactly the lag an operator needs to see while the
//! process is not moving.

use std::path::Path;
use std::time::Duration;

use flashsync_core::Source;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::config::Config;
use crate::CliError;

/// How long status waits for a running process before asking the servers.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long each origin's server gets to answer.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// What `run` leaves beside its admin socket, for commands that cannot ask
/// it: which process it is and the store id its slots are named after.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: u32,
    pub store_id: Option<String>,
}

fn info_path(admin_dir: &Path) -> std::path::PathBuf {
    admin_dir.join("run.json")
}

impl RunInfo {
    /// Writes the file (owner-only, like the socket beside it).
    pub fn write(&self, admin_dir: &Path) -> Result<(), CliError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = info_path(admin_dir);
        let text = serde_json::to_string(self).map_err(|e| CliError(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
            f.write_all(text.as_bytes())
        };
        write().map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))
    }

    pub fn remove(admin_dir: &Path) {
        let _ = std::fs::remove_file(info_path(admin_dir));
    }

    fn read(admin_dir: &Path) -> Option<RunInfo> {
        serde_json::from_slice(&std::fs::read(info_path(admin_dir)).ok()?).ok()
    }
}

/// Prints status from the config and the servers, for a process that did
/// not answer within [`ANSWER_TIMEOUT`].
pub async fn status(config: &Config, selector: &str, json: bool) -> Result<(), CliError> {
    let info = RunInfo::read(&config.admin_dir());
    let store_id = info.as_ref().and_then(|i| i.store_id.clone());
    let mut lags = Vec::new();
    for origin in &config.origins {
        let lag = match origin.source(store_id.as_deref()) {
            Err(e) => json!({ "origin": origin.id.as_str(), "error": e }),
            Ok(source) => match tokio::time::timeout(SERVER_TIMEOUT, source.server_position()).await {
                Err(_) => json!({ "origin": origin.id.as_str(), "error": "the server did not answer" }),
                Ok(Err(e)) => json!({ "origin": origin.id.as_str(), "error": e.to_string() }),
                Ok(Ok(p)) => json!({
                    "origin": origin.id.as_str(),
                    "lag_bytes": p.confirmed.map(|c| p.current.0.saturating_sub(c.0)),
                    "retained_bytes": p.retained_bytes,
                }),
            },
        };
        lags.push(lag);
    }
    let pid = info.as_ref().map_or_else(|| "?".to_owned(), |i| i.pid.to_string());
    let selected =
        config.views.iter().filter(|v| flashsync::Selector::parse(selector).is_ok_and(|s| s.matches(&v.name)));
    if json {
        let records: Vec<Json> = selected
            .map(|v| {
                let lag = lags.iter().find(|l| l["origin"] == v.origin.as_str());
                json!({
                    "namespace": v.name.namespace,
                    "name": v.name.name,
                    "persistence": v.persistence,
                    "origin": v.origin.as_str(),
                    "state": null,
                    "process_running": true,
                    "process_responding": false,
                    "lag_bytes": lag.map_or(Json::Null, |l| l["lag_bytes"].clone()),
                    "lag_seconds": null,
                    "lag_error": lag.map_or(Json::Null, |l| l["error"].clone()),
                })
            })
            .collect();
        println!("{}", Json::Array(records));
        return Ok(());
    }
    println!(
        "(the `flashsync run` holding this store, pid {pid}, did not answer within {} s — stopped or overloaded? \
         Views as configured; lag as the servers see it)",
        ANSWER_TIMEOUT.as_secs()
    );
    for v in selected {
        println!("{}  {:?}  origin {}", v.name, v.persistence, v.origin);
    }
    for l in &lags {
        let origin = l["origin"].as_str().unwrap_or("?");
        match (l["lag_bytes"].as_u64(), l["error"].as_str()) {
            (_, Some(e)) => println!("{origin}: lag unknown ({e})"),
            (Some(b), None) => println!("{origin}: {b} bytes acknowledged behind the server"),
            (None, None) => println!("{origin}: no replication slot"),
        }
    }
    Ok(())
}
