//! # flashsync-store-sqlite
//!
//! A [`Store`](flashsync_core::Store) for flashsync in one SQLite database
//! file (SQLite compiled in, nothing to install): the durable home of the
//! view catalog, sync jobs, per-origin progress and the mirrored rows — with
//! every view a real, typed SQL table that any SQLite client can query while
//! flashsync keeps it up to date.
//!
//! ```
//! use flashsync_core::{
//!     row, key, ApplyBatch, BatchSeq, Column, JobRecord, Lsn, OriginId, Persistence, Progress,
//!     RelationId, RelationSchema, RowOp, SourceRelId, Store, Timestamp, ViewDef, ViewOps,
//!     ViewRecord,
//! };
//! use flashsync_store_sqlite::{Options, SqliteStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("mirror.db");
//! let store = SqliteStore::open(&path, Options::default())?;
//! futures::executor::block_on(async {
//!     // A view, materialized with two rows.
//!     let id = RelationId(1);
//!     let def = ViewDef::new("public", "users", Persistence::Realtime, "postgres:main", "public", "users")?;
//!     store.put_view(&ViewRecord { relation_id: id, def: def.clone() }).await?;
//!     let columns = [("id", "int8"), ("name", "text")].map(|(n, t)| Column { name: n.into(), type_name: t.into() });
//!     let schema = RelationSchema::keyed(SourceRelId(7), columns.to_vec(), vec![0]);
//!     let mut generation = store.begin_generation(id, &schema).await?;
//!     generation.write(vec![row![1, "ada"], row![2, "grace"]]).await?;
//!     let job = JobRecord::new(id, &def.name, def.persistence, Timestamp(0));
//!     generation.publish(&job).await?;
//!
//!     // An upstream commit: rows and the origin's LSN in one transaction.
//!     store.apply(ApplyBatch {
//!         seq: BatchSeq(1),
//!         origin: OriginId::new("postgres:main")?,
//!         progress: Progress::Commit { end_lsn: Lsn(100) },
//!         views: vec![ViewOps {
//!             relation_id: id,
//!             identity: schema.identity,
//!             ops: vec![RowOp::Delete { key: key![1] }],
//!         }],
//!         jobs: vec![],
//!         chain: 0,
//!         commit_time: None,
//!         capture: Default::default(),
//!     }).await?;
//!     assert_eq!(store.persist().await?, Some(BatchSeq(1)));
//!
//!     assert_eq!(store.get(id, &key![2]).await?, Some(row![2, "grace"]));
//!     assert_eq!(store.count(id).await?, 1);
//!     assert_eq!(store.load().await?.origins[0].applied, Lsn(100));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//!
//! // Any SQLite client, in any process, can read the view meanwhile.
//! let sql = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
//! let (id, name): (i64, String) = sql.query_row(r#"SELECT id, name FROM "public.users""#, [], |r| {
//!     Ok((r.get(0)?, r.get(1)?))
//! })?;
//! assert_eq!((id, name.as_str()), (2, "grace"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//!
//! Each view's published copy is a table named by the view's qualified name
//! as **one** quoted identifier — `SELECT * FROM "public.posts_live"` — with
//! the upstream column names and SQL types (see the type mapping below), in
//! upstream order, followed by flashsync's hidden columns:
//!
//! | column | type | what it is |
//! |---|---|---|
//! | `<col>_real`, `<col>_utc` | REAL, TEXT | generated helpers next to `numeric` and `timestamptz` columns (virtual: computed when read, never stored) |
//! | `_flashsync_key` | BLOB | the primary key: the row key's [`encode_key`](flashsync_core::codec::encode_key) bytes. SQLite compares BLOBs bytewise, so `ORDER BY _flashsync_key` is flashsync's key order; the table is `WITHOUT ROWID`, stored in that order, and scans are range reads of it |
//! | `_flashsync_copies` | INTEGER | views without a key only (full-row identity, a multiset): how many copies of this row there are |
//! | `_flashsync_exact` | BLOB | NULL, unless a value of the row cannot be stored exactly in its column: then the row's exact encoding, which reads use |
//!
//! An upstream column name SQLite would take for another (its names ignore
//! ASCII case) or one of the hidden names gets `_2`, `_3`, ... appended.
//!
//! Everything else lives in bookkeeping tables whose names start with
//! `_flashsync_` and contain no dot, so they can never be mistaken for a view
//! (whose table name always has one): `_flashsync_views` (the catalog),
//! `_flashsync_jobs`, `_flashsync_origins` (applied LSN per origin),
//! `_flashsync_copies` (which table holds each view's copy, and its
//! schema), `_flashsync_columns` (each copy's columns: upstream name and
//! type, SQL name and type, helper column), `_flashsync_dirty`,
//! `_flashsync_checkpoints` (unpublished copies kept for resuming: see
//! below) and `_flashsync_meta`. Records are JSON (`json_extract(record, '$.state')`
//! works on jobs). The header's application id marks the file as a flashsync
//! store and `user_version` holds the format version: a store of an older
//! version is migrated when opened (in one durable transaction; version 2
//! added `_flashsync_checkpoints`), after which older builds refuse it, as
//! they refuse other files.
//!
//! ## Type mapping
//!
//! A column's SQLite type comes from its upstream type name; values are as
//! the Postgres source makes them (see
//! [`Value`](flashsync_core::Value)). Every value reads back **exactly**
//! through [`Store::get`](flashsync_core::Store::get) and
//! [`Store::scan`](flashsync_core::Store::scan); the table says what SQL
//! sees.
//!
//! | upstream type | `Value` | SQLite column | in SQL |
//! |---|---|---|---|
//! | `int2`, `int4`, `int8`, `oid` | `Int` | `INTEGER` | native integers |
//! | `bool` | `Bool` | `BOOLEAN` (stored 0 / 1) | `WHERE published`, `= TRUE` |
//! | `float4`, `float8` | `Float` | `REAL` | native; NaN shows as NULL and -0.0 as 0.0 (both kept exactly in `_flashsync_exact`) |
//! | `bytea` | `Bytes` | `BLOB` | native (`length`, `hex`, `=`) |
//! | `numeric` | `Text`, exact | `TEXT`, plus `<col>_real REAL` | the text is the exact value; compare and sort with `<col>_real`, the nearest double (NaN → NULL, ±Infinity → ±Inf), e.g. `WHERE price_real > 10` |
//! | `timestamptz` | `Text` | `TEXT`, plus `<col>_utc TEXT` | Postgres' text under the source's pinned session (UTC, ISO: `2024-01-02 03:04:05.123456+00`), which sorts chronologically as text for years 1–9999; `<col>_utc` is the same instant in SQLite's date format (`2024-01-02 03:04:05.123`, millisecond precision, NULL for `infinity` and BC) for `datetime()`, `julianday()`, `strftime()` |
//! | `timestamp`, `date`, `time` | `Text` | `TEXT` | ISO text: sorts as text, and SQLite's date functions read it as it is |
//! | `json`, `jsonb` | `Text` | `TEXT` | JSON text: `json_extract`, `->>`, `json_each` |
//! | `text`, `varchar`, `uuid`, `interval`, enums, arrays (`_int4`: `{1,2,3}`), anything else | `Text` | `TEXT` | verbatim |
//!
//! Declared types are SQLite's own rather than the Postgres names because
//! SQLite derives a column's *affinity* — the conversion it applies on
//! storing — from substrings of the name: `interval` and `point` contain
//! "INT", and `jsonb` gets NUMERIC affinity, which would store the JSON text
//! `1` as an integer. `_flashsync_columns` keeps the upstream type names.
//! A value of another variant than its column's (possible with hand-built
//! schemas, such as an integer in a `text` column) is stored in the column as
//! SQLite converts it, and exactly in `_flashsync_exact`.
//!
//! ## Atomicity and durability
//!
//! - The database is in WAL mode.
//!   [`apply`](flashsync_core::Store::apply) interprets the batch with
//!   [`apply_ops`](flashsync_core::rowops::apply_ops) inside **one** SQLite
//!   transaction holding rows, job records, the origin's applied LSN (for
//!   `Progress::Commit`) and dirty markers (`Partial` adds the batch's views,
//!   `Commit` clears those of its origin, a conflict marks its view diverged
//!   until it is published again) — committed whole or rolled back whole.
//! - With the default [`Durability::Explicit`] an apply commits with
//!   `synchronous = NORMAL`: it is in the write-ahead log (a killed process
//!   loses nothing) but not fsynced. [`persist`](flashsync_core::Store::persist)
//!   commits a one-row transaction with `synchronous = FULL`, whose fsync of
//!   the log makes every earlier commit durable, and returns the last applied
//!   batch. An OS crash or power loss may lose a suffix of unpersisted
//!   batches, never a prefix or part of one: WAL mode replays only whole
//!   transactions. [`Durability::Batch`] syncs every commit instead.
//! - `put_view`, `put_job`, `forget`, `forget_origin`,
//!   [`Generation::publish`](flashsync_core::Generation::publish) and
//!   [`Generation::checkpoint`](flashsync_core::Generation::checkpoint)
//!   commit with `synchronous = FULL`: durable when they return.
//!
//! ## Generations: atomic replacement
//!
//! A materialize or bootstrap writes a new table,
//! `_flashsync_gen_<view>_<n>`, that nothing reads. Publishing drops the
//! view's old table, renames the new one to the view's name and records the
//! schema, columns and job in one durable transaction. SQLite's DDL is
//! transactional, so readers — this store's and other processes' — see the
//! old copy or the new one, never half of either, and so does a crash. A
//! discarded or abandoned generation's table is dropped; one a crash left
//! behind is dropped when the store is next opened (but see below). A
//! truncate is a `DELETE` inside its batch's transaction. Freed pages go to
//! SQLite's free list and are reused by later writes (the file does not
//! shrink; `VACUUM` it with the store closed to compact it).
//!
//! ## Resumable copies
//!
//! A copy made in chunks can be
//! [checkpointed](flashsync_core::Generation::checkpoint): one durable
//! transaction applies the feed's changes to the generation's table, writes
//! the view's job record (whose `copy` says how far the copy got) and
//! records the table, its number and its schema in `_flashsync_checkpoints`.
//! The rows written before it are in the table already (each write is a
//! commit of the writer thread, and the checkpoint's synced commit makes
//! them durable with it). Such a table outlives its handle, a crash and a
//! reopen: opening keeps the tables checkpoints name and drops only other
//! generation tables. [`resume_generation`](flashsync_core::Store::resume_generation)
//! hands it back (if made with the same schema; otherwise it is dropped)
//! after deleting its rows keyed above the checkpoint's last key — those
//! written after the checkpoint: a range delete on `_flashsync_key`. The
//! checkpoint, and its table, end with the generation's publish or discard,
//! a new copy of the view (`begin_generation`), or `forget`; each removes
//! the checkpoint's row in its own transaction, durably.
//!
//! ## Reading the database from SQL
//!
//! Other processes may open the file read-only (`SQLITE_OPEN_READ_ONLY`,
//! `sqlite3 -readonly`, `?mode=ro`) at any time, the store running or not.
//! In WAL mode they never block the store and the store never blocks them;
//! each read transaction sees one committed state: whole batches, whole
//! copies. The store must be the file's only writer: a row changed behind
//! its back reads as `Corrupt` or diverges from upstream. A full-row view
//! holds each distinct row once with its count in `_flashsync_copies`.
//!
//! ## Concurrency
//!
//! Mutations and `load` run on one writer thread owned by the store, in call
//! order; reads run on a pool of reader threads
//! ([`Options::reader_threads`]) with read-only connections. The async calls
//! await their replies, so no executor thread ever blocks on SQLite or an
//! fsync, and no particular async runtime is needed. One store per file: an
//! OS lock on `<file>-flashsync-lock` (released when the process ends, even
//! by `kill -9`) refuses a second writer.
//!
//! ## Errors
//!
//! Every failure is a [`StoreError`](flashsync_core::StoreError) with a
//! [`StoreErrorKind`](flashsync_core::StoreErrorKind): a path that is a
//! directory or unwritable is `Io`, a store another process has open is
//! `Locked`, a file that is not a SQLite database, another application's
//! database or another format version is `Incompatible`, damaged pages or
//! values a column never holds are `Corrupt`, rows that do not fit their
//! view are `Invalid`, and after a failed commit every call returns
//! `Poisoned` until the store is reopened. Nothing read from disk is
//! unwrapped.

#![forbid(unsafe_code)]

mod apply;
mod catalog;
mod checkpoint;
mod error;
mod generation;
mod layout;
mod open;
mod options;
mod read;
mod store;
mod table;
mod types;
mod worker;
mod writer;

pub use options::{Durability, Options};
pub use store::SqliteStore;
