//! Sync passes and their coalescing.
//!
//! At most one pass runs. Requests arriving while it runs merge into one
//! queued pass: selectors are kept per waiter (so each caller's summary covers
//! its own views) and `force` is kept per selector (so a forced request is
//! never lost, and never spreads to views only an unforced caller selected).

use std::collections::{BTreeMap, BTreeSet};

use crate::event::SyncSummary;
use crate::selector::Selector;
use crate::view::{RelationId, ViewName};

use super::RequestId;

/// What a pass was asked for by one caller, and the views it selected.
#[derive(Clone, Debug)]
pub(super) struct Waiter {
    pub kind: WaiterKind,
    pub selector: Selector,
}

/// Who asked, and so who gets told (and how) when the pass ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WaiterKind {
    /// A caller's `sync()`, answered `Synced`; a forced one re-copies
    /// materialized views and bypasses back-off.
    Sync { request: RequestId, force: bool },
    /// A caller's `resume()`, answered `Resumed`.
    Resume { request: RequestId },
    /// The machine's own retry of views whose back-off passed: nobody waits.
    Retry,
}

impl Waiter {
    /// The caller to answer, if any.
    pub fn request(&self) -> Option<RequestId> {
        match self.kind {
            WaiterKind::Sync { request, .. } | WaiterKind::Resume { request } => Some(request),
            WaiterKind::Retry => None,
        }
    }

    /// Whether this caller forced its selection.
    pub fn force(&self) -> bool {
        matches!(self.kind, WaiterKind::Sync { force: true, .. })
    }
}

/// A pass's result for one view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Materialized,
    Realtime,
    Failed(String),
    Disabled,
}

/// Requests merged into the next pass.
#[derive(Debug, Default)]
pub(super) struct Queued {
    pub waiters: Vec<Waiter>,
}

/// Where the running pass is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Waiting for its store fence (every earlier write) before it
    /// discovers its views.
    Fencing(super::OpId),
    /// Its views are at work; it ends when none remains.
    Running,
}

/// The running pass.
#[derive(Debug)]
pub(super) struct Pass {
    pub stage: Stage,
    pub waiters: Vec<Waiter>,
    pub members: BTreeMap<RelationId, ViewName>,
    pub remaining: BTreeSet<RelationId>,
    pub outcomes: BTreeMap<RelationId, Outcome>,
}

impl Pass {
    /// Whether any waiter forcing its selection selected `name`.
    pub fn forced(waiters: &[Waiter], name: &ViewName) -> bool {
        waiters.iter().any(|w| w.force() && w.selector.matches(name))
    }

    /// Builds one waiter's summary.
    pub fn summary(&self, waiter: &Waiter) -> SyncSummary {
        let mut s = SyncSummary::default();
        for (id, name) in &self.members {
            if !waiter.selector.matches(name) {
                continue;
            }
            match self.outcomes.get(id) {
                Some(Outcome::Materialized) => s.materialized.push(name.clone()),
                Some(Outcome::Realtime) => s.realtime.push(name.clone()),
                Some(Outcome::Failed(e)) => s.failed.push((name.clone(), e.clone())),
                Some(Outcome::Disabled) => s.disabled.push(name.clone()),
                // Forgotten during the pass: no longer a view.
                None => {}
            }
        }
        s.materialized.sort();
        s.realtime.sort();
        s.failed.sort();
        s.disabled.sort();
        s
    }
}

/// Pass scheduling state.
#[derive(Debug, Default)]
pub(super) struct Passes {
    pub current: Option<Pass>,
    pub queued: Option<Queued>,
}
