//! # flashsync-source-pg
//!
//! The Postgres [`Source`](flashsync_core::Source) for flashsync: relation
//! descriptions from the catalog, consistent `COPY` snapshots, and one
//! `pgoutput` logical replication feed per origin (one slot, one
//! publication), following DESIGN §4.
//!
//! ```no_run
//! use flashsync_core::{OriginId, Row, RowSink, Source, StoreError, UpstreamRelation, ViewShape};
//! use flashsync_source_pg::{ConnInfo, PgSource, PgSourceConfig};
//!
//! /// Any sink works; stores hand out generations.
//! struct Collect(Vec<Row>);
//!
//! #[async_trait::async_trait]
//! impl RowSink for Collect {
//!     async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
//!         self.0.extend(rows);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let conn: ConnInfo = "postgres://app:secret@db.internal/main?sslmode=verify-full&sslrootcert=/etc/ca.pem".parse()?;
//! let origin = OriginId::new("postgres:main")?;
//! let source = PgSource::new(PgSourceConfig::new(&origin, conn))?;
//! let users = UpstreamRelation::new("public", "users")?;
//! let schema = source.prepare(&users, true).await?; // now in the publication
//! let mut rows = Collect(Vec::new());
//! // The whole table; a view's `where`/`columns` make a narrower shape.
//! let point = source.snapshot(&users, &ViewShape::whole(schema), &mut rows).await?;
//! let sub = source.subscribe(None).await?;
//! println!("copied {} rows at {}; feed {:?}", point.rows, point.lsn, sub.report);
//! # Ok(()) }
//! ```
//!
//! ## What it guarantees
//!
//! - `prepare(rel, true)` adds the table to the publication and waits for
//!   transactions that were already writing to it, so every change not in
//!   the next snapshot is in the feed. It waits on a connection of its own,
//!   so a long application transaction holds up nothing else, and it waits
//!   on every call (an earlier call may have published the table and then
//!   not finished waiting). Identity: a primary key (or `REPLICA
//!   IDENTITY USING INDEX`) gives `Identity::Key`, a keyless `REPLICA
//!   IDENTITY FULL` table `Identity::FullRow`, anything else is refused with
//!   `SourceErrorKind::ReplicaIdentity`.
//! - `snapshot` reads `pg_current_snapshot()` and the WAL insert position in
//!   one statement of a `REPEATABLE READ` transaction, retakes the snapshot
//!   if an "in progress" transaction had in fact already committed, and
//!   streams `COPY` text in bounded batches.
//! - `copy_chunk` copies a key range the same way, in a snapshot of its own:
//!   the rows above a key, ordered by it and limited. It splits only keys
//!   whose Postgres order is the order of encoded keys (`int2`, `int4`,
//!   `int8`, `bytea`, and `text`/`varchar` compared `COLLATE "C"` in a UTF-8
//!   database, alone or together); any other relation is one chunk.
//! - Values map the same way on both paths ([`values`]), under pinned
//!   session settings ([`session`]).
//! - The feed (`subscribe`) reports the slot truthfully (`Created`,
//!   `Existing`, `Recreated` after invalidation), decodes with our own
//!   [`pgoutput`] decoder, emits `SchemaChanged` when a relation's shape
//!   differs from what `prepare` described or the feed last announced (with
//!   each column matched to the one it was, so live copies can follow a
//!   column added; a column only matches where the catalog still has it
//!   under its attribute number, on a connection of the feed's own, so a
//!   column dropped and added again under its name is a change) — and
//!   also when a described
//!   table was dropped or left the publication, which the stream never says
//!   (checked every `relation_check_interval`) — and acknowledges exactly
//!   what [`Feedback::ack`](flashsync_core::Feedback::ack) is given. It survives a
//!   consumer that stops reading for a while: back-pressure reaches the
//!   server through TCP while a timer keeps status updates flowing.
//!
//! ## Transport
//!
//! Control queries and `COPY` use `tokio-postgres`; the replication stream
//! uses a small transport of our own over tokio and `postgres-protocol`
//! (message encoding, SCRAM), with rustls for `sslmode`. See
//! [`replication`] for the frame parser.
//!
//! ## Requirements
//!
//! Postgres 13 or later with `wal_level = logical`; a role with `REPLICATION`
//! (or superuser) that may create publications on the mirrored tables.
//!
//! Connections per source: one control connection (catalog, publication,
//! slot), the feed's replication connection and its own catalog connection
//! (opened at the first `Relation` message), and one per copy while a
//! snapshot runs (plus a short-lived one while `prepare` waits for
//! writers).

#![forbid(unsafe_code)]

mod catalog;
pub mod conninfo;
mod control;
pub mod copy_text;
mod error;
pub mod ident;
pub mod pgoutput;
mod publication;
pub mod replication;
pub mod session;
mod shape;
mod slot;
mod snapshot;
mod source;
pub mod tls;
pub mod values;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use conninfo::{ConnInfo, ConnInfoError, Host, Secret, SslMode};
pub use source::{PgSource, PgSourceConfig};
