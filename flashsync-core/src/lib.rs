//! # flashsync-core
//!
//! The sans-IO heart of flashsync: the types, the [`Store`] and [`Source`]
//! contracts, and the [`Machine`] that decides everything about keeping local
//! copies of upstream relations exact — which views to copy, when a realtime
//! view's snapshot hands over to the change feed, what to apply, when to
//! acknowledge upstream, how to back off and retry.
//!
//! The machine does no I/O, reads no clock and draws no OS randomness: inputs
//! come in with the current time ([`Machine::handle`]), and decisions come out
//! as data ([`Machine::poll_output`]). What each decision means for a store
//! and a source — ordering, apply runs, the persist contract, back-pressure,
//! the shutdown drain — is written once in the [`exec::Executor`], which
//! drivers run: the tokio driver in the `flashsync` crate, the deterministic
//! simulator in `flashsync-sim`, the fuzz targets and the tests
//! ([`exec::harness`]) all run this same machine through the same executor.
//! The rules every observer of it checks are in [`invariants`].
//!
//! ```
//! use flashsync_core::{Config, Input, Machine, Output, Persistence, RequestId, Selector, Timestamp, ViewDef};
//!
//! let mut machine = Machine::new(Config::default(), 42, Default::default(), Timestamp(0));
//! let def = ViewDef::new("public", "users_cache", Persistence::Materialized, "postgres:main", "public", "users")?;
//! machine.handle(Input::Define { request: RequestId(1), def }, Timestamp(0));
//! // The machine asks for the catalog entry to be persisted:
//! while let Some(out) = machine.poll_output() {
//!     if let Output::Store(action) = out {
//!         println!("store action: {action:?}");
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Library authors implementing a [`Store`] should read its contract and run
//! the [`conformance`] suite against their implementation; the in-memory
//! [`memory::MemoryStore`] and [`memory::MemorySource`] are the reference
//! implementations.

#![forbid(unsafe_code)]

pub mod change;
pub mod codec;
pub mod conformance;
pub mod encoded;
pub mod error;
pub mod event;
pub mod exec;
pub mod handoff;
pub mod invariants;
pub mod job;
pub mod lsn;
pub mod machine;
pub mod memory;
pub mod predicate;
pub mod rng;
pub mod rowchange;
pub mod rowops;
pub mod schema;
pub mod selector;
pub mod shape;
pub mod snapshot;
pub mod source;
pub mod staging;
pub mod store;
pub mod time;
pub mod typed;
pub mod value;
pub mod view;

pub use change::{ApplyBatch, BatchSeq, Cell, Change, OldRow, Progress, RowOp, StreamEvent, ViewOps};
pub use encoded::{EncodedRows, EncodedRowsBuilder};
pub use error::{
    ControlError, DefinitionError, SelectorError, SourceError, SourceErrorKind, StoreError, StoreErrorKind,
};
pub use event::{Event, EventKind, Phase, SyncSummary};
pub use handoff::{Handoff, Segment, Sifted, Verdict};
pub use job::{CopyCheckpoint, JobRecord, JobState, Recopy, RecopyReason};
pub use lsn::Lsn;
pub use machine::{AuditRecord, Config, Input, Machine, OpId, Output, Reply, RequestId, SourceAction, StoreAction};
pub use predicate::{BoundPredicate, Predicate, PredicateError};
pub use rowchange::{Capture, RowChange, ViewChanges};
pub use rowops::{ApplyReport, Conflict};
pub use schema::{Column, ColumnMatch, Identity, RelationSchema, SourceRelId};
pub use selector::{Pattern, Selector};
pub use shape::{ViewShape, ViewShapeError};
pub use snapshot::SnapshotPoint;
pub use source::{ChunkEnd, CopiedChunk, FeedStart, Feedback, ServerPosition, SlotReport, Source, Subscription};
pub use staging::Staging;
pub use store::{Generation, KeyRange, OriginProgress, RowSink, Store, StoredState, ViewRecord};
pub use time::{Millis, Now, Timestamp};
pub use typed::{TypedError, TypedErrorKind};
pub use value::{Key, Row, Value, ValueRef};
pub use view::{OriginId, Persistence, RelationId, UpstreamRelation, ViewDef, ViewName};
