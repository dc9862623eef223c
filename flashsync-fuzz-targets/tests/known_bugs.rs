//! Minimal reproductions of bugs the fuzzers found in code this crate does
//! not own, kept as regression tests. A new finding goes in `#[ignore]`d
//! with the bug's summary until its owner fixes it (run those with
//! `cargo test -p flashsync-fuzz-targets --test known_bugs -- --ignored`);
//! then the `#[ignore]` comes off, as it has for every test here (all fixed
//! in flashsync-core by "Machine: results of the wrong kind, repeats and
//! failures leave no residue").

use flashsync_core::{
    Column, Config, FeedStart, Input, Machine, OpId, Output, Persistence, RelationSchema, RequestId, Selector,
    SlotReport, SourceAction, SourceError, SourceErrorKind, SourceRelId, StoreAction, StoreError, StoreErrorKind,
    StoredState, Timestamp, ViewDef,
};

/// Plays a driver that answers every store action but `Publish` with
/// success; returns the outputs it did not answer.
fn settle(m: &mut Machine, now: u64) -> Vec<Output> {
    let mut rest = Vec::new();
    let mut queue: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    while let Some(o) = queue.pop() {
        match o {
            Output::Store(
                StoreAction::PutView { op, .. } | StoreAction::PutJob { op, .. } | StoreAction::Fence { op },
            ) => {
                m.handle(Input::StoreDone { op, result: Ok(()) }, Timestamp(now));
                queue.extend(std::iter::from_fn(|| m.poll_output()));
            }
            other => rest.push(other),
        }
    }
    rest
}

fn schema() -> RelationSchema {
    let columns = ["id", "v"].map(|n| Column { name: n.into(), type_name: "int8".into() }).to_vec();
    RelationSchema::keyed(SourceRelId(7), columns, vec![0])
}

/// A materialized view whose `prepare` was answered: returns the machine and
/// the snapshot op now in flight.
fn copying() -> (Machine, OpId) {
    let mut m = Machine::new(Config::default(), 1, StoredState::default(), Timestamp(1000));
    let def = ViewDef::new("public", "v", Persistence::Materialized, "pg:main", "public", "t").expect("valid def");
    m.handle(Input::Define { request: RequestId(1), def }, Timestamp(1000));
    m.handle(Input::Sync { request: RequestId(2), selector: Selector::All, force: false }, Timestamp(1000));
    let rest = settle(&mut m, 1000);
    let prepare = rest
        .iter()
        .find_map(|o| match o {
            Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
            _ => None,
        })
        .expect("a prepare");
    m.handle(Input::Prepared { op: prepare, result: Ok(schema()) }, Timestamp(1000));
    let snapshot = std::iter::from_fn(|| m.poll_output())
        .find_map(|o| match o {
            Output::Source(SourceAction::Snapshot { op, .. }) => Some(op),
            _ => None,
        })
        .expect("a snapshot");
    (m, snapshot)
}

/// flashsync-core `machine/mod.rs` `cancel_work` re-tags the op of a view in
/// `Copying` as `Op::AbandonedSnapshot` (and of a view in `Publishing` as
/// `Op::AbandonedPublish`) even when that op's result is the very input being
/// handled: `on_snapshotted` (`machine/work.rs`) removes the op, then on an
/// error calls `fail_view` → `cancel_work`, which inserts it again. Nothing
/// ever answers it, so `Machine::is_quiescent()` is false forever after any
/// failed snapshot (and likewise after a failed publish, via
/// `on_published` → `fail_view`). Fix: in `cancel_work`, re-tag the op only
/// if it is still in `self.ops` (`if self.ops.contains_key(op)`).
#[test]
fn a_failed_snapshot_leaves_the_machine_at_rest() {
    let (mut m, snapshot) = copying();
    let error = SourceError::new(SourceErrorKind::Connection, "connection reset");
    m.handle(Input::Snapshotted { op: snapshot, result: Err(error) }, Timestamp(1000));
    let _ = settle(&mut m, 1000);
    assert!(!m.pass_in_flight(), "the pass ends with the view failed");
    assert!(m.is_quiescent(), "nothing is in flight any more, yet the machine is not quiescent");
}

/// As above, for a publish that fails.
#[test]
fn a_failed_publish_leaves_the_machine_at_rest() {
    let (mut m, snapshot) = copying();
    let point = flashsync_core::SnapshotPoint { xmin: 1, xmax: 1, xip: vec![], lsn: flashsync_core::Lsn(1), rows: 0 };
    m.handle(Input::Snapshotted { op: snapshot, result: Ok(point) }, Timestamp(1000));
    let publish = std::iter::from_fn(|| m.poll_output())
        .find_map(|o| match o {
            Output::Store(StoreAction::Publish { op, .. }) => Some(op),
            _ => None,
        })
        .expect("a publish");
    let error = StoreError::new(StoreErrorKind::Io, "publish", "disk full");
    m.handle(Input::StoreDone { op: publish, result: Err(error) }, Timestamp(1000));
    let _ = settle(&mut m, 1000);
    assert!(!m.pass_in_flight(), "the pass ends with the view failed");
    assert!(m.is_quiescent(), "nothing is in flight any more, yet the machine is not quiescent");
}

/// flashsync-core `machine/work.rs` `on_snapshotted` removes whatever op the
/// id names (`self.ops.remove(&op)`) before checking its kind. The snapshot's
/// op id is reused for the `Publish` that follows, so a `Snapshotted` that
/// arrives twice (a driver retrying a reply, or a stray result) deletes the
/// pending `Op::Publish`: the publish's `StoreDone` is then ignored, the view
/// stays in `publishing` forever, and so does the pass — every later `sync()`
/// queues behind it and never returns. `on_prepared`, `on_store_done` and
/// `on_released` remove ops of any kind the same way (e.g. a `Prepared` with
/// the id of a pass's `Fence` wedges that pass). Fix: look the op up with
/// `self.ops.get(&op)` and remove it only when its kind is the one the input
/// answers; otherwise ignore the input.
#[test]
fn a_repeated_snapshot_result_does_not_wedge_the_pass() {
    let (mut m, snapshot) = copying();
    let point = flashsync_core::SnapshotPoint { xmin: 1, xmax: 1, xip: vec![], lsn: flashsync_core::Lsn(1), rows: 0 };
    m.handle(Input::Snapshotted { op: snapshot, result: Ok(point.clone()) }, Timestamp(1000));
    let publish = std::iter::from_fn(|| m.poll_output())
        .find_map(|o| match o {
            Output::Store(StoreAction::Publish { op, .. }) => Some(op),
            _ => None,
        })
        .expect("a publish");
    // The same result again (ignored, one would expect)...
    m.handle(Input::Snapshotted { op: snapshot, result: Ok(point) }, Timestamp(1000));
    // ...then the publish completes.
    m.handle(Input::StoreDone { op: publish, result: Ok(()) }, Timestamp(1000));
    let replies: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(
        replies.iter().any(|o| matches!(o, Output::Reply { request: RequestId(2), .. })),
        "the sync request is never answered: {replies:?}"
    );
}

/// flashsync-core `machine/feed.rs` `on_subscribed`: a repeated `Subscribed`
/// for the epoch that is already up takes the "subscription nobody wants"
/// branch (`o.feed != Feed::Subscribing(epoch)`) and emits `Unsubscribe` for
/// the *live* feed, while the machine keeps believing the feed is up. A
/// driver that obeys closes the feed; no `FeedLost` follows, so realtime
/// views silently stop receiving changes. Fix: ignore a result for the epoch
/// that is already `Feed::Up(epoch)`.
#[test]
fn a_repeated_subscription_result_keeps_the_feed() {
    let mut m = Machine::new(Config::default(), 1, StoredState::default(), Timestamp(1000));
    let def = ViewDef::new("public", "v", Persistence::Realtime, "pg:main", "public", "t").expect("valid def");
    m.handle(Input::Define { request: RequestId(1), def }, Timestamp(1000));
    m.handle(Input::Sync { request: RequestId(2), selector: Selector::All, force: false }, Timestamp(1000));
    let rest = settle(&mut m, 1000);
    let prepare = rest
        .iter()
        .find_map(|o| match o {
            Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
            _ => None,
        })
        .expect("a prepare");
    m.handle(Input::Prepared { op: prepare, result: Ok(schema()) }, Timestamp(1000));
    let (origin, epoch) = std::iter::from_fn(|| m.poll_output())
        .find_map(|o| match o {
            Output::Source(SourceAction::Subscribe { origin, epoch, .. }) => Some((origin, epoch)),
            _ => None,
        })
        .expect("a subscribe");
    let report =
        SlotReport { slot_id: "s".into(), start: FeedStart::Created { consistent_point: flashsync_core::Lsn(5) } };
    m.handle(Input::Subscribed { origin: origin.clone(), epoch, result: Ok(report.clone()) }, Timestamp(1000));
    let _ = settle(&mut m, 1000);
    m.handle(Input::Subscribed { origin, epoch, result: Ok(report) }, Timestamp(1000));
    let outs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Source(SourceAction::Unsubscribe { epoch: e, .. }) if *e == epoch)),
        "the live feed was unsubscribed: {outs:?}"
    );
}

/// flashsync-core `selector.rs`: `quote()` quotes a part only when it holds
/// `.`, `,`, `"` or a space, but `FromStr` trims Unicode whitespace off the
/// whole text (`text.trim()`) and off the end of every bare part
/// (`trim_end()`). A pattern that starts or ends with another whitespace
/// character is displayed bare and loses it when parsed again: `a.b,\x0cc.d`
/// parses to namespaces `a` and `\x0cc`, displays as `\x0cc.d,a.b`, and that
/// parses to namespaces `a` and `c`. (Found by `selector_parse`; the input is
/// `fuzz/regressions/selector_parse/display-unquoted-leading-whitespace`.)
/// Fix: in `quote()`, also quote a part that starts or ends with whitespace
/// (`part.starts_with(char::is_whitespace) || part.ends_with(char::is_whitespace)`).
#[test]
fn selector_display_round_trips_edge_whitespace() {
    for text in ["a.b,\u{c}c.d", "\"\ta\".b", "\"a\u{a0}\".b", "a.\"b\t\""] {
        let sel: Selector = text.parse().expect("parses");
        let shown = sel.to_string();
        assert_eq!(shown.parse::<Selector>().as_ref(), Ok(&sel), "{text:?} → {sel:?} → {shown:?}");
    }
}

/// flashsync-core `machine/feed.rs` `on_commit`: the early return for a
/// transaction at or below the applied position (a duplicate, as replayed
/// after every reconnect) skips the `try_start_snapshots()` that ends the
/// normal path. A realtime view that is `queued` because a transaction was
/// open when its turn came (snapshots of realtime views start only between
/// transactions) then stays queued — and its `sync()` unanswered — until some
/// later commit or keepalive arrives (with Postgres, up to
/// `wal_sender_timeout / 2` on an idle server; never, with a source that only
/// sends keepalives on request). Found by `core_machine`. Fix: call
/// `self.try_start_snapshots()` before that `return` (or whenever a
/// transaction closes).
#[test]
fn a_duplicate_commit_lets_queued_bootstraps_start() {
    let config = Config { max_concurrent_snapshots: 1, ..Config::default() };
    let mut m = Machine::new(config, 1, StoredState::default(), Timestamp(1000));
    for (name, table) in [("a", "t1"), ("b", "t2")] {
        let def = ViewDef::new("public", name, Persistence::Realtime, "pg:main", "public", table).expect("valid def");
        m.handle(Input::Define { request: RequestId(1), def }, Timestamp(1000));
    }
    m.handle(Input::Sync { request: RequestId(2), selector: Selector::All, force: false }, Timestamp(1000));
    let rest = settle(&mut m, 1000);
    let prepares: Vec<OpId> = rest
        .iter()
        .filter_map(|o| match o {
            Output::Source(SourceAction::Prepare { op, .. }) => Some(*op),
            _ => None,
        })
        .collect();
    assert_eq!(prepares.len(), 2);
    let mut outs = Vec::new();
    for (i, op) in prepares.into_iter().enumerate() {
        let mut s = schema();
        s.source_id = SourceRelId(7 + i as u64);
        m.handle(Input::Prepared { op, result: Ok(s) }, Timestamp(1000));
        outs.extend(std::iter::from_fn(|| m.poll_output()));
    }
    let (origin, epoch) = outs
        .iter()
        .find_map(|o| match o {
            Output::Source(SourceAction::Subscribe { origin, epoch, .. }) => Some((origin.clone(), *epoch)),
            _ => None,
        })
        .expect("a subscribe");
    // The slot was created at 0/100: everything before it is already applied.
    let start = FeedStart::Created { consistent_point: flashsync_core::Lsn(100) };
    let report = SlotReport { slot_id: "s".into(), start };
    m.handle(Input::Subscribed { origin: origin.clone(), epoch, result: Ok(report) }, Timestamp(1000));
    let first = std::iter::from_fn(|| m.poll_output())
        .find_map(|o| match o {
            Output::Source(SourceAction::Snapshot { op, .. }) => Some(op),
            _ => None,
        })
        .expect("the first view's snapshot (one at a time)");
    // A replayed transaction (ending before 0/100) is open when the first
    // snapshot lands, so the second view cannot start then...
    let feed = |m: &mut Machine, event| m.handle(Input::Feed { origin: origin.clone(), epoch, event }, Timestamp(1000));
    feed(
        &mut m,
        flashsync_core::StreamEvent::Begin { xid: 5, final_lsn: flashsync_core::Lsn(50), commit_time: Timestamp(0) },
    );
    let point = flashsync_core::SnapshotPoint { xmin: 9, xmax: 9, xip: vec![], lsn: flashsync_core::Lsn(100), rows: 0 };
    m.handle(Input::Snapshotted { op: first, result: Ok(point) }, Timestamp(1000));
    let _: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    // ...but once it commits, the transaction boundary is there.
    feed(&mut m, flashsync_core::StreamEvent::Commit { end_lsn: flashsync_core::Lsn(60) });
    let outs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(
        outs.iter().any(|o| matches!(o, Output::Source(SourceAction::Snapshot { .. }))),
        "the queued view's snapshot does not start after the duplicate transaction closed: {outs:?}"
    );
}

/// flashsync-core `machine/work.rs`: `on_snapshotted` stores a realtime
/// view's job with the publish as `idle` when it is `running` ("stored as
/// running only once the hand-off completes"), and `on_published` then puts
/// that stored form into memory (`v.job = Some(job)`) before `update_job`
/// sets the new state. A realtime view loaded `running` that is not
/// attachable (no stored schema, dirty, or no stored origin position) so
/// bootstraps, reports `StateChanged { from: idle, to: running }` although
/// it was never reported `idle`: the event stream contradicts itself (and
/// `status()` says `running` throughout). Found by `core_machine` (its
/// continuity check: every change starts where the last one left off).
/// Fix: in `on_published`, keep the in-memory state when adopting the
/// published job (`job.state = current.state` before `v.job = Some(job)`).
#[test]
fn a_published_realtime_copy_reports_its_true_previous_state() {
    use flashsync_core::{EventKind, JobRecord, JobState, OriginProgress, RelationId, ViewRecord};
    let def = ViewDef::new("public", "v", Persistence::Realtime, "pg:main", "public", "t").expect("valid def");
    let id = RelationId(1);
    let mut job = JobRecord::new(id, &def.name, def.persistence, Timestamp(0));
    job.state = JobState::Running;
    let origin = def.origin.clone();
    // Stored running, but without a stored schema: it must copy again.
    let state = StoredState {
        views: vec![ViewRecord { relation_id: id, def }],
        jobs: vec![job],
        origins: vec![OriginProgress { origin, applied: flashsync_core::Lsn(50) }],
        ..StoredState::default()
    };
    let mut m = Machine::new(Config::default(), 1, state, Timestamp(1000));
    // It cannot resume (no stored copy), so loading reports it idle...
    let loaded = m.status(&Selector::All)[0].state;
    assert_eq!(loaded, JobState::Idle, "a running job that cannot resume is idle once loaded");
    m.handle(Input::Sync { request: RequestId(1), selector: Selector::All, force: false }, Timestamp(1000));
    let mut events = Vec::new();
    let mut queue: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    let mut steps = 0;
    while let Some(o) = queue.pop() {
        steps += 1;
        assert!(steps < 100, "no rest");
        let input = match o {
            Output::Store(
                StoreAction::PutView { op, .. }
                | StoreAction::PutJob { op, .. }
                | StoreAction::Fence { op }
                | StoreAction::Publish { op, .. },
            ) => Input::StoreDone { op, result: Ok(()) },
            Output::Store(StoreAction::Apply(b)) => {
                Input::Applied { seq: b.seq, result: Ok(flashsync_core::ApplyReport::default()) }
            }
            Output::Source(SourceAction::Prepare { op, .. }) => Input::Prepared { op, result: Ok(schema()) },
            Output::Source(SourceAction::Subscribe { origin, epoch, .. }) => {
                let start = FeedStart::Existing { confirmed_flush: flashsync_core::Lsn(50) };
                Input::Subscribed { origin, epoch, result: Ok(SlotReport { slot_id: "s".into(), start }) }
            }
            Output::Source(SourceAction::Snapshot { op, .. }) => {
                let point = flashsync_core::SnapshotPoint {
                    xmin: 9,
                    xmax: 9,
                    xip: vec![],
                    lsn: flashsync_core::Lsn(50),
                    rows: 0,
                };
                Input::Snapshotted { op, result: Ok(point) }
            }
            Output::Event(e) => {
                events.push(e);
                continue;
            }
            _ => continue,
        };
        m.handle(input, Timestamp(1000));
        queue.extend(std::iter::from_fn(|| m.poll_output()));
    }
    let changes: Vec<(JobState, JobState)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StateChanged { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    // ...and every change it reports starts where the last one left off.
    let mut at = loaded;
    for (from, to) in &changes {
        assert_eq!(*from, at, "a change from {from} reported while the view was {at}: {changes:?}");
        at = *to;
    }
    assert_eq!(at, JobState::Running, "it ends running: {changes:?}");
}
