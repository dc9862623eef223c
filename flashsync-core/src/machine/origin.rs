//! Per-origin state: the shared feed, the open transaction, progress and acks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use std::sync::Arc;

use crate::change::{BatchSeq, RowOp};
use crate::lsn::Lsn;
use crate::schema::SourceRelId;
use crate::time::Timestamp;
use crate::view::{OriginId, RelationId};

use super::route::RelRoutes;
use super::Epoch;

/// The feed connection, with what each state needs and nothing else: a
/// down feed knows when to retry, a live one whether it is paused and which
/// transaction it is receiving. Leaving `Up` drops both, so neither can
/// outlive the connection they describe.
// One per origin, replaced rarely: variant size does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Feed {
    /// Not connected. `attempt` consecutive subscriptions failed; the next
    /// waits until `retry_at` (if set) unless forced.
    Down { attempt: u32, retry_at: Option<Timestamp> },
    /// A subscription for `epoch` was requested, to resume at `from`;
    /// `attempt` failed before it.
    Subscribing { epoch: Epoch, attempt: u32, from: Option<Lsn> },
    /// Connected. `paused`: reading is paused (held-back changes at their
    /// limit). `txn`: the transaction being received, between its `Begin`
    /// and its `Commit`. `from`: the first transactions this connection
    /// delivers commit at or after it; `began`: the highest commit position
    /// of a transaction it began — together they say whether it delivers
    /// everything a checkpointed copy lacks.
    Up { epoch: Epoch, paused: bool, txn: Option<Txn>, from: Lsn, began: Option<Lsn> },
}

impl Feed {
    /// A feed never connected (or forgotten).
    pub fn new() -> Feed {
        Feed::Down { attempt: 0, retry_at: None }
    }

    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            Feed::Down { .. } => None,
            Feed::Subscribing { epoch, .. } | Feed::Up { epoch, .. } => Some(*epoch),
        }
    }

    pub fn is_down(&self) -> bool {
        matches!(self, Feed::Down { .. })
    }

    /// The epoch of the connected feed.
    pub fn up(&self) -> Option<Epoch> {
        match self {
            Feed::Up { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }

    /// When a down feed may be retried.
    pub fn retry_at(&self) -> Option<Timestamp> {
        match self {
            Feed::Down { retry_at, .. } => *retry_at,
            _ => None,
        }
    }

    /// Failed subscriptions in a row.
    pub fn attempt(&self) -> u32 {
        match self {
            Feed::Down { attempt, .. } | Feed::Subscribing { attempt, .. } => *attempt,
            Feed::Up { .. } => 0,
        }
    }

    pub fn txn(&self) -> Option<&Txn> {
        match self {
            Feed::Up { txn, .. } => txn.as_ref(),
            _ => None,
        }
    }

    pub fn txn_mut(&mut self) -> Option<&mut Txn> {
        match self {
            Feed::Up { txn, .. } => txn.as_mut(),
            _ => None,
        }
    }

    /// Whether this connection delivers, or is yet to deliver, every
    /// transaction that commits at or after `through` (a checkpointed copy
    /// can continue on it): it started there or before, and has begun none
    /// since.
    pub fn delivers_from(&self, through: Lsn) -> bool {
        match self {
            Feed::Up { from, began, txn: None, .. } => *from <= through && began.is_none_or(|b| b < through),
            _ => false,
        }
    }

    pub fn take_txn(&mut self) -> Option<Txn> {
        match self {
            Feed::Up { txn, .. } => txn.take(),
            _ => None,
        }
    }
}

/// Where one view's changes of the open transaction go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Route {
    /// Applied with the transaction.
    Apply,
    /// Held back until the view's snapshot lands.
    Hold,
}

/// The transaction being received.
#[derive(Debug)]
pub(super) struct Txn {
    pub xid: u32,
    pub final_lsn: Lsn,
    /// When it committed upstream (for readers of the change feed).
    pub commit_time: Timestamp,
    /// Already applied (a replayed duplicate): receive and drop.
    pub duplicate: bool,
    /// Which views get changes of which relation, decided at `Begin`.
    pub routes: Arc<RelRoutes>,
    /// Relations this transaction changed. Their views reflect its commit
    /// whether or not they kept any of the changes (a filtered view skips
    /// most): recorded per relation, not per view, as one table may have
    /// many views.
    pub changed: BTreeSet<SourceRelId>,
    /// Operations to apply, per view, since the last staged part.
    pub apply: BTreeMap<RelationId, Vec<RowOp>>,
    pub apply_ops: usize,
    /// Operations to hold, per view.
    pub hold: BTreeMap<RelationId, Vec<RowOp>>,
    /// Bytes held per view in `hold`.
    pub hold_bytes: BTreeMap<RelationId, usize>,
    /// Views with part of this transaction staged in the store
    /// ([`Progress::Stage`](crate::Progress::Stage) batches): the commit
    /// claims their parts by naming them. A view that leaves the feed
    /// before the commit is taken out, and its part is dropped with the
    /// origin's staging — its copy was never touched.
    pub partial: BTreeSet<RelationId>,
    /// For the audit: views live on a copy made in chunks that took this
    /// transaction only at some keys (where their chunk lacked it), and
    /// those keys.
    pub partly: BTreeMap<RelationId, Vec<Vec<u8>>>,
}

impl Txn {
    /// View `id` takes the rest of this transaction no more by `route`
    /// (its copy changed course in the middle of it).
    pub fn leave(&mut self, id: RelationId, route: Route) {
        if self.routes.values().flatten().any(|&(v, r)| v == id && r == route) {
            for targets in std::sync::Arc::make_mut(&mut self.routes).values_mut() {
                targets.retain(|&(v, r)| v != id || r != route);
            }
        }
    }

    /// View `id` holds nothing of this transaction any more: what it held
    /// goes, and the rest of the transaction is not held for it.
    pub fn stop_holding(&mut self, id: RelationId) {
        self.leave(id, Route::Hold);
        self.hold.remove(&id);
        self.hold_bytes.remove(&id);
    }
}

/// An origin and its feed.
#[derive(Debug)]
pub(super) struct Origin {
    pub id: OriginId,
    /// Everything through this position has been processed (applied, or
    /// known to hold nothing for us). `None`: no progress yet.
    pub applied: Option<Lsn>,
    pub feed: Feed,
    pub slot_id: Option<String>,
    /// Commits received so far (a counter, not an LSN).
    pub commits_seen: u64,
    /// Recently received commits: (counter, xid), for the hand-off race check.
    pub recent: VecDeque<(u64, u32)>,
    /// Positions that may be acknowledged once the batch is durable.
    pub pending_acks: VecDeque<(BatchSeq, Lsn)>,
    /// Highest durable position.
    pub durable: Option<Lsn>,
    /// Highest position acknowledged upstream.
    pub acked: Option<Lsn>,
    pub last_error: Option<String>,
    /// The store holds a position for this origin (a progress batch was
    /// emitted, or one was loaded). A realtime job is stored as `running`
    /// only then: after a restart it resumes from that position.
    pub stored: bool,
    /// The store may hold staged parts of a transaction that no commit
    /// batch has claimed yet. A transaction abandoned after staging (the
    /// feed broke, the store failed) leaves them there, and a later commit
    /// naming the same views would claim them: the next transaction begins
    /// by dropping them.
    pub staged_parts: bool,
    /// The feed has been up in this process: no view attaches any more.
    pub started: bool,
    /// The position of the last commit-progress batch the store reported
    /// applied: where the store really is (`applied` runs ahead of it).
    pub store_applied: Option<Lsn>,
    /// The chain new batches belong to ([`ApplyBatch::chain`]); a new one
    /// starts each time a failed batch has been handled.
    ///
    /// [`ApplyBatch::chain`]: crate::change::ApplyBatch::chain
    pub chain: u64,
}

impl Origin {
    pub fn new(id: OriginId, applied: Option<Lsn>) -> Self {
        Origin {
            id,
            applied,
            feed: Feed::new(),
            slot_id: None,
            commits_seen: 0,
            recent: VecDeque::new(),
            pending_acks: VecDeque::new(),
            durable: applied,
            acked: None,
            last_error: None,
            stored: applied.is_some(),
            staged_parts: false,
            started: false,
            store_applied: applied,
            chain: 0,
        }
    }
}
