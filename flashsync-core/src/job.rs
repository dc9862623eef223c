//! Sync jobs: the persisted record of each view's sync state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;
use crate::snapshot::SnapshotPoint;
use crate::time::Timestamp;
use crate::view::{Persistence, RelationId, ViewName};

/// A job's state, as the spec names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Not currently running (never synced, or stopped).
    Idle,
    /// A materialized copy was populated successfully.
    Synced,
    /// A realtime job is active: the copy is bootstrapped and mirrors the feed.
    Running,
    /// The last attempt failed; see `last_error`, retried at `next_retry_at`.
    Failed,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobState::Idle => "idle",
            JobState::Synced => "synced",
            JobState::Running => "running",
            JobState::Failed => "failed",
        })
    }
}

impl JobState {
    /// Whether a job of `mode` may move from `from` to `to`.
    ///
    /// Materialized jobs never run and realtime jobs are never "synced"; every
    /// other move is legal (a job may fail from anywhere, be stopped from
    /// anywhere, and succeed from anywhere). Self-transitions are not
    /// transitions and are never reported.
    pub fn is_legal(mode: Persistence, from: JobState, to: JobState) -> bool {
        if from == to {
            return false;
        }
        match mode {
            Persistence::Materialized => from != JobState::Running && to != JobState::Running,
            Persistence::Realtime => from != JobState::Synced && to != JobState::Synced,
        }
    }

    /// The success state for a job of `mode`.
    pub fn success(mode: Persistence) -> JobState {
        match mode {
            Persistence::Materialized => JobState::Synced,
            Persistence::Realtime => JobState::Running,
        }
    }
}

/// One sync job, with every field the spec's `status()` lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The view's stable id.
    pub relation_id: RelationId,
    /// The view's namespace.
    pub namespace: String,
    /// The view's name.
    pub name: String,
    /// The view's declared persistence.
    pub persistence: Persistence,
    /// The mode the job runs in (its persistence when the job last (re)started).
    pub mode: Persistence,
    /// `false` once stopped, until resumed. Disabled jobs are skipped by `sync()`.
    pub enabled: bool,
    /// Current state.
    pub state: JobState,
    /// The upstream feed (replication slot) a realtime job reads from.
    pub slot_id: Option<String>,
    /// The last upstream commit reflected in the local copy (for a snapshot,
    /// the feed position it was taken at).
    pub last_seen_commit: Option<Lsn>,
    /// Consecutive failed attempts; reset on success.
    pub retry_count: u32,
    /// Why the last attempt failed; cleared on success.
    pub last_error: Option<String>,
    /// When the state (or enablement) last changed.
    pub updated_at: Timestamp,
    /// When a failed job is retried next, unless forced sooner.
    pub next_retry_at: Option<Timestamp>,
    /// When the job last succeeded.
    pub last_success_at: Option<Timestamp>,
    /// While a realtime view's copy may be ahead of its feed's durable
    /// position (the hand-off from its snapshot is not complete, or not yet
    /// durable): the snapshot's visibility point. The feed's transactions it
    /// holds are skipped, also after a restart or a crash that took the
    /// store back before the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<SnapshotPoint>,
    /// The view's row filter as written (`where`), when it keeps only some
    /// rows. Filled in by [`Machine::status`](crate::Machine::status) from
    /// the definition; not part of the stored job.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The upstream columns the view keeps, when it keeps only some. Filled
    /// in by [`Machine::status`](crate::Machine::status) like `filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

impl JobRecord {
    /// A fresh, enabled, idle job.
    pub fn new(relation_id: RelationId, name: &ViewName, persistence: Persistence, now: Timestamp) -> Self {
        JobRecord {
            relation_id,
            namespace: name.namespace.clone(),
            name: name.name.clone(),
            persistence,
            mode: persistence,
            enabled: true,
            state: JobState::Idle,
            slot_id: None,
            last_seen_commit: None,
            retry_count: 0,
            last_error: None,
            updated_at: now,
            next_retry_at: None,
            last_success_at: None,
            handoff: None,
            filter: None,
            columns: None,
        }
    }

    /// The view's qualified name.
    pub fn view_name(&self) -> ViewName {
        ViewName { namespace: self.namespace.clone(), name: self.name.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use JobState::*;
        use Persistence::*;
        assert!(JobState::is_legal(Materialized, Idle, Synced));
        assert!(!JobState::is_legal(Materialized, Idle, Running));
        assert!(JobState::is_legal(Realtime, Failed, Running));
        assert!(!JobState::is_legal(Realtime, Running, Synced));
        assert!(!JobState::is_legal(Realtime, Running, Running));
    }
}
