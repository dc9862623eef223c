//! Carrying out one `Step`: control calls, answers, feed events, timers and
//! shutdown.

use flashsync_core::machine::Epoch;
use flashsync_core::{
    BatchSeq, Input, Lsn, OpId, OriginId, Persistence, SourceError, StreamEvent, Timestamp, UpstreamRelation, ViewDef,
    ViewName,
};

use super::harness::{Harness, Kind, Pending};
use super::inputs::{FuzzEvent, LsnPick, Step};
use super::interpret::{change, column_added, origin_id, rel_id, selector, view_name};
use super::TABLES;

impl Harness {
    pub(super) fn feed(&mut self, origin: &OriginId, epoch: Epoch, event: StreamEvent) {
        self.input(Input::Feed { origin: origin.clone(), epoch, event });
    }

    /// Carries out one step.
    pub(super) fn step(&mut self, step: Step) {
        match step {
            Step::Define { ns, name, realtime, origin, table } => {
                let (schema, tname) = TABLES[usize::from(table) % TABLES.len()];
                let def = ViewDef {
                    name: view_name(ns, name),
                    persistence: if realtime { Persistence::Realtime } else { Persistence::Materialized },
                    origin: origin_id(origin),
                    upstream: UpstreamRelation { schema: schema.into(), table: tname.into() },
                    filter: None,
                    columns: None,
                };
                let request = self.request();
                self.input(Input::Define { request, def });
            }
            Step::DefineRaw { ns, name, realtime, origin, schema, table } => {
                let def = ViewDef {
                    name: ViewName { namespace: ns, name },
                    persistence: if realtime { Persistence::Realtime } else { Persistence::Materialized },
                    origin: origin_id(origin),
                    upstream: UpstreamRelation { schema, table },
                    filter: None,
                    columns: None,
                };
                let valid = def.validate().is_ok();
                let request = self.request();
                self.input(Input::Define { request, def });
                if !valid && !self.shut_down {
                    assert!(
                        matches!(self.requests.get(&request), Some(1)),
                        "an invalid definition was not refused at once"
                    );
                }
            }
            Step::Sync { sel, force } => {
                if let Some(selector) = selector(&sel) {
                    let request = self.request();
                    self.input(Input::Sync { request, selector, force });
                }
            }
            Step::Stop { sel } => {
                if let Some(selector) = selector(&sel) {
                    let request = self.request();
                    self.input(Input::Stop { request, selector });
                }
            }
            Step::Resume { sel } => {
                if let Some(selector) = selector(&sel) {
                    let request = self.request();
                    self.input(Input::Resume { request, selector });
                }
            }
            Step::Forget { sel } => {
                if let Some(selector) = selector(&sel) {
                    let request = self.request();
                    self.input(Input::Forget { request, selector });
                }
            }
            Step::Shutdown => self.shutdown(),
            Step::Answer { pick, outcome, keep } => {
                if self.pending.is_empty() {
                    return;
                }
                let i = usize::from(pick) % self.pending.len();
                let p = if keep { self.pending[i].clone() } else { self.pending.remove(i) };
                self.answer(p, &outcome);
            }
            Step::Stray { op, kind, outcome } => {
                let op = OpId(u64::from(op));
                let kind = match kind % 4 {
                    0 => Kind::Store,
                    1 => Kind::Prepare(usize::from(kind / 4) % TABLES.len()),
                    2 => Kind::Snapshot,
                    _ => Kind::Release,
                };
                self.answer(Pending::Op(op, kind), &outcome);
            }
            Step::Applied { seq, outcome } => {
                let seq = self.seq(seq);
                self.answer(Pending::Apply(seq, Vec::new()), &outcome);
            }
            Step::Durable { seq } => {
                let through = self.seq(seq);
                self.durable_through(through);
            }
            Step::Subscribed { origin, epoch, result } => {
                let origin = origin_id(origin);
                let epoch = self.epoch(&origin, epoch);
                // Answering a pending subscription here takes it off the books.
                if let Some(i) = self
                    .pending
                    .iter()
                    .position(|p| matches!(p, Pending::Subscribe(o, e) if *o == origin && *e == epoch))
                {
                    self.pending.remove(i);
                }
                self.answer(Pending::Subscribe(origin, epoch), &result);
            }
            Step::Txn { origin, epoch, xid, gap, changes, commit } => {
                let origin = origin_id(origin);
                let epoch = self.epoch(&origin, epoch);
                let xid = self.xid(xid);
                let final_lsn = Lsn(self.wal.saturating_add(1 + u64::from(gap)));
                self.wal = final_lsn.0.saturating_add(1);
                self.feed(&origin, epoch, StreamEvent::Begin { xid, final_lsn, commit_time: Timestamp(self.now) });
                for c in changes.iter().take(64) {
                    self.feed(&origin, epoch, StreamEvent::Change(change(c)));
                }
                if commit {
                    self.feed(&origin, epoch, StreamEvent::Commit { end_lsn: Lsn(self.wal) });
                }
            }
            Step::Feed { origin, epoch, event } => {
                let origin = origin_id(origin);
                let epoch = self.epoch(&origin, epoch);
                let event = match event {
                    FuzzEvent::Begin { xid, lsn } => {
                        let xid = self.xid(xid);
                        let final_lsn = self.lsn(lsn);
                        if !matches!(lsn, LsnPick::Raw(_)) {
                            self.wal = self.wal.max(final_lsn.0);
                        }
                        StreamEvent::Begin { xid, final_lsn, commit_time: Timestamp(self.now) }
                    }
                    FuzzEvent::Change(c) => StreamEvent::Change(change(&c)),
                    FuzzEvent::Commit { lsn } => {
                        let end_lsn = self.lsn(lsn);
                        if !matches!(lsn, LsnPick::Raw(_)) {
                            self.wal = self.wal.max(end_lsn.0);
                        }
                        StreamEvent::Commit { end_lsn }
                    }
                    FuzzEvent::Keepalive { lsn, reply } => {
                        StreamEvent::Keepalive { wal_end: self.lsn(lsn), reply_requested: reply }
                    }
                    FuzzEvent::SchemaChanged { rel } => StreamEvent::SchemaChanged {
                        rel: rel_id(rel),
                        detail: "column added".into(),
                        columns: column_added(rel),
                    },
                };
                self.feed(&origin, epoch, event);
            }
            Step::FeedLost { origin, epoch } => {
                let origin = origin_id(origin);
                let epoch = self.epoch(&origin, epoch);
                let error = SourceError::connection("injected: connection reset");
                self.input(Input::FeedLost { origin, epoch, error });
            }
            Step::Timer { advance, to_deadline } => {
                self.now += u64::from(advance);
                if to_deadline {
                    if let Some(t) = self.m.poll_timeout() {
                        self.now = self.now.max(t.0);
                    }
                }
                self.timer();
            }
            Step::Settle { rounds } => {
                for _ in 0..(rounds % 4) + 1 {
                    if !self.settle_round() {
                        break;
                    }
                }
            }
        }
    }

    pub(super) fn durable_through(&mut self, through: BatchSeq) {
        self.durable = self.durable.max(Some(through));
        self.acks.durable_through(through);
        self.input(Input::Durable { through });
    }

    /// Delivers a timer and checks that it does not leave a due deadline
    /// behind (a driver would spin on it).
    pub(super) fn timer(&mut self) {
        self.input(Input::Timer);
        if let Some(t) = self.m.poll_timeout() {
            assert!(t.0 > self.now, "busy loop: after a timer at {}, poll_timeout is still {}", self.now, t.0);
        }
    }

    pub(super) fn shutdown(&mut self) {
        let request = self.request();
        self.input(Input::Shutdown { request });
        self.shut_down = true;
        for (r, n) in &self.requests {
            assert_eq!(*n, 1, "request {r:?} has {n} replies after shutdown");
        }
    }
}
