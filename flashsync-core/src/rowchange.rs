//! What a batch did to each view's rows, as a reader of the mirror sees it.
//!
//! A change feed must never report a change the mirror does not keep: a
//! move-out of a row a filtered view never held, a delete of a row already
//! gone, an update whose verdict the store made with its local row. Only the
//! store knows those outcomes, so the rows are captured where they are
//! written: [`apply_batch`](crate::rowops::apply_batch) records every write
//! it makes (with the value it replaced) when the batch asks for it
//! ([`ApplyBatch::capture`](crate::ApplyBatch::capture)), and the store
//! returns them in [`ApplyReport::changes`](crate::ApplyReport::changes).
//! Capturing costs a read and a decode per write, so drivers ask only while
//! someone listens.

use serde::{Deserialize, Serialize};

use crate::value::{Key, Row};
use crate::view::RelationId;

/// Whether a store reports what a batch did to each view's rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capture {
    /// Report nothing (the default: nobody listens).
    #[default]
    Off,
    /// Fill [`ApplyReport::changes`](crate::ApplyReport::changes).
    On,
    /// Capture, but leave out removals of single rows (a planted bug, for
    /// proving that the simulator's change-feed checker can fail).
    #[cfg(feature = "planted-bugs")]
    DropRemovals,
}

impl Capture {
    /// Whether anything is captured.
    pub fn is_on(self) -> bool {
        !matches!(self, Capture::Off)
    }
}

/// One change to one view's local rows.
///
/// Applied in order to the rows a reader started from, the changes of every
/// batch since give exactly the view's rows after them. For keyed views the
/// rows form a map from key to row; for full-row views (no key upstream) a
/// multiset, where `key` is the whole row and each `Insert`/`Delete` adds or
/// removes one copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowChange {
    /// A row the view did not hold now is `row` (an upstream insert, or an
    /// update that moved the row into a filtered view).
    Insert {
        /// Its key.
        key: Key,
        /// The row as stored (the view's columns).
        row: Row,
    },
    /// The row the view held under `key` is now `row`.
    Update {
        /// Its key.
        key: Key,
        /// The new row as stored.
        row: Row,
    },
    /// The view no longer holds the row under `key` (an upstream delete, a
    /// move out of a filtered view, or the old key of a key change).
    Delete {
        /// Its key.
        key: Key,
    },
    /// Every row of the view was removed.
    Truncate,
}

/// The changes one batch made to one view, in the order they were made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChanges {
    /// The view.
    pub relation_id: RelationId,
    /// What happened to its rows.
    pub changes: Vec<RowChange>,
}
