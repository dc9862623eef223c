//! # flashsync
//!
//! Keeps local copies of upstream Postgres relations — *sync-enabled views* —
//! in an embedded store, and keeps them exact.
//!
//! - **Materialized** views are snapshot copies, atomically replaced on
//!   refresh (state `synced`).
//! - **Realtime** views are bootstrapped from a snapshot and then mirror every
//!   upstream commit, in commit order, from Postgres logical replication
//!   (state `running`).
//!
//! One idempotent entry point, [`Engine::sync`], is safe on startup, on
//! reconnect and whenever unsure; overlapping calls coalesce. Around it:
//! [`Engine::status`], [`Engine::stop`] (disables), [`Engine::resume`],
//! [`Engine::forget`], [`Engine::shutdown`], and an event stream
//! ([`Engine::events`]).
//!
//! This crate is the tokio driver around the sans-IO machine in
//! [`flashsync_core`]; stores and sources plug in through its
//! [`Store`](flashsync_core::Store) and [`Source`](flashsync_core::Source)
//! traits (`flashsync-store-fjall`, `flashsync-source-pg`).
//!
//! ```
//! use flashsync::{Engine, Persistence, ViewDef};
//! use flashsync_core::memory::{MemoryStore, MemoryUpstream, TableIdentity};
//! use flashsync_core::row;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let upstream = MemoryUpstream::new();
//! upstream.create_table("public", "posts", &[("id", "int8"), ("title", "text")], TableIdentity::PrimaryKey(vec![0]));
//!
//! let engine = Engine::builder().store(MemoryStore::new()).origin("postgres:main", upstream.source()).open().await?;
//! engine.define(ViewDef::new("public", "posts_live", Persistence::Realtime, "postgres:main", "public", "posts")?).await?;
//! engine.sync("*").await?;
//! assert_eq!(engine.status("public.posts_live").await?[0].state.to_string(), "running");
//!
//! // A partial view: only some rows (`where`) and some columns.
//! upstream.insert("public", "posts", row![1, "hello"]);
//! upstream.insert("public", "posts", row![2, "bye"]);
//! let hello = ViewDef::new("public", "hello", Persistence::Realtime, "postgres:main", "public", "posts")?
//!     .with_filter("title LIKE 'hel%'")?
//!     .with_columns(["id"])?;
//! engine.define(hello).await?;
//! engine.sync("*").await?;
//! assert_eq!(engine.scan_all("public.hello").await?, vec![row![1]]);
//! engine.shutdown().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]

pub mod changes;
mod driver;
mod engine;
mod error;
mod lag;
pub mod rows;
mod selection;

pub use changes::{ChangeFeed, Changes, FeedError, FeedItem, Position, ViewRowChanges, ViewRows};
pub use driver::SnapshotProgress;
pub use engine::{Engine, EngineBuilder, Forgotten};
pub use error::EngineError;
pub use flashsync_core::{
    Config, Event, EventKind, JobRecord, JobState, Key, KeyRange, Lsn, Persistence, Recopy, RecopyReason, RelationId,
    Row, RowChange, Selector, SyncSummary, Value, ViewDef, ViewName,
};
pub use lag::OriginLag;
pub use rows::Rows;
pub use selection::IntoSelector;

/// The durable fjall store ([`flashsync_store_fjall`]).
#[cfg(feature = "fjall")]
pub use flashsync_store_fjall as fjall;

/// The SQLite store ([`flashsync_store_sqlite`]): a mirror other processes
/// can query with SQL.
#[cfg(feature = "sqlite")]
pub use flashsync_store_sqlite as sqlite;

/// The Postgres source ([`flashsync_source_pg`]).
#[cfg(feature = "postgres")]
pub use flashsync_source_pg as postgres;
