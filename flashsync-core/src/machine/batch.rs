//! Store batches: emitting them, what their answers settle, failures, and
//! the durable positions acknowledged upstream.

use super::*;

/// A store batch in flight: its origin and chain, and what its answer
/// settles.
#[derive(Debug)]
pub(super) struct InFlight {
    pub origin: OriginId,
    pub chain: u64,
    pub flight: Flight,
}

/// What a batch in flight does.
#[derive(Debug)]
pub(super) enum Flight {
    /// Completes a transaction (or records a keepalive position) at
    /// `end_lsn`; `views` move their `last_seen_commit` to it once applied.
    Commit { end_lsn: Lsn, time: Option<Timestamp>, views: Vec<RelationId> },
    /// One part of a transaction too large for one batch, staged by the
    /// store until the commit; `first` begins the transaction.
    Stage { first: bool },
    /// `view`'s hand-off: the transactions held back while it copied. Its
    /// pass waits for it.
    Replay { view: RelationId },
}

impl Flight {
    pub fn progress(&self) -> Progress {
        match self {
            Flight::Commit { end_lsn, .. } => Progress::Commit { end_lsn: *end_lsn },
            Flight::Stage { first } => Progress::Stage { first: *first },
            Flight::Replay { .. } => Progress::Replay,
        }
    }
}

impl Machine {
    /// Emits one store batch doing `flight`; returns its sequence number.
    pub(super) fn emit_batch(
        &mut self,
        origin: &OriginId,
        flight: Flight,
        views: Vec<ViewOps>,
        jobs: Vec<JobRecord>,
    ) -> BatchSeq {
        let seq = BatchSeq(self.next_batch);
        self.next_batch += 1;
        self.stats.batches += 1;
        let chain = self.origins.get(origin).map_or(0, |o| o.chain);
        let progress = flight.progress();
        let commit_time = match flight {
            Flight::Commit { time, .. } => time,
            Flight::Stage { .. } | Flight::Replay { .. } => None,
        };
        self.batches.insert(seq, InFlight { origin: origin.clone(), chain, flight });
        if let Progress::Commit { end_lsn } = progress {
            if let Some(o) = self.origins.get_mut(origin) {
                o.pending_acks.push_back((seq, end_lsn));
                // Store actions land in order: everything emitted after this
                // batch sees the origin's position stored.
                o.stored = true;
            }
        }
        self.store(StoreAction::Apply(ApplyBatch {
            seq,
            origin: origin.clone(),
            progress,
            views,
            jobs,
            chain,
            commit_time,
            capture: Default::default(),
        }));
        if self.bugs().ack_before_durable {
            if let (Progress::Commit { end_lsn }, Some(o)) = (progress, self.origins.get_mut(origin)) {
                o.durable = Some(end_lsn);
                self.send_ack(origin);
            }
        }
        seq
    }

    pub(super) fn on_applied(&mut self, seq: BatchSeq, result: Result<ApplyReport, StoreError>) {
        let Some(InFlight { origin, chain, flight }) = self.batches.remove(&seq) else { return };
        // A batch of a chain already handled: if it failed, the executor
        // refused it because an earlier one failed, and that was dealt with.
        let stale = self.origins.get(&origin).is_none_or(|o| chain < o.chain);
        match (flight, result) {
            (Flight::Replay { view }, Ok(report)) => {
                self.report_conflicts(report);
                if let Some(j) = self.job(view) {
                    let outcome = match j.state {
                        JobState::Running => Outcome::Realtime,
                        _ => Outcome::Failed(j.last_error.clone().unwrap_or_else(|| "the feed is down".into())),
                    };
                    self.complete_item(view, outcome);
                }
            }
            (Flight::Replay { view }, Err(e)) if stale => {
                let message = format!("could not apply the hand-off batch: {e}");
                self.mark_diverged(view, RecopyReason::StoreFailed { detail: message.clone() }, message);
            }
            (_, Err(_)) if stale => {}
            // Batches queued behind it would land over the hole it leaves:
            // handled like any failed batch.
            (Flight::Replay { .. }, Err(e)) => {
                self.store_failed(&origin, format!("could not apply the hand-off batch of {origin}: {e}"));
            }
            (Flight::Commit { .. } | Flight::Stage { .. }, Err(e)) => {
                self.store_failed(&origin, format!("could not apply changes from {origin}: {e}"));
            }
            (Flight::Commit { end_lsn, views, .. }, Ok(report)) => {
                if let Some(o) = self.origins.get_mut(&origin).filter(|o| o.chain == chain) {
                    o.store_applied = Some(o.store_applied.map_or(end_lsn, |a| a.max(end_lsn)));
                }
                for id in views {
                    if let Some(j) = self.views.get_mut(&id).and_then(|v| v.job.as_mut()) {
                        if j.last_seen_commit.is_none_or(|l| l < end_lsn) {
                            j.last_seen_commit = Some(end_lsn);
                        }
                    }
                }
                self.report_conflicts(report);
            }
            // Staged parts apply with the commit: a stage batch reports
            // nothing of its own.
            (Flight::Stage { .. }, Ok(report)) => self.report_conflicts(report),
        }
    }

    /// A batch of `origin` did not reach the store; later ones may have. The
    /// store's position is no longer what the machine believes, and copies
    /// may have gaps: close the feed, fall back to the position the store
    /// really holds, and copy every realtime view of the origin again.
    fn store_failed(&mut self, origin: &OriginId, message: String) {
        self.error(EventPhase::Apply, None, Some(origin.clone()), message.clone());
        let clock = self.clock();
        if let Some(o) = self.origins.get_mut(origin) {
            if let Some(epoch) = o.feed.epoch() {
                self.out.push_back(Output::Source(SourceAction::Unsubscribe { origin: origin.clone(), epoch }));
            }
            // Retried at once: the feed is fine, the store was not.
            o.feed = Feed::Down { attempt: o.feed.attempt(), retry_at: Some(clock) };
            o.applied = o.store_applied;
            // Batches emitted from now on build on what the store holds, not
            // on the failed one: a new chain the executor applies again.
            o.chain += 1;
            // Only positions the store applied may ever be acknowledged.
            let ok = o.store_applied;
            o.pending_acks.retain(|(_, lsn)| ok.is_some_and(|a| *lsn <= a));
        }
        for id in self.origin_views(origin) {
            let relevant = self.views.get(&id).is_some_and(|v| {
                v.def.persistence == Persistence::Realtime
                    && (v.phase.mirrors()
                        || matches!(v.phase, Phase::Queued { .. } | Phase::Copying { .. } | Phase::Publishing { .. }))
            });
            if relevant {
                self.mark_diverged(id, RecopyReason::StoreFailed { detail: message.clone() }, message.clone());
            }
        }
    }

    fn report_conflicts(&mut self, report: ApplyReport) {
        // Per view, its first conflict: what status keeps as the reason.
        let mut diverged = BTreeMap::new();
        for c in report.conflicts {
            let message = format!("{} (key {:?})", c.detail, c.key.0);
            diverged.entry(c.relation_id).or_insert_with(|| message.clone());
            self.event(EventPhase::Apply, Some(c.relation_id), None, EventKind::Conflict { message });
        }
        for (id, detail) in diverged {
            let message = "local copy diverged from upstream; copying it again".to_owned();
            self.mark_diverged(id, RecopyReason::Diverged { detail }, message);
        }
    }

    pub(super) fn on_durable(&mut self, through: BatchSeq) {
        let origins: Vec<OriginId> = self.origins.keys().cloned().collect();
        for origin in origins {
            let Some(o) = self.origins.get_mut(&origin) else {
                continue;
            };
            while let Some(&(seq, lsn)) = o.pending_acks.front() {
                if seq > through {
                    break;
                }
                o.pending_acks.pop_front();
                o.durable = Some(o.durable.map_or(lsn, |d| d.max(lsn)));
            }
            let durable = o.durable;
            self.send_ack(&origin);
            let mut handed_off = Vec::new();
            for id in self.origin_views(&origin) {
                let Some(v) = self.views.get_mut(&id) else { continue };
                // The hand-off batch is durable: the job may be stored as
                // running again (a record written meanwhile was masked).
                if let Phase::Live { replay, .. } = &mut v.phase {
                    if replay.is_some_and(|seq| seq <= through) {
                        *replay = None;
                        handed_off.push(id);
                    }
                }
                // A durable position past a copy's snapshot point: no crash
                // can take the store back before it, so the stored hand-off
                // filter is no longer needed.
                if v.phase.mirror_filter().is_some_and(|f| f.is_none()) {
                    if let (Some(j), Some(durable)) = (v.job.as_mut(), durable) {
                        if j.handoff.as_ref().is_some_and(|f| f.lsn() <= durable) {
                            j.handoff = None;
                        }
                    }
                }
            }
            for id in handed_off {
                self.persist_job(id);
                self.forced_after_hand_off(id);
            }
        }
    }

    /// A forced sync found view `id` just copied, its hand-off batch not yet
    /// durable, and waits: now that it is, the view is copied again as the
    /// caller asked (a crash before then would have copied it again anyway,
    /// so nothing forced was done before).
    fn forced_after_hand_off(&mut self, id: RelationId) {
        let Some(name) = self.views.get(&id).map(|v| v.def.name.clone()) else { return };
        let waiting =
            self.passes.current.as_ref().is_some_and(|p| p.remaining.contains(&id) && Pass::forced(&p.waiters, &name));
        if waiting {
            if let Some(outcome) = self.begin_work(id, true) {
                self.complete_item(id, outcome);
            }
        }
    }

    /// Acknowledges the durable position upstream if it moved.
    pub(super) fn send_ack(&mut self, origin: &OriginId) {
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        let (Some(epoch), Some(mut durable)) = (o.feed.up(), o.durable) else {
            return;
        };
        // A copy checkpointed in chunks needs every transaction since its
        // checkpoint again after a crash: the slot must keep them.
        {
            let kept = self.views.values().filter(|v| &v.def.origin == origin).filter_map(|v| v.phase.chunks()?.kept);
            if let Some(k) = kept.min() {
                durable = durable.min(k);
            }
        }
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        if o.acked.is_some_and(|a| a >= durable) {
            return;
        }
        o.acked = Some(durable);
        self.stats.acks += 1;
        self.source(SourceAction::Ack { origin: origin.clone(), epoch, lsn: durable });
    }
}
