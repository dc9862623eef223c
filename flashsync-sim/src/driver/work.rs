//! Between the executor and the simulated world: every call into the
//! executor is followed by observing what the machine emitted (for the
//! checkers), and by scheduling each piece of work it handed out.

use flashsync_core::exec::{FeedCommand, Work};
use flashsync_core::{
    Generation, JobState, Output, Persistence, RelationId, Reply, RequestId, Selector, SourceAction, StoreAction,
};

use super::{summary, Call, Conn, Ev, Pending, SourceCall, World, EPOCH_MS};
use crate::faults::Fault;

impl World {
    /// After every call into the executor: observe what the machine did,
    /// check it, and carry out the work handed out.
    pub(super) fn after_input(&mut self) {
        self.counters.inputs += 1;
        for out in self.exec.drain_tap() {
            self.observe(out);
        }
        let audit = self.exec.drain_audit();
        for a in &audit {
            self.trace.add("audit", a);
        }
        self.checker.on_audit(audit);
        self.checker.check_passes(self.exec.machine(), self.pass_base);
        while let Some(work) = self.exec.poll_work() {
            self.work(work);
        }
        self.sync_timer();
    }

    /// A machine output, as the executor took it.
    pub(super) fn observe(&mut self, out: Output) {
        self.trace.add("out", &out);
        match out {
            Output::Store(StoreAction::Fence { op }) => self.checker.on_fence(op),
            Output::Store(StoreAction::Apply(batch)) => self.checker.on_batch(&batch),
            Output::Source(SourceAction::Ack { epoch, lsn, .. }) => self.checker.on_ack(lsn, epoch),
            Output::Event(event) => {
                let before = event.relation_id.and_then(|id| self.checker.def(id).cloned());
                self.checker.on_event(&event, before.as_ref());
            }
            Output::Reply { request, .. } => self.on_reply(request),
            _ => {}
        }
    }

    pub(super) fn sync_timer(&mut self) {
        let t = self.exec.poll_timeout().map(|t| t.0.saturating_sub(EPOCH_MS));
        if t != self.timer_at {
            self.timer_at = t;
            if let Some(at) = t {
                let delay = at.saturating_sub(self.now);
                let inc = self.inc;
                self.schedule(delay, Ev::Timer { inc, at });
            }
        }
    }

    /// Schedules one unit of the executor's work.
    pub(super) fn work(&mut self, work: Work<Pending, Box<dyn Generation>>) {
        let inc = self.inc;
        let lat = self.plan.timing.source_ms;
        match work {
            Work::Store(step) => {
                if self.store_step.is_some() {
                    self.checker
                        .report("one store step at a time", format!("{} while another is running", summary(&step)));
                }
                self.store_step = Some(step);
                let d = self.jitter(self.plan.timing.store_ms);
                self.schedule(d, Ev::StoreStep { inc });
            }
            Work::Chunk { call, generation } => {
                if let flashsync_core::exec::SourceCall::Snapshot { op, relation_id, relation, shape, chunk, .. } = call
                {
                    match generation {
                        Some(g) => {
                            self.snap_generations.insert(op, g);
                        }
                        None => self.checker.report(
                            "one generation per copy",
                            format!("a later chunk of copy {} came without its generation", op.0),
                        ),
                    }
                    let call = SourceCall::Snapshot { op, view: relation_id, relation, shape, chunk };
                    let d = self.jitter(lat);
                    self.schedule(d, Ev::Source { inc, call });
                }
            }
            Work::Persist => {
                let d = self.jitter(self.plan.timing.persist_ms);
                self.schedule(d, Ev::Persist { inc });
            }
            Work::Source(call) => {
                let call = match call {
                    flashsync_core::exec::SourceCall::Prepare { op, relation, feed, .. } => {
                        SourceCall::Prepare { op, relation, feed }
                    }
                    flashsync_core::exec::SourceCall::Snapshot { op, relation_id, relation, shape, chunk, .. } => {
                        SourceCall::Snapshot { op, view: relation_id, relation, shape, chunk }
                    }
                    flashsync_core::exec::SourceCall::Release { op, relation, .. } => {
                        SourceCall::Release { op, relation }
                    }
                    flashsync_core::exec::SourceCall::DropFeed { op, .. } => SourceCall::DropFeed { op },
                };
                let d = self.jitter(lat);
                self.schedule(d, Ev::Source { inc, call });
            }
            Work::Feed(FeedCommand::Open { epoch, resume, .. }) => {
                if let Some(old) = self.feed.as_ref().filter(|c| c.events.is_some()) {
                    self.checker.report(
                        "one feed at a time",
                        format!("opening the feed of epoch {} while epoch {} is still open", epoch.0, old.epoch.0),
                    );
                }
                self.feed = Some(Conn { epoch, events: None, pumping: false });
                self.feed_txn_open = false;
                let d = self.jitter(lat);
                self.schedule(d, Ev::Source { inc, call: SourceCall::Subscribe { epoch, resume } });
            }
            Work::Feed(FeedCommand::Close { epoch, .. }) => {
                if self.feed.as_ref().is_some_and(|c| c.epoch == epoch) {
                    self.feed = None;
                    self.feed_txn_open = false;
                }
            }
            Work::Feed(FeedCommand::Pause { paused, .. }) => {
                if !paused {
                    self.kick();
                }
            }
            Work::Ack { epoch, lsn, .. } => {
                let lost = self.rng.below(100) < u64::from(self.plan.rate(Fault::LostAck));
                if lost {
                    self.count_fault(Fault::LostAck);
                } else {
                    let d = self.jitter(lat);
                    self.schedule(d, Ev::Ack { inc, epoch, lsn });
                }
            }
            Work::Event(_) => {}
            Work::Reply(pending, reply) => self.replied(pending, reply),
        }
    }

    /// A reply as the machine emits it (in order with its other outputs, so
    /// the burst accounting sees passes and replies in their real order).
    pub(super) fn on_reply(&mut self, request: RequestId) {
        let Some(b) = self.bursts.remove(&request) else { return };
        if let Some(passes) = self.checker.burst_reply(b) {
            self.burst_log.push((b, passes, self.now));
            if self.verbose {
                let running = self.running_views();
                eprintln!(
                    "  t={:>7.3}s storm wave {b}: every caller answered by {passes} pass(es); \
                     realtime views running: {}/{}",
                    self.now as f64 / 1000.0,
                    running.0,
                    running.1
                );
            }
        }
    }

    /// A reply reaches its caller.
    pub(super) fn replied(&mut self, p: Pending, reply: Reply) {
        if p.call == "shutdown" && reply == Reply::ShutDown {
            if let Some(downtime) = self.shutting_down.take() {
                // Drained and persisted: a crash now must lose nothing.
                self.crash(true, downtime);
            }
        }
    }

    /// (running, enabled) realtime views, for progress output.
    pub fn running_views(&self) -> (usize, usize) {
        let status = self.machine().status(&Selector::All);
        let rt: Vec<_> = status.iter().filter(|j| j.persistence == Persistence::Realtime && j.enabled).collect();
        let running = rt.iter().filter(|j| j.state == JobState::Running).count();
        (running, rt.len())
    }

    /// Delivers a caller's control call.
    pub fn deliver_call(&mut self, call: Call, burst: Option<u64>) {
        if self.down {
            return;
        }
        // A machine that has shut down (and is draining) refuses every
        // call: the model must not follow a refused stop, resume or forget
        // (a refused forget left the view in place, and its state changes
        // still to come are legal). Refused definitions are handled below.
        let ids = |w: &World, sel: &Selector| -> Vec<RelationId> {
            if w.machine().is_shut_down() {
                return Vec::new();
            }
            w.machine().definitions(sel).into_iter().map(|v| v.relation_id).collect()
        };
        let define = match &call {
            Call::Define(def) => Some(def.clone()),
            Call::Sync { .. } => {
                self.counters.sync_calls += 1;
                None
            }
            Call::Stop(selector) => {
                let v = ids(self, selector);
                self.checker.on_stop(&v);
                None
            }
            Call::Resume(selector) => {
                self.counters.sync_calls += 1;
                let v = ids(self, selector);
                self.checker.on_resume(&v);
                None
            }
            Call::Forget(selector) => {
                let v = ids(self, selector);
                self.checker.on_forget_request(&v);
                None
            }
            Call::Shutdown => None,
        };
        self.trace.add("in", &call);
        let at = self.at();
        let request = self.exec.call(call.clone(), Pending { call: call.name() }, at);
        if let Some(b) = burst {
            self.bursts.insert(request, b);
        }
        // Observe first: the events of a redefinition are checked against
        // the definition they replace.
        self.after_input();
        if let Some(def) = define {
            // Only a definition the machine took: one refused (a machine
            // shut down and draining refuses every call) changes nothing,
            // and the events still to come are of the old one.
            let held = self.machine().definitions(&Selector::view(&def.name)).into_iter().next();
            if let Some(record) = held.filter(|r| r.def == def) {
                self.checker.on_define(record.relation_id, def);
            }
        }
    }
}
