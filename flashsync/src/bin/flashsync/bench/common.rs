//! Shared pieces of the benchmarks: engines over fjall in a temp dir, the
//! feed names, `pg_recvlogical`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsync::fjall::{FjallStore, Options};
use flashsync::postgres::{ConnInfo, PgSource, PgSourceConfig};
use flashsync::{Engine, JobState, Lsn};
use flashsync_core::{OriginId, Store};

use crate::CliError;

pub const ORIGIN: &str = "postgres:bench";

pub fn err(e: impl std::fmt::Display) -> CliError {
    CliError(e.to_string())
}

pub fn pg_err(e: impl std::error::Error) -> CliError {
    CliError(crate::chain(&e))
}

pub fn source_config(conn: &ConnInfo) -> Result<PgSourceConfig, CliError> {
    Ok(PgSourceConfig::new(&OriginId::new(ORIGIN).map_err(err)?, conn.clone()))
}

/// An engine over a fjall store at `dir` and the bench origin, with `store`
/// optionally wrapped (for instrumentation).
pub async fn engine_with(
    conn: &ConnInfo,
    store: Arc<dyn Store>,
    persist_interval: Duration,
) -> Result<Engine, CliError> {
    let source = PgSource::new(source_config(conn)?).map_err(err)?;
    Engine::builder()
        .shared_store(store)
        .origin(ORIGIN, source)
        .persist_interval(persist_interval)
        .open()
        .await
        .map_err(err)
}

pub fn fjall(dir: &Path) -> Result<FjallStore, CliError> {
    FjallStore::open(dir, Options::default()).map_err(err)
}

/// A libpq keyword string for command-line tools (password included: it
/// goes to a child process's argv only on throwaway clusters).
pub fn keywords(c: &ConnInfo) -> String {
    let mut s = format!("host={} port={} user={} dbname={}", c.host, c.port, c.user, c.dbname);
    if let Some(p) = &c.password {
        s.push_str(&format!(" password={}", p.expose()));
    }
    s
}

pub fn pg_tool(name: &str) -> Result<PathBuf, CliError> {
    if let Some(dir) = flashsync::postgres::testkit::find_bindir() {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(CliError(format!("{name} not found next to the PostgreSQL server binaries")))
}

/// Waits until `view`'s last applied commit reaches `lsn`.
pub async fn caught_up(engine: &Engine, view: &str, lsn: Lsn, timeout: Duration) -> Result<Duration, CliError> {
    let start = Instant::now();
    loop {
        let st = engine.status(view).await.map_err(err)?;
        if let Some(s) = st.first() {
            if s.state == JobState::Running && s.last_seen_commit.is_some_and(|l| l >= lsn) {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > timeout {
            return Err(CliError(format!("{view} did not catch up to {lsn} within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
