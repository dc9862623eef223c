//! The store side of the simulated process: running the store steps the
//! executor hands out (with the checkers' hooks around each) and persisting.

use std::collections::BTreeSet;

use flashsync_core::exec::{StoreAnswer, StoreStep};
use flashsync_core::machine::ViewPhase;
use flashsync_core::{ApplyReport, JobState, Persistence, RelationId, Row, Selector, StoreError, StoreErrorKind};

use super::{summary, Ev, World};
use crate::faults::Fault;

impl World {
    pub(super) fn store_step(&mut self) {
        let Some(step) = self.store_step.take() else { return };
        self.trace.add("store", &summary(&step));
        let answer = match step {
            StoreStep::PutView(view) => {
                let (result, d) = self.store.put_view(&view);
                self.checker.on_durable(d);
                StoreAnswer::Done(result)
            }
            StoreStep::PutJob(job) => {
                let (result, d) = self.store.put_job(&job);
                self.checker.on_durable(d);
                StoreAnswer::Done(result)
            }
            StoreStep::Forget(relation_id) => {
                let (result, d) = self.store.forget(relation_id);
                if result.is_ok() {
                    self.checker.on_forgotten(relation_id);
                    self.followed.stop(relation_id);
                }
                self.checker.on_durable(d);
                StoreAnswer::Done(result)
            }
            StoreStep::ForgetOrigin(origin) => {
                let (result, d) = self.store.forget_origin(&origin);
                if result.is_ok() {
                    self.checker.on_forget_origin();
                }
                self.checker.on_durable(d);
                StoreAnswer::Done(result)
            }
            StoreStep::Publish { op, generation, job } => StoreAnswer::Done(match generation {
                Some(g) => {
                    let (r, d) = self.store.publish(g, &job);
                    // A reader of the feed reads a replaced copy again.
                    self.followed.stop(job.relation_id);
                    if r.is_ok() {
                        if let Some(snap) = self.snaps.remove(&op) {
                            self.checker.on_published(op, &snap, job.persistence, &self.up);
                        }
                    }
                    self.checker.on_durable(d);
                    if r.is_ok() {
                        let rows = self.store.rows(job.relation_id);
                        self.check_copy_rows(job.relation_id, rows, "after publish");
                    }
                    r
                }
                None => Err(StoreError::new(
                    StoreErrorKind::NotFound,
                    "publish",
                    format!("no generation for operation {}", op.0),
                )),
            }),
            StoreStep::Discard { op, generation } => {
                self.snaps.remove(&op);
                if let Some(g) = generation {
                    if let Err(e) = self.store.discard(g) {
                        self.checker.report("store works", format!("discarding a generation failed: {e}"));
                    }
                }
                StoreAnswer::Discarded(Ok(()))
            }
            StoreStep::Amend { op, generation, ops, checkpoint } => match generation {
                Some(mut g) => {
                    let result = match checkpoint {
                        Some(job) => {
                            let (r, d) = self.store.checkpoint(&mut g, ops, &job);
                            self.checker.on_durable(d);
                            if r.as_ref().is_ok_and(|report| report.conflicts.is_empty()) {
                                self.checker.on_checkpoint(op, &self.up);
                                self.maybe_crash_recopy(&job);
                            }
                            r
                        }
                        None => {
                            let (r, d) = self.store.amend(&mut g, ops);
                            self.checker.on_durable(d);
                            r
                        }
                    };
                    StoreAnswer::Amended { result, generation: Some(g) }
                }
                None => StoreAnswer::Amended {
                    result: Err(StoreError::new(
                        StoreErrorKind::NotFound,
                        "amend",
                        format!("no generation for operation {}", op.0),
                    )),
                    generation: None,
                },
            },
            StoreStep::Resume { id, schema, after } => {
                StoreAnswer::Resumed(self.store.resume_generation(id, &schema, &after))
            }
            StoreStep::Fence(op) => {
                self.checker.on_store_done(op);
                StoreAnswer::Done(Ok(()))
            }
            StoreStep::Apply(batches) => StoreAnswer::Applied(self.apply_run(batches)),
        };
        let at = self.at();
        self.exec.store_done(answer, at);
        self.after_input();
        self.check_running_views();
    }

    /// Applies a run of batches through the store's `apply_many`, as the
    /// tokio driver does (an injected failure fails the run's first batch
    /// and refuses the rest), checking each copy afterwards.
    pub(super) fn apply_run(
        &mut self,
        batches: Vec<flashsync_core::ApplyBatch>,
    ) -> Vec<Result<ApplyReport, StoreError>> {
        let injected = std::mem::take(&mut self.fail_next_apply);
        let mut answers: Vec<Result<ApplyReport, StoreError>> = if injected {
            batches
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let why = if i == 0 { "injected failure" } else { "an earlier batch failed" };
                    Err(StoreError::new(StoreErrorKind::Io, format!("apply batch {}", b.seq.0), why))
                })
                .collect()
        } else {
            for batch in &batches {
                self.follow(batch);
            }
            self.store.apply_many(batches.clone())
        }
        .into_iter()
        .rev()
        .collect();
        let mut results = Vec::with_capacity(batches.len());
        let mut touched: BTreeSet<RelationId> = BTreeSet::new();
        for batch in batches {
            let seq = batch.seq;
            let result = answers.pop().unwrap_or_else(|| {
                Err(StoreError::new(StoreErrorKind::Io, format!("apply batch {}", seq.0), "the store gave no answer"))
            });
            match &result {
                Ok(report) => {
                    if let Err(detail) = self.followed.apply(&report.changes) {
                        self.checker.report("change feed", format!("batch {}: {detail}", seq.0));
                    }
                    touched.extend(batch.views.iter().map(|v| v.relation_id));
                    touched.extend(self.checker.on_applied(&batch, &self.up));
                    self.checker.on_conflicts(report);
                }
                Err(e) => {
                    // Only injected failures fail a batch here: a store that
                    // refuses one of itself was handed a batch that does not
                    // fit the copy (rows of another width, say).
                    if !injected {
                        self.checker.report("the store takes every batch", format!("batch {}: {e}", seq.0));
                    }
                    self.checker.on_apply_failed(&batch)
                }
            }
            results.push(result);
        }
        if let Some((inc, view)) = self.recopy_crash {
            let recopying = self.machine().phase(view) == Some(ViewPhase::Copying) && self.machine().mirrors_feed(view);
            if inc != self.inc || !recopying {
                // Missed: the copy is done (or the process died).
                self.recopy_crash = None;
            } else if touched.contains(&view) {
                self.recopy_crash = None;
                self.schedule(0, Ev::Crash { inc, lose: false });
            }
        }
        for id in touched {
            let rows = self.store.rows(id);
            if let (true, Ok(Some(rows))) = (self.followed.follows(id), &rows) {
                if let Err(detail) = self.followed.check(id, rows) {
                    self.checker.report("change feed", format!("after an apply run: {detail}"));
                }
            }
            self.check_copy_rows(id, rows, "after an apply run");
        }
        results
    }

    /// Starts following, from the store's rows as they are before `batch`,
    /// the views it touches that are not followed yet (when batches capture).
    fn follow(&mut self, batch: &flashsync_core::ApplyBatch) {
        if !batch.capture.is_on() {
            return;
        }
        let new: Vec<RelationId> =
            batch.views.iter().map(|v| v.relation_id).filter(|id| !self.followed.follows(*id)).collect();
        if new.is_empty() {
            return;
        }
        // The published schema as the store has it: the machine may not
        // have heard of the publish yet.
        let schemas = match self.store.load() {
            Ok(state) => state.schemas,
            Err(e) => return self.checker.report("store works", format!("load failed: {e}")),
        };
        for id in new {
            let Some((_, schema)) = schemas.iter().find(|(s, _)| *s == id) else { continue };
            match self.store.rows(id) {
                Ok(Some(rows)) => self.followed.start(id, schema, rows),
                Ok(None) => {}
                Err(e) => self.checker.report("store works", format!("reading view {id} failed: {e}")),
            }
        }
    }

    pub(super) fn check_copy_rows(&mut self, id: RelationId, rows: Result<Option<Vec<Row>>, StoreError>, when: &str) {
        match rows {
            Ok(rows) => self.checker.check_copy(id, rows, when),
            Err(e) => self.checker.report("store works", format!("{when}: reading view {id} failed: {e}")),
        }
    }

    /// Checks on the views the machine reports `running`, once every batch
    /// it emitted is in the store: each copy is exactly its mirror (see
    /// [`Checker::check_running`]), and a live one whose feed has passed its
    /// snapshot has no gap up to the machine's position (nor one whose old
    /// copy stays current while a re-copy makes the next).
    pub(super) fn check_running_views(&mut self) {
        if self.down || self.shutting_down.is_some() || !self.store_idle() {
            return;
        }
        let at = self.machine().origin_progress(&self.origin).and_then(|(at, _)| at);
        let running: Vec<RelationId> = self
            .machine()
            .status(&Selector::All)
            .iter()
            .filter(|j| j.enabled && j.state == JobState::Running && j.persistence == Persistence::Realtime)
            .map(|j| j.relation_id)
            .collect();
        for id in running {
            let rows = match self.store.rows(id) {
                Ok(rows) => rows,
                Err(e) => {
                    self.checker.report("store works", format!("reading running view {id} failed: {e}"));
                    continue;
                }
            };
            let when = format!("running view in phase {}", self.machine().phase(id).map_or("unknown", ViewPhase::name));
            self.checker.check_running(id, rows, self.feed_txn_open, &when);
            // A live view, or one copied again on request while its old
            // copy stays current: no gap either way.
            if let Some(at) = at.filter(|_| self.machine().mirrors_feed(id)) {
                self.checker.check_prefix(id, at, &self.up);
            }
        }
    }

    pub(super) fn persist(&mut self) {
        if self.down {
            return;
        }
        let result = self.store.persist();
        match &result {
            Ok(Some(through)) => {
                self.checker.on_persisted(*through);
                self.checker.on_durable(crate::store::Durable::Everything);
            }
            Ok(None) => {}
            Err(e) => self.checker.report("store works", format!("persist failed: {e}")),
        }
        // The answer takes its time to reach the executor.
        let (d, inc) = (self.jitter(self.plan.timing.store_ms), self.inc);
        self.schedule(d, Ev::Persisted { inc, result });
    }
}

impl World {
    /// A checkpoint stored beside a running job belongs to a re-copy whose
    /// old copy stays current: a crash now leaves both for the restart to
    /// take up again (the old copy re-attached, the new one continued).
    /// Random crashes rarely land in that window, so some are aimed at it
    /// (see `World::recopy_crash`), where the plan has crashes at all.
    fn maybe_crash_recopy(&mut self, job: &flashsync_core::JobRecord) {
        // Not once the workload has stopped: the liveness phase converges
        // on what it wrote.
        if self.liveness || job.state != JobState::Running || job.copy.is_none() || self.plan.rate(Fault::Crash) == 0 {
            return;
        }
        let armed = self.recopy_crash.is_some_and(|(inc, _)| inc == self.inc);
        if !armed && self.recopy_crashes < 4 && self.rng.chance(0.9) {
            self.recopy_crashes += 1;
            self.recopy_crash = Some((self.inc, job.relation_id));
            // Copies run between the workload's writes as often as not:
            // some for the old copy to take (and the crash to follow).
            crate::workload::write_burst(self, 6);
        }
    }
}
