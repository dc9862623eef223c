//! The origin feed: subscribing, routing transactions to views, batching,
//! progress, acknowledgements, and recovering from a lost feed.

use super::*;
use crate::shape::ChangeImages;

impl Machine {
    pub(super) fn subscribe(&mut self, origin: &OriginId) {
        let epoch = Epoch(self.next_epoch);
        self.next_epoch += 1;
        if !self.origins.get(origin).is_some_and(|o| o.feed.is_down()) {
            return;
        }
        // A copy that a checkpoint kept before a restart continues only if
        // the feed delivers every transaction since its checkpoint again:
        // ask for them (the slot was never acknowledged past it).
        let kept = self
            .views
            .values()
            .filter(|v| &v.def.origin == origin)
            .filter_map(|v| v.job.as_ref()?.copy.as_ref().map(|c| c.through))
            .min();
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        let resume = match (o.applied, kept) {
            (Some(a), Some(k)) => Some(a.min(k)),
            (a, _) => a,
        };
        o.feed = Feed::Subscribing { epoch, attempt: o.feed.attempt(), from: resume };
        self.stats.subscribes += 1;
        self.source(SourceAction::Subscribe { origin: origin.clone(), epoch, resume });
    }

    pub(super) fn on_subscribed(&mut self, origin: &OriginId, epoch: Epoch, result: Result<SlotReport, SourceError>) {
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        if o.feed.up() == Some(epoch) {
            // A repeated answer for the feed that is already up.
            return;
        }
        let requested = match o.feed {
            Feed::Subscribing { epoch: e, from, .. } if e == epoch => from,
            _ => None,
        };
        if !matches!(o.feed, Feed::Subscribing { epoch: e, .. } if e == epoch) {
            // A subscription nobody wants any more (e.g. after shutdown or forget).
            if result.is_ok() {
                self.source(SourceAction::Unsubscribe { origin: origin.clone(), epoch });
            }
            return;
        }
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                self.feed_failed(
                    origin,
                    format!("could not open the feed of {origin}: {}", e.message),
                    Retry::of(e.kind),
                );
                return;
            }
        };
        // Where this connection's transactions start: a new slot's
        // consistent point, or where it was asked to resume, unless the slot
        // was confirmed past that (the server starts there then).
        let from = match &report.start {
            FeedStart::Created { consistent_point } | FeedStart::Recreated { consistent_point, .. } => {
                *consistent_point
            }
            FeedStart::Existing { confirmed_flush } => requested.map_or(*confirmed_flush, |r| r.max(*confirmed_flush)),
        };
        o.feed = Feed::Up { epoch, paused: false, txn: None, from, began: None };
        o.slot_id = Some(report.slot_id.clone());
        o.last_error = None;
        let (start, gap) = match (&report.start, o.applied) {
            (FeedStart::Created { consistent_point }, Some(_)) => {
                (*consistent_point, Some(format!("replication slot {} did not exist and was created", report.slot_id)))
            }
            (FeedStart::Recreated { consistent_point, reason }, Some(_)) => (*consistent_point, Some(reason.clone())),
            (FeedStart::Existing { confirmed_flush }, Some(applied)) if *confirmed_flush > applied => (
                *confirmed_flush,
                Some(format!(
                    "replication slot {} has confirmed_flush_lsn {confirmed_flush}, beyond the local position {applied}",
                    report.slot_id
                )),
            ),
            (FeedStart::Created { consistent_point } | FeedStart::Recreated { consistent_point, .. }, None) => (*consistent_point, None),
            (FeedStart::Existing { confirmed_flush }, None) => (*confirmed_flush, None),
            (FeedStart::Existing { .. }, Some(applied)) => (applied, None),
        };
        o.started = true;
        let fresh = o.applied.is_none() || gap.is_some();
        let record_start = fresh || !o.stored;
        if fresh {
            o.applied = Some(start);
            o.durable = None;
            o.acked = None;
            o.pending_acks.clear();
        }
        // Every job whose copy does not reach the position the feed starts
        // from is demoted (and the demotion stored) *before* that position is
        // written: store actions land in order, so no crash can leave a job
        // stored as running beside a stored position its copy lacks — which
        // a restart would resume from, skipping the commits in between.
        //
        // Views that could have re-attached but are not live now missed the
        // chance: the feed moves on without them, so their copies must be
        // made afresh.
        for id in self.origin_views(origin) {
            let Some(v) = self.views.get_mut(&id) else { continue };
            if v.attachable && !matches!(v.phase, Phase::Live { .. }) {
                v.attachable = false;
                v.dirty = true;
                // Recorded with the demotion below, or with the job record
                // written next. A lost slot would have cost the copy anyway.
                let reason = match &gap {
                    Some(detail) => RecopyReason::SlotLost { detail: detail.clone() },
                    None => RecopyReason::MissedResume {
                        detail: format!("the feed of {origin} resumed while this view was not syncing"),
                    },
                };
                self.note_recopy(id, reason);
                self.demote_job(id, EventPhase::Stream);
            }
        }
        if let Some(detail) = gap {
            let message = format!("feed of {origin} cannot resume: {detail}; copying its views again");
            self.rebootstrap_origin(origin, &RecopyReason::SlotLost { detail }, message);
        }
        if record_start {
            // Record where this feed starts, so a view stored as running is
            // always paired with a stored position it can resume from.
            self.emit_batch(
                origin,
                Flight::Commit { end_lsn: start, time: None, views: Vec::new() },
                Vec::new(),
                Vec::new(),
            );
        }
        for id in self.origin_views(origin) {
            match self.views.get(&id).map(|v| &v.phase) {
                Some(Phase::Live { .. }) => self.view_feed_up(id),
                // A re-copy continued after a restart: the pass that
                // re-attached the view waits for its old copy only.
                Some(p) if matches!(p.current_old(), Some((_, _, Recopying::Resumed))) => self.view_feed_up(id),
                // Its old copy is current again; the pass waits for the
                // new one.
                Some(p) if p.recopies_live() => self.mark_running(id),
                _ => {}
            }
        }
        self.send_ack(origin);
        self.try_start_snapshots();
    }

    /// The feed could not be opened or broke: back off, and tell the views.
    fn feed_failed(&mut self, origin: &OriginId, message: String, retry: Retry) {
        let clock = self.clock();
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        let attempt = o.feed.attempt().saturating_add(1);
        let retry_at = clock + backoff::delay(&self.cfg, attempt, retry, &mut self.rng);
        o.feed = Feed::Down { attempt, retry_at: Some(retry_at) };
        o.last_error = Some(message.clone());
        self.error(EventPhase::Stream, None, Some(origin.clone()), message.clone());
        for id in self.origin_views(origin) {
            let Some(v) = self.views.get(&id) else {
                continue;
            };
            // The copy readers see falls behind while the feed is down.
            if v.phase.mirrors() {
                let msg = message.clone();
                self.update_job(id, EventPhase::Stream, |j| {
                    j.state = JobState::Failed;
                    j.retry_count = attempt;
                    j.last_error = Some(msg);
                    j.next_retry_at = Some(retry_at);
                });
                self.persist_job(id);
            }
            let Some(v) = self.views.get(&id) else { continue };
            match v.phase {
                Phase::Live { .. } => self.complete_item(id, Outcome::Failed(message.clone())),
                // Waiting for the feed to start a snapshot: fail now rather
                // than keep a pass waiting through the back-off (a re-copy
                // on request is given up, its view live on the old copy).
                Phase::Queued { .. } if v.def.persistence == Persistence::Realtime => {
                    self.fail_view(id, EventPhase::Stream, message.clone(), retry);
                }
                // A copy under way goes on.
                _ => {}
            }
        }
    }

    pub(super) fn on_feed_lost(&mut self, origin: &OriginId, epoch: Epoch, error: &SourceError) {
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        if o.feed.epoch() != Some(epoch) {
            return;
        }
        // A transaction cut short left its staged parts in the store, never
        // in a copy: the feed sends it again, and its first part (or the
        // next commit) drops them.
        o.feed.take_txn();
        self.source(SourceAction::Unsubscribe { origin: origin.clone(), epoch });
        self.feed_failed(origin, format!("lost the feed of {origin}: {}", error.message), Retry::of(error.kind));
        // No transaction is being received any more.
        self.publish_awaiting(origin);
    }

    /// A view's copy can no longer be trusted: copy it again. `reason` is
    /// kept in its job record (stored with the failure); `message` is the
    /// failure's text.
    pub(super) fn mark_diverged(&mut self, id: RelationId, reason: RecopyReason, message: String) {
        if let Some(v) = self.views.get_mut(&id) {
            v.dirty = true;
        }
        self.note_recopy(id, reason);
        self.fail_view(id, EventPhase::Apply, message, Retry::Transient);
        // Retry at once: the copy is wrong, not the origin.
        let now = self.clock();
        if let Some(j) = self.views.get_mut(&id).and_then(|v| v.job.as_mut()) {
            j.next_retry_at = Some(now);
        }
    }

    /// The feed lost history: every realtime view of the origin copies again.
    fn rebootstrap_origin(&mut self, origin: &OriginId, reason: &RecopyReason, message: String) {
        self.error(EventPhase::Stream, None, Some(origin.clone()), message.clone());
        for id in self.origin_views(origin) {
            let Some(v) = self.views.get(&id) else {
                continue;
            };
            if v.def.persistence != Persistence::Realtime {
                continue;
            }
            match &v.phase {
                p if p.mirrors() || matches!(p, Phase::Copying { .. } | Phase::Publishing { .. }) => {
                    let in_pass = self.passes.current.as_ref().is_some_and(|p| p.remaining.contains(&id));
                    self.mark_diverged(id, reason.clone(), message.clone());
                    if in_pass {
                        // The pass still wants this view: start over now.
                        if let Some(p) = self.passes.current.as_mut() {
                            p.remaining.insert(id);
                            p.outcomes.remove(&id);
                        }
                        if let Some(outcome) = self.begin_work(id, true) {
                            self.complete_item(id, outcome);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn on_feed(&mut self, origin: &OriginId, epoch: Epoch, event: StreamEvent) {
        if self.origins.get(origin).and_then(|o| o.feed.up()) != Some(epoch) {
            return;
        }
        match event {
            StreamEvent::Begin { xid, final_lsn, commit_time } => self.on_begin(origin, xid, final_lsn, commit_time),
            StreamEvent::Change(change) => self.on_change(origin, change),
            StreamEvent::Commit { end_lsn } => self.on_commit(origin, end_lsn),
            StreamEvent::Keepalive { wal_end, .. } => self.on_keepalive(origin, wal_end),
            StreamEvent::SchemaChanged { rel, detail, columns } => {
                self.on_schema_changed(origin, rel, detail, columns.as_deref())
            }
        }
    }

    fn protocol_error(&mut self, origin: &OriginId, message: &str) {
        let epoch = self.origins.get(origin).and_then(|o| o.feed.epoch());
        if let Some(epoch) = epoch {
            let e = SourceError::new(crate::error::SourceErrorKind::Protocol, message);
            self.on_feed_lost(origin, epoch, &e);
        }
    }

    fn on_begin(&mut self, origin: &OriginId, xid: u32, final_lsn: Lsn, commit_time: Timestamp) {
        if self.origins.get(origin).is_some_and(|o| o.feed.txn().is_some()) {
            self.protocol_error(origin, "feed began a transaction inside another");
            return;
        }
        // Parts an abandoned transaction staged go first: this transaction's
        // commit must claim only its own.
        if self.origins.get(origin).is_some_and(|o| o.staged_parts) {
            self.drop_staged_parts(origin);
        }
        let applied = self.origins.get(origin).and_then(|o| o.applied);
        let duplicate = applied.is_some_and(|a| final_lsn < a);
        if let Some(Feed::Up { began, .. }) = self.origins.get_mut(origin).map(|o| &mut o.feed) {
            *began = Some(began.map_or(final_lsn, |b| b.max(final_lsn)));
        }
        let table = self.route_table(origin);
        if duplicate {
            self.stats.duplicates_skipped += 1;
        }
        let routes = if duplicate && !table.floors {
            Arc::new(RelRoutes::new())
        } else {
            if table.filtered || table.floors {
                let mut routes = RelRoutes::new();
                for e in &table.entries {
                    // Looked up now: a resumed copy's floor rises with
                    // every transaction it receives.
                    let floor = if e.resumed { self.views.get(&e.id).and_then(|v| v.phase.floor()) } else { None };
                    match floor {
                        // A resumed copy holds what committed before its
                        // checkpoint already, whatever live views have.
                        Some(floor) if final_lsn < floor => continue,
                        Some(_) => {}
                        None if duplicate => continue,
                        None => {}
                    }
                    if let Some(f) = &e.filter {
                        if !self.bugs().skip_xid_filter && f.contains_everywhere(xid, final_lsn) {
                            self.stats.filtered += 1;
                            continue;
                        }
                    }
                    routes.entry(e.shape.upstream().source_id).or_default().push((e.id, e.route));
                }
                Arc::new(routes)
            } else {
                table.by_rel.clone()
            }
        };
        if let Some(Feed::Up { txn, .. }) = self.origins.get_mut(origin).map(|o| &mut o.feed) {
            *txn = Some(Txn {
                xid,
                final_lsn,
                commit_time,
                duplicate,
                routes,
                changed: BTreeSet::new(),
                apply: BTreeMap::new(),
                apply_ops: 0,
                hold: BTreeMap::new(),
                hold_bytes: BTreeMap::new(),
                partial: BTreeSet::new(),
                partly: BTreeMap::new(),
            });
        }
    }

    fn on_change(&mut self, origin: &OriginId, change: Change) {
        let table = self.route_table(origin);
        let (skip_move_outs, skip_move_ins) = (self.bugs().skip_move_outs, self.bugs().skip_move_ins);
        let Some(txn) = self.origins.get_mut(origin).and_then(|o| o.feed.txn_mut()) else {
            self.protocol_error(origin, "feed sent a change outside a transaction");
            return;
        };
        if txn.routes.is_empty() {
            return;
        }
        let rels: &[SourceRelId] = match &change {
            Change::Insert { rel, .. } | Change::Update { rel, .. } | Change::Delete { rel, .. } => {
                std::slice::from_ref(rel)
            }
            Change::Truncate { rels } => rels,
        };
        // Read once for all the partial views the change is routed to.
        let images = ChangeImages::new(&change);
        let mut targets = Vec::new();
        let mut whole = None;
        for rel in rels {
            if txn.routes.contains_key(rel) {
                txn.changed.insert(*rel);
            }
            for &(id, route) in txn.routes.get(rel).into_iter().flatten() {
                // The table may have been rebuilt since `Begin`: a view that
                // left it takes no more changes.
                let Some(entry) = table.get(id, route) else { continue };
                let shape = &entry.shape;
                let skip = shape.skips(&images) || (skip_move_ins && shape.held_before(&images) == Some(false));
                if skip {
                    // Still routed (see `Txn::changed`): the view reflects
                    // the commit.
                    if route == Route::Hold {
                        txn.hold.entry(entry.id).or_default();
                    }
                } else if shape.is_whole() && whole.is_none() {
                    whole = Some((entry.id, route, shape));
                } else {
                    targets.push((entry.id, route, shape));
                }
            }
        }
        let mut broken = Vec::new();
        let is_update = matches!(change, Change::Update { .. });
        // Appends a view's operations for the change to its share of the
        // transaction, in place.
        let mut emit = |id: RelationId,
                        route: Route,
                        shape: &ViewShape,
                        write: &mut dyn FnMut(&mut Vec<RowOp>) -> Result<(), String>| {
            let ops = match route {
                Route::Apply => txn.apply.entry(id).or_default(),
                Route::Hold => txn.hold.entry(id).or_default(),
            };
            let before = ops.len();
            if let Err(e) = write(ops) {
                broken.push((id, e));
                return;
            }
            if skip_move_outs
                && !shape.is_whole()
                && is_update
                && ops.len() > before
                && matches!(ops.last(), Some(RowOp::Evict { .. } | RowOp::Delete { .. }))
            {
                // Planted bug: an update that moves a row out of a filtered
                // view leaves it there.
                ops.pop();
            }
            let added = ops.get(before..).unwrap_or_default();
            match route {
                Route::Apply => txn.apply_ops += added.len(),
                Route::Hold => *txn.hold_bytes.entry(id).or_default() += added.iter().map(op_size).sum::<usize>(),
            }
        };
        for (id, route, shape) in targets {
            emit(id, route, shape, &mut |ops| shape.row_ops_of(&images, ops));
        }
        drop(images);
        // Most changes go to one whole view: it takes the change itself.
        if let Some((id, route, shape)) = whole {
            let mut change = Some(change);
            emit(id, route, shape, &mut |ops| match change.take() {
                Some(c) => shape.row_ops(c, ops),
                None => Ok(()),
            });
        }
        for (id, _) in &broken {
            for targets in Arc::make_mut(&mut txn.routes).values_mut() {
                targets.retain(|(t, _)| t != id);
            }
            txn.apply.remove(id);
            txn.hold.remove(id);
        }
        let flush = txn.apply_ops >= self.cfg.max_batch_ops;
        for (id, e) in broken {
            self.mark_diverged(id, RecopyReason::Diverged { detail: e.clone() }, e);
        }
        if flush {
            self.flush_partial(origin);
        }
        self.check_flow(origin);
    }

    /// Hands the open transaction's changes so far to the store to stage,
    /// so a very large transaction is not held here; the commit applies
    /// them. The first part also drops whatever an earlier, unfinished
    /// attempt at a transaction staged.
    fn flush_partial(&mut self, origin: &OriginId) {
        let Some(txn) = self.origins.get_mut(origin).and_then(|o| o.feed.txn_mut()) else {
            return;
        };
        let mut apply = std::mem::take(&mut txn.apply);
        txn.apply_ops = 0;
        let (xid, final_lsn) = (txn.xid, txn.final_lsn);
        let mut partly = std::mem::take(&mut txn.partly);
        let mixed = self.sift(xid, final_lsn, &mut apply, &mut partly);
        let Some(txn) = self.origins.get_mut(origin).and_then(|o| o.feed.txn_mut()) else {
            return;
        };
        txn.partly = partly;
        let first = txn.partial.is_empty();
        txn.partial.extend(apply.keys().copied());
        let views = self.view_ops(apply);
        if let Some(o) = self.origins.get_mut(origin) {
            o.staged_parts = true;
        }
        self.emit_batch(origin, Flight::Stage { first }, views, Vec::new());
        self.diverge_mixed(mixed);
    }

    /// A re-copy that kept its old copy current handed the new copy to the
    /// store to publish: the old copy is fed no more (the store publishes
    /// before any later batch). What the open transaction gathered for it
    /// goes, and so do the parts staged for it (unclaimed, the store drops
    /// them at the commit); the new copy holds the whole transaction by its
    /// own route, and its snapshots judge it.
    pub(super) fn stop_feeding_old_copy(&mut self, id: RelationId) {
        let Some(txn) = self.origin_txn_of(id) else { return };
        txn.leave(id, Route::Apply);
        if let Some(ops) = txn.apply.remove(&id) {
            txn.apply_ops = txn.apply_ops.saturating_sub(ops.len());
        }
        txn.partial.remove(&id);
        txn.partly.remove(&id);
    }

    /// The transaction being received from view `id`'s origin.
    pub(super) fn origin_txn_of(&mut self, id: RelationId) -> Option<&mut Txn> {
        let origin = self.views.get(&id)?.def.origin.clone();
        self.origins.get_mut(&origin)?.feed.txn_mut()
    }

    /// A view live on a copy made in chunks takes a transaction only at the
    /// keys whose chunk's snapshot lacks it, until the feed is past every
    /// chunk's snapshot: sifts `ops` so. Returns the views an operation of
    /// which spans chunks that disagree (they must be copied again).
    fn sift(
        &mut self,
        xid: u32,
        final_lsn: Lsn,
        ops: &mut BTreeMap<RelationId, Vec<RowOp>>,
        partly: &mut BTreeMap<RelationId, Vec<Vec<u8>>>,
    ) -> Vec<RelationId> {
        let mut mixed = Vec::new();
        for (id, list) in ops.iter_mut() {
            let Some(Some(h)) = self.views.get(id).and_then(|v| v.phase.mirror_filter()) else { continue };
            if h.contains_nowhere(xid, final_lsn) {
                continue;
            }
            let mut kept = Vec::with_capacity(list.len());
            for op in list.drain(..) {
                match h.sift(op, xid, final_lsn) {
                    Some(Sifted::Apply(op)) => kept.push(op),
                    Some(Sifted::Skip) => {}
                    None => mixed.push(*id),
                }
            }
            if self.cfg.audit {
                partly.entry(*id).or_default().extend(kept.iter().flat_map(op_keys));
            }
            *list = kept;
        }
        for id in &mixed {
            ops.remove(id);
        }
        mixed.dedup();
        mixed
    }

    /// Views [`sift`](Self::sift) found a spanning change for: copied again.
    fn diverge_mixed(&mut self, mixed: Vec<RelationId>) {
        for id in mixed {
            let detail = "a change spanned chunks of the copy made at different snapshots".to_owned();
            self.mark_diverged(id, RecopyReason::Diverged { detail: detail.clone() }, detail);
        }
    }

    /// Tells the store to drop every part staged for `origin`'s feed (an
    /// empty first part does exactly that).
    fn drop_staged_parts(&mut self, origin: &OriginId) {
        if let Some(o) = self.origins.get_mut(origin) {
            o.staged_parts = false;
        }
        if !self.bugs().keep_abandoned_parts {
            self.emit_batch(origin, Flight::Stage { first: true }, Vec::new(), Vec::new());
        }
    }

    fn view_ops(&self, ops: BTreeMap<RelationId, Vec<RowOp>>) -> Vec<ViewOps> {
        ops.into_iter()
            .filter_map(|(id, ops)| {
                let v = self.views.get(&id)?;
                let live = v.phase.mirrors();
                let disabled_bug = self.bugs().apply_while_disabled && v.job.as_ref().is_some_and(|j| !j.enabled);
                if !(live || disabled_bug) || ops.is_empty() {
                    return None;
                }
                let identity = v.schema.as_ref()?.identity;
                Some(ViewOps { relation_id: id, identity, ops })
            })
            .collect()
    }

    fn on_commit(&mut self, origin: &OriginId, end_lsn: Lsn) {
        self.commit_txn(origin, end_lsn);
        self.publish_awaiting(origin);
    }

    fn commit_txn(&mut self, origin: &OriginId, end_lsn: Lsn) {
        let Some(txn) = self.origins.get_mut(origin).and_then(|o| o.feed.take_txn()) else {
            self.protocol_error(origin, "feed committed a transaction it never began");
            return;
        };
        let applied = self.origins.get(origin).and_then(|o| o.applied);
        if txn.duplicate || applied.is_some_and(|a| end_lsn <= a) {
            if !txn.duplicate {
                self.stats.duplicates_skipped += 1;
            }
            // Copies resumed from a checkpoint older than this commit still
            // take it: the store's position ran ahead of theirs.
            let mut hold = txn.hold;
            hold.retain(|id, _| self.views.get(id).and_then(|v| v.phase.floor()).is_some_and(|f| txn.final_lsn >= f));
            self.hold_back(origin, txn.xid, txn.final_lsn, end_lsn, hold);
            self.resumed_copies_reach(origin, end_lsn);
            // Still a transaction boundary: queued bootstraps may start.
            self.try_start_snapshots();
            return;
        }
        self.stats.commits_applied += 1;
        let mut apply = txn.apply;
        // A view whose copy was published while this transaction was being
        // received is live now: its held share of the transaction applies
        // with it, unless its snapshot already holds the transaction.
        let mut hold = BTreeMap::new();
        for (id, ops) in txn.hold {
            // Live — or already copied again on request, its old copy
            // current (the transaction began before it went live).
            let live = self.views.get(&id).filter(|v| v.phase.hold().is_none()).and_then(|v| v.phase.mirror_filter());
            match live {
                Some(filter) => {
                    let in_snapshot = filter.is_some_and(|f| f.contains_everywhere(txn.xid, txn.final_lsn));
                    if in_snapshot && !self.bugs().skip_xid_filter {
                        self.stats.filtered += 1;
                    } else {
                        apply.entry(id).or_default().extend(ops);
                    }
                }
                _ => {
                    hold.insert(id, ops);
                }
            }
        }
        let mut partly = txn.partly;
        let mixed = self.sift(txn.xid, txn.final_lsn, &mut apply, &mut partly);
        self.diverge_mixed(mixed);
        if self.cfg.audit {
            // A view on a copy made in chunks that the transaction reaches
            // only in part says at which keys — possibly none (decided
            // before this commit's position expires the hand-off below).
            for id in self.origin_views(origin) {
                if let Some(Some(h)) = self.views.get(&id).and_then(|v| v.phase.mirror_filter()) {
                    if !h.contains_nowhere(txn.xid, txn.final_lsn) {
                        partly.entry(id).or_default();
                    }
                }
            }
        }
        if let Some(o) = self.origins.get_mut(origin) {
            o.stored = true;
        }
        // Past a snapshot's position nothing can be in it: the hand-off is
        // complete, and the job may now be stored as running (in this batch,
        // with the position that proves it).
        let handed_off = self.drop_filters(origin, end_lsn);
        // A filtered view may be routed a transaction none of whose changes
        // it keeps: it still reflects the commit.
        let changed = || txn.changed.iter().flat_map(|rel| txn.routes.get(rel).into_iter().flatten());
        let mut routed = Vec::with_capacity(changed().count() + apply.len() + txn.partial.len());
        routed.extend(changed().filter(|(_, route)| *route == Route::Apply).map(|(id, _)| *id));
        routed.extend(apply.keys().copied());
        routed.extend(txn.partial.iter().copied());
        routed.sort_unstable();
        routed.dedup();
        let mut views = self.view_ops(apply);
        // Views with staged parts claim them by being named, with no
        // operations of their own if need be. Only live ones: a view that
        // left the feed since was taken out of `partial`.
        let claims = txn.partial.iter().filter_map(|&id| {
            let v = self.views.get(&id).filter(|v| v.phase.mirrors())?;
            let identity = v.schema.as_ref()?.identity;
            Some(ViewOps { relation_id: id, identity, ops: Vec::new() })
        });
        let claims: Vec<ViewOps> = if self.bugs().drop_staged_parts { Vec::new() } else { claims.collect() };
        crate::staging::claim(&mut views, claims);
        // The stored job records say the batch's views reflect this commit;
        // the in-memory ones say so once the store has applied it.
        let mut jobs = Vec::new();
        for vo in &views {
            // Evictions of rows a filtered view may never have held are most
            // of what many filtered views of one table receive: rewriting
            // each one's job record for them would cost more than the rows.
            // (Its last commit seen still moves in memory.)
            let staged = txn.partial.contains(&vo.relation_id);
            if !staged && vo.ops.iter().all(|op| matches!(op, RowOp::Evict { .. })) {
                continue;
            }
            if let Some(mut j) = self.stored_job(vo.relation_id) {
                j.last_seen_commit = Some(end_lsn);
                jobs.push(j);
            }
        }
        for id in handed_off {
            if !jobs.iter().any(|j: &JobRecord| j.relation_id == id) {
                jobs.extend(self.stored_job(id));
            }
        }
        // Views this transaction reached in full: those still live now (a view
        // that left mid-transaction lost its staged part, and its copy never
        // saw any of the transaction).
        let mut touched = routed;
        touched.retain(|id| self.views.get(id).is_some_and(|v| v.phase.mirrors()));
        // Only checkers read the audit: no copy of the list otherwise.
        let audited = if self.cfg.audit { touched.clone() } else { Vec::new() };
        // The commit drops whatever else the origin had staged.
        if let Some(o) = self.origins.get_mut(origin) {
            o.staged_parts = false;
        }
        let seq = self.emit_batch(
            origin,
            Flight::Commit { end_lsn, time: Some(txn.commit_time), views: touched },
            views,
            jobs,
        );
        for view in audited {
            let keys = partly.get(&view).cloned();
            self.audit.push(AuditRecord::Applied { seq, view, xid: txn.xid, end_lsn, replay: false, keys });
        }
        self.hold_back(origin, txn.xid, txn.final_lsn, end_lsn, hold);
        self.resumed_copies_reach(origin, end_lsn);
        let cap = self.cfg.recent_commits.max(1);
        if let Some(o) = self.origins.get_mut(origin) {
            o.applied = Some(end_lsn);
            o.commits_seen += 1;
            o.recent.push_back((o.commits_seen, txn.xid));
            while o.recent.len() > cap {
                o.recent.pop_front();
            }
        }
        self.check_flow(origin);
        self.try_start_snapshots();
    }

    /// Holds back the bootstrapping views' share of a transaction.
    fn hold_back(
        &mut self,
        origin: &OriginId,
        xid: u32,
        final_lsn: Lsn,
        end_lsn: Lsn,
        hold: BTreeMap<RelationId, Vec<RowOp>>,
    ) {
        let mut added = 0;
        for (id, ops) in hold {
            let Some(h) = self.views.get_mut(&id).and_then(|v| v.phase.hold_mut()) else {
                continue;
            };
            let bytes: usize = ops.iter().map(op_size).sum();
            h.bytes += bytes;
            h.txns.push(HeldTxn { xid, final_lsn, end_lsn, ops });
            added += bytes;
        }
        *self.held_bytes.entry(origin.clone()).or_default() += added;
    }

    fn on_keepalive(&mut self, origin: &OriginId, wal_end: Lsn) {
        let Some(o) = self.origins.get(origin) else {
            return;
        };
        if o.feed.txn().is_some() {
            return;
        }
        self.resumed_copies_reach(origin, wal_end);
        let Some(o) = self.origins.get(origin) else {
            return;
        };
        if o.applied.is_none_or(|a| wal_end > a) {
            // Nothing we care about happened up to `wal_end`: record the
            // position like a commit, so it can be acknowledged once durable
            // and unrelated WAL does not pin the slot.
            if let Some(o) = self.origins.get_mut(origin) {
                o.stored = true;
            }
            let jobs = self.drop_filters(origin, wal_end).into_iter().filter_map(|id| self.stored_job(id)).collect();
            // Every live view reflects the origin through `wal_end` (nothing
            // it keeps changed): its last commit seen moves too, once the
            // position is applied, so it never looks behind on a quiet
            // table of a busy server.
            let live: Vec<RelationId> = self
                .route_table(origin)
                .entries
                .iter()
                .filter(|e| e.route == Route::Apply)
                .map(|e| e.id)
                .filter(|id| self.views.get(id).is_some_and(|v| v.phase.mirrors()))
                .collect();
            self.emit_batch(origin, Flight::Commit { end_lsn: wal_end, time: None, views: live }, Vec::new(), jobs);
            if let Some(o) = self.origins.get_mut(origin) {
                o.applied = Some(wal_end);
            }
        }
        self.try_start_snapshots();
    }

    /// Ends the hand-off of every live view of `origin` whose snapshot lies
    /// at or before `position`; returns them.
    ///
    /// Only the routing filter goes: the job record keeps the snapshot point
    /// ([`JobRecord::handoff`]) until a position past it is durable (see
    /// [`Machine::on_durable`]). Until then a crash may take the store back
    /// to a position before the snapshot while the job record survives
    /// (job records are durable at once, batches only once persisted), and
    /// the feed's replay of transactions the copy already holds must still
    /// be filtered.
    fn drop_filters(&mut self, origin: &OriginId, position: Lsn) -> Vec<RelationId> {
        let mut dropped = Vec::new();
        // Every commit asks: only a table with a view in a hand-off needs
        // the views looked at (a live view's filter is set by `set_phase`,
        // which rebuilds the table).
        if !self.route_table(origin).filtered {
            return dropped;
        }
        for id in self.origin_views(origin) {
            let Some(v) = self.views.get_mut(&id) else { continue };
            if let Some(filter) = v.phase.mirror_filter_mut() {
                if filter.as_mut().is_some_and(|f| f.expire(position)) {
                    *filter = None;
                    dropped.push(id);
                }
            }
        }
        if !dropped.is_empty() {
            self.routes.insert(origin.clone(), None);
        }
        dropped
    }

    fn on_schema_changed(
        &mut self,
        origin: &OriginId,
        rel: SourceRelId,
        detail: String,
        columns: Option<&[crate::schema::ColumnMatch]>,
    ) {
        let mut affected: Vec<RelationId> = self
            .route_table(origin)
            .entries
            .iter()
            .filter(|e| e.shape.upstream().source_id == rel)
            .map(|e| e.id)
            .collect();
        affected.dedup();
        // The change of shape is part of the open transaction, if any: the
        // views it is routed to reflect that transaction's commit — those
        // routed to hold too (as for a change they skip), which may be
        // live by then.
        if let Some(txn) = self.origins.get_mut(origin).and_then(|o| o.feed.txn_mut()) {
            if let Some(targets) = txn.routes.get(&rel) {
                let held: Vec<RelationId> =
                    targets.iter().filter(|(_, r)| *r == Route::Hold).map(|(id, _)| *id).collect();
                txn.changed.insert(rel);
                for id in held {
                    txn.hold.entry(id).or_default();
                }
            }
        }
        for id in affected {
            let reason = RecopyReason::SchemaChanged { detail: detail.clone() };
            // A live copy (or one kept current while copied again) whose
            // columns all survived follows the feed in the new shape until
            // its new copy replaces it.
            let follow = self.views.get(&id).filter(|v| !v.dirty).and_then(|v| {
                let (shape, filter) = match &v.phase {
                    Phase::Live { shape, filter, replay: None } => (shape, filter),
                    p => p.current_old().map(|(shape, filter, _)| (shape, filter))?,
                };
                let followed = shape.follow(&v.def, columns?)?;
                Some(OldCopy::Current { shape: Arc::new(followed), filter: filter.clone(), why: Recopying::Reshaped })
            });
            match follow {
                Some(old) => {
                    let message = format!("upstream relation changed shape ({detail}); copying it again, its copy staying current meanwhile");
                    self.note_recopy(id, reason);
                    self.error(EventPhase::Stream, Some(id), None, message);
                    self.recopy_keeping(id, old);
                }
                None => {
                    let message = format!("upstream relation changed shape ({detail}); copying it again");
                    self.mark_diverged(id, reason, message);
                }
            }
        }
    }
}

/// Rough memory held by a row operation, for the hold-back bound.
pub(super) fn op_size(op: &RowOp) -> usize {
    let key = |k: &Key| k.0.iter().map(crate::value::Value::approx_size).sum::<usize>();
    48 + match op {
        RowOp::Insert { key: k, row } => key(k) + row.approx_size(),
        RowOp::Update { old_key, key: k, new } | RowOp::UpdateIf { old_key, key: k, new, .. } => {
            old_key.as_ref().map_or(0, key)
                + key(k)
                + new
                    .iter()
                    .map(|c| match c {
                        Cell::Set(v) => v.approx_size(),
                        Cell::Unchanged => 8,
                    })
                    .sum::<usize>()
        }
        RowOp::Delete { key: k } | RowOp::Evict { key: k } => key(k),
        RowOp::Truncate => 0,
    }
}
