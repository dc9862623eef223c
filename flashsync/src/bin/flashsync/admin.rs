//! The local admin endpoint `flashsync run` opens, so other `flashsync`
//! commands can reach a store that `run` holds.
//!
//! A Unix domain socket at `<store>/admin/flashsync.sock` (fjall) or
//! `<database>-admin/flashsync.sock` beside a SQLite database
//! ([`Config::admin_dir`](crate::config::Config::admin_dir)). The directory
//! is created owner-only (0700) and the socket is 0600, so no other
//! user on the host can connect: they could stop sync or read mirrored rows.
//! The protocol is one JSON request line, answered by JSON lines: a header
//! `{"ok":true,...}` or `{"ok":false,"error":"..."}`; `dump` then streams one
//! JSON array per row and ends with `{"end":true}`; `watch` streams one
//! JSON object per change-feed item until the client hangs up.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flashsync::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A request to a running `flashsync run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status {
        selector: String,
    },
    Sync {
        selector: String,
        force: bool,
    },
    Stop {
        selector: String,
    },
    Resume {
        selector: String,
    },
    Forget {
        selector: String,
    },
    Dump {
        view: String,
        limit: Option<usize>,
    },
    /// The change feed, streamed until the client goes ([`crate::watch`]).
    Watch {
        selector: String,
    },
    /// Each origin's lag behind its server.
    Lag,
    /// The copies in progress: rows so far, estimated total, time left.
    Copies,
}

pub fn socket_path(admin_dir: &Path) -> PathBuf {
    admin_dir.join("flashsync.sock")
}

/// Binds the endpoint in `dir` and serves it until the engine shuts down.
pub async fn serve(engine: Engine, dir: &Path) -> Result<PathBuf, String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create admin directory {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
    let path = socket_path(dir);
    if path.exists() {
        // A stale socket from a run that did not exit cleanly (we hold the
        // store lock, so no live run owns it).
        let _ = std::fs::remove_file(&path);
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("cannot open admin socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    tokio::spawn(async move {
        loop {
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(e) => {
                    // Out of file descriptors, say: a retry at full speed
                    // would spin; the next connection can wait a moment.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let engine = engine.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(engine, conn).await {
                    tracing::debug!("admin connection: {e}");
                }
            });
        }
    });
    Ok(path)
}

async fn handle(engine: Engine, conn: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(line) = lines.next_line().await? else { return Ok(()) };
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send(&mut write, &json!({"ok": false, "error": format!("bad request: {e}")})).await,
    };
    match request {
        Request::Dump { view, limit } => {
            // A row at a time, as read: memory stays flat for any size.
            let mut rows = match crate::dump::Source::open(&engine, &view, limit).await {
                Ok(x) => x,
                Err(e) => return send(&mut write, &json!({"ok": false, "error": e})).await,
            };
            send(&mut write, &json!({"ok": true, "columns": rows.columns, "types": rows.types})).await?;
            while let Some(row) = rows.next().await {
                match row {
                    Ok(row) => send(&mut write, &row).await?,
                    Err(e) => return send(&mut write, &json!({"ok": false, "error": e})).await,
                }
            }
            send(&mut write, &json!({"end": true})).await
        }
        Request::Watch { selector } => {
            // The client sends nothing more: a read that ends is it hanging
            // up, noticed even while the selected views are quiet.
            let gone = async move { while let Ok(Some(_)) = lines.next_line().await {} };
            crate::watch::serve(&engine, &selector, &mut write, gone).await
        }
        other => {
            let reply = match execute(&engine, other).await {
                Ok(result) => json!({"ok": true, "result": result}),
                Err(e) => json!({"ok": false, "error": e}),
            };
            send(&mut write, &reply).await
        }
    }
}

/// Runs a (non-dump) request against an engine; the JSON result.
pub async fn execute(engine: &Engine, request: Request) -> Result<Json, String> {
    let j = |v: Result<Json, serde_json::Error>| v.map_err(|e| e.to_string());
    match request {
        Request::Status { selector } => {
            j(serde_json::to_value(engine.status(selector).await.map_err(|e| e.to_string())?))
        }
        Request::Sync { selector, force } => {
            let s = if force { engine.sync_forced(selector).await } else { engine.sync(selector).await };
            j(serde_json::to_value(s.map_err(|e| e.to_string())?))
        }
        Request::Stop { selector } => j(serde_json::to_value(engine.stop(selector).await.map_err(|e| e.to_string())?)),
        Request::Resume { selector } => {
            j(serde_json::to_value(engine.resume(selector).await.map_err(|e| e.to_string())?))
        }
        Request::Forget { selector } => {
            let f = engine.forget(selector).await.map_err(|e| e.to_string())?;
            Ok(json!({"views": f.views, "warnings": f.warnings}))
        }
        Request::Lag => Ok(crate::output::lag_json(&engine.lag())),
        Request::Copies => Ok(crate::output::copies_json(&engine.snapshots())),
        Request::Dump { .. } | Request::Watch { .. } => Err("streamed requests are served by the connection".into()),
    }
}

pub async fn send(w: &mut (impl AsyncWriteExt + Unpin), v: &Json) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

/// A connection to a running `flashsync run`, if one serves in `admin_dir`
/// — or is starting there: then its socket is waited for (up to
/// [`STARTING_WAIT`]) rather than the store opened in its way (see
/// [`crate::starting`]).
pub async fn connect(admin_dir: &Path) -> Option<UnixStream> {
    let deadline = tokio::time::Instant::now() + STARTING_WAIT;
    loop {
        if let Some(conn) = try_connect(admin_dir).await {
            return Some(conn);
        }
        if !crate::starting::run_starting(admin_dir) || tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a command waits for a starting `run` to serve its socket.
const STARTING_WAIT: Duration = Duration::from_secs(30);

async fn try_connect(admin_dir: &Path) -> Option<UnixStream> {
    let path = socket_path(admin_dir);
    if !path.exists() {
        return None;
    }
    tokio::time::timeout(Duration::from_secs(2), UnixStream::connect(&path)).await.ok()?.ok()
}

/// Sends a streamed request and hands each answer line to `each` until the
/// server ends the stream (or `each` fails: stdout closed, say).
pub async fn stream(
    conn: UnixStream,
    request: &Request,
    mut each: impl FnMut(Json) -> std::io::Result<()>,
) -> Result<(), crate::CliError> {
    let (read, mut write) = conn.into_split();
    let line = serde_json::to_string(request).map_err(|e| crate::CliError(e.to_string()))?;
    write
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| crate::CliError(format!("admin endpoint: {e}")))?;
    let mut lines = BufReader::new(read).lines();
    while let Some(l) = lines.next_line().await.map_err(|e| crate::CliError(format!("admin endpoint: {e}")))? {
        let v: Json =
            serde_json::from_str(&l).map_err(|e| crate::CliError(format!("admin endpoint sent garbage: {e}")))?;
        if v.get("ok") == Some(&Json::Bool(false)) {
            let error = v.get("error").and_then(Json::as_str).unwrap_or("request failed");
            return Err(crate::CliError(error.to_owned()));
        }
        if v.get("end").is_some() {
            return Ok(());
        }
        match each(v) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(crate::CliError(format!("writing: {e}"))),
        }
    }
    Ok(())
}

/// Sends a request and collects the answer lines.
pub async fn call(conn: UnixStream, request: &Request) -> Result<Vec<Json>, String> {
    let (read, mut write) = conn.into_split();
    let line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    write.write_all(format!("{line}\n").as_bytes()).await.map_err(|e| format!("admin endpoint: {e}"))?;
    let mut lines = BufReader::new(read).lines();
    let mut out = Vec::new();
    while let Some(l) = lines.next_line().await.map_err(|e| format!("admin endpoint: {e}"))? {
        let v: Json = serde_json::from_str(&l).map_err(|e| format!("admin endpoint sent garbage: {e}"))?;
        if v.get("ok") == Some(&Json::Bool(false)) {
            return Err(v.get("error").and_then(Json::as_str).unwrap_or("request failed").to_owned());
        }
        let end = v.get("end").is_some();
        out.push(v);
        if end || out.len() == 1 && !matches!(request, Request::Dump { .. }) {
            break;
        }
    }
    Ok(out)
}
