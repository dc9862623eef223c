//! The simulated network: source calls, the snapshot, the feed connection
//! and reading its events, each when the seed says.

use flashsync_core::exec::SourceAnswer;
use flashsync_core::machine::Epoch;
use std::sync::Arc;

use flashsync_core::{FeedStart, OpId, RelationId, Source, SourceError, StreamEvent, UpstreamRelation, ViewShape};
use futures::executor::block_on;
use futures::{FutureExt, StreamExt};

use super::{Ev, SourceCall, Tee, World};
use crate::checkers::SnapRecord;
use crate::faults::Fault;

impl World {
    pub(super) fn source_call(&mut self, call: SourceCall) {
        if self.down {
            return;
        }
        self.trace.add("source", &call);
        let answer = match call {
            SourceCall::Prepare { op, relation, feed } => {
                SourceAnswer::Prepared { op, result: block_on(self.source.prepare(&relation, feed)) }
            }
            SourceCall::Snapshot { op, view, relation, shape, chunk: None } => {
                return self.snapshot(op, view, relation, shape)
            }
            SourceCall::Snapshot { op, view, relation, shape, chunk: Some(chunk) } => {
                self.checker.check_chunk_request(view, chunk.rows, self.plan.config.snapshot_chunk_rows);
                return self.copy_chunk(op, view, relation, shape, chunk);
            }
            SourceCall::Subscribe { epoch, resume } => return self.subscribe(epoch, resume),
            SourceCall::Release { op, relation } => {
                SourceAnswer::Released { op, result: block_on(self.source.release(&relation)) }
            }
            SourceCall::DropFeed { op } => SourceAnswer::Released { op, result: block_on(self.source.drop_feed()) },
        };
        let at = self.at();
        self.exec.source_done(answer, at);
        self.after_input();
    }

    pub(super) fn subscribe(&mut self, epoch: Epoch, resume: Option<flashsync_core::Lsn>) {
        if !self.feed.as_ref().is_some_and(|c| c.epoch == epoch && c.events.is_none()) {
            // Closed before the connection was made.
            return;
        }
        let origin = self.origin.clone();
        let at = self.at();
        match block_on(self.source.subscribe(resume)) {
            Ok(sub) => {
                if !matches!(sub.report.start, FeedStart::Existing { .. }) {
                    // Creating a slot waits for every commit already in the
                    // log to become visible; the model did so.
                    self.up.slot_created();
                }
                if let Some(c) = self.feed.as_mut() {
                    c.events = Some(sub.events);
                }
                self.exec.subscribed(origin, epoch, Ok((sub.report, sub.feedback)), at);
                self.after_input();
                self.kick();
            }
            Err(e) => {
                self.feed = None;
                self.exec.subscribed(origin, epoch, Err(e), at);
                self.after_input();
            }
        }
    }

    /// Settles a copy's rows (`Generation::settle`), telling the checker
    /// what that made durable.
    fn settle(&mut self, generation: &mut Box<dyn flashsync_core::Generation>) -> Result<(), SourceError> {
        let (r, durable) = self.store.settle(generation);
        self.checker.on_durable(durable);
        r.map_err(SourceError::from)
    }

    /// Begins a copy's generation (`Store::begin_generation`), telling the
    /// checker what that made durable.
    fn begin_generation(
        &mut self,
        view: RelationId,
        shape: &ViewShape,
    ) -> Result<Box<dyn flashsync_core::Generation>, flashsync_core::StoreError> {
        let (generation, durable) = self.store.begin_generation(view, shape.local());
        self.checker.on_durable(durable);
        generation
    }

    pub(super) fn snapshot(&mut self, op: OpId, view: RelationId, relation: UpstreamRelation, shape: Arc<ViewShape>) {
        let inc = self.inc;
        let mut generation = match self.begin_generation(view, &shape) {
            Ok(g) => g,
            Err(e) => {
                let d = self.jitter(self.plan.timing.snapshot_ms);
                self.schedule(d, Ev::SnapshotDone { inc, op, result: Err(e.into()) });
                return;
            }
        };
        let vis = self.up.visibility();
        let mut tee = Tee { inner: &mut *generation, rows: Vec::new() };
        let result = block_on(self.source.snapshot(&relation, &shape, &mut tee));
        let rows = std::mem::take(&mut tee.rows);
        // As the tokio driver does at the end of a copy.
        let result = result.and_then(|point| self.settle(&mut generation).map(|()| point));
        let slow = self.rng.below(100) < u64::from(self.plan.rate(Fault::SlowSnapshot));
        let d = if slow {
            self.count_fault(Fault::SlowSnapshot);
            300 + self.jitter(2500)
        } else {
            self.jitter(self.plan.timing.snapshot_ms)
        };
        match result {
            Ok(point) => {
                self.counters.snapshots += 1;
                let rec = SnapRecord { view, table: table_of(&relation), point: point.clone(), vis, shape };
                self.checker.check_chunk_rows(&rec, rows, None, None, &self.up);
                self.snaps.insert(op, rec);
                self.snap_generations.insert(op, generation);
                self.schedule(d, Ev::SnapshotDone { inc, op, result: Ok(point) });
            }
            Err(e) => {
                if let Err(de) = self.store.discard(generation) {
                    self.checker.report("store works", format!("discarding a failed snapshot's generation: {de}"));
                }
                self.schedule(d, Ev::SnapshotDone { inc, op, result: Err(e) });
            }
        }
    }

    /// One chunk of a copy in chunks: the first begins the generation, the
    /// others go into the one the executor handed over. Each chunk's
    /// visibility is recorded for the checker, with the range it covers.
    pub(super) fn copy_chunk(
        &mut self,
        op: OpId,
        view: RelationId,
        relation: UpstreamRelation,
        shape: Arc<ViewShape>,
        chunk: flashsync_core::machine::ChunkRequest,
    ) {
        let inc = self.inc;
        let first = chunk.after.is_none();
        let generation = match self.snap_generations.remove(&op) {
            Some(g) if !first => Ok(g),
            _ => self.begin_generation(view, &shape),
        };
        let mut generation = match generation {
            Ok(g) => g,
            Err(e) => {
                let d = self.jitter(self.plan.timing.snapshot_ms);
                self.schedule(d, Ev::ChunkDone { inc, op, result: Err(e.into()) });
                return;
            }
        };
        let vis = self.up.visibility();
        let mut tee = Tee { inner: &mut *generation, rows: Vec::new() };
        let result = block_on(self.source.copy_chunk(&relation, &shape, chunk.after.as_ref(), chunk.rows, &mut tee));
        let rows = std::mem::take(&mut tee.rows);
        // As the tokio driver does at the end of a chunk.
        let result = result.and_then(|c| self.settle(&mut generation).map(|()| c));
        let mut d = self.jitter(self.plan.timing.snapshot_ms);
        if self.recopy_crash == Some((inc, view)) {
            // A crash is aimed at this re-copy (`World::recopy_crash`): a
            // slow chunk gives the writes meant for the old copy time to
            // land while the new one is still being made.
            d += 300;
        }
        match result {
            Ok(copied) => {
                self.counters.snapshots += 1;
                let table = table_of(&relation);
                let after = chunk.after.as_ref().map(flashsync_core::codec::encode_key);
                let through = match &copied.end {
                    flashsync_core::ChunkEnd::After(k) => Some(flashsync_core::codec::encode_key(k)),
                    flashsync_core::ChunkEnd::Done => None,
                };
                let rec = SnapRecord { view, table, point: copied.point.clone(), vis, shape };
                self.checker.check_chunk_rows(&rec, rows, after.as_deref(), through.as_deref(), &self.up);
                self.checker.on_chunk(op, &rec, first, through, &self.up);
                self.snaps.insert(op, rec);
                self.snap_generations.insert(op, generation);
                self.schedule(d, Ev::ChunkDone { inc, op, result: Ok(copied) });
            }
            Err(e) => {
                // Dropped, as the tokio driver does: a checkpointed copy
                // stays in the store for the machine to go on from.
                drop(generation);
                self.schedule(d, Ev::ChunkDone { inc, op, result: Err(e) });
            }
        }
    }

    // ----- the feed ----------------------------------------------------------

    /// Wakes the feed reader if it is idle (new upstream events may be there).
    pub fn kick(&mut self) {
        let inc = self.inc;
        let lat = self.plan.timing.feed_ms;
        let stall = self.plan.rate(Fault::FeedStall);
        if self.exec.is_feed_paused(&self.origin) {
            return;
        }
        let Some(c) = self.feed.as_mut() else { return };
        if c.events.is_none() || c.pumping {
            return;
        }
        c.pumping = true;
        let epoch = c.epoch;
        let mut d = self.rng.below(lat + 1);
        if self.rng.below(100) < u64::from(stall) {
            d += 50 + self.rng.below(500);
            self.count_fault(Fault::FeedStall);
        }
        self.schedule(d, Ev::Pump { inc, epoch });
    }

    pub(super) fn pump(&mut self, epoch: Epoch) {
        let chunk = 1 + self.rng.below(self.plan.timing.feed_chunk);
        let paused = self.exec.is_feed_paused(&self.origin);
        let mut got: Vec<Result<StreamEvent, SourceError>> = Vec::new();
        let mut ended = false;
        {
            let Some(c) = self.feed.as_mut().filter(|c| c.epoch == epoch) else { return };
            c.pumping = false;
            if paused {
                return;
            }
            let Some(events) = c.events.as_mut() else { return };
            for _ in 0..chunk {
                match events.next().now_or_never() {
                    Some(Some(e)) => {
                        let err = e.is_err();
                        got.push(e);
                        if err {
                            ended = true;
                            break;
                        }
                    }
                    Some(None) => {
                        got.push(Err(SourceError::connection("the feed ended")));
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            if ended {
                c.events = None;
            }
        }
        let any = !got.is_empty();
        let origin = self.origin.clone();
        for e in got {
            if self.down || self.feed.as_ref().is_none_or(|c| c.epoch != epoch) {
                break;
            }
            let at = self.at();
            match e {
                Ok(event) => {
                    match &event {
                        StreamEvent::Begin { .. } => self.feed_txn_open = true,
                        StreamEvent::Commit { .. } => self.feed_txn_open = false,
                        _ => {}
                    }
                    self.trace.add("in", &event);
                    self.exec.feed_event(&origin, epoch, event, at);
                }
                Err(error) => {
                    self.feed_txn_open = false;
                    self.trace.add("in", &error);
                    self.exec.feed_lost(origin.clone(), epoch, error, at);
                }
            }
            self.after_input();
        }
        if any && !ended {
            self.kick();
        }
    }
}

/// The model's name for the table `relation` copies.
fn table_of(relation: &UpstreamRelation) -> &'static str {
    crate::upstream::TABLES.iter().map(|(t, _)| *t).find(|t| *t == relation.table).unwrap_or("unknown")
}
