//! Answers to what is in flight: results of every kind for operations,
//! batches and subscriptions, and the slot reports and snapshot points
//! they carry.

use flashsync_core::rowops::Conflict;
use flashsync_core::{ApplyReport, FeedStart, Input, Key, Lsn, OriginId, RelationId, SlotReport, SnapshotPoint, Value};

use super::harness::{Harness, Kind, Pending};
use super::inputs::{Outcome, PointPick, StartPick};
use super::interpret::{shape, source_error, store_error, table_schema};
use super::trace;

impl Harness {
    pub(super) fn answer(&mut self, p: Pending, outcome: &Outcome) {
        if trace() {
            eprintln!("  answer {p:?} with {outcome:?}");
        }
        match p {
            Pending::Op(op, Kind::Store) => {
                if self.open_fence == Some(op) {
                    self.open_fence = None;
                }
                let result = match outcome {
                    Outcome::Err(c) => Err(store_error(*c)),
                    _ => Ok(()),
                };
                self.input(Input::StoreDone { op, result });
            }
            Pending::Op(op, Kind::Prepare(table)) => {
                let result = match outcome {
                    Outcome::Err(c) => Err(source_error(*c)),
                    Outcome::Shape(s) => Ok(shape(s, table)),
                    _ => Ok(table_schema(table)),
                };
                self.input(Input::Prepared { op, result });
            }
            Pending::Op(op, Kind::Snapshot) => {
                let result = match outcome {
                    Outcome::Err(c) => Err(source_error(*c)),
                    Outcome::Point(p) => Ok(self.point(p)),
                    _ => Ok(self.point(&PointPick::Clean)),
                };
                self.input(Input::Snapshotted { op, result });
            }
            Pending::Op(op, Kind::Release) => {
                let result = match outcome {
                    Outcome::Err(c) => Err(source_error(*c)),
                    _ => Ok(()),
                };
                self.input(Input::Released { op, result });
            }
            Pending::Apply(seq, views) => {
                let result = match outcome {
                    Outcome::Err(c) => Err(store_error(*c)),
                    Outcome::Conflict => Ok(ApplyReport {
                        conflicts: vec![Conflict {
                            relation_id: views.first().copied().unwrap_or(RelationId(1)),
                            key: Key(vec![Value::Int(0)]),
                            detail: "injected conflict".into(),
                        }],
                        changes: Vec::new(),
                    }),
                    _ => Ok(ApplyReport::default()),
                };
                self.input(Input::Applied { seq, result });
            }
            Pending::Subscribe(origin, epoch) => {
                // Only epochs the machine emitted count as answered; an
                // answer for one never emitted (yet) is just noise.
                if self.epochs.get(&origin).is_some_and(|l| l.contains(&epoch)) {
                    self.answered_epochs.insert((origin.clone(), epoch));
                }
                let result = match outcome {
                    Outcome::Err(c) => Err(source_error(*c)),
                    Outcome::Start(s) => Ok(self.report(s)),
                    _ => Ok(self.resume_report(&origin)),
                };
                self.input(Input::Subscribed { origin, epoch, result });
            }
        }
    }

    fn report(&self, s: &StartPick) -> SlotReport {
        let start = match s {
            StartPick::Created(l) => FeedStart::Created { consistent_point: self.lsn(*l) },
            StartPick::Existing(l) => FeedStart::Existing { confirmed_flush: self.lsn(*l) },
            StartPick::Recreated(l) => {
                FeedStart::Recreated { consistent_point: self.lsn(*l), reason: "slot invalidated".into() }
            }
        };
        SlotReport { slot_id: "fuzz_slot".into(), start }
    }

    /// What a healthy slot reports: confirmed up to the last ack.
    fn resume_report(&self, origin: &OriginId) -> SlotReport {
        let confirmed = self.acks.acked(origin);
        let start = FeedStart::Existing { confirmed_flush: confirmed.unwrap_or(Lsn(self.wal)) };
        SlotReport { slot_id: "fuzz_slot".into(), start }
    }

    fn point(&self, p: &PointPick) -> SnapshotPoint {
        let xmax = self.next_xid;
        match p {
            PointPick::Clean => SnapshotPoint { xmin: xmax, xmax, xip: vec![], lsn: Lsn(self.wal), rows: 0 },
            PointPick::InProgress(ages) => {
                let mut xip: Vec<u64> = ages.iter().map(|a| xmax.saturating_sub(u64::from(*a % 16) + 1)).collect();
                xip.sort_unstable();
                xip.dedup();
                let xmin = xip.first().copied().unwrap_or(xmax);
                SnapshotPoint { xmin, xmax, xip, lsn: Lsn(self.wal), rows: 0 }
            }
            PointPick::Behind(d) => SnapshotPoint {
                xmin: xmax,
                xmax,
                xip: vec![],
                lsn: Lsn(self.wal.saturating_sub(u64::from(*d))),
                rows: 0,
            },
            PointPick::Ahead(d) => SnapshotPoint {
                xmin: xmax,
                xmax,
                xip: vec![],
                lsn: Lsn(self.wal.saturating_add(u64::from(*d))),
                rows: 0,
            },
            PointPick::IllFormed => {
                SnapshotPoint { xmin: xmax, xmax, xip: vec![xmax.saturating_add(5)], lsn: Lsn(self.wal), rows: 0 }
            }
            PointPick::Raw { xmin, xmax, xip, lsn } => {
                SnapshotPoint { xmin: *xmin, xmax: *xmax, xip: xip.clone(), lsn: Lsn(*lsn), rows: 0 }
            }
        }
    }
}
