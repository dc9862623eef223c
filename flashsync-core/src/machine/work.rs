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
            // A re-copy continued after a restart: the old copy is what an
            // unforced sync asks for, and it runs.
            p if !force
                && matches!(p.current_old(), Some((_, _, Recopying::Resumed)))
                && self.origins.get(&origin).is_some_and(|o| o.feed.up().is_some()) =>
            {
                Some(Outcome::Realtime)
            }
            // Work from an earlier request is still in flight; it will report.
            Phase::Preparing { .. } | Phase::Queued { .. } | Phase::Copying { .. } | Phase::Publishing { .. } => None,
            Phase::Live { shape, filter, replay } => {
                let feed = self.origins.get(&origin).map(|o| &o.feed);
                match feed {
                    // Forced: copy it again, the old copy staying current
                    // meanwhile. Not on a copy that cannot be trusted (that
                    // one re-copies by itself).
                    Some(Feed::Up { .. }) if force && replay.is_none() && !v.dirty => {
                        let old =
                            OldCopy::Current { shape: shape.clone(), filter: filter.clone(), why: Recopying::Forced };
                        let queued = Phase::Queued { shape: shape.clone(), races: 0, old };
                        self.set_phase(id, queued);
                        self.try_start_snapshots();
                        None
                    }
                    // Its hand-off batch is still to be durable (the copy was
                    // just made): the pass waits for it, then copies the
                    // view again (`forced_after_hand_off`).
                    Some(Feed::Up { .. }) if force && !v.dirty => None,
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
                self.set_phase(id, Phase::Preparing { op, goal, old: OldCopy::Frozen });
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
        let Phase::Preparing { op: current, goal, old } = &v.phase else {
            return;
        };
        let (current, goal, old) = (*current, *goal, old.clone());
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
                self.set_phase(id, Phase::Queued { shape, races: 0, old: OldCopy::Frozen });
                self.try_start_snapshots();
            }
            Goal::Attach if v.schema.as_deref().is_some_and(|s| self.copy_fits(shape.local(), s)) && v.attachable => {
                // The stored copy is current through the origin's stored
                // position and the relation is unchanged: replay the feed.
                // The filter of an unfinished hand-off survives the restart.
                let filter = v.job.as_ref().and_then(|j| j.handoff.clone());
                // A job stored as running with a checkpoint was being copied
                // again with its old copy current (only such a copy is
                // checkpointed beside a running job): the new copy continues
                // from its checkpoint while the old one runs.
                let recopy = self.cfg.checkpoint_copies && v.job.as_ref().is_some_and(|j| j.copy.is_some());
                let phase = if recopy {
                    self.stats.recopies_resumed += 1;
                    if self.bugs().reapply_resumed_span {
                        let through = v.job.as_ref().and_then(|j| j.copy.as_ref()).map(|c| c.through);
                        if let Some(o) = self.origins.get_mut(&origin) {
                            o.applied = o.applied.min(through);
                        }
                    }
                    let old = OldCopy::Current { shape: shape.clone(), filter, why: Recopying::Resumed };
                    Phase::Queued { shape, races: 0, old }
                } else {
                    Phase::Live { shape, filter, replay: None }
                };
                self.set_phase(id, phase);
                if let Some(v) = self.views.get_mut(&id) {
                    v.attachable = false;
                }
                match self.origins.get(&origin).and_then(|o| o.feed.up()) {
                    Some(_) => self.view_feed_up(id),
                    _ => self.maybe_subscribe(&origin),
                }
                if recopy {
                    self.try_start_snapshots();
                }
            }
            Goal::Attach | Goal::Bootstrap => {
                if goal == Goal::Attach {
                    let detail = format!("upstream relation {} changed since the local copy was made", v.def.upstream);
                    // A copy under way when the process stopped (checkpointed
                    // beside a running job) is not thrown away here: it
                    // continues if its checkpoint still fits the relation.
                    let checkpointed = self.cfg.checkpoint_copies && v.job.as_ref().is_some_and(|j| j.copy.is_some());
                    let next = if checkpointed {
                        "its copy stays readable but no longer follows it; the copy that was under way continues from its checkpoint \
                         if that still fits the relation, or starts again"
                    } else {
                        "copying it again"
                    };
                    self.error(EventPhase::Prepare, Some(id), None, format!("{detail}; {next}"));
                    // Stored with the new copy's job record at its publish.
                    self.note_recopy(id, RecopyReason::SchemaChanged { detail });
                    // The feed will move on past what the stored copy holds.
                    // Stored as running, a later restart that found the
                    // relation as the copy knew it again (a column added,
                    // then dropped) would attach it over every commit it
                    // missed meanwhile. Demoted, and stored before the feed
                    // starts (store actions land in order), as the feed's
                    // start demotes views that missed their chance.
                    if !self.bugs().keep_unattached_running {
                        self.demote_job(id, EventPhase::Prepare);
                    }
                }
                if let Some(v) = self.views.get_mut(&id) {
                    v.attachable = false;
                }
                // A live view copied again because its relation changed
                // keeps its old copy current meanwhile.
                self.set_phase(id, Phase::Queued { shape, races: 0, old });
                self.maybe_subscribe(&origin);
                self.try_start_snapshots();
            }
        }
    }

    /// Whether a copy stored with schema `stored` is one of the relation as
    /// `local` now describes it, so that the view may attach to it.
    fn copy_fits(&self, local: &RelationSchema, stored: &RelationSchema) -> bool {
        if self.bugs().attach_by_names {
            return local.source_id == stored.source_id && local.same_shape(stored);
        }
        if self.bugs().attach_ignoring_filter_columns {
            let unfiltered = |s: &RelationSchema| RelationSchema { filter_column_ids: Vec::new(), ..s.clone() };
            return unfiltered(local).fits(&unfiltered(stored));
        }
        local.fits(stored)
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
            let Phase::Queued { shape, races, old } = &v.phase else {
                continue;
            };
            let (shape, races, old) = (shape.clone(), *races, old.clone());
            let mut resume = None;
            let (copy, chunk) = match v.def.persistence {
                Persistence::Materialized => (CopyKind::Materialize, None),
                Persistence::Realtime => {
                    let Some(o) = self.origins.get(&v.def.origin) else {
                        continue;
                    };
                    if o.feed.up().is_none() || o.feed.txn().is_some() {
                        continue;
                    }
                    // Only keyed views split: a chunk is a key range, and a
                    // full-row view's changes name no key to place them by.
                    let rows = match shape.local().identity {
                        Identity::Key if !self.chunks_refused => self.cfg.snapshot_chunk_rows,
                        Identity::Key | Identity::FullRow => 0,
                    };
                    let hold = HoldBack { since: o.commits_seen, txns: Vec::new(), bytes: 0 };
                    // A copy a checkpoint kept before a restart continues
                    // where it was, if this feed delivers every transaction
                    // since the checkpoint; otherwise it starts over.
                    // Not for a re-copy that began in this process: its job
                    // carries no checkpoint of an earlier copy to continue.
                    let continues = matches!(old, OldCopy::Frozen | OldCopy::Current { why: Recopying::Resumed, .. });
                    let kept = v.job.as_ref().and_then(|j| j.copy.as_ref()).filter(|_| continues);
                    let gap = |c: &CopyCheckpoint| !o.feed.delivers_from(c.through) && !self.bugs().resume_past_gap;
                    match kept.filter(|c| rows > 0 && self.cfg.checkpoint_copies && !gap(c)) {
                        Some(c) => {
                            resume = Some(c.after.clone());
                            (CopyKind::Bootstrap(hold, Chunks::resumed(rows, c, o.applied)), None)
                        }
                        None => (
                            CopyKind::Bootstrap(hold, Chunks::new(rows)),
                            (rows > 0).then_some(ChunkRequest { after: None, rows, copied: 0 }),
                        ),
                    }
                }
            };
            let (origin, relation) = (v.def.origin.clone(), v.def.upstream.clone());
            if let Some(after) = resume {
                let op = self.op(Op::Resume(id));
                let schema = shape.local().clone();
                self.set_phase(id, Phase::Copying { op, shape, copy, races, old });
                self.store(StoreAction::Resume { op, id, schema, after });
                continue;
            }
            // A checkpoint that cannot be continued is dropped with the
            // generation the new copy begins.
            if let Some(j) = self.views.get_mut(&id).and_then(|v| v.job.as_mut()) {
                j.copy = None;
            }
            let op = self.op(Op::Snapshot(id));
            self.stats.snapshots += 1;
            self.set_phase(id, Phase::Copying { op, shape: shape.clone(), copy, races, old });
            self.source(SourceAction::Snapshot { op, origin, relation_id: id, relation, shape, chunk });
        }
    }

    /// The store answered whether it kept the generation of copy `op`
    /// across the restart: continue with the next chunk, or start over.
    pub(super) fn on_resumed(&mut self, op: OpId, result: Result<bool, StoreError>) {
        let id = match self.take_op(op, |k| matches!(k, Op::Resume(_) | Op::AbandonedSnapshot)) {
            Some(Op::Resume(id)) => id,
            Some(Op::AbandonedSnapshot) => {
                self.abandon_generation(op);
                self.try_start_snapshots();
                return;
            }
            _ => return,
        };
        let Some(v) = self.views.get_mut(&id) else { return };
        let Phase::Copying { shape, races, copy: CopyKind::Bootstrap(..), old, .. } = &v.phase else {
            return;
        };
        match result {
            Ok(true) => {
                if self.cfg.audit {
                    self.audit.push(AuditRecord::Resumed { view: id, op });
                }
                self.next_chunk(op, id);
            }
            Ok(false) | Err(_) => {
                // Nothing to continue (the store dropped it, or cannot
                // read it): the copy starts over, from a new generation.
                let (shape, races, old) = (shape.clone(), *races, old.clone());
                if let Some(j) = v.job.as_mut() {
                    j.copy = None;
                }
                if let Err(e) = result {
                    let msg = format!("could not continue the copy where it was ({e}); copying it again");
                    self.error(EventPhase::Snapshot, Some(id), None, msg);
                }
                self.set_phase(id, Phase::Queued { shape, races, old });
                self.try_start_snapshots();
            }
        }
    }

    /// A copy nobody wants any more ended: its generation goes, unless the
    /// machine is shutting down — a copy checkpointed so far then stays for
    /// the next start to continue (one never checkpointed is reclaimed by
    /// the store when it opens).
    pub(super) fn abandon_generation(&mut self, op: OpId) {
        if !self.shut_down {
            self.store(StoreAction::Discard { op });
        }
    }

    pub(super) fn on_snapshotted(&mut self, op: OpId, result: Result<SnapshotPoint, SourceError>) {
        let Some(id) = self.copy_answered(op) else { return };
        let Some(point) = self.checked_point(op, id, result) else { return };
        self.copy_complete(op, id, point);
    }

    /// The answer to a chunk of a copy in chunks.
    pub(super) fn on_chunk_copied(&mut self, op: OpId, result: Result<CopiedChunk, SourceError>) {
        let Some(id) = self.copy_answered(op) else { return };
        if let Err(e) = &result {
            if self.retry_chunk(id, e) {
                return;
            }
        }
        let (result, end) = match result {
            Ok(c) => (Ok(c.point), Some(c.end)),
            Err(e) => (Err(e), None),
        };
        let Some(point) = self.checked_point(op, id, result) else { return };
        match end {
            Some(ChunkEnd::After(last)) => {
                // A source that ends a chunk at or below where the one
                // before ended would put ranges out of order (and could
                // copy the same keys for ever): refuse it.
                let after = self.views.get(&id).and_then(|v| match &v.phase {
                    Phase::Copying { copy: CopyKind::Bootstrap(_, chunks), .. } => chunks.after.clone(),
                    _ => None,
                });
                if after.is_some_and(|a| encode_key(&last) <= encode_key(&a)) {
                    self.store(StoreAction::Discard { op });
                    let msg = "source ended a chunk at or below the key the chunk started after".to_owned();
                    self.fail_view(id, EventPhase::Snapshot, msg, Retry::Transient);
                    self.try_start_snapshots();
                    return;
                }
                self.chunk_landed(op, id, point, last)
            }
            _ => self.last_chunk_landed(op, id, point),
        }
    }

    /// The last chunk of a copy in chunks landed. A copy resumed from a
    /// checkpoint first waits for the feed to catch it up (what live views
    /// already have, they drop as duplicates once it is live).
    fn last_chunk_landed(&mut self, op: OpId, id: RelationId, point: SnapshotPoint) {
        match self.views.get_mut(&id).map(|v| &mut v.phase) {
            Some(Phase::Copying { copy: CopyKind::Bootstrap(_, chunks), .. }) if chunks.resumed.is_some() => {
                chunks.step = ChunkStep::Draining { point };
                // Only the feed can end this: a pause its hold-back caused
                // must end too (`check_flow`).
                if let Some(origin) = self.views.get(&id).map(|v| v.def.origin.clone()) {
                    self.check_flow(&origin);
                }
            }
            _ => self.copy_complete(op, id, point),
        }
    }

    /// The feed of `origin` delivered everything before `position`: the
    /// copies resumed from a checkpoint have (or hold) it all; those it
    /// catches up become like any other copy, and are published if their
    /// last chunk is in.
    /// The transaction being received is over (committed, or dropped with
    /// the feed): re-copies that waited for it are published.
    pub(super) fn publish_awaiting(&mut self, origin: &OriginId) {
        // Every commit asks: only a copy under way can be waiting.
        if self.copying == 0 {
            return;
        }
        let waiting: Vec<(RelationId, OpId, SnapshotPoint)> = self
            .views
            .values()
            .filter(|v| &v.def.origin == origin)
            .filter_map(|v| match &v.phase {
                Phase::Copying {
                    op,
                    copy: CopyKind::Bootstrap(_, Chunks { step: ChunkStep::AwaitingCommit { point }, .. }),
                    ..
                } => Some((v.id, *op, point.clone())),
                _ => None,
            })
            .collect();
        for (id, op, point) in waiting {
            self.copy_complete(op, id, point);
        }
    }

    pub(super) fn resumed_copies_reach(&mut self, origin: &OriginId, position: Lsn) {
        let mut caught_up = Vec::new();
        for v in self.views.values_mut().filter(|v| &v.def.origin == origin) {
            let Phase::Copying { op, copy: CopyKind::Bootstrap(_, chunks), .. } = &mut v.phase else { continue };
            let Some(r) = chunks.resumed.as_mut() else { continue };
            if r.delivered(position) {
                chunks.resumed = None;
                let point = match &chunks.step {
                    ChunkStep::Draining { point } => Some(point.clone()),
                    _ => None,
                };
                caught_up.push((v.id, *op, point));
            }
        }
        if caught_up.is_empty() {
            return;
        }
        // Their floors are gone from the routes.
        self.routes.insert(origin.clone(), None);
        for (id, op, point) in caught_up {
            if let Some(point) = point {
                self.copy_complete(op, id, point);
            }
        }
    }

    /// A chunk of view `id`'s copy failed with `e`: if it may pass by itself and
    /// the copy has a checkpoint, the copy goes on from there after a
    /// back-off — its hold-back keeps holding meanwhile, so nothing the
    /// feed delivers is lost — instead of starting over. Returns whether it
    /// will.
    fn retry_chunk(&mut self, id: RelationId, e: &SourceError) -> bool {
        let now = self.clock();
        let Some(v) = self.views.get_mut(&id) else { return false };
        let Phase::Copying { copy: CopyKind::Bootstrap(_, chunks), .. } = &mut v.phase else {
            return false;
        };
        if chunks.kept.is_none()
            || Retry::of(e.kind) != Retry::Transient
            || chunks.failed >= self.cfg.max_snapshot_races
        {
            return false;
        }
        chunks.failed += 1;
        let at = now + backoff::delay(&self.cfg, chunks.failed, Retry::Transient, &mut self.rng);
        chunks.step = ChunkStep::Retrying { at };
        let message = format!("a chunk of the copy failed ({}); continuing from its last checkpoint", e.message);
        self.error(EventPhase::Snapshot, Some(id), None, message);
        true
    }

    /// Copies whose chunk failed and whose back-off is over go on from
    /// their checkpoint: the store hands the generation back first.
    pub(super) fn retry_due_chunks(&mut self, now: Timestamp) {
        let due: Vec<(RelationId, OpId)> = self
            .views
            .values()
            .filter_map(|v| match &v.phase {
                Phase::Copying { op, copy: CopyKind::Bootstrap(_, c), .. }
                    if matches!(c.step, ChunkStep::Retrying { at } if at <= now) =>
                {
                    Some((v.id, *op))
                }
                _ => None,
            })
            .collect();
        for (id, op) in due {
            let Some(v) = self.views.get_mut(&id) else { continue };
            let Phase::Copying { shape, copy: CopyKind::Bootstrap(_, chunks), .. } = &mut v.phase else { continue };
            let Some(after) = chunks.after.clone() else { continue };
            chunks.step = ChunkStep::Resuming;
            let schema = shape.local().clone();
            self.ops.insert(op, Op::Resume(id));
            self.store(StoreAction::Resume { op, id, schema, after });
        }
    }

    /// When the earliest failed chunk is retried.
    pub(super) fn next_chunk_retry(&self) -> Option<Timestamp> {
        self.views
            .values()
            .filter_map(|v| match v.phase.chunks()?.step {
                ChunkStep::Retrying { at } => Some(at),
                _ => None,
            })
            .min()
    }

    /// Takes the copy `op` out of the ops; the view it is for, unless
    /// nobody wants it any more (its generation is then discarded).
    fn copy_answered(&mut self, op: OpId) -> Option<RelationId> {
        match self.take_op(op, |k| matches!(k, Op::Snapshot(_) | Op::AbandonedSnapshot)) {
            Some(Op::Snapshot(id)) => Some(id),
            Some(Op::AbandonedSnapshot) => {
                self.abandon_generation(op);
                self.try_start_snapshots();
                None
            }
            _ => None,
        }
    }

    /// A copy's (or chunk's) snapshot point, if it is sound; otherwise the
    /// copy is given up (the view fails, or takes its snapshot again).
    fn checked_point(
        &mut self,
        op: OpId,
        id: RelationId,
        result: Result<SnapshotPoint, SourceError>,
    ) -> Option<SnapshotPoint> {
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
                return None;
            }
            Err(e) => {
                self.store(StoreAction::Discard { op });
                self.fail_view(id, EventPhase::Snapshot, e.message, Retry::of(e.kind));
                self.try_start_snapshots();
                return None;
            }
        };
        let v = self.views.get(&id)?;
        let Phase::Copying { copy, .. } = &v.phase else {
            return None;
        };
        if let CopyKind::Bootstrap(h, _) = copy {
            // The hand-off is sound only if every transaction the snapshot
            // reports in progress commits after the hold-back began. A commit
            // delivered before that but invisible to the snapshot would be in
            // neither: take the snapshot again.
            if self.raced(&v.def.origin, h.since, &point) {
                self.restart_copy(op, id, "snapshot raced concurrent commits");
                return None;
            }
        }
        Some(point)
    }

    /// Gives up the copy `op` of view `id` and queues it again (a race or a
    /// change the chunks cannot place); after too many, the view fails.
    fn restart_copy(&mut self, op: OpId, id: RelationId, why: &str) {
        self.stats.snapshot_races += 1;
        self.store(StoreAction::Discard { op });
        let Some(Phase::Copying { shape, races, old, .. }) = self.views.get(&id).map(|v| &v.phase) else {
            return;
        };
        let (shape, races, old) = (shape.clone(), *races, old.clone());
        // The generation (and the checkpoint the store kept of it) is gone.
        if let Some(j) = self.views.get_mut(&id).and_then(|v| v.job.as_mut()) {
            j.copy = None;
        }
        if races + 1 > self.cfg.max_snapshot_races {
            self.fail_view(id, EventPhase::Snapshot, format!("{why} {} times", races + 1), Retry::Transient);
        } else {
            self.set_phase(id, Phase::Queued { shape, races: races + 1, old });
        }
        self.try_start_snapshots();
    }

    /// A chunk of a copy in chunks landed, ending after key `last`: the
    /// changes held meanwhile go into the generation where the chunks
    /// copied so far lack them, the rest is dropped (the chunks still to
    /// copy are taken later, and hold it), and the next chunk starts once
    /// they are in.
    fn chunk_landed(&mut self, op: OpId, id: RelationId, point: SnapshotPoint, last: Key) {
        let Some(v) = self.views.get(&id) else { return };
        let origin = v.def.origin.clone();
        let since = self.origins.get(&origin).map_or(0, |o| o.commits_seen);
        let (skip_filter, drop_changes) = (self.bugs().skip_chunk_filter, self.bugs().drop_chunk_changes);
        let grow_past = self.bugs().unbounded_chunk_growth;
        let (limit, max_rows) = (self.cfg.holdback_limit_bytes, self.cfg.snapshot_chunk_rows);
        let audit = self.cfg.audit;
        let Some(v) = self.views.get_mut(&id) else { return };
        let identity = v.schema_identity();
        let Phase::Copying { copy: CopyKind::Bootstrap(hold, chunks), .. } = &mut v.phase else {
            return;
        };
        let through = encode_key(&last);
        chunks.failed = 0;
        chunks.copied += point.rows;
        chunks.done.push(Segment { through: Some(through.clone()), point: Some(point) });
        chunks.after = Some(last);
        // The next chunk's hold begins now: every commit counted so far was
        // delivered before it is asked for.
        let held = std::mem::take(&mut hold.txns);
        let released = std::mem::replace(&mut hold.bytes, 0);
        hold.since = since;
        chunks.resize(released, limit, max_rows, grow_past);
        // Points are kept until the copy is live: the job record stores them
        // for a restart, and only a durable position may retire them.
        let mut handoff = Handoff::so_far(chunks.done.clone());
        if skip_filter {
            handoff = handoff.without_points();
        }
        let mut ops = Vec::new();
        let mut mixed = false;
        let mut amended = Vec::new();
        for t in held {
            let before = ops.len();
            for op in t.ops {
                match handoff.sift(op, t.xid, t.final_lsn) {
                    Some(Sifted::Apply(_)) if drop_changes => self.stats.filtered += 1,
                    Some(Sifted::Apply(op)) => ops.push(op),
                    Some(Sifted::Skip) => self.stats.filtered += 1,
                    None => mixed = true,
                }
            }
            // Every held transaction is accounted for, the ones that went
            // in nowhere too (a checker holds the machine to the truth).
            if audit {
                let applied = ops.get(before..).unwrap_or_default();
                let keys = applied.iter().flat_map(op_keys).collect();
                let truncated = applied.iter().any(|op| matches!(op, RowOp::Truncate));
                amended.push(AuditRecord::Amended { view: id, xid: t.xid, end_lsn: t.end_lsn, keys, truncated });
            }
        }
        let h = self.held_bytes.entry(origin.clone()).or_default();
        *h = h.saturating_sub(released);
        self.check_flow(&origin);
        if mixed {
            // A row moved between ranges copied at different snapshots (or
            // a truncate reached some of them): no change to the copy is
            // right for both sides. Rare; start over.
            self.restart_copy(op, id, "a change spanned chunks copied at different snapshots; copy restarted");
            return;
        }
        self.audit.extend(amended);
        let checkpoint = self.checkpoint_job(id);
        if ops.is_empty() && checkpoint.is_none() {
            self.next_chunk(op, id);
            return;
        }
        let Some(identity) = identity else { return };
        if let Some(Phase::Copying { copy: CopyKind::Bootstrap(_, chunks), .. }) =
            self.views.get_mut(&id).map(|v| &mut v.phase)
        {
            chunks.step = ChunkStep::Amending;
        }
        self.ops.insert(op, Op::Amend(id));
        self.store(StoreAction::Amend { op, ops: ViewOps { relation_id: id, identity, ops }, checkpoint });
    }

    /// The job record to checkpoint view `id`'s copy in chunks with, now
    /// that a chunk and the changes held meanwhile are in (when the store
    /// keeps copies across restarts). The feed position it records is one
    /// before which every transaction has been received, and was held for
    /// the copy (and is in it now) if it concerned it.
    fn checkpoint_job(&mut self, id: RelationId) -> Option<JobRecord> {
        if !self.cfg.checkpoint_copies {
            return None;
        }
        let v = self.views.get(&id)?;
        let chunks = v.phase.chunks()?;
        // A resumed copy that the feed has not caught up yet has only what
        // the feed delivered since; any other, all the origin received.
        let through = match chunks.resumed {
            Some(r) => r.from,
            None => self.origins.get(&v.def.origin)?.applied?,
        };
        let checkpoint = CopyCheckpoint {
            segments: chunks.done.clone(),
            after: chunks.after.clone()?,
            rows: chunks.copied,
            through,
        };
        let now = self.now;
        let mut job = v.job.clone().unwrap_or_else(|| JobRecord::new(id, &v.def.name, v.def.persistence, now));
        // An old copy that is not kept current is no longer trusted,
        // whatever the job said: never stored as running beside an
        // unfinished copy. One kept current stays running: a restart
        // re-attaches it, then continues the new copy (`on_prepared`).
        if job.state == JobState::Running && !v.phase.recopies_live() {
            job.state = JobState::Idle;
        }
        job.copy = Some(Box::new(checkpoint.clone()));
        // Job records written from now on carry it too: they land after it.
        if let Some(j) = self.views.get_mut(&id).and_then(|v| v.job.as_mut()) {
            j.copy = Some(Box::new(checkpoint));
        }
        Some(job)
    }

    /// The held changes are in the generation: copy the next chunk.
    pub(super) fn on_amended(&mut self, op: OpId, result: Result<ApplyReport, StoreError>) {
        let id = match self.take_op(op, |k| matches!(k, Op::Amend(_) | Op::AbandonedSnapshot)) {
            Some(Op::Amend(id)) => id,
            Some(Op::AbandonedSnapshot) => {
                self.abandon_generation(op);
                self.try_start_snapshots();
                return;
            }
            _ => return,
        };
        match result {
            Err(e) if e.kind == StoreErrorKind::Invalid && !self.chunks_refused => {
                // The store cannot take changes into a copy being made (a
                // store that says so is never asked): copy in one piece
                // from now on.
                self.chunks_refused = true;
                self.error(
                    EventPhase::Snapshot,
                    Some(id),
                    None,
                    format!("the store refused changes into a copy being made ({e}); copying in one piece"),
                );
                self.restart_copy(op, id, "the store refused changes into a copy being made");
            }
            Err(e) => {
                self.store(StoreAction::Discard { op });
                self.fail_view(id, EventPhase::Snapshot, e.to_string(), Retry::Transient);
                self.try_start_snapshots();
            }
            Ok(report) if !report.conflicts.is_empty() => {
                // The chunks and the feed disagree about a row: the copy
                // cannot be trusted.
                self.restart_copy(op, id, "the feed's changes did not fit the chunks copied so far");
            }
            Ok(_) => {
                // A checkpoint went with the changes: the feed may be
                // acknowledged up to it now.
                let Some(v) = self.views.get_mut(&id) else { return };
                let through = v.job.as_ref().and_then(|j| j.copy.as_ref()).map(|c| c.through);
                let origin = v.def.origin.clone();
                if let (Some(through), Phase::Copying { copy: CopyKind::Bootstrap(_, chunks), .. }) =
                    (through, &mut v.phase)
                {
                    if self.cfg.checkpoint_copies {
                        chunks.kept = Some(through);
                        if self.cfg.audit {
                            self.audit.push(AuditRecord::Checkpointed { view: id });
                        }
                        self.send_ack(&origin);
                    }
                }
                self.next_chunk(op, id)
            }
        }
    }

    /// Asks for the chunk after the last one copied, into the same
    /// generation (the same op).
    fn next_chunk(&mut self, op: OpId, id: RelationId) {
        let Some(v) = self.views.get_mut(&id) else { return };
        let Phase::Copying { shape, copy: CopyKind::Bootstrap(_, chunks), .. } = &mut v.phase else {
            return;
        };
        chunks.step = ChunkStep::Copying;
        let chunk = ChunkRequest { after: chunks.after.clone(), rows: chunks.rows, copied: chunks.copied };
        let shape = shape.clone();
        let (origin, relation) = (v.def.origin.clone(), v.def.upstream.clone());
        self.ops.insert(op, Op::Snapshot(id));
        self.stats.snapshots += 1;
        self.source(SourceAction::Snapshot { op, origin, relation_id: id, relation, shape, chunk: Some(chunk) });
    }

    /// The copy (its last chunk, for a copy in chunks) landed: publish it.
    fn copy_complete(&mut self, op: OpId, id: RelationId, point: SnapshotPoint) {
        let staged = self.views.get(&id).is_some_and(|v| v.phase.recopies_live())
            && self.origin_txn_of(id).is_some_and(|t| t.partial.contains(&id));
        if staged {
            if let Some(Phase::Copying { copy: CopyKind::Bootstrap(_, chunks), .. }) =
                self.views.get_mut(&id).map(|v| &mut v.phase)
            {
                chunks.step = ChunkStep::AwaitingCommit { point };
            }
            // Only the transaction's end releases it now: its hold-back
            // must not keep the feed paused (see `Phase::drains_feed`).
            if let Some(origin) = self.views.get(&id).map(|v| v.def.origin.clone()) {
                self.check_flow(&origin);
            }
            return;
        }
        let Some(v) = self.views.get(&id) else { return };
        let Phase::Copying { shape, copy, .. } = &v.phase else {
            return;
        };
        let (shape, copy) = (shape.clone(), copy.clone());
        if v.phase.recopies_live() {
            self.stats.live_recopies += 1;
        }
        let now = self.now;
        let mut job = v.job.clone().unwrap_or_else(|| JobRecord::new(id, &v.def.name, v.def.persistence, now));
        job.last_seen_commit = Some(point.lsn);
        // The old copy's hand-off point means nothing for the new one, and
        // the copy is finished: nothing to continue after a restart.
        job.handoff = None;
        job.copy = None;
        if let CopyKind::Materialize = copy {
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
        let handoff = match &copy {
            CopyKind::Bootstrap(_, chunks) if !chunks.done.is_empty() => {
                Handoff::from_chunks(chunks.done.clone(), point)
            }
            _ => Handoff::whole(point),
        };
        self.ops.insert(op, Op::Publish(id));
        self.set_phase(id, Phase::Publishing { op, shape, handoff, copy, job: job.clone() });
        // An old copy kept current is fed no more: the store publishes the
        // new one before any later batch.
        self.stop_feeding_old_copy(id);
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
        let Phase::Publishing { shape, handoff, copy, job, .. } = &v.phase else {
            return;
        };
        let (shape, handoff, copy, job) = (shape.clone(), handoff.clone(), copy.clone(), job.clone());
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
                    self.audit.push(AuditRecord::Published { view: id, handoff: handoff.clone() });
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
                let (hold, chunked) = match copy {
                    CopyKind::Bootstrap(hold, chunks) => (hold, !chunks.done.is_empty()),
                    CopyKind::Materialize => (HoldBack::default(), false),
                };
                // Replay what the feed delivered while the snapshot ran,
                // skipping what the snapshot already holds — for a copy in
                // chunks, key by key, by the snapshot of the key's chunk.
                let mut ops = Vec::new();
                let mut replayed = Vec::new();
                let mut mixed = false;
                let skip_filter = self.bugs().skip_xid_filter || (chunked && self.bugs().skip_chunk_filter);
                for t in hold.txns {
                    if !skip_filter && handoff.contains_everywhere(t.xid, t.final_lsn) {
                        self.stats.filtered += 1;
                        continue;
                    }
                    if skip_filter || handoff.contains_nowhere(t.xid, t.final_lsn) {
                        replayed.push((t.xid, t.end_lsn, None));
                        ops.extend(t.ops);
                        continue;
                    }
                    let before = ops.len();
                    for op in t.ops {
                        match handoff.sift(op, t.xid, t.final_lsn) {
                            Some(Sifted::Apply(op)) => ops.push(op),
                            Some(Sifted::Skip) => {}
                            None => mixed = true,
                        }
                    }
                    let keys = ops.get(before..).unwrap_or_default().iter().flat_map(op_keys).collect();
                    replayed.push((t.xid, t.end_lsn, Some(keys)));
                }
                if mixed {
                    // A held change spans key ranges copied at different
                    // snapshots: no operation fits both. The view never goes
                    // live on this copy (its job was stored as not running
                    // with the publish) and is copied again.
                    let detail = "a change spanned chunks copied at different snapshots".to_owned();
                    self.mark_diverged(id, RecopyReason::Diverged { detail: detail.clone() }, detail);
                    return;
                }
                if self.cfg.audit {
                    self.audit.push(AuditRecord::Published { view: id, handoff: handoff.clone() });
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
                let caught_up =
                    self.origins.get(&origin).and_then(|o| o.applied).unwrap_or(handoff.lsn()).max(handoff.lsn());
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
                let past = self.origins.get(&origin).and_then(|o| o.durable).is_some_and(|d| d >= handoff.lsn());
                let filter = if past { None } else { Some(handoff) };
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
                    for (xid, end_lsn, keys) in replayed {
                        self.audit.push(AuditRecord::Applied { seq, view: id, xid, end_lsn, replay: true, keys });
                    }
                }
            }
        }
    }

    /// Copies view `id` again — or starts its copy over — while `old` keeps
    /// the copy readers see current: describes the relation afresh (it
    /// changed shape), then queues the new copy.
    pub(super) fn recopy_keeping(&mut self, id: RelationId, old: OldCopy) {
        let Some(v) = self.views.get(&id) else { return };
        let (origin, relation) = (v.def.origin.clone(), v.def.upstream.clone());
        let op = self.op(Op::Prepare(id));
        self.end_work(id, Phase::Preparing { op, goal: Goal::Bootstrap, old });
        self.source(SourceAction::Prepare { op, origin, relation, feed: true });
    }

    /// A live view's feed is (back) up: it is running.
    pub(super) fn view_feed_up(&mut self, id: RelationId) {
        self.mark_running(id);
        self.complete_item(id, Outcome::Realtime);
    }

    /// The copy readers see mirrors an open feed: its job is running.
    pub(super) fn mark_running(&mut self, id: RelationId) {
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
    }
}
