//! Per-view work inside a pass: prepare, copy, publish, and the hand-off of
//! a realtime view from its snapshot to the live feed.

use super::*;

impl Machine {
    /// Starts whatever `id` needs in this pass; returns its outcome right away
    /// when nothing needs doing.
    pub(super) fn begin_work(&mut self, id: RelationId, force: bool) -> Option<Outcome> {
        let now = self.clock();
        let v = self.views.get(&id)?;
        let job = v.job.as_ref()?;
        if !job.enabled {
            return Some(Outcome::Disabled);
        }
        let in_backoff = job.state == JobState::Failed && job.next_retry_at.is_some_and(|t| t > now);
        let last_error = job.last_error.clone().unwrap_or_else(|| "failed".into());
        let (persistence, origin) = (v.def.persistence, v.def.origin.clone());
        match &v.phase {
            // Work from an earlier request is still in flight; it will report.
            Phase::Preparing { .. } | Phase::Queued { .. } | Phase::Copying { .. } | Phase::Publishing { .. } => None,
            Phase::Live { .. } => {
                let feed = self.origins.get(&origin).map(|o| &o.feed);
                match feed {
                    Some(Feed::Up { .. }) => Some(Outcome::Realtime),
                    Some(Feed::Subscribing { .. }) => None,
                    Some(Feed::Down { .. }) | None => {
                        let origin_backoff = feed.and_then(Feed::retry_at).is_some_and(|t| t > now);
                        if origin_backoff && !force {
                            Some(Outcome::Failed(last_error))
                        } else {
                            self.subscribe(&origin);
                            None
                        }
                    }
                }
            }
            Phase::Idle => {
                if in_backoff && !force {
                    return Some(Outcome::Failed(last_error));
                }
                let goal = match persistence {
                    Persistence::Materialized => {
                        if job.state == JobState::Synced && !force && !v.dirty && v.schema.is_some() {
                            return Some(Outcome::Materialized);
                        }
                        Goal::Materialize
                    }
                    Persistence::Realtime => {
                        if v.attachable
                            && !v.dirty
                            && v.schema.is_some()
                            && !self.origins.get(&origin).is_some_and(|o| o.started)
                        {
                            Goal::Attach
                        } else {
                            Goal::Bootstrap
                        }
                    }
                };
                let relation = v.def.upstream.clone();
                let op = self.op(Op::Prepare(id));
                self.set_phase(id, Phase::Preparing { op, goal });
                self.source(SourceAction::Prepare { op, origin, relation, feed: persistence == Persistence::Realtime });

                None
            }
        }
    }

    pub(super) fn on_prepared(&mut self, op: OpId, result: Result<RelationSchema, SourceError>) {
        let Some(Op::Prepare(id)) = self.take_op(op, |k| matches!(k, Op::Prepare(_))) else {
            return;
        };
        let Some(v) = self.views.get(&id) else { return };
        let Phase::Preparing { op: current, goal } = v.phase else {
            return;
        };
        if current != op {
            return;
        }
        let upstream = match result {
            Ok(s) if s.is_well_formed() => s,
            Ok(_) => {
                let msg = format!("source described {} with a key that does not fit its columns", v.def.upstream);
                self.fail_view(id, EventPhase::Prepare, msg, Retry::Transient);
                return;
            }
            Err(e) => {
                let origin = v.def.origin.clone();
                self.fail_view(id, EventPhase::Prepare, e.message, Retry::of(e.kind));
                self.maybe_subscribe(&origin);
                return;
            }
        };
        let origin = v.def.origin.clone();
        let shape = match ViewShape::new(&v.def, upstream) {
            Ok(shape) => Arc::new(shape),
            Err(e) => {
                // The definition does not fit the relation: only the user
                // (or a change of the table) can fix that.
                let msg = format!("view {} does not fit {}: {e}", v.def.name, v.def.upstream);
                self.fail_view(id, EventPhase::Prepare, msg, Retry::Permanent);
                self.maybe_subscribe(&origin);
                return;
            }
        };
        match goal {
            Goal::Materialize => {
                self.set_phase(id, Phase::Queued { shape, races: 0 });
                self.try_start_snapshots();
            }
            Goal::Attach if v.schema.as_deref() == Some(shape.local()) && v.attachable => {
                // The stored copy is current through the origin's stored
                // position and the relation is unchanged: replay the feed.
                // The filter of an unfinished hand-off survives the restart.
                let filter = v.job.as_ref().and_then(|j| j.handoff.clone());
                self.set_phase(id, Phase::Live { shape, filter, replay: None });
                if let Some(v) = self.views.get_mut(&id) {
                    v.attachable = false;
                }
                match self.origins.get(&origin).and_then(|o| o.feed.up()) {
                    Some(_) => self.view_feed_up(id),
                    _ => self.maybe_subscribe(&origin),
                }
            }
            Goal::Attach | Goal::Bootstrap => {
                if goal == Goal::Attach {
                    let detail = format!("upstream relation {} changed since the local copy was made", v.def.upstream);
                    self.error(EventPhase::Prepare, Some(id), None, format!("{detail}; copying it again"));
                    // Stored with the new copy's job record at its publish.
                    self.note_recopy(id, RecopyReason::SchemaChanged { detail });
                }
                if let Some(v) = self.views.get_mut(&id) {
                    v.attachable = false;
                }
                self.set_phase(id, Phase::Queued { shape, races: 0 });
                self.maybe_subscribe(&origin);
                self.try_start_snapshots();
            }
        }
    }

    /// Starts queued snapshots while slots are free. Realtime views start only
    /// while their origin's feed is up and between transactions, so that the
    /// hold-back begins on a transaction boundary.
    pub(super) fn try_start_snapshots(&mut self) {
        if self.queued_views.is_empty() {
            return;
        }
        let candidates: Vec<RelationId> = self.queued_views.iter().copied().collect();
        for id in candidates {
            if self.copying >= self.cfg.max_concurrent_snapshots.max(1) {
                break;
            }
            let Some(v) = self.views.get(&id) else {
                continue;
            };
            let Phase::Queued { shape, races } = &v.phase else {
                continue;
            };
            let (shape, races) = (shape.clone(), *races);
            let copy = match v.def.persistence {
                Persistence::Materialized => CopyKind::Materialize,
                Persistence::Realtime => {
                    let Some(o) = self.origins.get(&v.def.origin) else {
                        continue;
                    };
                    if o.feed.up().is_none() || o.feed.txn().is_some() {
                        continue;
                    }
                    CopyKind::Bootstrap(HoldBack { since: o.commits_seen, txns: Vec::new(), bytes: 0 })
                }
            };
            let (origin, relation) = (v.def.origin.clone(), v.def.upstream.clone());
            let op = self.op(Op::Snapshot(id));
            self.stats.snapshots += 1;
            self.set_phase(id, Phase::Copying { op, shape: shape.clone(), copy, races });
            self.source(SourceAction::Snapshot { op, origin, relation_id: id, relation, shape });
        }
    }

    pub(super) fn on_snapshotted(&mut self, op: OpId, result: Result<SnapshotPoint, SourceError>) {
        let kind = self.take_op(op, |k| matches!(k, Op::Snapshot(_) | Op::AbandonedSnapshot));
        let id = match kind {
            Some(Op::Snapshot(id)) => id,
            Some(Op::AbandonedSnapshot) => {
                self.store(StoreAction::Discard { op });
                self.try_start_snapshots();
                return;
            }
            _ => return,
        };
        let point = match result {
            Ok(p) if p.is_well_formed() => p,
            Ok(_) => {
                self.store(StoreAction::Discard { op });
                self.fail_view(
                    id,
                    EventPhase::Snapshot,
                    "source reported an inconsistent snapshot (xip outside xmin..xmax)".into(),
                    Retry::Transient,
                );
                self.try_start_snapshots();
                return;
            }
            Err(e) => {
                self.store(StoreAction::Discard { op });
                self.fail_view(id, EventPhase::Snapshot, e.message, Retry::of(e.kind));
                self.try_start_snapshots();
                return;
            }
        };
        let Some(v) = self.views.get(&id) else { return };
        let Phase::Copying { shape, copy, races, .. } = &v.phase else {
            return;
        };
        let (shape, copy, races) = (shape.clone(), copy.clone(), *races);
        let origin = v.def.origin.clone();
        let now = self.now;
        let mut job = v.job.clone().unwrap_or_else(|| JobRecord::new(id, &v.def.name, v.def.persistence, now));
        job.last_seen_commit = Some(point.lsn);
        // The old copy's hand-off point means nothing for the new one.
        job.handoff = None;
        if let CopyKind::Bootstrap(h) = &copy {
            // The hand-off is sound only if every transaction the snapshot
            // reports in progress commits after the hold-back began. A commit
            // delivered before that but invisible to the snapshot would be in
            // neither: take the snapshot again.
            if self.raced(&origin, h.since, &point) {
                self.stats.snapshot_races += 1;
                self.store(StoreAction::Discard { op });
                if races + 1 > self.cfg.max_snapshot_races {
                    self.fail_view(
                        id,
                        EventPhase::Snapshot,
                        format!("snapshot raced concurrent commits {} times", races + 1),
                        Retry::Transient,
                    );
                } else {
                    self.set_phase(id, Phase::Queued { shape, races: races + 1 });
                }
                self.try_start_snapshots();
                return;
            }
        } else {
            job.state = JobState::Synced;
            job.retry_count = 0;
            job.last_error = None;
            job.next_retry_at = None;
            job.last_success_at = Some(now);
            if job.state != v.job.as_ref().map_or(JobState::Idle, |j| j.state) {
                job.updated_at = now;
            }
        }
        if v.def.persistence == Persistence::Realtime {
            // The copy is not caught up yet: stored as not running until the
            // hand-off batch says so.
            job.state = match job.state {
                JobState::Running => JobState::Idle,
                other => other,
            };
        }
        self.ops.insert(op, Op::Publish(id));
        self.set_phase(id, Phase::Publishing { op, shape, point, copy, job: job.clone() });
        self.store(StoreAction::Publish { op, job });
        self.try_start_snapshots();
    }

    /// Whether a commit delivered before the hold-back began (counter <=
    /// `since`) is reported in progress by the snapshot.
    fn raced(&self, origin: &OriginId, since: u64, point: &SnapshotPoint) -> bool {
        let Some(o) = self.origins.get(origin) else {
            return false;
        };
        o.recent.iter().any(|&(n, xid)| n <= since && point.xip.contains(&widen_xid(xid, point.xmax)))
    }

    pub(super) fn on_published(&mut self, id: RelationId, result: Result<(), StoreError>) {
        let Some(v) = self.views.get(&id) else { return };
        let Phase::Publishing { shape, point, copy, job, .. } = &v.phase else {
            return;
        };
        let (shape, point, copy, job) = (shape.clone(), point.clone(), copy.clone(), job.clone());
        let schema = Arc::new(shape.local().clone());
        if let Err(e) = result {
            self.fail_view(id, EventPhase::Publish, e.to_string(), Retry::Transient);
            return;
        }
        let persistence = v.def.persistence;
        let origin = v.def.origin.clone();
        if let Some(v) = self.views.get_mut(&id) {
            v.schema = Some(schema.clone());
            v.dirty = false;
        }
        match persistence {
            Persistence::Materialized => {
                if self.cfg.audit {
                    self.audit.push(AuditRecord::Published { view: id, point: point.clone() });
                }
                let before = self.job(id).map_or(JobState::Idle, |j| j.state);
                if let Some(v) = self.views.get_mut(&id) {
                    v.job = Some(job);
                }
                if before != JobState::Synced {
                    self.event(
                        EventPhase::Publish,
                        Some(id),
                        None,
                        EventKind::StateChanged { from: before, to: JobState::Synced },
                    );
                }
                self.set_phase(id, Phase::Idle);
                self.complete_item(id, Outcome::Materialized);
            }
            Persistence::Realtime => {
                let hold = match copy {
                    CopyKind::Bootstrap(hold) => hold,
                    CopyKind::Materialize => HoldBack::default(),
                };
                // Replay what the feed delivered while the snapshot ran,
                // skipping what the snapshot already holds.
                let mut ops = Vec::new();
                let mut replayed = Vec::new();
                for t in hold.txns {
                    if !self.bugs().skip_xid_filter && point.contains(t.xid, t.final_lsn) {
                        self.stats.filtered += 1;
                        continue;
                    }
                    replayed.push((t.xid, t.end_lsn));
                    ops.extend(t.ops);
                }
                if self.cfg.audit {
                    self.audit.push(AuditRecord::Published { view: id, point: point.clone() });
                }
                // Adopt what the publish stored, but keep the state the machine
                // has reported: the stored form may be masked.
                if let Some(v) = self.views.get_mut(&id) {
                    let mut job = job;
                    if let Some(current) = &v.job {
                        job.state = current.state;
                    }
                    v.job = Some(job);
                }
                let feed_up = self.origins.get(&origin).is_some_and(|o| o.feed.up().is_some());
                let caught_up = self.origins.get(&origin).and_then(|o| o.applied).unwrap_or(point.lsn).max(point.lsn);
                let slot = self.origins.get(&origin).and_then(|o| o.slot_id.clone());
                let feed_error = self.origins.get(&origin).and_then(|o| o.last_error.clone());
                let now = self.now;
                self.update_job(id, EventPhase::Publish, |j| {
                    j.last_seen_commit = Some(caught_up);
                    j.slot_id = slot;
                    if feed_up {
                        j.state = JobState::Running;
                        j.retry_count = 0;
                        j.last_error = None;
                        j.next_retry_at = None;
                        j.last_success_at = Some(now);
                    } else {
                        j.state = JobState::Failed;
                        j.last_error = Some(feed_error.unwrap_or_else(|| "the feed is down".into()));
                    }
                });
                // If the feed is already past the snapshot, nothing it delivers
                // can be in the copy: the hand-off is complete at once.
                let past = self.origins.get(&origin).and_then(|o| o.durable).is_some_and(|d| d >= point.lsn);
                let filter = if past { None } else { Some(point) };
                if let Some(j) = self.views.get_mut(&id).and_then(|v| v.job.as_mut()) {
                    j.handoff = filter.clone();
                }
                self.set_phase(id, Phase::Live { shape, filter, replay: None });
                // The hand-off batch stores the job as running, atomically
                // with the replayed transactions.
                let jobs = self.stored_job(id).into_iter().collect();
                let identity = schema.identity;
                let views = if ops.is_empty() { Vec::new() } else { vec![ViewOps { relation_id: id, identity, ops }] };
                let seq = self.emit_batch(&origin, Flight::Replay { view: id }, views, jobs);
                if let Some(Phase::Live { replay, .. }) = self.views.get_mut(&id).map(|v| &mut v.phase) {
                    *replay = Some(seq);
                }
                if self.cfg.audit {
                    for (xid, end_lsn) in replayed {
                        self.audit.push(AuditRecord::Applied { seq, view: id, xid, end_lsn, replay: true });
                    }
                }
            }
        }
    }

    /// A live view's feed is (back) up: it is running.
    pub(super) fn view_feed_up(&mut self, id: RelationId) {
        let Some(v) = self.views.get(&id) else { return };
        let origin = v.def.origin.clone();
        let slot = self.origins.get(&origin).and_then(|o| o.slot_id.clone());
        let changed = v.job.as_ref().is_none_or(|j| j.state != JobState::Running || j.slot_id != slot);
        if changed {
            let now = self.now;
            self.update_job(id, EventPhase::Stream, |j| {
                j.state = JobState::Running;
                j.slot_id = slot;
                j.retry_count = 0;
                j.last_error = None;
                j.next_retry_at = None;
                j.last_success_at = Some(now);
            });
            self.persist_job(id);
        }
        self.complete_item(id, Outcome::Realtime);
    }
}
