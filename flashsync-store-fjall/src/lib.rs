//! # flashsync-store-fjall
//!
//! A [`Store`](flashsync_core::Store) for flashsync on [fjall], an embedded
//! LSM-tree key-value engine: the durable home of the view catalog, sync jobs,
//! per-origin progress and the mirrored rows.
//!
//! ```
//! use flashsync_core::{
//!     row, key, ApplyBatch, BatchSeq, Column, JobRecord, Lsn, OriginId, Persistence, Progress,
//!     RelationId, RelationSchema, RowOp, SourceRelId, Store, Timestamp, ViewDef, ViewOps,
//!     ViewRecord,
//! };
//! use flashsync_store_fjall::{FjallStore, Options};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = FjallStore::open(dir.path(), Options::default())?;
//! futures::executor::block_on(async {
//!     // A view, materialized with two rows.
//!     let id = RelationId(1);
//!     let def = ViewDef::new("public", "users", Persistence::Realtime, "postgres:main", "public", "users")?;
//!     store.put_view(&ViewRecord { relation_id: id, def: def.clone() }).await?;
//!     let columns = ["id", "name"].map(|n| Column { name: n.into(), type_name: "text".into() });
//!     let schema = RelationSchema::keyed(SourceRelId(7), columns.to_vec(), vec![0]);
//!     let mut generation = store.begin_generation(id, &schema).await?;
//!     generation.write(vec![row![1, "ada"], row![2, "grace"]]).await?;
//!     let job = JobRecord::new(id, &def.name, def.persistence, Timestamp(0));
//!     generation.publish(&job).await?;
//!
//!     // An upstream commit: rows and the origin's LSN in one atomic batch.
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
//!     Ok(())
//! })
//! # }
//! ```
//!
//! ## Layout
//!
//! One fjall database per store directory, with a fixed set of keyspaces: the
//! catalog, jobs, origin progress, published-copy pointers (generation and
//! schema per view), dirty markers, a `meta` keyspace holding the on-disk
//! format version and the store id ([`FjallStore::store_id`]), and **one rows keyspace** whose keys are
//! `view ‖ generation ‖` the core's order-preserving
//! [`encode_key`](flashsync_core::codec::encode_key) bytes, so each
//! generation of each view is a contiguous, key-ordered range.
//!
//! A *generation* is one copy of a view's rows; the published one is the one
//! the view's pointer names. Materializing writes a new generation and
//! switches the pointer; a truncate switches to a fresh empty generation
//! inside its batch. The replaced (or forgotten) generation is marked
//! *garbage* in the same atomic batch and reclaimed later — never on the
//! apply path, and only once the switch is durable: first the tables that
//! hold nothing but its rows (what a copy's bulk ingestion wrote) are
//! dropped whole, which gives their disk space back at once; the rows left
//! in shared tables are then deleted a bounded step (4096 rows) per
//! [`persist`](flashsync_core::Store::persist). [`FjallStore::reclaim`]
//! reclaims all garbage at once. Generations being filled carry a marker;
//! one left by a crash becomes garbage when the store is next opened —
//! unless a [checkpoint](flashsync_core::Generation::checkpoint) gave the
//! marker a value: that generation is kept, invisible, until
//! [`resume_generation`](flashsync_core::Store::resume_generation) hands it
//! back (rows written after the checkpoint deleted) or a publish, discard,
//! new copy or forget ends it.
//!
//! Why not a keyspace per generation, which would make dropping a generation
//! O(1)? fjall 3.1's keyspace creation and deletion are not crash-safe:
//! keyspace ids are reused across restarts, and after a crash a new
//! keyspace's name can be shadowed by a deleted one's, so the journal replays
//! into the wrong keyspace. This crate's SIGKILL test found it; the store
//! therefore only ever writes plain batches into keyspaces created with it.
//!
//!
//! ## Snapshots bypass the journal
//!
//! A generation's rows go nowhere anyone reads until publish, so they need
//! neither the journal nor the memtable. Each generation has a loader thread
//! that writes rows arriving in key order straight into sorted tables with
//! fjall's bulk ingestion — no journal write, memtable insert, flush or
//! compaction rewrite — after sorting a window of
//! [`Options::reorder_window`] rows, since a sequential scan of a table
//! loaded in key order comes back *nearly* in order. Rows further out of
//! order end the ingestion (its rows registered first, so they stay older)
//! and the rest of that copy goes through ordinary batches. Batches are
//! pipelined: [`RowSink::write`](flashsync_core::RowSink::write) returns
//! once the loader has taken the batch, and a failure surfaces at the next
//! write or at publish. Sources that parse their own wire format hand over
//! rows already encoded
//! ([`write_encoded`](flashsync_core::RowSink::write_encoded)), which are
//! stored as they are. Because ingested tables skip the journal, beginning a
//! generation fsyncs its marker and number first.
//!
//! ## Atomicity and durability
//!
//! - A transaction too large for one batch arrives as staged parts
//!   ([`flashsync_core::staging`]): their bytes wait in an owner-only file
//!   beside the store (emptied at open: nothing staged outlives the
//!   process), and the commit writes them one fjall batch per part, then
//!   its own batch, all under the state lock, so readers see the whole
//!   transaction or none of it. Each part marks its views until the commit
//!   clears the marks: a crash inside that window copies them again.
//! - [`apply`](flashsync_core::Store::apply) interprets the batch with
//!   [`apply_ops`](flashsync_core::rowops::apply_ops), buffering every write,
//!   then commits rows, job records, the origin's applied LSN (for
//!   `Progress::Commit`) and dirty markers (`Partial` adds the batch's views,
//!   `Commit` clears those of its origin) as **one** fjall batch — a single
//!   checksummed journal entry, replayed whole or not at all.
//! - With the default [`Durability::Explicit`] an apply is not synced, not
//!   even flushed to the OS; [`persist`](flashsync_core::Store::persist)
//!   fsyncs the journal and returns the last applied batch. The fsync runs
//!   off the writer thread, which meanwhile applies the next batches (see
//!   the `journal` module for why that is sound). A crash loses a
//!   suffix of unpersisted batches, never a prefix or part of one.
//!   [`Durability::Batch`] fsyncs every apply instead.
//! - `put_view`, `put_job`, `forget`, `forget_origin`,
//!   [`Generation::publish`](flashsync_core::Generation::publish) and
//!   [`Generation::checkpoint`](flashsync_core::Generation::checkpoint) fsync
//!   before returning. A checkpoint writes its amendment, the job record and
//!   the generation's marker in one batch, after the generation's bulk
//!   ingestion is finished (fjall fsyncs ingested tables when it registers
//!   them), so a crash leaves the previous checkpoint or this one. Publishing switches the view's pointer, schema and job record
//!   in one batch, so readers and crashes see the old copy or the new one.
//! - The store writes a format version when it creates a directory and
//!   refuses to open any other version.
//!
//! ## Concurrency
//!
//! Mutations run on one writer thread owned by the store, in call order; the
//! async calls await its reply, so no executor thread ever blocks on an
//! fsync, and no particular async runtime is needed. A second thread
//! fsyncs the journal for `persist`, so periodic persists do not hold
//! the writes up. Reads run on the
//! caller's thread against a consistent snapshot.
//!
//! ## Errors
//!
//! Every failure is a [`StoreError`](flashsync_core::StoreError) with a
//! [`StoreErrorKind`](flashsync_core::StoreErrorKind): a path that is a file
//! or unwritable is `Io`, a store another process has open is `Locked` (fjall
//! holds an OS file lock on the directory), another application's directory or
//! another format version is `Incompatible`, undecodable bytes are `Corrupt`
//! (fjall panics on damaged files are caught and reported the same way), and
//! after a failed write every call returns `Poisoned` until the store is
//! reopened.

#![forbid(unsafe_code)]

mod amend;
mod apply;
mod checkpoint;
mod error;
mod generation;
mod journal;
mod layout;
mod loader;
mod open;
mod options;
mod presync;
mod read;
mod shared;
mod spill;
mod store;
mod worker;

pub use options::{Durability, Options};
pub use store::FjallStore;

pub(crate) use store::Inner;

#[cfg(test)]
mod tests;
