//! Shared setup for the engine-level acceptance tests on a real Postgres
//! (the modules of `tests/pg/`): engines over the fjall store and the Postgres source, a
//! recording source wrapper, upstream/local comparison, writers.
//!
//! Every test gets its own database (or dedicated cluster) and its own
//! replication slot name: slots are per cluster, and tests of one binary
//! share a cluster.
#![allow(dead_code)]
// The submodules take their imports from here (`use super::*`).
#![allow(unused_imports)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flashsync::{Config, Engine, Event, EventKind, JobRecord, Persistence, Row, Value, ViewDef};
use flashsync_core::{
    FeedStart, Lsn, Millis, OriginId, RelationSchema, RowSink, SnapshotPoint, Source, SourceError, StoreErrorKind,
    StreamEvent, Subscription, UpstreamRelation,
};
use flashsync_source_pg::ident::qualified;
use flashsync_source_pg::testkit::TestDb;
use flashsync_source_pg::{PgSource, PgSourceConfig};
use flashsync_store_fjall::{FjallStore, Options};
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

/// Opens the fjall store in `dir`, waiting while an engine that was just
/// shut down still releases it.
pub async fn open_store(dir: &Path) -> FjallStore {
    wait_for("the store to be released by the previous engine", Duration::from_secs(30), move || async move {
        match FjallStore::open(dir, Options::default()) {
            Ok(s) => Some(s),
            Err(e) if e.kind == StoreErrorKind::Locked => None,
            Err(e) => panic!("opening the store: {e}"),
        }
    })
    .await
}

/// An engine over the store in `dir` and `source` for [`ORIGIN`].
pub async fn open_engine(dir: &Path, source: Arc<dyn Source>) -> Engine {
    open_engine_with(dir, source, fast_config()).await
}

/// Like [`open_engine`], with machine settings.
pub async fn open_engine_with(dir: &Path, source: Arc<dyn Source>, config: Config) -> Engine {
    let store = open_store(dir).await;
    Engine::builder().store(store).shared_origin(ORIGIN, source).config(config).seed(0x5eed).open().await.unwrap()
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
