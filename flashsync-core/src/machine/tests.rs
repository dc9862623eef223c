//! Hand-driven scenarios for the machine's subtlest rules: each test plays
//! the driver, answering actions by hand, so every step is explicit.

use super::*;
use crate::schema::Column;
use crate::{key, row};

struct H {
    m: Machine,
    now: u64,
    out: Vec<Output>,
    /// The job records the store holds: the last one written per view (by
    /// `settle_store` and `applied_batches`).
    stored: BTreeMap<RelationId, JobRecord>,
}

fn schema() -> RelationSchema {
    RelationSchema::keyed(
        SourceRelId(7),
        vec![
            Column { name: "id".into(), type_name: "int8".into() },
            Column { name: "v".into(), type_name: "text".into() },
        ],
        vec![0],
    )
}

fn origin() -> OriginId {
    OriginId::new("postgres:main").unwrap()
}

impl H {
    fn new() -> H {
        H::load(StoredState::default())
    }

    /// A machine started over what a store loaded; its first outputs are kept.
    fn load(state: StoredState) -> H {
        H::load_with(state, Config::default())
    }

    fn load_with(state: StoredState, cfg: Config) -> H {
        let mut m = Machine::new(cfg, 1, state, Timestamp(1000));
        let out = std::iter::from_fn(|| m.poll_output()).collect();
        H { m, now: 1000, out, stored: BTreeMap::new() }
    }

    fn input(&mut self, i: Input) {
        self.now += 1;
        self.m.handle(i, Timestamp(self.now));
        while let Some(o) = self.m.poll_output() {
            self.out.push(o);
        }
    }

    /// Answers every plain store action with success; returns the rest.
    fn settle_store(&mut self) {
        loop {
            let pending: Vec<Output> = std::mem::take(&mut self.out);
            let mut progressed = false;
            for o in pending {
                match o {
                    Output::Store(StoreAction::PutJob { op, job })
                    | Output::Store(StoreAction::Publish { op, job }) => {
                        progressed = true;
                        self.stored.insert(job.relation_id, job);
                        self.input(Input::StoreDone { op, result: Ok(()) });
                    }
                    Output::Store(StoreAction::PutView { op, .. }) | Output::Store(StoreAction::Fence { op }) => {
                        progressed = true;
                        self.input(Input::StoreDone { op, result: Ok(()) });
                    }
                    other => self.out.push(other),
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn take<T>(&mut self, f: impl Fn(&Output) -> Option<T>) -> T {
        let i = self
            .out
            .iter()
            .position(|o| f(o).is_some())
            .unwrap_or_else(|| panic!("expected output missing in {:#?}", self.out));
        let o = self.out.remove(i);
        f(&o).unwrap()
    }

    fn feed(&mut self, e: StreamEvent) {
        self.input(Input::Feed { origin: origin(), epoch: Epoch(1), event: e });
    }

    fn commit(&mut self, xid: u32, lsn: u64, change: Change) {
        self.feed(StreamEvent::Begin { xid, final_lsn: Lsn(lsn), commit_time: Timestamp(0) });
        self.feed(StreamEvent::Change(change));
        self.feed(StreamEvent::Commit { end_lsn: Lsn(lsn + 8) });
    }

    /// Defines a realtime view, syncs, answers prepare and subscribe; returns
    /// the snapshot op that is now in flight.
    fn bootstrap(&mut self) -> OpId {
        let def = ViewDef::new("public", "t", Persistence::Realtime, "postgres:main", "public", "t").unwrap();
        self.bootstrap_as(def, schema())
    }

    /// [`H::bootstrap`] of `def` over a relation described as `described`.
    fn bootstrap_as(&mut self, def: ViewDef, described: RelationSchema) -> OpId {
        self.input(Input::Define { request: RequestId(1), def });
        self.input(Input::Sync { request: RequestId(2), selector: Selector::All, force: false });
        self.settle_store();
        let op = self.take(|o| match o {
            Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
            _ => None,
        });
        self.input(Input::Prepared { op, result: Ok(described) });
        let epoch = self.take(|o| match o {
            Output::Source(SourceAction::Subscribe { epoch, .. }) => Some(*epoch),
            _ => None,
        });
        let report = SlotReport { slot_id: "s".into(), start: FeedStart::Created { consistent_point: Lsn(100) } };
        self.input(Input::Subscribed { origin: origin(), epoch, result: Ok(report) });
        self.take(|o| match o {
            Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
            _ => None,
        })
    }

    fn applied_batches(&mut self) -> Vec<ApplyBatch> {
        let mut v = Vec::new();
        self.out.retain(|o| match o {
            Output::Store(StoreAction::Apply(b)) => {
                v.push(b.clone());
                false
            }
            _ => true,
        });
        for b in &v {
            self.stored.extend(b.jobs.iter().map(|j| (j.relation_id, j.clone())));
        }
        v
    }

    /// Bootstraps the realtime view `t` (snapshot at 150) and makes its
    /// hand-off durable: it runs.
    fn live(&mut self) {
        let snap = self.bootstrap();
        let point = SnapshotPoint { xmin: 10, xmax: 10, xip: vec![], lsn: Lsn(150), rows: 0 };
        self.input(Input::Snapshotted { op: snap, result: Ok(point) });
        self.settle_store();
        self.durable_batches();
        assert_eq!(self.status().state, JobState::Running);
    }

    /// Applies every batch out, makes them durable, and stores what that
    /// writes.
    fn durable_batches(&mut self) {
        let batches = self.applied_batches();
        for b in &batches {
            self.input(Input::Applied { seq: b.seq, result: Ok(ApplyReport::default()) });
        }
        if let Some(last) = batches.last() {
            self.input(Input::Durable { through: last.seq });
        }
        self.settle_store();
    }

    /// The only view's status.
    fn status(&self) -> JobRecord {
        let mut all = self.m.status(&Selector::All);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    /// Answers the prepare in flight with `schema()`.
    fn prepared(&mut self) {
        let op = self.take(|o| match o {
            Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
            _ => None,
        });
        self.input(Input::Prepared { op, result: Ok(schema()) });
    }

    /// Answers the snapshot in flight with an empty one at `lsn`, and
    /// publishes it.
    fn snapshotted(&mut self, lsn: u64) {
        let op = self.take(|o| match o {
            Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
            _ => None,
        });
        let point = SnapshotPoint { xmin: 10, xmax: 10, xip: vec![], lsn: Lsn(lsn), rows: 0 };
        self.input(Input::Snapshotted { op, result: Ok(point) });
        self.settle_store();
    }

    /// What a store holding what this machine wrote would load (the rows
    /// aside): its job records, the view `def`, its schema, `origin()` at
    /// `applied`.
    fn restart_state(&self, def: &ViewDef, applied: Lsn) -> StoredState {
        let id = *self.stored.keys().next().expect("a stored job");
        StoredState {
            views: vec![ViewRecord { relation_id: id, def: def.clone() }],
            jobs: self.stored.values().cloned().collect(),
            origins: vec![crate::store::OriginProgress { origin: origin(), applied }],
            schemas: vec![(id, schema())],
            ..StoredState::default()
        }
    }
}

fn realtime_t() -> ViewDef {
    ViewDef::new("public", "t", Persistence::Realtime, "postgres:main", "public", "t").unwrap()
}

fn ins(id: i64, v: &str) -> Change {
    Change::Insert { rel: SourceRelId(7), new: row![id, v] }
}

#[test]
fn hand_off_skips_exactly_what_the_snapshot_holds() {
    let mut h = H::new();
    let snap = h.bootstrap();
    // While copying, three transactions arrive: xid 50 is visible to the
    // snapshot (below xmin), 60 is in progress in it (xip), 70 started after.
    h.commit(50, 200, ins(1, "in snapshot"));
    h.commit(60, 300, ins(2, "in progress at snapshot"));
    h.commit(70, 400, ins(3, "after snapshot"));
    assert!(h.applied_batches().iter().all(|b| b.views.is_empty()), "nothing applies before the copy lands");
    let point = SnapshotPoint { xmin: 55, xmax: 65, xip: vec![60], lsn: Lsn(350), rows: 1 };
    h.input(Input::Snapshotted { op: snap, result: Ok(point) });
    h.settle_store();
    let batches = h.applied_batches();
    let replay = batches.iter().find(|b| b.progress == Progress::Replay).expect("a replay batch");
    let ops = &replay.views[0].ops;
    assert_eq!(
        ops,
        &vec![
            RowOp::Insert { key: key![2], row: row![2, "in progress at snapshot"] },
            RowOp::Insert { key: key![3], row: row![3, "after snapshot"] }
        ]
    );
    assert_eq!(h.m.status(&Selector::All)[0].state, JobState::Running);
}

/// A copy in chunks (DESIGN §10), by hand: each held change is judged by
/// the range its key is in, when that range's chunk lands — and, once the
/// copy is live, until the feed passes every chunk's snapshot.
#[test]
fn a_copy_in_chunks_takes_each_change_where_its_range_lacks_it() {
    let mut h = H::load_with(StoredState::default(), Config { snapshot_chunk_rows: 2, ..Config::default() });
    let op = h.bootstrap();
    // While the first chunk (keys up to 2) is copied: xid 50 is visible to
    // its snapshot, xid 70 is not, and xid 71 changes a key above the chunk.
    h.commit(50, 200, ins(1, "seen by chunk 1"));
    h.commit(70, 400, ins(2, "after chunk 1"));
    h.commit(71, 500, ins(9, "above chunk 1"));
    let p1 = SnapshotPoint { xmin: 60, xmax: 60, xip: vec![], lsn: Lsn(350), rows: 2 };
    let end = crate::source::ChunkEnd::After(key![2]);
    h.input(Input::ChunkCopied { op, result: Ok(crate::source::CopiedChunk { point: p1, end }) });
    // Only xid 70's change goes into the copy being made; nothing shows.
    let amended = h.take(|o| match o {
        Output::Store(StoreAction::Amend { op: o2, ops, .. }) if *o2 == op => Some(ops.ops.clone()),
        _ => None,
    });
    assert_eq!(amended, vec![RowOp::Insert { key: key![2], row: row![2, "after chunk 1"] }]);
    assert!(h.applied_batches().iter().all(|b| b.views.is_empty()), "nothing is visible before the copy is whole");
    h.input(Input::Amended { op, result: Ok(ApplyReport::default()) });
    // The next chunk starts above key 2, into the same generation.
    let next = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op: o2, chunk: Some(c), .. }) if *o2 == op => Some(c.clone()),
        _ => None,
    });
    assert_eq!(next.after, Some(key![2]));
    // While the second (last) chunk is copied: xid 72 changes key 1 (the
    // first chunk lacks it), xid 73 key 9 (the second chunk's snapshot
    // holds it).
    h.commit(72, 600, ins(1, "after chunk 1 too"));
    h.commit(73, 700, ins(9, "seen by chunk 2"));
    let p2 = SnapshotPoint { xmin: 80, xmax: 80, xip: vec![], lsn: Lsn(750), rows: 1 };
    let end = crate::source::ChunkEnd::Done;
    h.input(Input::ChunkCopied { op, result: Ok(crate::source::CopiedChunk { point: p2, end }) });
    h.settle_store();
    let batches = h.applied_batches();
    let replay = batches.iter().find(|b| b.progress == Progress::Replay).expect("a replay batch");
    assert_eq!(replay.views[0].ops, vec![RowOp::Insert { key: key![1], row: row![1, "after chunk 1 too"] }]);
    // Live, before the feed passes the second chunk's snapshot: a
    // transaction the second chunk holds but the first lacks applies at
    // the first chunk's keys only.
    h.feed(StreamEvent::Begin { xid: 74, final_lsn: Lsn(720), commit_time: Timestamp(0) });
    h.feed(StreamEvent::Change(ins(1, "late")));
    h.feed(StreamEvent::Change(ins(9, "late")));
    h.feed(StreamEvent::Commit { end_lsn: Lsn(728) });
    let batches = h.applied_batches();
    let commit = batches.iter().find(|b| matches!(b.progress, Progress::Commit { .. })).expect("a commit batch");
    assert_eq!(commit.views[0].ops, vec![RowOp::Insert { key: key![1], row: row![1, "late"] }]);
    assert_eq!(h.m.status(&Selector::All)[0].state, JobState::Running);
}

/// A copy in chunks checkpointed after its first chunk, by hand: the feed
/// is not acknowledged past the checkpoint; after a restart the feed is
/// asked for everything since, the copy continues from the store (no new
/// first chunk), and a transaction the store's position already covers —
/// a duplicate for every live view — still goes into it.
#[test]
fn a_checkpointed_copy_continues_after_a_restart() {
    let cfg = Config { snapshot_chunk_rows: 2, ..Config::default() };
    let mut h = H::load_with(StoredState::default(), cfg.clone());
    let op = h.bootstrap();
    h.commit(70, 400, ins(2, "after chunk 1"));
    let p1 = SnapshotPoint { xmin: 60, xmax: 60, xip: vec![], lsn: Lsn(350), rows: 2 };
    let end = crate::source::ChunkEnd::After(key![2]);
    h.input(Input::ChunkCopied { op, result: Ok(crate::source::CopiedChunk { point: p1, end }) });
    let job = h.take(|o| match o {
        Output::Store(StoreAction::Amend { op: o2, checkpoint: Some(job), .. }) if *o2 == op => Some(job.clone()),
        _ => None,
    });
    let checkpoint = job.copy.clone().expect("the checkpoint's job record says how far the copy got");
    assert_eq!((checkpoint.after.clone(), checkpoint.through, checkpoint.rows), (key![2], Lsn(408), 2));
    h.input(Input::Amended { op, result: Ok(ApplyReport::default()) });
    // A commit after the checkpoint, durable in the store: the feed is
    // acknowledged only up to the checkpoint.
    h.commit(80, 500, ins(1, "after the checkpoint"));
    let batches = h.applied_batches();
    for b in &batches {
        h.input(Input::Applied { seq: b.seq, result: Ok(ApplyReport::default()) });
    }
    let last = batches.iter().map(|b| b.seq).max().expect("batches");
    h.input(Input::Durable { through: last });
    let acks: Vec<Lsn> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Source(SourceAction::Ack { lsn, .. }) => Some(*lsn),
            _ => None,
        })
        .collect();
    assert!(acks.iter().all(|a| *a <= Lsn(408)), "acknowledged past the checkpoint: {acks:?}");

    // The process dies; the store kept the checkpoint and the position 508.
    let state = StoredState {
        views: vec![ViewRecord { relation_id: job.relation_id, def: realtime_t() }],
        jobs: vec![job.clone()],
        origins: vec![crate::store::OriginProgress { origin: origin(), applied: Lsn(508) }],
        ..StoredState::default()
    };
    let mut h = H::load_with(state, cfg);
    h.input(Input::Sync { request: RequestId(1), selector: Selector::All, force: false });
    h.settle_store();
    let prep = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    h.input(Input::Prepared { op: prep, result: Ok(schema()) });
    let (epoch, resume) = h.take(|o| match o {
        Output::Source(SourceAction::Subscribe { epoch, resume, .. }) => Some((*epoch, *resume)),
        _ => None,
    });
    assert_eq!(resume, Some(Lsn(408)), "the feed is asked to replay from the checkpoint");
    let report = SlotReport { slot_id: "s".into(), start: FeedStart::Existing { confirmed_flush: Lsn(408) } };
    h.input(Input::Subscribed { origin: origin(), epoch, result: Ok(report) });
    let (op, after) = h.take(|o| match o {
        Output::Store(StoreAction::Resume { op, after, .. }) => Some((*op, after.clone())),
        _ => None,
    });
    assert_eq!(after, key![2]);
    assert!(!h.out.iter().any(|o| matches!(o, Output::Source(SourceAction::Snapshot { .. }))), "no new copy");
    h.input(Input::Resumed { op, result: Ok(true) });
    let next = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op: o2, chunk: Some(c), .. }) if *o2 == op => Some(c.clone()),
        _ => None,
    });
    assert_eq!(next.after, Some(key![2]));
    // The replay: commit 80 is below the store's position (a duplicate for
    // live views) but after the checkpoint; the last chunk's snapshot lacks it.
    h.feed(StreamEvent::Begin { xid: 80, final_lsn: Lsn(500), commit_time: Timestamp(0) });
    h.feed(StreamEvent::Change(ins(1, "after the checkpoint")));
    h.feed(StreamEvent::Commit { end_lsn: Lsn(508) });
    let p2 = SnapshotPoint { xmin: 75, xmax: 75, xip: vec![], lsn: Lsn(450), rows: 1 };
    let end = crate::source::ChunkEnd::Done;
    h.input(Input::ChunkCopied { op, result: Ok(crate::source::CopiedChunk { point: p2, end }) });
    let published = h.take(|o| match o {
        Output::Store(StoreAction::Publish { job, .. }) => Some(job.clone()),
        _ => None,
    });
    assert!(published.copy.is_none(), "a published copy has nothing left to continue");
    h.input(Input::StoreDone { op, result: Ok(()) });
    let replay = h.applied_batches().into_iter().find(|b| b.progress == Progress::Replay).expect("a replay batch");
    assert_eq!(replay.views[0].ops, vec![RowOp::Insert { key: key![1], row: row![1, "after the checkpoint"] }]);
}

#[test]
fn a_snapshot_that_raced_a_delivered_commit_is_taken_again() {
    let mut h = H::new();
    let def = ViewDef::new("public", "t", Persistence::Realtime, "postgres:main", "public", "t").unwrap();
    h.input(Input::Define { request: RequestId(1), def });
    h.input(Input::Sync { request: RequestId(2), selector: Selector::All, force: false });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    h.input(Input::Prepared { op, result: Ok(schema()) });
    let epoch = h.take(|o| match o {
        Output::Source(SourceAction::Subscribe { epoch, .. }) => Some(*epoch),
        _ => None,
    });
    let report = SlotReport { slot_id: "s".into(), start: FeedStart::Created { consistent_point: Lsn(100) } };
    h.input(Input::Subscribed { origin: origin(), epoch, result: Ok(report) });
    let snap = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
        _ => None,
    });
    // Commit 90 arrives after the hold began and the snapshot reports it in
    // progress: that is the normal case, it is held and replayed.
    h.commit(90, 200, ins(9, "after hold"));
    let point = SnapshotPoint { xmin: 90, xmax: 91, xip: vec![90], lsn: Lsn(150), rows: 0 };
    h.input(Input::Snapshotted { op: snap, result: Ok(point.clone()) });
    h.settle_store();
    let replay = h.applied_batches().into_iter().find(|b| b.progress == Progress::Replay).unwrap();
    assert_eq!(replay.views[0].ops.len(), 1, "held commit 90 is replayed");
    assert_eq!(h.m.stats().snapshot_races, 0);
    h.input(Input::Applied { seq: replay.seq, result: Ok(ApplyReport::default()) });
    assert!(!h.m.pass_in_flight(), "the pass ends once the hand-off batch is applied");

    // Now the racing case: a second view starts its hold after commit 95 was
    // delivered, yet its snapshot calls 95 in progress.
    h.commit(95, 300, ins(10, "delivered before hold"));
    let def = ViewDef::new("public", "u", Persistence::Realtime, "postgres:main", "public", "t").unwrap();
    h.input(Input::Define { request: RequestId(3), def });
    h.input(Input::Sync { request: RequestId(4), selector: Selector::All, force: false });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    h.input(Input::Prepared { op, result: Ok(schema()) });
    let snap = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
        _ => None,
    });
    let raced = SnapshotPoint { xmin: 95, xmax: 96, xip: vec![95], lsn: Lsn(290), rows: 0 };
    h.input(Input::Snapshotted { op: snap, result: Ok(raced) });
    assert_eq!(h.m.stats().snapshot_races, 1, "the race is detected");
    h.take(|o| matches!(o, Output::Store(StoreAction::Discard { op }) if *op == snap).then_some(()));
    h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, .. }) if *op != snap => Some(()),
        _ => None,
    });
}

#[test]
fn acknowledges_only_durable_positions() {
    let mut h = H::new();
    let snap = h.bootstrap();
    h.input(Input::Snapshotted {
        op: snap,
        result: Ok(SnapshotPoint { xmin: 10, xmax: 10, xip: vec![], lsn: Lsn(150), rows: 0 }),
    });
    h.settle_store();
    h.applied_batches();
    h.commit(20, 200, ins(1, "a"));
    let batches = h.applied_batches();
    let seq = batches.last().unwrap().seq;
    assert!(!h.out.iter().any(|o| matches!(o, Output::Source(SourceAction::Ack { .. }))), "no ack before durability");
    h.input(Input::Applied { seq, result: Ok(ApplyReport::default()) });
    assert!(!h.out.iter().any(|o| matches!(o, Output::Source(SourceAction::Ack { .. }))), "applied is not durable");
    h.input(Input::Durable { through: seq });
    let lsn = h.take(|o| match o {
        Output::Source(SourceAction::Ack { lsn, .. }) => Some(*lsn),
        _ => None,
    });
    assert_eq!(lsn, Lsn(208));
    // A keepalive past everything becomes a position too, acked once durable.
    h.feed(StreamEvent::Keepalive { wal_end: Lsn(500), reply_requested: false });
    let ka = h.applied_batches();
    assert_eq!(ka.len(), 1);
    assert!(ka[0].views.is_empty());
    h.input(Input::Durable { through: ka[0].seq });
    assert_eq!(
        h.take(|o| match o {
            Output::Source(SourceAction::Ack { lsn, .. }) => Some(*lsn),
            _ => None,
        }),
        Lsn(500)
    );
    // Duplicates from a replay are skipped.
    h.commit(20, 200, ins(1, "a"));
    assert!(h.applied_batches().is_empty());
    assert_eq!(h.m.stats().duplicates_skipped, 1);
}

#[test]
fn resume_with_a_lost_slot_rebootstraps() {
    let mut h = H::new();
    let snap = h.bootstrap();
    h.input(Input::Snapshotted {
        op: snap,
        result: Ok(SnapshotPoint { xmin: 10, xmax: 10, xip: vec![], lsn: Lsn(150), rows: 0 }),
    });
    h.settle_store();
    h.applied_batches();
    h.commit(20, 200, ins(1, "a"));
    h.input(Input::FeedLost { origin: origin(), epoch: Epoch(1), error: SourceError::connection("cut") });
    assert_eq!(h.m.status(&Selector::All)[0].state, JobState::Failed);
    h.input(Input::Sync { request: RequestId(9), selector: Selector::All, force: true });
    h.settle_store();
    let epoch = h.take(|o| match o {
        Output::Source(SourceAction::Subscribe { epoch, resume, .. }) => {
            assert_eq!(*resume, Some(Lsn(208)));
            Some(*epoch)
        }
        _ => None,
    });
    let report = SlotReport {
        slot_id: "s".into(),
        start: FeedStart::Recreated { consistent_point: Lsn(900), reason: "invalidated".into() },
    };
    h.input(Input::Subscribed { origin: origin(), epoch, result: Ok(report) });
    let st = &h.m.status(&Selector::All)[0];
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("invalidated")), "{st:?}");
    // The view is being copied again.
    h.take(|o| match o {
        Output::Source(SourceAction::Prepare { .. }) => Some(()),
        _ => None,
    });
}

/// A wrong password (or a missing permission, table, replica identity) will
/// not pass by itself: the view and the feed wait at least
/// `retry_permanent` before trying again, status says why, and a forced
/// sync retries at once. A lost connection keeps the short back-off.
#[test]
fn permanent_failures_retry_rarely_unless_forced() {
    let mut h = H::new();
    let def = ViewDef::new("public", "t", Persistence::Realtime, "postgres:main", "public", "t").unwrap();
    h.input(Input::Define { request: RequestId(1), def });
    h.input(Input::Sync { request: RequestId(2), selector: Selector::All, force: false });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    let refused = SourceError::new(
        crate::error::SourceErrorKind::Refused,
        "connecting: FATAL: password authentication failed for user \"app\"",
    );
    h.input(Input::Prepared { op, result: Err(refused.clone()) });
    let job = h.m.status(&Selector::All).remove(0);
    assert_eq!(job.state, JobState::Failed);
    assert!(job.last_error.as_deref().is_some_and(|e| e.contains("password authentication failed")), "{job:?}");
    let wait = job.next_retry_at.expect("a retry time").0 - h.now;
    assert!(wait >= 60_000, "a permanent failure retries after {wait} ms");
    assert!(h.m.poll_timeout().is_some_and(|t| t.0 - h.now >= 60_000));
    // A plain sync does not hammer the server; a forced one tries at once.
    h.out.clear();
    h.input(Input::Sync { request: RequestId(3), selector: Selector::All, force: false });
    h.settle_store();
    assert!(!h.out.iter().any(|o| matches!(o, Output::Source(SourceAction::Prepare { .. }))), "{:#?}", h.out);
    h.input(Input::Sync { request: RequestId(4), selector: Selector::All, force: true });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    // The table is fine now, but the feed's login is refused: the origin
    // backs off for as long.
    h.input(Input::Prepared { op, result: Ok(schema()) });
    let epoch = h.take(|o| match o {
        Output::Source(SourceAction::Subscribe { epoch, .. }) => Some(*epoch),
        _ => None,
    });
    h.input(Input::Subscribed { origin: origin(), epoch, result: Err(refused) });
    let job = h.m.status(&Selector::All).remove(0);
    assert_eq!(job.state, JobState::Failed);
    assert!(job.next_retry_at.expect("a retry time").0 - h.now >= 60_000, "{job:?}");
    assert!(h.m.poll_timeout().is_some_and(|t| t.0 - h.now >= 60_000));

    // A lost connection is transient: seconds, not minutes.
    let mut h = H::new();
    let snap = h.bootstrap();
    let _ = snap;
    h.input(Input::FeedLost { origin: origin(), epoch: Epoch(1), error: SourceError::connection("reset by peer") });
    let t = h.m.poll_timeout().expect("a retry").0 - h.now;
    assert!(t < 60_000, "a lost connection waits {t} ms");
}

/// Deadlines run on the monotonic clock: the wall clock set back an hour
/// neither delays a retry nor (set forward) fires one early; records keep
/// the wall time.
#[test]
fn retries_follow_the_monotonic_clock_whatever_the_wall_clock_does() {
    let wall = Timestamp(1_800_000_000_000);
    let at = |mono: u64, wall_shift: i64| crate::time::Now {
        wall: Timestamp(wall.0.saturating_add_signed(wall_shift)),
        mono: crate::time::Millis(mono),
    };
    let mut m = Machine::new(Config::default(), 1, StoredState::default(), at(0, 0));
    let def = ViewDef::new("public", "t", Persistence::Materialized, "postgres:main", "public", "t").unwrap();
    m.handle(Input::Define { request: RequestId(1), def }, at(0, 0));
    m.handle(Input::Sync { request: RequestId(2), selector: Selector::All, force: false }, at(0, 0));
    let mut prepare = None;
    while let Some(o) = m.poll_output() {
        match o {
            Output::Store(StoreAction::PutView { op, .. })
            | Output::Store(StoreAction::PutJob { op, .. })
            | Output::Store(StoreAction::Fence { op }) => m.handle(Input::StoreDone { op, result: Ok(()) }, at(0, 0)),
            Output::Source(SourceAction::Prepare { op, .. }) => prepare = Some(op),
            _ => {}
        }
    }
    let refused = SourceError::new(crate::error::SourceErrorKind::Refused, "permission denied for table t");
    m.handle(Input::Prepared { op: prepare.expect("a prepare"), result: Err(refused) }, at(10, 0));
    let deadline = m.poll_timeout().expect("a retry");
    assert!(deadline.0 >= 60_000, "{deadline:?}");
    // The wall clock jumps an hour ahead: nothing is due yet.
    m.handle(Input::Timer, at(20, 3_600_000));
    while let Some(o) = m.poll_output() {
        assert!(!matches!(o, Output::Source(SourceAction::Prepare { .. })), "a wall-clock jump fired the retry");
    }
    assert_eq!(m.poll_timeout(), Some(deadline));
    // It jumps back two hours, and the monotonic deadline passes: the retry runs.
    m.handle(Input::Timer, at(deadline.0, -3_600_000));
    let mut retried = false;
    while let Some(o) = m.poll_output() {
        match o {
            Output::Source(SourceAction::Prepare { .. }) => retried = true,
            Output::Store(StoreAction::PutJob { op, .. }) | Output::Store(StoreAction::Fence { op }) => {
                m.handle(Input::StoreDone { op, result: Ok(()) }, at(deadline.0, -3_600_000))
            }
            _ => {}
        }
    }
    assert!(retried, "the retry waits for the wall clock");
    // Records carry wall time (the latest seen: it never goes backwards).
    let job = m.status(&Selector::All).remove(0);
    assert!(job.updated_at.0 >= wall.0, "{job:?}");
}

/// A feed that cannot resume where the copy stopped — its slot was missing
/// and created, re-created (invalidated), or is ahead of the local position —
/// re-copies the view, and its status keeps saying so: stored with the
/// failure, still there once the new copy runs (the success does not clear
/// it), and after a restart.
#[test]
fn a_lost_slot_stays_the_last_recopy_reason_through_the_new_copy_and_a_restart() {
    let starts = [
        (
            FeedStart::Recreated { consistent_point: Lsn(900), reason: "slot s was invalidated (wal_removed)".into() },
            "wal_removed",
        ),
        (FeedStart::Created { consistent_point: Lsn(900) }, "did not exist and was created"),
        (FeedStart::Existing { confirmed_flush: Lsn(900) }, "beyond the local position 0/D0"),
    ];
    for (start, expect) in starts {
        let mut h = H::new();
        h.live();
        h.commit(20, 200, ins(1, "a"));
        h.durable_batches();
        h.input(Input::FeedLost { origin: origin(), epoch: Epoch(1), error: SourceError::connection("cut") });
        assert_eq!(h.status().last_recopy, None, "a lost connection alone copies nothing again");
        h.input(Input::Sync { request: RequestId(9), selector: Selector::All, force: true });
        h.settle_store();
        let epoch = h.take(|o| match o {
            Output::Source(SourceAction::Subscribe { epoch, .. }) => Some(*epoch),
            _ => None,
        });
        h.input(Input::Subscribed { origin: origin(), epoch, result: Ok(SlotReport { slot_id: "s".into(), start }) });
        let decided = Timestamp(h.now);
        let recopy = h.status().last_recopy.expect("the reason is recorded");
        assert!(
            matches!(&recopy.reason, RecopyReason::SlotLost { detail } if detail.contains(expect)),
            "{recopy:?} does not say {expect:?}"
        );
        assert_eq!(recopy.at, decided);
        h.settle_store();
        let id = h.m.relation_id(&realtime_t().name).unwrap();
        assert_eq!(h.stored[&id].last_recopy.as_ref(), Some(&recopy), "stored with the failure");
        assert_eq!(h.stored[&id].state, JobState::Failed);

        // The copy is made again and the view runs: the reason stays, in
        // memory and in the store.
        h.prepared();
        h.snapshotted(950);
        h.durable_batches();
        let st = h.status();
        assert_eq!((st.state, st.last_error.as_deref()), (JobState::Running, None), "{st:?}");
        assert_eq!(st.last_recopy.as_ref(), Some(&recopy));
        assert_eq!(h.stored[&id].state, JobState::Running);
        assert_eq!(h.stored[&id].last_recopy.as_ref(), Some(&recopy));

        // A restart reads it back and keeps it (the view re-attaches).
        let restarted = H::load(h.restart_state(&realtime_t(), Lsn(958)));
        assert_eq!(restarted.status().last_recopy, Some(recopy));
    }
}

#[test]
fn a_schema_change_upstream_is_recorded_as_the_recopy_reason() {
    let mut h = H::new();
    h.live();
    // The source cannot tell how the columns moved: the copy is left as it
    // is, and made again.
    h.feed(StreamEvent::SchemaChanged { rel: SourceRelId(7), detail: "column w was added".into(), columns: None });
    let st = h.status();
    assert_eq!(st.state, JobState::Failed);
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("changed shape")), "{st:?}");
    let recopy = st.last_recopy.expect("the reason is recorded");
    assert_eq!(recopy.reason, RecopyReason::SchemaChanged { detail: "column w was added".into() });
    assert_eq!(recopy.at, Timestamp(h.now));
    h.settle_store();
    assert_eq!(h.stored.values().next().and_then(|j| j.last_recopy.clone()), Some(recopy));
}

/// A restart that finds the relation changed since the copy was made (the
/// view cannot re-attach) records that too, and stores it with the new copy.
#[test]
fn a_relation_changed_across_a_restart_is_recorded_as_the_recopy_reason() {
    let mut h = H::new();
    h.live();
    let mut h = H::load(h.restart_state(&realtime_t(), Lsn(150)));
    h.input(Input::Sync { request: RequestId(1), selector: Selector::All, force: false });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    let mut wider = schema();
    wider.columns.push(crate::schema::Column { name: "w".into(), type_name: "text".into() });
    h.input(Input::Prepared { op, result: Ok(wider) });
    let recopy = h.status().last_recopy.expect("the reason is recorded");
    assert!(
        matches!(&recopy.reason, RecopyReason::SchemaChanged { detail } if detail.contains("public.t")),
        "{recopy:?}"
    );
    let epoch = h.take(|o| match o {
        Output::Source(SourceAction::Subscribe { epoch, .. }) => Some(*epoch),
        _ => None,
    });
    let report = SlotReport { slot_id: "s".into(), start: FeedStart::Existing { confirmed_flush: Lsn(150) } };
    h.input(Input::Subscribed { origin: origin(), epoch, result: Ok(report) });
    h.snapshotted(200);
    let id = h.m.relation_id(&realtime_t().name).unwrap();
    assert_eq!(h.stored[&id].last_recopy.as_ref(), Some(&recopy), "stored with the new copy");
}

/// A restart that finds the relation changed stores the view's job as no
/// longer running before the feed starts: the feed then moves past what
/// the old copy holds, and a job still stored as running would let a later
/// restart — one that finds the relation as the copy knew it again (a
/// column added, then dropped) — attach that copy over every commit it
/// missed (found by the simulator, seed 240016383).
#[test]
fn a_copy_that_cannot_attach_is_stored_as_not_running_before_the_feed_starts() {
    let mut h = H::new();
    h.live();
    let mut h = H::load(h.restart_state(&realtime_t(), Lsn(150)));
    h.input(Input::Sync { request: RequestId(1), selector: Selector::All, force: false });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    h.out.clear();
    let mut wider = schema();
    wider.columns.push(crate::schema::Column { name: "w".into(), type_name: "text".into() });
    h.input(Input::Prepared { op, result: Ok(wider) });
    let demoted = h
        .out
        .iter()
        .position(|o| matches!(o, Output::Store(StoreAction::PutJob { job, .. }) if job.state != JobState::Running));
    let subscribed = h.out.iter().position(|o| matches!(o, Output::Source(SourceAction::Subscribe { .. })));
    assert!(
        matches!((demoted, subscribed), (Some(d), Some(s)) if d < s),
        "the job is stored as not running before the feed starts: {:#?}",
        h.out
    );
    assert_ne!(h.status().state, JobState::Running);
}

/// A restart finds the relation reading the same, but a column under
/// another of the source's numbers: dropped and added again under its name
/// while the engine was down (a migration). The stored copy holds the old
/// column's values, so it does not attach; it is copied again. A copy
/// stored without numbers (before they were recorded) is taken at its
/// names.
#[test]
fn a_copy_attaches_only_to_the_columns_it_was_made_of() {
    let attaches = |stored: Vec<u32>, now: Vec<u32>| {
        let mut h = H::new();
        h.live();
        let mut state = h.restart_state(&realtime_t(), Lsn(150));
        state.schemas[0].1 = schema().with_column_ids(stored);
        let mut h = H::load(state);
        h.input(Input::Sync { request: RequestId(1), selector: Selector::All, force: false });
        h.settle_store();
        let op = h.take(|o| match o {
            Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
            _ => None,
        });
        h.input(Input::Prepared { op, result: Ok(schema().with_column_ids(now)) });
        h.status().state == JobState::Running
    };
    assert!(attaches(vec![1, 2], vec![1, 2]), "the same columns");
    assert!(!attaches(vec![1, 2], vec![1, 3]), "column 2 is another column now");
    assert!(attaches(Vec::new(), vec![1, 3]), "a copy stored without numbers");
}

/// A redefinition drops the checkpoint of a copy under way: its rows were
/// chosen by the old definition, so a restart must copy afresh rather than
/// continue it (found by the simulator, seed 90047109: a filter added to a
/// view whose unfiltered copy was checkpointed; the schema was the same).
#[test]
fn a_redefinition_forgets_the_checkpointed_copy() {
    let cfg = Config { snapshot_chunk_rows: 2, ..Config::default() };
    let mut h = H::load_with(StoredState::default(), cfg);
    let op = h.bootstrap();
    let p1 = SnapshotPoint { xmin: 60, xmax: 60, xip: vec![], lsn: Lsn(350), rows: 2 };
    let end = crate::source::ChunkEnd::After(key![2]);
    h.input(Input::ChunkCopied { op, result: Ok(crate::source::CopiedChunk { point: p1, end }) });
    let job = h.take(|o| match o {
        Output::Store(StoreAction::Amend { op: o2, checkpoint: Some(job), .. }) if *o2 == op => Some(job.clone()),
        _ => None,
    });
    h.input(Input::Amended { op, result: Ok(ApplyReport::default()) });
    assert!(job.copy.is_some(), "checkpointed");
    // What the store holds now (this harness records only `PutJob`s).
    h.stored.insert(job.relation_id, job.clone());

    let filtered = realtime_t().with_filter("id > 1").unwrap();
    h.input(Input::Define { request: RequestId(9), def: filtered });
    h.settle_store();
    assert_eq!(h.stored[&job.relation_id].copy, None, "the reset job keeps no checkpoint of the old definition");
}

/// A redefinition of a copied view re-copies it: recorded with the reset
/// job, kept by the new copy's publish. A forced refresh is asked for, not
/// decided, and records nothing; nor does redefining a view never copied.
#[test]
fn a_redefinition_is_recorded_as_the_recopy_reason() {
    let def = |table: &str| ViewDef::new("public", "m", Persistence::Materialized, "postgres:main", "public", table);
    let mut h = H::new();
    h.input(Input::Define { request: RequestId(1), def: def("t").unwrap() });
    h.input(Input::Define { request: RequestId(2), def: def("t0").unwrap() });
    h.settle_store();
    assert_eq!(h.status().last_recopy, None, "never copied: nothing is copied again");
    let sync = |h: &mut H, request: u64, force: bool| {
        h.input(Input::Sync { request: RequestId(request), selector: Selector::All, force });
        h.settle_store();
        h.prepared();
        h.snapshotted(100 * request);
        assert_eq!(h.status().state, JobState::Synced);
    };
    sync(&mut h, 3, false);
    sync(&mut h, 4, true);
    assert_eq!(h.status().last_recopy, None, "a forced refresh is no re-copy");

    h.input(Input::Define { request: RequestId(5), def: def("t").unwrap() });
    let recopy = h.status().last_recopy.expect("the reason is recorded");
    assert_eq!(recopy, Recopy { reason: RecopyReason::Redefined, at: Timestamp(h.now) });
    h.settle_store();
    let id = h.m.relation_id(&def("t").unwrap().name).unwrap();
    assert_eq!(h.stored[&id].last_recopy.as_ref(), Some(&recopy), "stored with the reset job");
    sync(&mut h, 6, false);
    assert_eq!(h.stored[&id].state, JobState::Synced);
    assert_eq!(h.stored[&id].last_recopy.as_ref(), Some(&recopy), "kept by the new copy's publish");
    assert_eq!(h.status().last_recopy, Some(recopy));
}

#[test]
fn a_conflict_is_recorded_as_the_recopy_reason_with_the_row_that_did_not_fit() {
    let mut h = H::new();
    h.live();
    h.commit(20, 200, ins(1, "a"));
    let seq = h.applied_batches().last().unwrap().seq;
    let id = h.m.relation_id(&realtime_t().name).unwrap();
    let conflict =
        crate::rowops::Conflict { relation_id: id, key: key![1], detail: "insert of a key already held".into() };
    h.input(Input::Applied { seq, result: Ok(ApplyReport { conflicts: vec![conflict], changes: Vec::new() }) });
    let recopy = h.status().last_recopy.expect("the reason is recorded");
    assert!(
        matches!(&recopy.reason, RecopyReason::Diverged { detail } if detail.contains("already held")),
        "{recopy:?}"
    );
}

/// The store's marker of an incomplete copy, found at startup: a large
/// transaction a crash cut short — unless a reason recorded before the
/// restart still waits for its copy (a conflict, say), which is kept.
#[test]
fn a_copy_found_incomplete_at_startup_records_why_once() {
    let mut h = H::new();
    h.live();
    let id = h.m.relation_id(&realtime_t().name).unwrap();
    let mut state = h.restart_state(&realtime_t(), Lsn(150));
    state.dirty = vec![id];
    let mut h = H::load(state.clone());
    let stored = h.take(|o| match o {
        Output::Store(StoreAction::PutJob { job, .. }) => Some(job.clone()),
        _ => None,
    });
    let recopy = stored.last_recopy.expect("stored with the demotion");
    assert!(matches!(recopy.reason, RecopyReason::CutShort { .. }), "{recopy:?}");
    assert_eq!(h.status().last_recopy, Some(recopy));

    let diverged = Recopy { reason: RecopyReason::Diverged { detail: "x".into() }, at: Timestamp(900) };
    for (success, kept) in [(Some(Timestamp(800)), true), (None, true), (Some(Timestamp(950)), false)] {
        let mut state = state.clone();
        state.jobs[0].last_recopy = Some(diverged.clone());
        state.jobs[0].last_success_at = success;
        let recorded = H::load(state).status().last_recopy.unwrap();
        assert_eq!(recorded == diverged, kept, "last success {success:?}: {recorded:?}");
    }
}

/// A transaction cut short after staging parts leaves them in the store;
/// the same transaction sent again with fewer changes routed (a view
/// stopped meanwhile, say) fits one batch, and its commit names the view:
/// it must not claim the first attempt's parts, or they apply twice.
/// Checked on what a real `Staging` hands a store; with the planted bug
/// that keeps the parts, the doubled changes show (the check can fail).
#[test]
fn a_cut_transactions_staged_parts_are_never_claimed_by_a_later_commit() {
    assert_eq!(doubled_changes_after_a_cut(false), 0, "a change applied twice");
    #[cfg(feature = "planted-bugs")]
    assert!(doubled_changes_after_a_cut(true) > 0, "keep_abandoned_parts went unnoticed");
}

/// Plays the scenario above; returns how many inserts hit a key already
/// there.
fn doubled_changes_after_a_cut(keep_abandoned_parts: bool) -> usize {
    #[allow(unused_mut)]
    let mut cfg = Config { max_batch_ops: 2, ..Config::default() };
    #[cfg(feature = "planted-bugs")]
    {
        cfg.bugs = InjectedBugs { keep_abandoned_parts, ..Default::default() };
    }
    #[cfg(not(feature = "planted-bugs"))]
    let _ = keep_abandoned_parts;
    let mut h = H::load_with(StoredState::default(), cfg);
    h.live();
    let mut staging = crate::staging::Staging::default();
    let mut rows = std::collections::BTreeSet::new();
    let mut doubled = 0;
    // Applies the batches out to a stand-in for the view's keys, through a
    // real `Staging`.
    let mut apply = |h: &mut H, rows: &mut std::collections::BTreeSet<i64>| {
        for b in h.applied_batches() {
            let (b, mut claimed) = staging.absorb(b).expect("no spill");
            for v in &b.views {
                let staged: Vec<RowOp> = claimed.take(v.relation_id).flat_map(|ops| ops.expect("decodes")).collect();
                for op in staged.into_iter().chain(v.ops.iter().cloned()) {
                    if let RowOp::Insert { key, .. } = op {
                        if let Some(crate::Value::Int(k)) = key.0.first() {
                            if !rows.insert(*k) {
                                doubled += 1;
                            }
                        }
                    }
                }
            }
            h.input(Input::Applied { seq: b.seq, result: Ok(ApplyReport::default()) });
        }
    };
    h.feed(StreamEvent::Begin { xid: 30, final_lsn: Lsn(300), commit_time: Timestamp(0) });
    for k in 1..=3 {
        h.feed(StreamEvent::Change(ins(k, "big")));
    }
    apply(&mut h, &mut rows);
    assert!(rows.is_empty(), "staged parts are invisible");
    h.input(Input::FeedLost { origin: origin(), epoch: Epoch(1), error: SourceError::connection("cut") });
    h.input(Input::Sync { request: RequestId(9), selector: Selector::All, force: true });
    h.settle_store();
    let epoch = h.take(|o| match o {
        Output::Source(SourceAction::Subscribe { epoch, .. }) => Some(*epoch),
        _ => None,
    });
    let report = SlotReport { slot_id: "s".into(), start: FeedStart::Existing { confirmed_flush: Lsn(100) } };
    h.input(Input::Subscribed { origin: origin(), epoch, result: Ok(report) });
    h.settle_store();
    assert_eq!(h.status().state, JobState::Running, "resumed without a new copy");
    // The transaction again, routed smaller: one change.
    for e in [
        StreamEvent::Begin { xid: 30, final_lsn: Lsn(300), commit_time: Timestamp(0) },
        StreamEvent::Change(ins(1, "big")),
        StreamEvent::Commit { end_lsn: Lsn(308) },
    ] {
        h.input(Input::Feed { origin: origin(), epoch, event: e });
    }
    apply(&mut h, &mut rows);
    assert!(rows.contains(&1), "the commit applied its change");
    doubled
}

/// A forced `sync()` of a live view copies it again while its old copy
/// stays current (DESIGN §10): a transaction committing meanwhile is
/// applied to the old copy at once and held for the new one; the new
/// copy's snapshot then decides whether its hand-off replays it. The job
/// stays running throughout, and the caller is answered once the new copy
/// is live.
#[test]
fn a_forced_recopy_keeps_the_old_copy_current() {
    let mut h = H::load_with(StoredState::default(), Config { snapshot_chunk_rows: 2, ..Config::default() });
    h.live();
    h.input(Input::Sync { request: RequestId(10), selector: Selector::All, force: true });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, chunk: Some(_), .. }) => Some(*op),
        _ => None,
    });
    assert_eq!(h.m.phase(RelationId(1)), Some(ViewPhase::Copying));
    assert!(h.m.mirrors_feed(RelationId(1)));
    // xid 70 commits while the first chunk is copied (its snapshot lacks
    // it), xid 71 before that chunk's snapshot (it holds it).
    h.commit(71, 200, ins(1, "seen by the new copy"));
    h.commit(70, 400, ins(2, "after the new copy's snapshot"));
    let batches = h.applied_batches();
    let applied: Vec<RowOp> = batches.iter().flat_map(|b| b.views.iter().flat_map(|v| v.ops.clone())).collect();
    assert_eq!(
        applied,
        vec![
            RowOp::Insert { key: key![1], row: row![1, "seen by the new copy"] },
            RowOp::Insert { key: key![2], row: row![2, "after the new copy's snapshot"] },
        ],
        "the old copy takes every commit while the new one is made"
    );
    assert_eq!(h.status().state, JobState::Running);
    for b in &batches {
        h.input(Input::Applied { seq: b.seq, result: Ok(ApplyReport::default()) });
    }
    let p = SnapshotPoint { xmin: 70, xmax: 72, xip: vec![70], lsn: Lsn(350), rows: 2 };
    let end = crate::source::ChunkEnd::Done;
    h.input(Input::ChunkCopied { op, result: Ok(crate::source::CopiedChunk { point: p, end }) });
    h.settle_store();
    let batches = h.applied_batches();
    let replay = batches.iter().find(|b| b.progress == Progress::Replay).expect("a hand-off batch");
    assert_eq!(
        replay.views[0].ops,
        vec![RowOp::Insert { key: key![2], row: row![2, "after the new copy's snapshot"] }]
    );
    assert_eq!(h.m.phase(RelationId(1)), Some(ViewPhase::Live));
    for b in &batches {
        h.input(Input::Applied { seq: b.seq, result: Ok(ApplyReport::default()) });
    }
    let answered = h.out.iter().any(
        |o| matches!(o, Output::Reply { request: RequestId(10), reply: Reply::Synced(s) } if s.realtime.len() == 1),
    );
    assert!(answered, "the forced caller hears of the new copy: {:#?}", h.out);
}

/// A forced re-copy whose snapshot fails leaves the view live on its old
/// copy, which still takes the feed; the caller hears of the failure.
#[test]
fn a_failed_forced_recopy_stays_live_on_the_old_copy() {
    let mut h = H::new();
    h.live();
    h.input(Input::Sync { request: RequestId(10), selector: Selector::All, force: true });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
        _ => None,
    });
    let err = SourceError::new(crate::error::SourceErrorKind::Connection, "copy connection lost");
    h.input(Input::Snapshotted { op, result: Err(err) });
    h.settle_store();
    assert_eq!(h.m.phase(RelationId(1)), Some(ViewPhase::Live));
    assert_eq!(h.status().state, JobState::Running);
    let failed = h
        .out
        .iter()
        .any(|o| matches!(o, Output::Reply { request: RequestId(10), reply: Reply::Synced(s) } if s.failed.len() == 1));
    assert!(failed, "the forced caller hears of the failure: {:#?}", h.out);
    h.commit(80, 500, ins(5, "after the failure"));
    let applied: Vec<RowOp> =
        h.applied_batches().iter().flat_map(|b| b.views.iter().flat_map(|v| v.ops.clone())).collect();
    assert_eq!(applied, vec![RowOp::Insert { key: key![5], row: row![5, "after the failure"] }]);
}

/// A forced sync that finds the view just copied, its hand-off batch not
/// yet durable, waits for it, then copies the view again: the caller is
/// never told `realtime` for a copy it asked to have made again.
#[test]
fn a_forced_sync_right_after_a_copy_waits_for_its_hand_off_then_copies_again() {
    let mut h = H::new();
    let snap = h.bootstrap();
    let point = SnapshotPoint { xmin: 10, xmax: 10, xip: vec![], lsn: Lsn(150), rows: 0 };
    h.input(Input::Snapshotted { op: snap, result: Ok(point) });
    h.settle_store();
    let batches = h.applied_batches();
    for b in &batches {
        h.input(Input::Applied { seq: b.seq, result: Ok(ApplyReport::default()) });
    }
    h.input(Input::Sync { request: RequestId(10), selector: Selector::All, force: true });
    h.settle_store();
    let snapshot = |h: &H| h.out.iter().any(|o| matches!(o, Output::Source(SourceAction::Snapshot { .. })));
    let answered = |h: &H| h.out.iter().any(|o| matches!(o, Output::Reply { request: RequestId(10), .. }));
    assert!(!answered(&h) && !snapshot(&h), "the forced sync waits for the hand-off: {:#?}", h.out);
    let last = batches.last().expect("a hand-off batch").seq;
    h.input(Input::Durable { through: last });
    h.settle_store();
    assert!(snapshot(&h), "the view is copied again once its hand-off is durable: {:#?}", h.out);
    assert!(!answered(&h), "the caller waits for the new copy");
    assert!(h.m.mirrors_feed(RelationId(1)), "the old copy stays current meanwhile");
}

/// A forced re-copy cut by a restart after its first chunk: the old copy
/// re-attaches and runs (the restart's sync is answered at once), the new
/// copy continues from its checkpoint, and of the transactions the feed
/// replays from there the old copy takes none again, the new one each it
/// lacks.
#[test]
fn a_forced_recopy_continues_after_a_restart_beside_its_old_copy() {
    let cfg = Config { snapshot_chunk_rows: 2, ..Config::default() };
    let mut h = H::load_with(StoredState::default(), cfg.clone());
    h.live();
    h.input(Input::Sync { request: RequestId(10), selector: Selector::All, force: true });
    h.settle_store();
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, chunk: Some(_), .. }) => Some(*op),
        _ => None,
    });
    h.commit(70, 400, ins(2, "while the first chunk is copied"));
    h.durable_batches();
    let p1 = SnapshotPoint { xmin: 60, xmax: 60, xip: vec![], lsn: Lsn(350), rows: 2 };
    let end = crate::source::ChunkEnd::After(key![2]);
    h.input(Input::ChunkCopied { op, result: Ok(crate::source::CopiedChunk { point: p1, end }) });
    let job = h.take(|o| match o {
        Output::Store(StoreAction::Amend { op: o2, checkpoint: Some(job), .. }) if *o2 == op => Some(job.clone()),
        _ => None,
    });
    assert_eq!(job.state, JobState::Running, "the old copy stays current: its job is stored running");
    assert_eq!(job.copy.as_ref().map(|c| c.through), Some(Lsn(408)));
    h.input(Input::Amended { op, result: Ok(ApplyReport::default()) });
    // The old copy takes a commit after the checkpoint, durably.
    h.commit(80, 500, ins(1, "after the checkpoint"));
    h.durable_batches();

    // The process dies; the store kept the checkpoint and the position 508.
    let id = job.relation_id;
    let state = StoredState {
        views: vec![ViewRecord { relation_id: id, def: realtime_t() }],
        jobs: vec![job],
        origins: vec![crate::store::OriginProgress { origin: origin(), applied: Lsn(508) }],
        schemas: vec![(id, schema())],
        ..StoredState::default()
    };
    let mut h = H::load_with(state, cfg);
    h.input(Input::Sync { request: RequestId(1), selector: Selector::All, force: false });
    h.settle_store();
    h.prepared();
    let (epoch, resume) = h.take(|o| match o {
        Output::Source(SourceAction::Subscribe { epoch, resume, .. }) => Some((*epoch, *resume)),
        _ => None,
    });
    assert_eq!(resume, Some(Lsn(408)), "the feed replays from the checkpoint");
    let report = SlotReport { slot_id: "s".into(), start: FeedStart::Existing { confirmed_flush: Lsn(408) } };
    h.input(Input::Subscribed { origin: origin(), epoch, result: Ok(report) });
    let answered = h.out.iter().any(
        |o| matches!(o, Output::Reply { request: RequestId(1), reply: Reply::Synced(s) } if s.realtime.len() == 1),
    );
    assert!(answered, "the restart's sync is answered once the old copy runs: {:#?}", h.out);
    assert_eq!(h.status().state, JobState::Running);
    assert!(h.m.mirrors_feed(id));
    let (op, after) = h.take(|o| match o {
        Output::Store(StoreAction::Resume { op, after, .. }) => Some((*op, after.clone())),
        _ => None,
    });
    assert_eq!(after, key![2], "the new copy continues where its checkpoint left it");
    h.input(Input::Resumed { op, result: Ok(true) });
    let next = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op: o2, chunk: Some(c), .. }) if *o2 == op => Some(c.clone()),
        _ => None,
    });
    assert_eq!(next.after, Some(key![2]));
    // The replay of xid 80: the old copy has it already.
    h.commit(80, 500, ins(1, "after the checkpoint"));
    h.commit(90, 600, ins(3, "after the restart"));
    let applied: Vec<RowOp> =
        h.applied_batches().iter().flat_map(|b| b.views.iter().flat_map(|v| v.ops.clone())).collect();
    assert_eq!(
        applied,
        vec![RowOp::Insert { key: key![3], row: row![3, "after the restart"] }],
        "the old copy takes only what it lacks"
    );
    // The last chunk's snapshot holds neither: the new copy takes both.
    let p2 = SnapshotPoint { xmin: 75, xmax: 75, xip: vec![], lsn: Lsn(450), rows: 1 };
    let end = crate::source::ChunkEnd::Done;
    h.input(Input::ChunkCopied { op, result: Ok(crate::source::CopiedChunk { point: p2, end }) });
    let published = h.take(|o| match o {
        Output::Store(StoreAction::Publish { job, .. }) => Some(job.clone()),
        _ => None,
    });
    assert!(published.copy.is_none(), "a published copy has nothing left to continue");
    h.input(Input::StoreDone { op, result: Ok(()) });
    let replay = h.applied_batches().into_iter().find(|b| b.progress == Progress::Replay).expect("a replay batch");
    assert_eq!(
        replay.views[0].ops,
        vec![
            RowOp::Insert { key: key![1], row: row![1, "after the checkpoint"] },
            RowOp::Insert { key: key![3], row: row![3, "after the restart"] },
        ]
    );
    assert_eq!(h.m.phase(id), Some(ViewPhase::Live));
}

/// A column added to the table of a live view: the view is copied again
/// with it, while its old copy goes on taking the feed — rows of the new
/// shape read by where its own columns now are — and the job stays
/// running; the new copy, with the new column, then replaces it.
#[test]
fn a_live_copy_follows_a_column_added_until_its_new_copy_replaces_it() {
    use crate::schema::ColumnMatch;
    let mut h = H::new();
    h.live();
    let columns = vec![
        ColumnMatch { name: "id".into(), before: Some(0) },
        ColumnMatch { name: "v".into(), before: Some(1) },
        ColumnMatch { name: "w".into(), before: None },
    ];
    h.feed(StreamEvent::Begin { xid: 80, final_lsn: Lsn(500), commit_time: Timestamp(0) });
    h.feed(StreamEvent::SchemaChanged {
        rel: SourceRelId(7),
        detail: "column w was added".into(),
        columns: Some(columns),
    });
    h.feed(StreamEvent::Change(Change::Insert { rel: SourceRelId(7), new: row![5, "five", "wide"] }));
    h.feed(StreamEvent::Commit { end_lsn: Lsn(508) });
    let applied: Vec<RowOp> =
        h.applied_batches().iter().flat_map(|b| b.views.iter().flat_map(|v| v.ops.clone())).collect();
    assert_eq!(applied, vec![RowOp::Insert { key: key![5], row: row![5, "five"] }], "the old copy takes its columns");
    let st = h.status();
    assert_eq!(st.state, JobState::Running, "{st:?}");
    assert!(matches!(st.last_recopy.map(|r| r.reason), Some(RecopyReason::SchemaChanged { .. })));
    assert!(h.m.mirrors_feed(RelationId(1)));
    // The new copy is made from the relation as it is now.
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    let mut wider = schema();
    wider.columns.push(crate::schema::Column { name: "w".into(), type_name: "text".into() });
    h.input(Input::Prepared { op, result: Ok(wider.clone()) });
    let snap = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
        _ => None,
    });
    h.commit(81, 600, Change::Insert { rel: SourceRelId(7), new: row![6, "six", "wide"] });
    let applied: Vec<RowOp> =
        h.applied_batches().iter().flat_map(|b| b.views.iter().flat_map(|v| v.ops.clone())).collect();
    assert_eq!(applied, vec![RowOp::Insert { key: key![6], row: row![6, "six"] }], "still current while copied");
    let point = SnapshotPoint { xmin: 81, xmax: 81, xip: vec![], lsn: Lsn(550), rows: 1 };
    h.input(Input::Snapshotted { op: snap, result: Ok(point) });
    h.settle_store();
    let batches = h.applied_batches();
    let replay = batches.iter().find(|b| b.progress == Progress::Replay).expect("a hand-off batch");
    assert_eq!(replay.views[0].ops, vec![RowOp::Insert { key: key![6], row: row![6, "six", "wide"] }]);
    assert_eq!(h.m.phase(RelationId(1)), Some(ViewPhase::Live));
    assert_eq!(h.status().state, JobState::Running);
}

/// A column the view does not keep is dropped from the table of a live,
/// projected view, and the column after it moves up: the old copy goes on
/// taking the feed, reading its columns by name where they now are (by
/// place it would read past the end of the row), while the view is copied
/// again in the new shape; the job stays running throughout.
#[test]
fn a_live_copy_follows_a_dropped_column_by_name_until_its_new_copy_replaces_it() {
    use crate::schema::ColumnMatch;
    let column = |name: &str| Column { name: name.into(), type_name: "text".into() };
    let three = RelationSchema::keyed(SourceRelId(7), vec![column("id"), column("v"), column("w")], vec![0]);
    let two = RelationSchema::keyed(SourceRelId(7), vec![column("id"), column("w")], vec![0]);
    let mut h = H::new();
    let mut def = ViewDef::new("public", "t", Persistence::Realtime, "postgres:main", "public", "t").unwrap();
    def.columns = Some(vec!["id".into(), "w".into()]);
    let snap = h.bootstrap_as(def, three);
    let point = SnapshotPoint { xmin: 10, xmax: 10, xip: vec![], lsn: Lsn(150), rows: 0 };
    h.input(Input::Snapshotted { op: snap, result: Ok(point) });
    h.settle_store();
    h.durable_batches();
    assert_eq!(h.status().state, JobState::Running);

    let columns =
        vec![ColumnMatch { name: "id".into(), before: Some(0) }, ColumnMatch { name: "w".into(), before: Some(2) }];
    h.feed(StreamEvent::Begin { xid: 80, final_lsn: Lsn(500), commit_time: Timestamp(0) });
    h.feed(StreamEvent::SchemaChanged {
        rel: SourceRelId(7),
        detail: "column v was dropped".into(),
        columns: Some(columns),
    });
    h.feed(StreamEvent::Change(Change::Insert { rel: SourceRelId(7), new: row![5, "wide"] }));
    h.feed(StreamEvent::Commit { end_lsn: Lsn(508) });
    let applied: Vec<RowOp> =
        h.applied_batches().iter().flat_map(|b| b.views.iter().flat_map(|v| v.ops.clone())).collect();
    assert_eq!(applied, vec![RowOp::Insert { key: key![5], row: row![5, "wide"] }], "w read where it now is");
    let st = h.status();
    assert_eq!(st.state, JobState::Running, "{st:?}");
    assert!(matches!(st.last_recopy.map(|r| r.reason), Some(RecopyReason::SchemaChanged { .. })));
    let op = h.take(|o| match o {
        Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
        _ => None,
    });
    h.input(Input::Prepared { op, result: Ok(two) });
    let snap = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
        _ => None,
    });
    h.commit(81, 600, Change::Insert { rel: SourceRelId(7), new: row![6, "six"] });
    let applied: Vec<RowOp> =
        h.applied_batches().iter().flat_map(|b| b.views.iter().flat_map(|v| v.ops.clone())).collect();
    assert_eq!(applied, vec![RowOp::Insert { key: key![6], row: row![6, "six"] }], "still current while copied");
    let point = SnapshotPoint { xmin: 81, xmax: 81, xip: vec![], lsn: Lsn(550), rows: 1 };
    h.input(Input::Snapshotted { op: snap, result: Ok(point) });
    h.settle_store();
    let batches = h.applied_batches();
    let replay = batches.iter().find(|b| b.progress == Progress::Replay).expect("a hand-off batch");
    assert_eq!(replay.views[0].ops, vec![RowOp::Insert { key: key![6], row: row![6, "six"] }]);
    assert_eq!(h.m.phase(RelationId(1)), Some(ViewPhase::Live));
    assert_eq!(h.status().state, JobState::Running);
}

/// A store applies a view's staged parts with the commit that names it,
/// whichever copy is published by then: a re-copy that is whole while a
/// large transaction has parts staged for the old copy is published only
/// after that transaction's commit, which gives the parts to the old copy.
#[test]
fn a_recopy_waits_for_a_transaction_with_parts_staged_for_the_old_copy() {
    let mut h = H::load_with(StoredState::default(), Config { max_batch_ops: 2, ..Config::default() });
    h.live();
    h.input(Input::Sync { request: RequestId(10), selector: Selector::All, force: true });
    h.settle_store();
    let snap = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
        _ => None,
    });
    h.feed(StreamEvent::Begin { xid: 90, final_lsn: Lsn(700), commit_time: Timestamp(0) });
    for k in 1..=3 {
        h.feed(StreamEvent::Change(ins(k, "big")));
    }
    let staged = h.applied_batches();
    assert!(staged.iter().any(|b| matches!(b.progress, Progress::Stage { .. })), "a part staged: {staged:?}");
    let point = SnapshotPoint { xmin: 90, xmax: 91, xip: vec![90], lsn: Lsn(650), rows: 0 };
    h.input(Input::Snapshotted { op: snap, result: Ok(point) });
    h.settle_store();
    assert!(
        !h.out.iter().any(|o| matches!(o, Output::Store(StoreAction::Publish { .. }))),
        "published while parts for the old copy were staged"
    );
    assert_eq!(h.m.phase(RelationId(1)), Some(ViewPhase::Copying));
    h.feed(StreamEvent::Commit { end_lsn: Lsn(708) });
    let i = h.out.iter().position(
        |o| matches!(o, Output::Store(StoreAction::Apply(b)) if matches!(b.progress, Progress::Commit { .. })),
    );
    let j = h.out.iter().position(|o| matches!(o, Output::Store(StoreAction::Publish { .. })));
    assert!(matches!((i, j), (Some(i), Some(j)) if i < j), "the commit goes to the old copy first: {:#?}", h.out);
}

/// A re-copy waiting for the end of a large transaction (parts of it
/// staged for the old copy) holds what that transaction brings for the new
/// copy: past the hold-back limit that must not pause the feed, or the
/// commit it waits for would never come.
#[test]
fn a_recopy_waiting_for_a_commit_never_pauses_the_feed() {
    let cfg = Config { max_batch_ops: 2, holdback_limit_bytes: 2_000, ..Config::default() };
    let mut h = H::load_with(StoredState::default(), cfg);
    h.live();
    h.input(Input::Sync { request: RequestId(10), selector: Selector::All, force: true });
    h.settle_store();
    let snap = h.take(|o| match o {
        Output::Source(SourceAction::Snapshot { op, .. }) => Some(*op),
        _ => None,
    });
    h.feed(StreamEvent::Begin { xid: 90, final_lsn: Lsn(700), commit_time: Timestamp(0) });
    h.feed(StreamEvent::Change(ins(1, "big")));
    h.feed(StreamEvent::Change(ins(2, "big")));
    let point = SnapshotPoint { xmin: 90, xmax: 91, xip: vec![90], lsn: Lsn(650), rows: 0 };
    h.input(Input::Snapshotted { op: snap, result: Ok(point) });
    h.settle_store();
    let paused = |h: &H| {
        h.out.iter().rev().find_map(|o| match o {
            Output::Source(SourceAction::Flow { paused, .. }) => Some(*paused),
            _ => None,
        })
    };
    let big = "x".repeat(200);
    for k in 3..40 {
        h.feed(StreamEvent::Change(ins(k, &big)));
    }
    assert_ne!(paused(&h), Some(true), "the feed paused while the copy waits for this transaction's commit");
    h.feed(StreamEvent::Commit { end_lsn: Lsn(708) });
    assert!(
        h.out.iter().any(|o| matches!(o, Output::Store(StoreAction::Publish { .. }))),
        "published after the commit"
    );
}
