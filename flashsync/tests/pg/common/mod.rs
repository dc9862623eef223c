//! Shared setup for the engine-level acceptance tests on a real Postgres
//! (the modules of `tests/pg/`): engines over a store (fjall or SQLite, see
//! [`StoreKind`] and [`on_every_store!`]) and the Postgres source, a
//! recording source wrapper, upstream/local comparison, writers.
//!
//! Every test gets its own database (or dedicated cluster) and its own
//! replication slot name: slots are per cluster, and tests of one binary
//! share a cluster.
#![allow(dead_code)]
// The submodules take their imports from here (`use super::*`).
#![allow(unused_imports)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flashsync::sqlite::SqliteStore;
use flashsync::{Config, Engine, Event, EventKind, JobRecord, Persistence, Row, Value, ViewDef};
use flashsync_core::Store;
use flashsync_core::{
    FeedStart, Lsn, Millis, OriginId, RelationSchema, RowSink, SnapshotPoint, Source, SourceError, StoreErrorKind,
    StreamEvent, Subscription, UpstreamRelation,
};
use flashsync_source_pg::ident::qualified;
use flashsync_source_pg::testkit::TestDb;
use flashsync_source_pg::{PgSource, PgSourceConfig};
use flashsync_store_fjall::FjallStore;
use tokio::sync::Semaphore;

/// The origin every test uses.
pub const ORIGIN: &str = "postgres:main";

/// Generous bound for convergence and state waits.
pub const WAIT: Duration = Duration::from_secs(60);

pub use flashsync_source_pg::testkit::wait_for;

/// Retry quickly: the tests break connections on purpose.
pub fn fast_config() -> Config {
    Config { retry_base: Millis(50), retry_max: Millis(1000), retry_permanent: Millis(1000), ..Config::default() }
}

/// Source settings for `db` with slot and publication named after the
/// database (unique per test) and frequent status updates.
pub fn source_config(db: &TestDb) -> PgSourceConfig {
    let origin = OriginId::new(ORIGIN).unwrap();
    PgSourceConfig::new(&origin, db.conninfo.clone())
        .with_feed_name(feed_name(db))
        .with_status_interval(Duration::from_millis(200))
        .with_relation_check_interval(Duration::from_millis(200))
}

/// The slot (and publication) name the tests use for `db`.
pub fn feed_name(db: &TestDb) -> String {
    db.name.clone()
}

/// The store an engine test runs on. Tests of the engine's guarantees run on
/// every store (see [`on_every_store!`]); the rest on fjall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `flashsync_store_fjall::FjallStore`, a directory.
    Fjall,
    /// `flashsync::sqlite::SqliteStore`, one database file.
    Sqlite,
}

impl StoreKind {
    /// Where a store of this kind lives in the test's directory `dir`: the
    /// directory itself for fjall, a file in it for SQLite. Reopening `dir`
    /// reopens the same store.
    pub fn path(self, dir: &Path) -> PathBuf {
        match self {
            StoreKind::Fjall => dir.to_owned(),
            StoreKind::Sqlite => dir.join("mirror.db"),
        }
    }

    /// `fjall` when on fjall, `sqlite` when on SQLite: a smaller workload for
    /// a long test's SQLite run (each use says why).
    pub fn pick<T>(self, fjall: T, sqlite: T) -> T {
        match self {
            StoreKind::Fjall => fjall,
            StoreKind::Sqlite => sqlite,
        }
    }
}

/// An opened store of either kind.
pub enum TestStore {
    Fjall(FjallStore),
    Sqlite(SqliteStore),
}

impl TestStore {
    /// The store's identity (names its replication slot by default).
    pub fn store_id(&self) -> Option<&str> {
        match self {
            TestStore::Fjall(s) => s.store_id(),
            TestStore::Sqlite(s) => s.store_id(),
        }
    }

    /// As a store for the engine builder.
    pub fn shared(self) -> Arc<dyn Store> {
        match self {
            TestStore::Fjall(s) => Arc::new(s),
            TestStore::Sqlite(s) => Arc::new(s),
        }
    }
}

/// Opens the `kind` store in `dir` (see [`StoreKind::path`]), waiting while
/// an engine that was just shut down still releases it.
pub async fn open_store(kind: StoreKind, dir: &Path) -> TestStore {
    let path = kind.path(dir);
    wait_for("the store to be released by the previous engine", Duration::from_secs(30), move || {
        let path = path.clone();
        async move {
            // Opening blocks (SQLite may recover its log): off the runtime.
            let opened = tokio::task::spawn_blocking(move || match kind {
                StoreKind::Fjall => {
                    FjallStore::open(&path, flashsync_store_fjall::Options::default()).map(TestStore::Fjall)
                }
                StoreKind::Sqlite => {
                    SqliteStore::open(&path, flashsync::sqlite::Options::default()).map(TestStore::Sqlite)
                }
            })
            .await
            .unwrap();
            match opened {
                Ok(s) => Some(s),
                Err(e) if e.kind == StoreErrorKind::Locked => None,
                Err(e) => panic!("opening the {kind:?} store in {}: {e}", dir.display()),
            }
        }
    })
    .await
}

/// An engine over the `kind` store in `dir` and `source` for [`ORIGIN`].
pub async fn open_engine(kind: StoreKind, dir: &Path, source: Arc<dyn Source>) -> Engine {
    open_engine_with(kind, dir, source, fast_config()).await
}

/// Like [`open_engine`], with machine settings.
pub async fn open_engine_with(kind: StoreKind, dir: &Path, source: Arc<dyn Source>, config: Config) -> Engine {
    let store = open_store(kind, dir).await.shared();
    Engine::builder()
        .shared_store(store)
        .shared_origin(ORIGIN, source)
        .config(config)
        .seed(0x5eed)
        .open()
        .await
        .unwrap()
}

/// Defines, for each `async fn case(kind: StoreKind)` named, a module of
/// the same name with one test per store: `case::fjall` and `case::sqlite`
/// (filter on `::sqlite` to run every SQLite variant). Each prints how long
/// it took (shown with `--show-output`, or when it fails).
macro_rules! on_every_store {
    ($($case:ident),+ $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fjall() {
                $crate::common::run_case(stringify!($case), $crate::common::StoreKind::Fjall, super::$case).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::common::run_case(stringify!($case), $crate::common::StoreKind::Sqlite, super::$case).await
            }
        }
    )+};
}
pub(crate) use on_every_store;

/// Runs one store's variant of a test case and reports its time.
pub async fn run_case<F: std::future::Future<Output = ()>>(
    name: &str,
    kind: StoreKind,
    case: impl FnOnce(StoreKind) -> F,
) {
    let start = std::time::Instant::now();
    case(kind).await;
    eprintln!("{name} on {kind:?}: {:.1} s", start.elapsed().as_secs_f64());
}

/// A view of `ORIGIN`'s `schema.table`.
pub fn view(namespace: &str, name: &str, persistence: Persistence, schema: &str, table: &str) -> ViewDef {
    ViewDef::new(namespace, name, persistence, ORIGIN, schema, table).unwrap()
}

/// A view name as selector text (both parts quoted).
pub fn sel(namespace: &str, name: &str) -> String {
    format!("{}.{}", quote_sel(namespace), quote_sel(name))
}

fn quote_sel(part: &str) -> String {
    format!("\"{}\"", part.replace('"', "\"\""))
}

mod compare;
mod inspect;
mod probe;
mod workload;
mod writers;

pub use compare::*;
pub use inspect::*;
pub use probe::*;
pub use workload::*;
pub use writers::*;
