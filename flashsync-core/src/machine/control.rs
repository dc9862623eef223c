//! Control calls: define, sync (passes), stop, resume, forget, shutdown,
//! timers, and the bookkeeping of store/source operations they wait on.

use super::*;

impl Machine {
    pub(super) fn on_define(&mut self, request: RequestId, def: ViewDef) {
        if let Err(e) = def.validate() {
            self.reply(request, Reply::Failed(ControlError::Definition(e)));
            return;
        }
        let origin = def.origin.clone();
        self.origins.entry(origin.clone()).or_insert_with(|| Origin::new(origin.clone(), None));
        self.routes.insert(origin, None);

        let mut redefined_from = None;
        let id = match self.names.get(&def.name).copied() {
            Some(id) => {
                let Some(v) = self.views.get(&id) else { return };
                if v.def == def {
                    self.reply(request, Reply::Defined(id));
                    return;
                }
                redefined_from = Some(v.def.origin.clone());
                // Only a copy made or under way is made again; a view never
                // copied gets its first.
                let recopy = (v.schema.is_some() || !matches!(v.phase, Phase::Idle))
                    .then_some(Recopy { reason: RecopyReason::Redefined, at: self.now });
                // A changed definition invalidates the copy: stop what runs,
                // reset the job, copy again on the next sync.
                self.cancel_work(id);
                self.complete_item(id, Outcome::Failed("view was redefined during the pass".into()));
                let persistence = def.persistence;
                self.update_job(id, EventPhase::Define, |j| {
                    // Stored with this reset job; it replaces a reason the
                    // cancelled work may have noted.
                    if recopy.is_some() {
                        j.last_recopy = recopy;
                    }
                    j.state = JobState::Idle;
                    j.persistence = persistence;
                    j.mode = persistence;
                    j.slot_id = None;
                    j.last_seen_commit = None;
                    j.retry_count = 0;
                    j.last_error = None;
                    j.next_retry_at = None;
                    // A checkpointed copy holds the old definition's rows
                    // (its schema may well be the same, its filter not).
                    j.copy = None;
                });
                if let Some(v) = self.views.get_mut(&id) {
                    v.def = def.clone();
                    v.dirty = true;
                    v.attachable = false;
                }
                id
            }
            None => {
                let id = RelationId(self.next_relation);
                self.next_relation += 1;
                self.names.insert(def.name.clone(), id);
                self.views.insert(
                    id,
                    View {
                        id,
                        def: def.clone(),
                        job: None,
                        schema: None,
                        phase: Phase::Idle,
                        dirty: false,
                        retry_queued: false,
                        attachable: false,
                    },
                );
                id
            }
        };
        self.open_request(request, Reply::Defined(id));
        // The reset job first, then the definition: a crash in between leaves
        // the old definition with a job that copies it afresh (harmless), never
        // the new definition beside the old copy's job.
        if let Some(job) = self.stored_job(id) {
            let op = self.request_op(request);
            self.store(StoreAction::PutJob { op, job });
        }
        let op = self.request_op(request);
        self.store(StoreAction::PutView { op, view: ViewRecord { relation_id: id, def } });
        // The old definition may have been the origin's last realtime view.
        if let Some(origin) = redefined_from {
            self.close_unwanted_feed(&origin);
        }
        self.settle_request(request);
    }

    // ----- passes -----------------------------------------------------------

    pub(super) fn enqueue(&mut self, waiter: Waiter) {
        if self.passes.current.is_none() {
            self.start_pass(vec![waiter]);
        } else {
            self.passes.queued.get_or_insert_with(Queued::default).waiters.push(waiter);
        }
    }

    /// Starts a pass behind a store fence; views are discovered when the
    /// fence returns ([`Self::run_pass`]).
    fn start_pass(&mut self, waiters: Vec<Waiter>) {
        self.stats.passes += 1;
        let op = self.op(Op::Fence);
        self.passes.current = Some(Pass {
            stage: Stage::Fencing(op),
            waiters,
            members: BTreeMap::new(),
            remaining: BTreeSet::new(),
            outcomes: BTreeMap::new(),
        });
        self.store(StoreAction::Fence { op });
    }

    /// Discovers the pass's views and starts their work.
    fn run_pass(&mut self) {
        let Some(pass) = self.passes.current.as_mut() else {
            return;
        };
        pass.stage = Stage::Running;
        let members: BTreeMap<RelationId, ViewName> = self
            .names
            .iter()
            .filter(|(name, _)| pass.waiters.iter().any(|w| w.selector.matches(name)))
            .map(|(name, id)| (*id, name.clone()))
            .collect();
        pass.remaining = members.keys().copied().collect();
        pass.members = members.clone();
        for (id, name) in members {
            let force = self.passes.current.as_ref().is_some_and(|p| Pass::forced(&p.waiters, &name));
            if self.ensure_job(id) {
                self.persist_job(id);
            }
            if let Some(v) = self.views.get_mut(&id) {
                v.retry_queued = false;
            }
            if let Some(outcome) = self.begin_work(id, force) {
                self.complete_item(id, outcome);
            }
        }
        self.maybe_finish_pass();
    }

    /// Records a view's outcome in the running pass, if it is waiting for one.
    pub(super) fn complete_item(&mut self, id: RelationId, outcome: Outcome) {
        let Some(pass) = self.passes.current.as_mut() else {
            return;
        };
        if pass.remaining.remove(&id) {
            pass.outcomes.insert(id, outcome);
            self.maybe_finish_pass();
        }
    }

    fn maybe_finish_pass(&mut self) {
        if !self.passes.current.as_ref().is_some_and(|p| p.stage == Stage::Running && p.remaining.is_empty()) {
            return;
        }
        let Some(pass) = self.passes.current.take() else {
            return;
        };
        for w in &pass.waiters {
            match w.kind {
                WaiterKind::Sync { request, .. } => self.reply(request, Reply::Synced(pass.summary(w))),
                WaiterKind::Resume { request } => self.reply(request, Reply::Resumed(pass.summary(w))),
                WaiterKind::Retry => {}
            }
        }
        if let Some(q) = self.passes.queued.take() {
            self.start_pass(q.waiters);
        }
    }

    // ----- stop / resume / forget / shutdown ----------------------------------

    pub(super) fn on_stop(&mut self, request: RequestId, selector: &Selector) {
        let ids = self.select(selector);
        let names = ids.iter().filter_map(|id| self.views.get(id).map(|v| v.def.name.clone())).collect();
        self.open_request(request, Reply::Stopped(names));
        let origins: BTreeSet<OriginId> =
            ids.iter().filter_map(|id| self.views.get(id)).map(|v| v.def.origin.clone()).collect();
        for id in ids {
            let created = self.ensure_job(id);
            let enabled = self.job(id).is_some_and(|j| j.enabled);
            if enabled {
                self.cancel_work(id);
                self.update_job(id, EventPhase::Stop, |j| {
                    j.enabled = false;
                    j.state = JobState::Idle;
                    j.next_retry_at = None;
                });
                self.complete_item(id, Outcome::Disabled);
            }
            if enabled || created {
                if let Some(job) = self.job(id).cloned() {
                    let op = self.request_op(request);
                    self.store(StoreAction::PutJob { op, job });
                }
            }
        }
        for origin in origins {
            self.close_unwanted_feed(&origin);
        }
        self.settle_request(request);
    }

    /// With no enabled realtime view left, an origin's feed holds a
    /// walsender and a connection for nothing: close it. The position
    /// stays, so a view resumed later subscribes from there.
    fn close_unwanted_feed(&mut self, origin: &OriginId) {
        if self.wants_feed(origin) || self.bugs().keep_idle_feeds {
            return;
        }
        let Some(o) = self.origins.get_mut(origin) else { return };
        if let Some(epoch) = o.feed.epoch() {
            self.out.push_back(Output::Source(SourceAction::Unsubscribe { origin: origin.clone(), epoch }));
        }
        // Down without a retry time: nothing subscribes until a view
        // wants the feed again. A transaction received in part is dropped
        // with the feed and comes again from the position.
        o.feed = Feed::new();
        let released = self.held_bytes.remove(origin).unwrap_or(0);
        if released > 0 {
            self.check_flow(origin);
        }
    }

    pub(super) fn on_resume(&mut self, request: RequestId, selector: Selector) {
        for id in self.select(&selector) {
            if self.job(id).is_some_and(|j| !j.enabled) {
                self.update_job(id, EventPhase::Resume, |j| {
                    j.enabled = true;
                    j.retry_count = 0;
                    j.last_error = None;
                    j.next_retry_at = None;
                });
                self.persist_job(id);
            }
        }
        self.enqueue(Waiter { kind: WaiterKind::Resume { request }, selector });
    }

    pub(super) fn on_forget(&mut self, request: RequestId, selector: &Selector) {
        let ids = self.select(selector);
        let mut names = Vec::new();
        let mut touched: BTreeSet<OriginId> = BTreeSet::new();
        let mut releases = Vec::new();
        self.open_request(request, Reply::Forgotten { views: Vec::new(), warnings: Vec::new() });
        for id in ids {
            self.cancel_work(id);
            if let Some(pass) = self.passes.current.as_mut() {
                pass.remaining.remove(&id);
                pass.outcomes.remove(&id);
            }
            let Some(v) = self.views.remove(&id) else {
                continue;
            };
            self.names.remove(&v.def.name);
            self.routes.insert(v.def.origin.clone(), None);
            names.push(v.def.name.clone());
            let op = self.forgetting_op(request);
            self.store(StoreAction::Forget { op, relation_id: id });
            if v.def.persistence == Persistence::Realtime {
                touched.insert(v.def.origin.clone());
                let shared = self.views.values().any(|o| {
                    o.def.origin == v.def.origin
                        && o.def.upstream == v.def.upstream
                        && o.def.persistence == Persistence::Realtime
                });
                if !shared {
                    releases.push(Release::Relation { origin: v.def.origin.clone(), relation: v.def.upstream.clone() });
                }
            }
        }
        for origin in touched {
            let realtime_left =
                self.views.values().any(|v| v.def.origin == origin && v.def.persistence == Persistence::Realtime);
            if realtime_left {
                // Those left may all be stopped.
                self.close_unwanted_feed(&origin);
                continue;
            }
            // The last realtime view is gone: drop the feed so the origin keeps
            // no history for us.
            if let Some(o) = self.origins.get_mut(&origin) {
                if let Some(epoch) = o.feed.epoch() {
                    self.out.push_back(Output::Source(SourceAction::Unsubscribe { origin: origin.clone(), epoch }));
                }
                // The store forgets the origin's position: start afresh, as
                // if never seen — nothing of the old feed (its position, what
                // the store applied, acks owed) may carry over. Batches still
                // in flight belong to the old chain, and their answers no
                // longer move anything.
                *o = Origin { chain: o.chain + 1, ..Origin::new(origin.clone(), None) };
            }
            releases.push(Release::Feed { origin: origin.clone() });
            let op = self.forgetting_op(request);
            self.store(StoreAction::ForgetOrigin { op, origin });
        }
        // Upstream resources go only once the store has forgotten the views
        // (`forgotten`): released first, a crash before the store's deletion
        // would bring back a view whose table left the publication meanwhile,
        // and it would resume over the commits it missed.
        if let Some(p) = self.requests.get_mut(&request) {
            p.releases = releases;
        }
        if let Some(p) = self.requests.get_mut(&request) {
            p.reply = Reply::Forgotten { views: names, warnings: Vec::new() };
        }
        self.maybe_finish_pass();
        self.settle_request(request);
    }

    pub(super) fn on_shutdown(&mut self, request: RequestId) {
        if !self.shut_down {
            self.shut_down = true;
            let feeds: Vec<(OriginId, Epoch)> =
                self.origins.values().filter_map(|o| o.feed.epoch().map(|e| (o.id.clone(), e))).collect();
            for (origin, epoch) in feeds {
                self.source(SourceAction::Unsubscribe { origin: origin.clone(), epoch });
                if let Some(o) = self.origins.get_mut(&origin) {
                    o.feed = Feed::new();
                }
            }
            // Job states are left as they are: a running view resumes from its
            // stored position on the next start.
            let ids: Vec<RelationId> = self.views.keys().copied().collect();
            for id in ids {
                self.cancel_work(id);
            }
            let mut waiters: Vec<Waiter> = self.passes.current.take().map(|p| p.waiters).unwrap_or_default();
            waiters.extend(self.passes.queued.take().map(|q| q.waiters).unwrap_or_default());
            for w in waiters {
                if let Some(r) = w.request() {
                    self.reply(r, Reply::Failed(ControlError::ShutDown));
                }
            }
            let pending: Vec<RequestId> = self.requests.keys().copied().collect();
            for r in pending {
                self.requests.remove(&r);
                self.reply(r, Reply::Failed(ControlError::ShutDown));
            }
        }
        self.reply(request, Reply::ShutDown);
    }

    pub(super) fn on_timer(&mut self) {
        if self.shut_down {
            return;
        }
        let now = self.clock();
        self.retry_due_chunks(now);
        let due_feeds: Vec<OriginId> = self
            .origins
            .values()
            .filter(|o| o.feed.retry_at().is_some_and(|t| t <= now))
            .map(|o| o.id.clone())
            .collect();
        for origin in due_feeds {
            if self.wants_feed(&origin) {
                self.subscribe(&origin);
            }
        }
        let due: BTreeSet<ViewName> = self
            .views
            .values_mut()
            .filter(|v| {
                matches!(v.phase, Phase::Idle)
                    && !v.retry_queued
                    && v.job.as_ref().is_some_and(|j| {
                        j.enabled && j.state == JobState::Failed && j.next_retry_at.is_some_and(|t| t <= now)
                    })
            })
            .map(|v| {
                v.retry_queued = true;
                v.def.name.clone()
            })
            .collect();
        if !due.is_empty() {
            self.enqueue(Waiter { kind: WaiterKind::Retry, selector: Selector::Names(due) });
        }
    }

    // ----- results of store and source operations ----------------------------

    pub(super) fn on_store_done(&mut self, op: OpId, result: Result<(), StoreError>) {
        let store_op = |k: &Op| {
            matches!(
                k,
                Op::Fence
                    | Op::Job
                    | Op::Request(_)
                    | Op::Publish(_)
                    | Op::AbandonedPublish { .. }
                    | Op::Release { .. }
                    | Op::Forgetting(_)
            )
        };
        let Some(kind) = self.take_op(op, store_op) else {
            return;
        };
        match kind {
            Op::Fence => {
                if self.passes.current.as_ref().is_some_and(|p| p.stage == Stage::Fencing(op)) {
                    self.run_pass();
                }
            }
            Op::Job => {
                if let Err(e) = result {
                    self.error(EventPhase::Job, None, None, format!("could not save a job record: {e}"));
                }
            }
            Op::Request(request) => {
                let failure = result.err().map(ControlError::Store);
                self.finish_request_op(request, failure, None);
            }
            Op::Publish(id) => self.on_published(id, result),
            Op::AbandonedPublish { id, schema } => {
                if result.is_ok() {
                    if let Some(v) = self.views.get_mut(&id) {
                        v.schema = Some(schema);
                        // A realtime copy that was never caught up is stale.
                        v.dirty = v.def.persistence == Persistence::Realtime;
                    }
                }
            }
            Op::Release { request, .. } => self.finish_request_op(request, result.err().map(ControlError::Store), None),
            Op::Forgetting(request) => self.forgotten(request, result),
            Op::Prepare(_) | Op::Snapshot(_) | Op::Amend(_) | Op::Resume(_) | Op::AbandonedSnapshot => {}
        }
    }

    fn forgetting_op(&mut self, request: RequestId) -> OpId {
        if let Some(p) = self.requests.get_mut(&request) {
            p.outstanding += 1;
            p.forgetting += 1;
        }
        self.op(Op::Forgetting(request))
    }

    /// One store deletion of a forget is done; after the last, the upstream
    /// resources only the forgotten views held are released — unless a
    /// deletion failed (the views would come back after a restart, and must
    /// find their tables still in the feed).
    fn forgotten(&mut self, request: RequestId, result: Result<(), StoreError>) {
        let Some(p) = self.requests.get_mut(&request) else { return };
        p.forgetting = p.forgetting.saturating_sub(1);
        if result.is_err() && p.failure.is_none() {
            p.failure = result.as_ref().err().cloned().map(ControlError::Store);
        }
        let releases = if p.forgetting == 0 { std::mem::take(&mut p.releases) } else { Vec::new() };
        if !releases.is_empty() && p.failure.is_some() {
            p.warnings
                .push("upstream resources of the forgotten views were kept: the store could not forget them".into());
        } else {
            for release in releases {
                // A view defined since the forget may need it again.
                if self.release_still_needed(&release) {
                    continue;
                }
                if let Some(p) = self.requests.get_mut(&request) {
                    p.outstanding += 1;
                }
                let action = match &release {
                    Release::Relation { origin, relation } => {
                        let what = format!("{relation} in the feed of {origin}");
                        let (origin, relation) = (origin.clone(), relation.clone());
                        let op = self.op(Op::Release { request, what, release });
                        SourceAction::Release { op, origin, relation }
                    }
                    Release::Feed { origin } => {
                        let what = format!("the feed (replication slot) of {origin}");
                        let origin = origin.clone();
                        let op = self.op(Op::Release { request, what, release });
                        SourceAction::DropFeed { op, origin }
                    }
                };
                self.source(action);
            }
        }
        self.finish_request_op(request, None, None);
    }

    /// Whether a realtime view still needs what `release` gives up.
    fn release_still_needed(&self, release: &Release) -> bool {
        self.views.values().any(|v| {
            v.def.persistence == Persistence::Realtime
                && match release {
                    Release::Relation { origin, relation } => &v.def.origin == origin && &v.def.upstream == relation,
                    Release::Feed { origin } => &v.def.origin == origin,
                }
        })
    }

    pub(super) fn on_released(&mut self, op: OpId, result: Result<(), SourceError>) {
        let Some(kind) = self.take_op(op, |k| matches!(k, Op::Release { .. })) else {
            return;
        };
        if let Op::Release { request, what, release } = kind {
            let warning = result.err().map(|e| {
                let w = format!("could not release {what}: {e}");
                self.error(EventPhase::Forget, None, None, w.clone());
                w
            });
            // A view of the released relation defined (and prepared) while
            // the release was in flight may have lost its table from the
            // feed after its prepare put it there: copy it again (its
            // prepare puts the table back). A dropped feed needs nothing
            // more: the next subscription finds the slot gone and says so.
            if let Release::Relation { origin, relation } = &release {
                let hit: Vec<RelationId> = self
                    .views
                    .values()
                    .filter(|v| {
                        v.def.persistence == Persistence::Realtime
                            && &v.def.origin == origin
                            && &v.def.upstream == relation
                            && !matches!(v.phase, Phase::Idle)
                    })
                    .map(|v| v.id)
                    .collect();
                for id in hit {
                    let detail = format!("{relation} left the feed of {origin} while this view was set up");
                    let message = format!("{detail}; copying it again");
                    self.mark_diverged(id, RecopyReason::LeftFeed { detail }, message);
                }
            }
            self.finish_request_op(request, None, warning);
        }
    }
}
