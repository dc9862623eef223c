//! What a run reports: one JSON object (the last line of stdout), and for a
//! violation the exact command that replays it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::scenario::Scenario;
use crate::store::StoreKind;

/// A broken invariant, where it broke, and how to see it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The invariant (a short stable name).
    pub invariant: String,
    /// What exactly happened.
    pub detail: String,
    /// The step (event number) at which it was found.
    pub step: u64,
    /// Virtual time, in milliseconds since the start.
    pub time_ms: u64,
    /// The command that replays the run.
    pub replay: String,
}

/// The result of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// The store.
    pub store: StoreKind,
    /// Events processed (chaos and liveness phases).
    pub steps: u64,
    /// Of those, in the liveness phase.
    pub liveness_steps: u64,
    /// `sync()` (and `resume()`) calls delivered.
    pub sync_calls: u64,
    /// Sync passes the machine ran.
    pub passes: u64,
    /// Upstream transactions the machine applied (all views).
    pub commits_applied: u64,
    /// Transactions applied to views, as audited and checked.
    pub view_commits_checked: u64,
    /// Upstream commits made.
    pub upstream_commits: u64,
    /// Faults injected in total.
    pub faults_injected: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// The fault plan, as printed at the start.
    pub plan: String,
    /// Bursts of concurrent `sync()` calls.
    pub bursts: u64,
    /// Calls in those bursts.
    pub burst_calls: u64,
    /// Most passes one burst ran (at most 2 allowed).
    pub max_passes_per_burst: u64,
    /// Local crashes and restarts.
    pub crashes: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Checkpoints of copies in chunks the store kept.
    pub copy_checkpoints: u64,
    /// Copies in chunks continued from a checkpoint after a restart.
    pub copies_resumed: u64,
    /// Forced re-copies of live views whose new copy went to be published
    /// while the old one stayed current (and was checked to).
    pub live_recopies: u64,
    /// Re-copies of live views continued from a checkpoint after a
    /// restart, their old copy re-attached meanwhile.
    pub recopies_resumed: u64,
    /// Views defined at the end.
    pub views: usize,
    /// Number of violations (0 or 1: a run stops at the first).
    pub violations: u64,
    /// The violation, if any.
    pub violation: Option<Failure>,
    /// Every enabled view equalled upstream at the end.
    pub converged: bool,
    /// Hash of everything processed, in order (hex).
    pub trace_hash: String,
    /// Virtual time simulated, in milliseconds.
    pub virtual_ms: u64,
    /// Wall-clock time of the run, in milliseconds (not part of the trace).
    pub wall_ms: u64,
    /// Steps per wall-clock second.
    pub steps_per_sec: u64,
    /// Upstream commits per wall-clock second.
    pub commits_per_sec: u64,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the report: {e}\"}}"))
    }

    /// Whether the run passed: no violation, and converged.
    pub fn ok(&self) -> bool {
        self.violations == 0 && self.converged
    }
}
