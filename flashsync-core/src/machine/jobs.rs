//! Job records: creating and changing them, what the store keeps of them,
//! and failing a view.

use super::*;

impl Machine {
    /// Ensures the view has a job record; returns whether one was created.
    pub(super) fn ensure_job(&mut self, id: RelationId) -> bool {
        let now = self.now;
        let Some(v) = self.views.get_mut(&id) else {
            return false;
        };
        if v.job.is_some() {
            return false;
        }
        v.job = Some(JobRecord::new(id, &v.def.name, v.def.persistence, now));
        true
    }

    /// Changes a view's job record; reports a state change as an event and
    /// stamps `updated_at` when state or enablement changed.
    pub(super) fn update_job(&mut self, id: RelationId, phase: EventPhase, f: impl FnOnce(&mut JobRecord)) {
        self.ensure_job(id);
        let now = self.now;
        let Some(job) = self.views.get_mut(&id).and_then(|v| v.job.as_mut()) else {
            return;
        };
        let (before, enabled) = (job.state, job.enabled);
        f(job);
        if job.state != before || job.enabled != enabled {
            job.updated_at = now;
        }
        let after = job.state;
        if before != after {
            self.event(phase, Some(id), None, EventKind::StateChanged { from: before, to: after });
        }
    }

    /// Records why the view's copy is to be made again, and when: the
    /// history `status` shows (see [`JobRecord::last_recopy`]). Only in
    /// memory: it reaches the store with the job record the decision writes
    /// anyway (the failure, the demotion, the reset of a redefinition, or at
    /// the latest the publish of the new copy), never with a write of its own.
    pub(super) fn note_recopy(&mut self, id: RelationId, reason: RecopyReason) {
        self.ensure_job(id);
        let at = self.now;
        if let Some(j) = self.views.get_mut(&id).and_then(|v| v.job.as_mut()) {
            j.last_recopy = Some(Recopy { reason, at });
        }
    }

    pub(super) fn job(&self, id: RelationId) -> Option<&JobRecord> {
        self.views.get(&id).and_then(|v| v.job.as_ref())
    }

    /// Stores a job that is running as not running (idle): its copy will
    /// no longer reach where the feed goes next, so no restart may attach
    /// it and resume the feed from a position the copy lacks. Stored at
    /// once, so the demotion lands before any later position of the feed
    /// (store actions land in order).
    pub(super) fn demote_job(&mut self, id: RelationId, phase: EventPhase) {
        if self.job(id).is_some_and(|j| j.state == JobState::Running) {
            self.update_job(id, phase, |j| j.state = JobState::Idle);
            self.persist_job(id);
        }
    }

    pub(super) fn persist_job(&mut self, id: RelationId) {
        if let Some(job) = self.stored_job(id) {
            let op = self.op(Op::Job);
            self.store(StoreAction::PutJob { op, job });
        }
    }

    /// The job record as the store should hold it: a realtime job carries
    /// its hand-off filter (so a restart re-attaches with it), and is stored
    /// as `running` only once its origin's position is in the store (so a
    /// restart can tell a lost slot from a resumable one).
    pub(super) fn stored_job(&self, id: RelationId) -> Option<JobRecord> {
        let v = self.views.get(&id)?;
        let mut job = v.job.clone()?;
        match &v.phase {
            // Its hand-off is not durable yet: a crash may lose it.
            Phase::Live { replay: Some(_), .. } => job.state = JobState::Idle,
            // A live copy mirrors the feed through the origin's stored
            // position even while the feed is down (its status then says
            // failed): stored as running, a restart resumes it.
            Phase::Live { replay: None, .. } => job.state = JobState::Running,
            _ => {}
        }
        if job.state == JobState::Running && !self.origins.get(&v.def.origin).is_some_and(|o| o.stored) {
            job.state = JobState::Idle;
        }
        Some(job)
    }

    /// Opens the origin's feed if a view needs it and no view of the origin
    /// is still deciding whether it can re-attach (the feed must not move
    /// past what such a view's copy holds before it is live).
    pub(super) fn maybe_subscribe(&mut self, origin: &OriginId) {
        if self.shut_down {
            return;
        }
        let Some(o) = self.origins.get(origin) else { return };
        if !o.feed.is_down() || !self.wants_feed(origin) {
            return;
        }
        // A copy a checkpoint kept continues only if the feed has not moved
        // past its checkpoint: wait for it to be described as well.
        let waiting = |v: &View| match v.phase {
            Phase::Preparing { goal: Goal::Attach, .. } => true,
            Phase::Preparing { goal: Goal::Bootstrap, .. } => {
                self.cfg.checkpoint_copies && v.job.as_ref().is_some_and(|j| j.copy.is_some())
            }
            _ => false,
        };
        let attaching = self.views.values().any(|v| &v.def.origin == origin && waiting(v));
        if !attaching {
            self.subscribe(origin);
        }
    }

    /// Marks a view failed: job `failed` with the reason and a retry time;
    /// any work in flight is dropped; a pass waiting on it gets the failure.
    pub(super) fn fail_view(&mut self, id: RelationId, phase: EventPhase, message: String, retry: Retry) {
        let Some(v) = self.views.get(&id) else {
            return;
        };
        // A re-copy asked for on a live view failed, its old copy still
        // trusted and current: the view goes on live on it, its job as it
        // was; the caller who forced it hears of the failure.
        if !v.dirty && self.abandon_recopy(id) {
            let msg = format!("could not copy the view again ({message}); it stays live on its copy");
            self.error(phase, Some(id), None, msg.clone());
            self.complete_item(id, Outcome::Failed(msg));
            return;
        }
        self.cancel_work(id);
        let attempt = self.job(id).map_or(0, |j| j.retry_count).saturating_add(1);
        let retry_at = self.clock() + backoff::delay(&self.cfg, attempt, retry, &mut self.rng);
        let msg = message.clone();
        self.update_job(id, phase, |j| {
            j.state = JobState::Failed;
            j.retry_count = attempt;
            j.last_error = Some(msg);
            j.next_retry_at = Some(retry_at);
        });
        self.persist_job(id);
        self.error(phase, Some(id), None, message.clone());
        self.complete_item(id, Outcome::Failed(message));
    }
}
