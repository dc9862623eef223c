//! Events the machine reports: state changes, errors, conflicts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::job::JobState;
use crate::time::Timestamp;
use crate::view::{OriginId, RelationId, ViewName};

/// The step of the sync life cycle an event arose in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Defining a view.
    Define,
    /// Ensuring a job row exists / persisting a job.
    Job,
    /// Describing the upstream relation and adding it to the feed.
    Prepare,
    /// Copying the upstream rows.
    Snapshot,
    /// Switching the local copy.
    Publish,
    /// The change feed (connect, receive, lose).
    Stream,
    /// Applying changes locally.
    Apply,
    /// `stop()`.
    Stop,
    /// `resume()`.
    Resume,
    /// `forget()` and releasing upstream resources.
    Forget,
    /// `shutdown()`.
    Shutdown,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Phase::Define => "define",
            Phase::Job => "job",
            Phase::Prepare => "prepare",
            Phase::Snapshot => "snapshot",
            Phase::Publish => "publish",
            Phase::Stream => "stream",
            Phase::Apply => "apply",
            Phase::Stop => "stop",
            Phase::Resume => "resume",
            Phase::Forget => "forget",
            Phase::Shutdown => "shutdown",
        };
        f.write_str(s)
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A job changed state.
    StateChanged {
        /// Previous state.
        from: JobState,
        /// New state.
        to: JobState,
    },
    /// Something failed.
    Error {
        /// What, with context.
        message: String,
    },
    /// An upstream change did not fit the local copy (the mirror diverged).
    Conflict {
        /// What did not fit.
        message: String,
    },
}

/// One observable event, with the phase and relation it concerns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (the `now` of the input that caused it).
    pub at: Timestamp,
    /// The step it arose in.
    pub phase: Phase,
    /// The view, if it concerns one.
    pub view: Option<ViewName>,
    /// The view's id, if it concerns one.
    pub relation_id: Option<RelationId>,
    /// The origin, if it concerns one.
    pub origin: Option<OriginId>,
    /// What happened.
    pub kind: EventKind,
}

/// The outcome of a sync pass for the views a caller selected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSummary {
    /// Materialized views whose copy is in place (`synced`).
    pub materialized: Vec<ViewName>,
    /// Realtime views that are `running`.
    pub realtime: Vec<ViewName>,
    /// Views that failed, with the reason.
    pub failed: Vec<(ViewName, String)>,
    /// Views skipped because they are disabled (stopped).
    pub disabled: Vec<ViewName>,
}

impl SyncSummary {
    /// Total number of views covered.
    pub fn len(&self) -> usize {
        self.materialized.len() + self.realtime.len() + self.failed.len() + self.disabled.len()
    }

    /// Whether no view was covered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
