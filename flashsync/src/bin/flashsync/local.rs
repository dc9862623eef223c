//! Opening a store and an engine in this process (when no `flashsync run`
//! holds the store).

use std::sync::Arc;

use async_trait::async_trait;
use flashsync::fjall::{FjallStore, Options};
use flashsync::sqlite::{Options as SqliteOptions, SqliteStore};
use flashsync::Engine;
use flashsync_core::{
    Lsn, RelationSchema, RowSink, SnapshotPoint, Source, SourceError, SourceErrorKind, StoreErrorKind, Subscription,
    UpstreamRelation,
};

use crate::config::{Config, StoreKind};
use crate::CliError;

/// Stands in for an origin whose connection settings are unusable, so its
/// views still load and report why they cannot sync.
struct Unavailable(String);

#[async_trait]
impl Source for Unavailable {
    async fn prepare(&self, _: &UpstreamRelation, _: bool) -> Result<RelationSchema, SourceError> {
        Err(self.err())
    }
    async fn snapshot(
        &self,
        _: &UpstreamRelation,
        _: &flashsync_core::ViewShape,
        _: &mut dyn RowSink,
    ) -> Result<SnapshotPoint, SourceError> {
        Err(self.err())
    }
    async fn subscribe(&self, _: Option<Lsn>) -> Result<Subscription, SourceError> {
        Err(self.err())
    }
    async fn release(&self, _: &UpstreamRelation) -> Result<(), SourceError> {
        Err(self.err())
    }
    async fn drop_feed(&self) -> Result<(), SourceError> {
        Err(self.err())
    }
}

impl Unavailable {
    fn err(&self) -> SourceError {
        SourceError::new(SourceErrorKind::Refused, self.0.clone())
    }
}

/// The store directory holds the fjall database in `db/` and the admin
/// endpoint in `admin/`.
pub fn db_path(store: &std::path::Path) -> std::path::PathBuf {
    store.join("db")
}

/// The configured store, opened in this process.
pub enum LocalStore {
    Fjall(FjallStore),
    Sqlite(SqliteStore),
}

impl LocalStore {
    /// The id sources name their slot and publication after.
    pub fn store_id(&self) -> Option<String> {
        match self {
            LocalStore::Fjall(s) => s.store_id(),
            LocalStore::Sqlite(s) => s.store_id(),
        }
        .map(str::to_owned)
    }

    fn into_shared(self) -> Arc<dyn flashsync_core::Store> {
        match self {
            LocalStore::Fjall(s) => Arc::new(s),
            LocalStore::Sqlite(s) => Arc::new(s),
        }
    }
}

/// Like [`open_store`], for `flashsync run`: while another `flashsync`
/// command holds the store for a moment (`status` or `dump` with no `run`
/// serving, say), waits for it rather than failing — the command is about
/// to let go, and a `run` started by a service manager must not lose that
/// race. Gives up after `patience` with the same error.
pub async fn open_store_patiently(config: &Config, patience: std::time::Duration) -> Result<LocalStore, CliError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = std::time::Duration::from_millis(20);
    let mut said = false;
    loop {
        match try_open(config) {
            Err(e) if e.kind == StoreErrorKind::Locked && tokio::time::Instant::now() < deadline => {
                if !said {
                    tracing::info!("the store is busy (another flashsync command is reading it); waiting");
                    said = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
            other => return other.map_err(|e| open_error(config, e)),
        }
    }
}

pub fn open_store(config: &Config) -> Result<LocalStore, CliError> {
    try_open(config).map_err(|e| open_error(config, e))
}

fn try_open(config: &Config) -> Result<LocalStore, flashsync_core::StoreError> {
    match config.store_kind {
        StoreKind::Fjall => {
            private_dir(&config.store)
                .map_err(|e| flashsync_core::StoreError::new(StoreErrorKind::Io, "store directory", e.0))?;
            FjallStore::open(db_path(&config.store), Options::default()).map(LocalStore::Fjall)
        }
        StoreKind::Sqlite => {
            // The database's directory stays as it is (other processes read
            // the file); the files the store creates are owner-only.
            SqliteStore::open(&config.store, SqliteOptions::default()).map(LocalStore::Sqlite)
        }
    }
}

fn open_error(config: &Config, e: flashsync_core::StoreError) -> CliError {
    match e.kind {
        StoreErrorKind::Locked => CliError(format!(
            "the store at {} is held by another process (is `flashsync run` running without its admin endpoint?)",
            config.store.display()
        )),
        _ => CliError(format!("cannot open the store at {}: {e}", config.store.display())),
    }
}

/// Creates the store directory owner-only (0700), or makes an existing one
/// so: the mirror holds upstream rows, and whatever modes the files inside
/// get, no other local user can reach them through a private directory.
fn private_dir(dir: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e: std::io::Error| CliError(format!("cannot make the store directory {} private: {e}", dir.display()));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).map_err(err)?;
    }
    Ok(())
}

/// An engine over the configured store and origins. With `define`, the
/// config's views are (re)defined first.
pub async fn engine(config: &Config, store: LocalStore, define: bool) -> Result<Engine, CliError> {
    let store_id = store.store_id();
    let mut builder = Engine::builder().shared_store(store.into_shared());
    if let Some(rows) = config.chunk_rows {
        builder = builder.config(flashsync::Config { snapshot_chunk_rows: rows, ..Default::default() });
    }
    for origin in &config.origins {
        let source: Arc<dyn Source> = match origin.source(store_id.as_deref()) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!("{e}");
                Arc::new(Unavailable(e))
            }
        };
        builder = builder.shared_origin(origin.id.as_str(), source);
    }
    let engine = builder.open().await.map_err(|e| CliError(e.to_string()))?;
    if define {
        for def in &config.views {
            engine.define(def.clone()).await.map_err(|e| CliError(format!("view {}: {e}", def.name)))?;
        }
        let configured: Vec<_> = config.views.iter().map(|v| v.name.clone()).collect();
        for st in engine.status("*").await.map_err(|e| CliError(e.to_string()))? {
            let name = flashsync::ViewName { namespace: st.namespace.clone(), name: st.name.clone() };
            if !configured.contains(&name) {
                tracing::warn!(
                    "view {name} is in the store but not in the config; `flashsync forget {name}` removes it"
                );
            }
        }
    }
    Ok(engine)
}
