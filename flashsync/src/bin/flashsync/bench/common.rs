//! Shared pieces of the benchmarks: engines over a store (fjall or SQLite)
//! in a temp dir, the feed names, `pg_recvlogical`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsync::fjall::{FjallStore, Options as FjallOptions};
use flashsync::postgres::{ConnInfo, PgSource, PgSourceConfig};
use flashsync::sqlite::{Options as SqliteOptions, SqliteStore};
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

/// An engine over `store` (see [`BenchStore::open`], optionally wrapped for
/// instrumentation) and the bench origin.
pub async fn engine_with(
    conn: &ConnInfo,
    store: Arc<dyn Store>,
    persist_interval: Duration,
) -> Result<Engine, CliError> {
    engine_configured(conn, store, persist_interval, flashsync::Config::default()).await
}

/// [`engine_with`] with machine settings.
pub async fn engine_configured(
    conn: &ConnInfo,
    store: Arc<dyn Store>,
    persist_interval: Duration,
    config: flashsync::Config,
) -> Result<Engine, CliError> {
    let source = PgSource::new(source_config(conn)?).map_err(err)?;
    Engine::builder()
        .shared_store(store)
        .origin(ORIGIN, source)
        .persist_interval(persist_interval)
        .config(config)
        .open()
        .await
        .map_err(err)
}

/// Which store a benchmark measures (`--store`). Both are opened with their
/// default options, as `flashsync run` opens them, so the figures are what a
/// user of either store gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStore {
    /// The fjall store (a directory).
    #[default]
    Fjall,
    /// The SQLite store (one database file, `bench.db`, in the directory).
    Sqlite,
}

impl BenchStore {
    /// The name printed in summaries and reports (the `--store` value).
    pub fn name(self) -> &'static str {
        match self {
            BenchStore::Fjall => "fjall",
            BenchStore::Sqlite => "sqlite",
        }
    }

    /// Opens (or reopens: the stream bench opens twice) this store in `dir`,
    /// a temp dir the caller owns.
    ///
    /// SQLite's open blocks (it may recover the log); it runs inline, as
    /// fjall's does, so both stores pay their open the same way wherever a
    /// bench times it.
    pub fn open(self, dir: &Path) -> Result<Arc<dyn Store>, CliError> {
        Ok(match self {
            BenchStore::Fjall => Arc::new(FjallStore::open(dir, FjallOptions::default()).map_err(err)?),
            BenchStore::Sqlite => {
                Arc::new(SqliteStore::open(dir.join("bench.db"), SqliteOptions::default()).map_err(err)?)
            }
        })
    }
}

/// Shuts `engine` down and waits (bounded) until its store is closed: the
/// store's background threads stop with it, and the bench's temp dir must
/// outlive them, or they find their files gone and log errors after the
/// bench's result.
pub async fn finish(engine: Engine, kind: BenchStore, dir: &Path) -> Result<(), CliError> {
    engine.shutdown().await.map_err(err)?;
    drop(engine);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let opened = match kind {
            BenchStore::Fjall => FjallStore::open(dir, FjallOptions::default()).map(drop),
            BenchStore::Sqlite => SqliteStore::open(dir.join("bench.db"), SqliteOptions::default()).map(drop),
        };
        match opened {
            Ok(()) => return Ok(()),
            Err(e) if e.kind == flashsync_core::StoreErrorKind::Locked && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(CliError(format!("the bench's store did not close: {e}"))),
        }
    }
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
