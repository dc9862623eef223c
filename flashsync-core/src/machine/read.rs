//! What drivers and callers read from the machine: status, definitions,
//! the next deadline, counters. Nothing here changes it (except draining
//! the audit log).

use super::*;

impl Machine {
    /// The tunables the machine runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// When to deliver [`Input::Timer`], if ever, on the monotonic clock of
    /// [`Now::mono`]: the earliest automatic retry of a failed view or feed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.shut_down {
            return None;
        }
        let views = self.views.values().filter_map(|v| {
            let job = v.job.as_ref()?;
            (matches!(v.phase, Phase::Idle) && job.enabled && job.state == JobState::Failed && !v.retry_queued)
                .then_some(job.next_retry_at)
                .flatten()
        });
        let feeds = self.origins.values().filter(|o| self.wants_feed(&o.id)).filter_map(|o| o.feed.retry_at());
        views.chain(feeds).chain(self.next_chunk_retry()).min().map(|t| self.to_mono(t))
    }

    /// Status records of the selected views, ordered by name. Views that have
    /// never been synced get an `idle` record.
    pub fn status(&self, selector: &Selector) -> Vec<JobRecord> {
        self.names
            .iter()
            .filter(|(name, _)| selector.matches(name))
            .filter_map(|(name, id)| {
                let v = self.views.get(id)?;
                let mut job = v.job.clone().unwrap_or_else(|| JobRecord::new(*id, name, v.def.persistence, self.now));
                job.filter = v.def.filter.as_ref().map(|f| f.text().to_owned());
                job.columns = v.def.columns.clone();
                Some(job)
            })
            .collect()
    }

    /// The definitions of the selected views, ordered by name.
    pub fn definitions(&self, selector: &Selector) -> Vec<ViewRecord> {
        self.names
            .iter()
            .filter(|(name, _)| selector.matches(name))
            .filter_map(|(_, id)| self.views.get(id).map(|v| ViewRecord { relation_id: *id, def: v.def.clone() }))
            .collect()
    }

    /// The schema of a view's published copy, if it has one.
    pub fn schema(&self, id: RelationId) -> Option<&RelationSchema> {
        self.views.get(&id).and_then(|v| v.schema.as_deref())
    }

    /// The id of a view, if defined.
    pub fn relation_id(&self, name: &ViewName) -> Option<RelationId> {
        self.names.get(name).copied()
    }

    /// Where a view is in its life cycle.
    pub fn phase(&self, id: RelationId) -> Option<ViewPhase> {
        self.views.get(&id).map(|v| v.phase.public())
    }

    /// Whether the copy readers see of view `id` mirrors its origin's feed:
    /// the view is live, or is being copied again on request while its
    /// old copy stays current.
    pub fn mirrors_feed(&self, id: RelationId) -> bool {
        self.views.get(&id).is_some_and(|v| v.phase.mirrors())
    }

    /// Takes the audit records gathered since the last call (empty unless
    /// [`Config::audit`] is set).
    pub fn drain_audit(&mut self) -> Vec<AuditRecord> {
        std::mem::take(&mut self.audit)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether a sync pass is running or queued.
    pub fn pass_in_flight(&self) -> bool {
        self.passes.current.is_some() || self.passes.queued.is_some()
    }

    /// Whether nothing is in flight: no pass, no operation, no request, no
    /// view between steps. Feeds may still be up.
    pub fn is_quiescent(&self) -> bool {
        !self.pass_in_flight()
            && self.ops.is_empty()
            && self.requests.is_empty()
            && !self.batches.values().any(|b| matches!(b.flight, Flight::Replay { .. }))
            && self.views.values().all(|v| matches!(v.phase, Phase::Idle | Phase::Live { .. }))
    }

    /// The origin's processed position and the position acknowledged upstream.
    pub fn origin_progress(&self, origin: &OriginId) -> Option<(Option<Lsn>, Option<Lsn>)> {
        self.origins.get(origin).map(|o| (o.applied, o.acked))
    }

    /// Whether the machine has shut down.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }
}
