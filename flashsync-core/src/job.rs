//! Sync jobs: the persisted record of each view's sync state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::handoff::{Handoff, Segment};
use crate::lsn::Lsn;
use crate::time::Timestamp;
use crate::value::Key;
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
    pub handoff: Option<Handoff>,
    /// Why and when the machine last decided to copy the view again (a lost
    /// replication slot, a changed relation, a diverged copy, ...). History,
    /// not state: a successful copy keeps it, and only a later re-copy's
    /// reason replaces it. Records stored before it existed load without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recopy: Option<Recopy>,
    /// While a copy in chunks is being made: how far it got, stored with
    /// its rows ([`Generation::checkpoint`](crate::Generation::checkpoint))
    /// so that a restart continues it instead of starting over. (Boxed:
    /// job records travel in every store action, and are rarely copying.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<Box<CopyCheckpoint>>,
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
            last_recopy: None,
            copy: None,
            filter: None,
            columns: None,
        }
    }

    /// The view's qualified name.
    pub fn view_name(&self) -> ViewName {
        ViewName { namespace: self.namespace.clone(), name: self.name.clone() }
    }

    /// Whether the recorded re-copy has not succeeded yet: no success since
    /// it was decided. (A restart that finds the copy marked incomplete then
    /// knows the recorded reason is the one it still pays for.)
    pub fn recopy_pending(&self) -> bool {
        self.last_recopy.as_ref().is_some_and(|r| self.last_success_at.is_none_or(|s| s < r.at))
    }
}

/// How far a copy in chunks got, as of its last checkpoint: enough to
/// continue it after a restart (DESIGN §10).
///
/// The copy's generation holds the rows of `segments` (every key up to
/// `after`) and, at those keys, every feed transaction committed before
/// `through` that their segment's snapshot lacks. The feed is never
/// acknowledged past `through` while the copy is unfinished, so a restart
/// receives every transaction from there on again, and sifts it as the
/// running copy would have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyCheckpoint {
    /// The key ranges copied so far, in key order, each with its snapshot.
    pub segments: Vec<Segment>,
    /// The last key copied: the copy continues above it.
    pub after: Key,
    /// Rows the chunks so far copied (for progress).
    pub rows: u64,
    /// Feed position: every transaction whose commit starts before it has
    /// been taken into the copy (or found to be in it already).
    pub through: Lsn,
}

/// A decision to copy a view again: why, and when it was taken.
///
/// In JSON the reason's fields sit beside `at`:
/// `{"reason": "slot_lost", "detail": "…", "at": 1735689600123}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recopy {
    /// Why the copy had to be made again.
    #[serde(flatten)]
    pub reason: RecopyReason,
    /// When the machine decided it (wall time).
    pub at: Timestamp,
}

impl fmt::Display for Recopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.reason, self.at)
    }
}

/// Why a view's copy had to be made again. A forced refresh (`sync` with
/// `force`) is not one: it is asked for, not decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RecopyReason {
    /// The origin's feed could not resume from the local position: its
    /// replication slot was missing and created, re-created (lost,
    /// invalidated), or found ahead of the local position. `detail` says which.
    SlotLost {
        /// What the source reported about the slot.
        detail: String,
    },
    /// The origin's feed resumed (after a restart) while the view was not
    /// syncing: the commits it passed are not in the stored copy.
    MissedResume {
        /// Which feed moved on.
        detail: String,
    },
    /// The upstream relation changed shape (columns, types, key).
    SchemaChanged {
        /// What changed, as the source or the describe saw it.
        detail: String,
    },
    /// The local copy diverged from upstream: the store could not apply a
    /// change to it (a conflict), or a change could not be turned into row
    /// operations for it.
    Diverged {
        /// The first conflict, or why the change did not fit.
        detail: String,
    },
    /// A transaction too large for one batch was cut short after part of it
    /// reached the copy (a crash, the feed breaking, the view leaving the
    /// feed).
    CutShort {
        /// How it was cut short.
        detail: String,
    },
    /// A store batch of the view's origin failed: the copy may have a hole.
    StoreFailed {
        /// The store's error.
        detail: String,
    },
    /// The upstream relation left the origin's feed while the view was set up.
    LeftFeed {
        /// Which relation and feed.
        detail: String,
    },
    /// The view's definition changed.
    Redefined,
}

impl RecopyReason {
    /// The short, fixed name of the reason, for people.
    pub fn label(&self) -> &'static str {
        match self {
            RecopyReason::SlotLost { .. } => "replication slot lost",
            RecopyReason::MissedResume { .. } => "feed resumed without the view",
            RecopyReason::SchemaChanged { .. } => "upstream relation changed",
            RecopyReason::Diverged { .. } => "local copy diverged",
            RecopyReason::CutShort { .. } => "large transaction cut short",
            RecopyReason::StoreFailed { .. } => "store write failed",
            RecopyReason::LeftFeed { .. } => "relation left the feed",
            RecopyReason::Redefined => "view redefined",
        }
    }

    /// The particulars, if the reason carries any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            RecopyReason::SlotLost { detail }
            | RecopyReason::MissedResume { detail }
            | RecopyReason::SchemaChanged { detail }
            | RecopyReason::Diverged { detail }
            | RecopyReason::CutShort { detail }
            | RecopyReason::StoreFailed { detail }
            | RecopyReason::LeftFeed { detail } => Some(detail),
            RecopyReason::Redefined => None,
        }
    }
}

impl fmt::Display for RecopyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.detail() {
            Some(detail) => write!(f, "{} ({detail})", self.label()),
            None => f.write_str(self.label()),
        }
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

    // The stores keep job records as JSON; the core has `serde_json` only
    // with its `json` feature.
    #[cfg(feature = "json")]
    #[test]
    fn a_recopy_reads_back_and_old_records_load_without_one() {
        let name = ViewName::new("public", "t").unwrap();
        let mut job = JobRecord::new(RelationId(3), &name, Persistence::Realtime, Timestamp(5));
        let old = serde_json::to_string(&job).unwrap();
        assert!(!old.contains("last_recopy"), "{old}");
        assert_eq!(serde_json::from_str::<JobRecord>(&old).unwrap(), job);
        for reason in [RecopyReason::SlotLost { detail: "slot s was re-created".into() }, RecopyReason::Redefined] {
            job.last_recopy = Some(Recopy { reason, at: Timestamp(9) });
            let text = serde_json::to_string(&job).unwrap();
            assert_eq!(serde_json::from_str::<JobRecord>(&text).unwrap(), job, "{text}");
        }
        let json = serde_json::to_value(Recopy {
            reason: RecopyReason::SchemaChanged { detail: "column added".into() },
            at: Timestamp(9),
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({"reason": "schema_changed", "detail": "column added", "at": 9}));
    }
}
