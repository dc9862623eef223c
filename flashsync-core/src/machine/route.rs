//! Phases and routing: moving a view between phases, which views take part
//! in an origin's feed, and pausing the feed for held-back changes.

use super::*;

/// Routing entry for one view of an origin, rebuilt when phases change.
#[derive(Clone, Debug)]
pub(super) struct RouteEntry {
    pub id: RelationId,
    pub shape: Arc<ViewShape>,
    pub route: Route,
    pub filter: Option<Handoff>,
    /// A copy resumed from a checkpoint: transactions committing below its
    /// floor are in it already (see [`Resumed`](super::view::Resumed)). The
    /// floor itself rises with every transaction the copy takes, so it is
    /// looked up in the view's phase, never copied here.
    pub resumed: bool,
}

/// Per relation, the views its changes go to and how.
pub(super) type RelRoutes = BTreeMap<SourceRelId, Vec<(RelationId, Route)>>;

/// Which views take part in an origin's feed, rebuilt when phases change.
#[derive(Debug)]
pub(super) struct RouteTable {
    /// Sorted by view id, then route: an entry is found by binary search.
    /// A view has one entry, or two while it is copied again with its old
    /// copy current: `Apply` for the old copy (its shape and hand-off
    /// filter), `Hold` for the new one (the new shape).
    pub entries: Vec<RouteEntry>,
    /// The routes of a transaction no hand-off filter excludes a view from:
    /// shared by every such transaction rather than rebuilt for each.
    pub by_rel: Arc<RelRoutes>,
    /// Whether some view is in a hand-off (its filter decides, per
    /// transaction, whether it takes part).
    pub filtered: bool,
    /// Whether some view's copy was resumed from a checkpoint (its floor
    /// decides, per transaction, whether it takes part).
    pub floors: bool,
}

impl RouteTable {
    /// The entry of view `id` for `route` — or, for a view whose copy
    /// went live since the transaction began (routed to hold, now applied),
    /// its only entry: the transaction's route still says where its
    /// changes go, the entry only how to read them.
    pub fn get(&self, id: RelationId, route: Route) -> Option<&RouteEntry> {
        let at = |route| self.entries.binary_search_by_key(&(id, route), |e| (e.id, e.route)).ok();
        let i = at(route).or_else(|| match route {
            Route::Hold => at(Route::Apply),
            Route::Apply => at(Route::Hold),
        })?;
        self.entries.get(i)
    }
}

impl Machine {
    pub(super) fn set_phase(&mut self, id: RelationId, phase: Phase) {
        let Some(v) = self.views.get_mut(&id) else {
            return;
        };
        let was_copying = matches!(v.phase, Phase::Copying { .. });
        let released = v.phase.hold().map_or(0, |h| h.bytes);
        let now_copying = matches!(phase, Phase::Copying { .. });
        // A view that stops holding back (cancelled, or its snapshot to be
        // retaken) also gives up its share of the transaction being received;
        // a view going live keeps it (it is applied with the commit).
        let stops_holding = v.phase.hold().is_some() && phase.hold().is_none();
        let drops_share = stops_holding && !matches!(phase, Phase::Live { .. });
        if matches!(phase, Phase::Queued { .. }) {
            self.queued_views.insert(id);
        } else {
            self.queued_views.remove(&id);
        }
        v.phase = phase;
        let origin = v.def.origin.clone();
        self.copying = self.copying + usize::from(now_copying) - usize::from(was_copying);
        self.routes.insert(origin.clone(), None);
        if drops_share {
            // Nothing will apply it, and its bytes would count against the
            // hold-back limit until the commit.
            // Nor is the rest of it held (a copy of it kept current would
            // otherwise take the rest twice).
            if let Some(txn) = self.origins.get_mut(&origin).and_then(|o| o.feed.txn_mut()) {
                txn.stop_holding(id);
            }
        }
        if released > 0 || stops_holding {
            let h = self.held_bytes.entry(origin.clone()).or_default();
            *h = h.saturating_sub(released);
            self.check_flow(&origin);
        }
    }

    /// Drops whatever a view had in flight; the view ends `Idle`.
    pub(super) fn cancel_work(&mut self, id: RelationId) {
        // A view with part of a large transaction staged that now leaves the
        // feed gives the part up: the commit will not claim it, so the store
        // drops it, and the copy never saw any of the transaction.
        if let Some(origin) = self.views.get(&id).map(|v| v.def.origin.clone()) {
            if let Some(txn) = self.origins.get_mut(&origin).and_then(|o| o.feed.txn_mut()) {
                txn.partial.remove(&id);
            }
        }
        self.end_work(id, Phase::Idle);
    }

    /// Gives up a re-copy whose old copy stayed current: the view goes on
    /// live on that copy (which keeps its staged parts: it is still in the
    /// feed). Returns whether the view was such a re-copy.
    pub(super) fn abandon_recopy(&mut self, id: RelationId) -> bool {
        let live = match self.views.get(&id).and_then(|v| v.phase.current_old()) {
            Some((shape, filter, Recopying::Forced | Recopying::Resumed)) => {
                Phase::Live { shape: shape.clone(), filter: filter.clone(), replay: None }
            }
            _ => return false,
        };
        self.end_work(id, live);
        // Its checkpoint goes with it: a restart must not continue a copy
        // given up (the store drops the generation with the abandoned op).
        let checkpointed =
            self.views.get_mut(&id).and_then(|v| v.job.as_mut()).is_some_and(|j| j.copy.take().is_some());
        if checkpointed {
            self.persist_job(id);
        }
        // What the open transaction held for the new copy goes with it.
        if let Some(txn) = self.origin_txn_of(id) {
            txn.stop_holding(id);
        }
        true
    }

    /// Drops whatever a view had in flight; the view ends in `end`.
    pub(super) fn end_work(&mut self, id: RelationId, end: Phase) {
        let Some(v) = self.views.get(&id) else { return };
        // Re-tag an op only while it is still outstanding: when its own
        // result is what failed the view, it was already taken out, and
        // putting it back would leave it waiting for an answer forever.
        let origin = v.def.origin.clone();
        let mut attaching = false;
        let mut freed = false;
        match &v.phase {
            Phase::Preparing { op, .. } => {
                // An attaching view, or one with a checkpointed copy, may
                // hold the feed back (`maybe_subscribe`).
                attaching = true;
                self.ops.remove(op);
            }
            Phase::Copying { op, copy, .. } => {
                let op = *op;
                // Between two steps (a chunk to retry, a feed to drain)
                // nothing will answer for the copy: give it up now.
                let waiting = matches!(
                    copy,
                    CopyKind::Bootstrap(_, c) if matches!(
                        c.step,
                        ChunkStep::Retrying { .. } | ChunkStep::Draining { .. } | ChunkStep::AwaitingCommit { .. }
                    )
                );
                if let Some(kind) = self.ops.get_mut(&op) {
                    *kind = Op::AbandonedSnapshot;
                } else if waiting {
                    self.abandon_generation(op);
                    freed = true;
                }
            }
            Phase::Publishing { op, shape, .. } => {
                let schema = Arc::new(shape.local().clone());
                if let Some(kind) = self.ops.get_mut(op) {
                    *kind = Op::AbandonedPublish { id, schema };
                }
            }
            Phase::Idle | Phase::Queued { .. } | Phase::Live { .. } => {}
        }
        self.set_phase(id, end);
        if freed {
            // No answer will come to start the next queued copy in its
            // slot: start it now.
            self.try_start_snapshots();
        }
        if attaching {
            // The feed may have been waiting for this view to decide
            // whether it re-attaches (or continues its copy): it no longer
            // does, so the views that wait for the feed must not wait for
            // ever.
            self.maybe_subscribe(&origin);
        }
    }

    pub(super) fn route_table(&mut self, origin: &OriginId) -> Arc<RouteTable> {
        if let Some(Some(t)) = self.routes.get(origin) {
            return t.clone();
        }
        let mut entries = Vec::new();
        let freeze = self.bugs().freeze_recopied_copy;
        for v in self.views.values().filter(|v| &v.def.origin == origin && v.def.persistence == Persistence::Realtime) {
            let enabled = v.job.as_ref().is_some_and(|j| j.enabled);
            match &v.phase {
                Phase::Live { shape, filter, .. } => {
                    entries.push(RouteEntry {
                        id: v.id,
                        shape: shape.clone(),
                        route: Route::Apply,
                        filter: filter.clone(),
                        resumed: false,
                    });
                }
                // A live view copied again: its old copy takes the feed as
                // a live one would (through its own shape), until the new
                // one goes to be published; the new one holds it as any
                // copy does, once under way (below).
                Phase::Preparing { old: OldCopy::Current { shape, filter, .. }, .. }
                | Phase::Queued { old: OldCopy::Current { shape, filter, .. }, .. }
                | Phase::Copying { old: OldCopy::Current { shape, filter, .. }, .. }
                    if !freeze =>
                {
                    entries.push(RouteEntry {
                        id: v.id,
                        shape: shape.clone(),
                        route: Route::Apply,
                        filter: filter.clone(),
                        resumed: false,
                    });
                }
                _ => {}
            }
            match &v.phase {
                Phase::Copying { shape, copy: CopyKind::Bootstrap(_, chunks), .. }
                | Phase::Publishing { shape, copy: CopyKind::Bootstrap(_, chunks), .. } => {
                    entries.push(RouteEntry {
                        id: v.id,
                        shape: shape.clone(),
                        route: Route::Hold,
                        filter: None,
                        resumed: chunks.resumed.is_some(),
                    });
                }
                Phase::Idle if self.bugs().apply_while_disabled && !enabled => {
                    if let Some(schema) = &v.schema {
                        entries.push(RouteEntry {
                            id: v.id,
                            shape: Arc::new(ViewShape::whole((**schema).clone())),
                            route: Route::Apply,
                            filter: None,
                            resumed: false,
                        });
                    }
                }
                _ => {}
            }
        }
        // In id order (the views' order), then route: see `RouteTable::get`.
        debug_assert!(entries.windows(2).all(|w| (w[0].id, w[0].route) < (w[1].id, w[1].route)));
        let mut by_rel = RelRoutes::new();
        for e in &entries {
            by_rel.entry(e.shape.upstream().source_id).or_default().push((e.id, e.route));
        }
        let filtered = entries.iter().any(|e| e.filter.is_some());
        let floors = entries.iter().any(|e| e.resumed);
        let t = Arc::new(RouteTable { entries, by_rel: Arc::new(by_rel), filtered, floors });
        self.routes.insert(origin.clone(), Some(t.clone()));
        t
    }

    pub(super) fn origin_views(&self, origin: &OriginId) -> Vec<RelationId> {
        self.views.values().filter(|v| &v.def.origin == origin).map(|v| v.id).collect()
    }

    /// Whether an origin's feed should be up: some enabled realtime view
    /// needs it.
    pub(super) fn wants_feed(&self, origin: &OriginId) -> bool {
        self.views.values().any(|v| {
            &v.def.origin == origin
                && v.def.persistence == Persistence::Realtime
                && v.job.as_ref().is_some_and(|j| j.enabled)
                && (v.phase.mirrors()
                    || matches!(v.phase, Phase::Queued { .. } | Phase::Copying { .. } | Phase::Publishing { .. }))
        })
    }

    pub(super) fn check_flow(&mut self, origin: &OriginId) {
        // The open transaction's share counts only for views still holding
        // back: a view that went live mid-transaction applies its share at
        // the commit, which a paused feed would never reach. Every view still
        // holding releases its bytes when its snapshot lands, so a pause
        // always ends — except a resumed copy draining the feed, whose
        // snapshot has landed and which waits for the feed itself (a pause
        // would wait for it for ever): its bytes do not count.
        let txn_held: usize = self.origins.get(origin).and_then(|o| o.feed.txn()).map_or(0, |t| {
            t.hold_bytes
                .iter()
                .filter(|(id, _)| {
                    self.views.get(id).is_some_and(|v| v.phase.hold().is_some() && !v.phase.drains_feed())
                })
                .map(|(_, b)| b)
                .sum()
        });
        let limit = self.cfg.holdback_limit_bytes;
        let Some(Feed::Up { paused, .. }) = self.origins.get(origin).map(|o| &o.feed) else { return };
        let base = self.held_bytes.get(origin).copied().unwrap_or(0);
        let at_most = base + txn_held;
        // Called for every routed change: the walk over the views below is
        // needed only when the bound alone cannot decide (it can whenever
        // little is held back, the usual case).
        let held = if (*paused && at_most <= limit / 2) || (!*paused && at_most <= limit) {
            at_most
        } else {
            let draining: usize = self
                .views
                .values()
                .filter(|v| &v.def.origin == origin && v.phase.drains_feed())
                .filter_map(|v| v.phase.hold())
                .map(|h| h.bytes)
                .sum();
            base.saturating_sub(draining) + txn_held
        };
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        let Feed::Up { epoch, paused, .. } = &mut o.feed else { return };
        let now_paused = if !*paused && held > limit {
            true
        } else if *paused && held <= limit / 2 {
            false
        } else {
            return;
        };
        *paused = now_paused;
        let epoch = *epoch;
        self.source(SourceAction::Flow { origin: origin.clone(), epoch, paused: now_paused });
    }
}
