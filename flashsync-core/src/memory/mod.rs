//! In-memory reference implementations of the [`Store`](crate::Store) and
//! [`Source`](crate::Source) contracts.
//!
//! They exist to pin the contracts down in code, to back the machine's own
//! tests and the simulator, and to let applications run flashsync without a
//! disk or a database (tests, demos). They do no I/O and read no clock.

mod faults;
mod shapes;
mod source;
mod store;
mod txn;
mod upstream;

pub use faults::FailPoint;
pub use source::MemorySource;
pub use store::MemoryStore;
pub use txn::TxnHandle;
pub use upstream::{Alteration, MemoryUpstream, SourceStats, TableIdentity};
