//! The checks on every output the machine emits and on its state after
//! every input.

use std::collections::BTreeMap;

use flashsync_core::machine::{AuditRecord, Epoch};
use flashsync_core::{
    EventKind, JobState, OpId, Output, Persistence, Progress, RelationId, Reply, Selector, SourceAction, StoreAction,
};

use super::harness::{FeedMirror, Harness, Kind, Pending};
use super::interpret::table_of;

impl Harness {
    pub(super) fn observe(
        &mut self,
        o: Output,
        before: &BTreeMap<RelationId, Persistence>,
        after: &BTreeMap<RelationId, Persistence>,
    ) {
        match o {
            Output::Store(action) => match action {
                StoreAction::PutView { op, .. }
                | StoreAction::PutJob { op, .. }
                | StoreAction::Forget { op, .. }
                | StoreAction::ForgetOrigin { op, .. } => self.emit(op, Kind::Store),
                StoreAction::Publish { op, .. } => {
                    // A publish reuses the op id of the snapshot that filled
                    // the generation.
                    assert_eq!(self.emitted.get(&op), Some(&Kind::Snapshot), "publish {op:?} of no snapshot");
                    self.emitted.insert(op, Kind::Store);
                    self.pending.push(Pending::Op(op, Kind::Store));
                }
                StoreAction::Fence { op } => {
                    assert!(!self.shut_down, "a pass started after shutdown");
                    if let Some(open) = self.open_fence {
                        panic!("pass fence {op:?} emitted while the fence {open:?} of the previous pass is unanswered");
                    }
                    self.open_fence = Some(op);
                    self.emit(op, Kind::Store);
                }
                StoreAction::Discard { .. } => {}
                // This target runs the machine with copies in one piece
                // (`Config::snapshot_chunk_rows` 0); the simulator covers
                // copies in chunks.
                StoreAction::Amend { op, .. } => panic!("amend {op:?} emitted, but no copy is made in chunks here"),
                StoreAction::Resume { op, .. } => panic!("resume {op:?} emitted, but no copy is made in chunks here"),
                StoreAction::Apply(batch) => {
                    assert!(!self.shut_down, "batch {:?} emitted after shutdown", batch.seq);
                    if let Some(last) = self.batches.last() {
                        assert!(batch.seq > *last, "batch {:?} emitted after {last:?}", batch.seq);
                    }
                    self.batches.push(batch.seq);
                    self.acks.applied(&batch);
                    match batch.progress {
                        Progress::Replay if !batch.views.is_empty() => {
                            self.seen.insert("replay");
                        }
                        Progress::Stage { .. } => {
                            self.seen.insert("partial");
                        }
                        _ => {}
                    }
                    let views = batch.views.iter().map(|v| v.relation_id).collect();
                    self.pending.push(Pending::Apply(batch.seq, views));
                }
            },
            Output::Source(action) => self.observe_source(action),
            Output::Event(e) => {
                match &e.kind {
                    EventKind::Conflict { .. } => {
                        self.seen.insert("conflict");
                    }
                    EventKind::Error { message } if message.contains("again") => {
                        self.seen.insert("recopy");
                    }
                    _ => {}
                }
                if let EventKind::StateChanged { from, to } = e.kind {
                    self.seen.insert(match to {
                        JobState::Idle => "idle",
                        JobState::Synced => "synced",
                        JobState::Running => "running",
                        JobState::Failed => "failed",
                    });
                    let id = e.relation_id.unwrap_or_else(|| panic!("state change without a view: {e:?}"));
                    let modes: Vec<Persistence> =
                        [before.get(&id), after.get(&id)].into_iter().flatten().copied().collect();
                    if let Err(e) = self.states.change(id, from, to, &modes) {
                        panic!("{e}");
                    }
                }
            }
            Output::Reply { request, reply } => {
                let Some(n) = self.requests.get_mut(&request) else {
                    panic!("reply {reply:?} to request {request:?}, which was never made");
                };
                *n += 1;
                assert_eq!(*n, 1, "request {request:?} answered twice, now with {reply:?}");
                self.seen.insert(match reply {
                    Reply::Defined(_) => "defined",
                    Reply::Synced(_) => "sync-reply",
                    Reply::Stopped(_) => "stopped",
                    Reply::Resumed(_) => "resumed",
                    Reply::Forgotten { .. } => "forgotten",
                    Reply::ShutDown => "shutdown",
                    Reply::Failed(_) => "request-failed",
                });
            }
        }
    }

    fn observe_source(&mut self, action: SourceAction) {
        match action {
            SourceAction::Prepare { op, relation, .. } => {
                assert!(!self.shut_down, "prepare after shutdown");
                self.emit(op, Kind::Prepare(table_of(&relation)));
            }
            SourceAction::Snapshot { op, shape, .. } => {
                assert!(!self.shut_down, "snapshot after shutdown");
                let schema = shape.local();
                assert!(schema.is_well_formed(), "snapshot with an ill-formed schema {schema:?}");
                self.emit(op, Kind::Snapshot);
            }
            SourceAction::Subscribe { origin, epoch, .. } => {
                assert!(!self.shut_down, "subscribe after shutdown");
                let all_epochs: Vec<Epoch> = self.epochs.values().flatten().copied().collect();
                assert!(all_epochs.iter().all(|e| *e < epoch), "subscription epoch {epoch:?} reused");
                self.epochs.entry(origin.clone()).or_default().push(epoch);
                self.feeds.insert(origin.clone(), FeedMirror::Subscribing(epoch));
                self.pending.push(Pending::Subscribe(origin, epoch));
            }
            SourceAction::Unsubscribe { origin, epoch } => {
                let f = self.feeds.entry(origin).or_default();
                if matches!(*f, FeedMirror::Subscribing(e) | FeedMirror::Up(e, _) if e == epoch) {
                    *f = FeedMirror::Down;
                }
            }
            SourceAction::Flow { origin, epoch, paused } => {
                if paused {
                    self.seen.insert("paused");
                }
                assert!(
                    self.epochs.get(&origin).is_some_and(|l| l.contains(&epoch)),
                    "flow control for epoch {epoch:?} of {origin}, never subscribed"
                );
            }
            SourceAction::Ack { origin, epoch, lsn } => {
                assert!(!self.shut_down, "ack after shutdown");
                assert!(
                    self.epochs.get(&origin).is_some_and(|l| l.contains(&epoch)),
                    "ack on epoch {epoch:?} of {origin}, never subscribed"
                );
                if let Err(e) = self.acks.ack(&origin, epoch, lsn) {
                    panic!("{e}");
                }
            }
            SourceAction::Release { op, .. } | SourceAction::DropFeed { op, .. } => self.emit(op, Kind::Release),
        }
    }

    fn emit(&mut self, op: OpId, kind: Kind) {
        assert!(self.emitted.insert(op, kind.clone()).is_none(), "op id {op:?} emitted twice");
        self.pending.push(Pending::Op(op, kind));
    }

    /// Checks that hold after every input.
    pub(super) fn check_state(&mut self, modes: &BTreeMap<RelationId, Persistence>) {
        // No unreported state changes; forgotten views leave the books.
        self.states.retain(|id| modes.contains_key(&id));
        for job in self.m.status(&Selector::All) {
            let tracked = self.states.state(job.relation_id);
            assert_eq!(
                job.state, tracked,
                "status of view {} is {} but events said {tracked}",
                job.relation_id, job.state
            );
        }
        let copying =
            modes.keys().filter(|id| self.m.phase(**id) == Some(flashsync_core::machine::ViewPhase::Copying)).count();
        assert!(copying <= self.max_snapshots, "{copying} views copying, limit {}", self.max_snapshots);
        for rec in self.m.drain_audit() {
            if let AuditRecord::Applied { seq, .. } = rec {
                assert!(self.batches.contains(&seq), "audit names batch {seq:?}, never emitted");
            }
            if let Err(e) = self.applied.audit(&rec) {
                panic!("{e}");
            }
        }
        if self.m.is_shut_down() {
            assert!(self.m.poll_timeout().is_none(), "a shut-down machine wants a timer");
        }
    }
}
