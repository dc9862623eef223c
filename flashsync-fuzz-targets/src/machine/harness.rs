//! The `Harness` that plays the driver: what it tracks, how it is built from
//! a `Setup`, and how it feeds one input and drains its outputs.

use std::collections::{BTreeMap, BTreeSet};

use flashsync_core::invariants::{Acks, AppliedOrder, StateChanges};
use flashsync_core::machine::Epoch;
use flashsync_core::{
    BatchSeq, Config, Input, JobRecord, JobState, Lsn, Machine, Millis, OpId, OriginId, OriginProgress, Persistence,
    RelationId, RequestId, Selector, StoredState, StreamEvent, Timestamp, UpstreamRelation, ViewDef, ViewRecord,
};

use super::inputs::{EpochPick, LsnPick, SeqPick, Setup, XidPick};
use super::interpret::{origin_id, shape, view_name};
use super::{trace, MAX_OUTPUTS, TABLES};

// ----- the harness -------------------------------------------------------------

/// What an emitted operation was, so a result of the right kind can be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A store action answered with `StoreDone`.
    Store,
    Prepare(usize),
    Snapshot,
    Release,
}

/// Something in flight that the driver owes the machine an answer for.
#[derive(Clone, Debug)]
pub(super) enum Pending {
    Op(OpId, Kind),
    Apply(BatchSeq, Vec<RelationId>),
    Subscribe(OriginId, Epoch),
}

/// The machine's feed of one origin, as the driver sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum FeedMirror {
    #[default]
    Down,
    Subscribing(Epoch),
    Up(Epoch, bool),
}

/// Plays the driver and checks the machine (see the [module docs](super)).
pub(super) struct Harness {
    pub(super) m: Machine,
    pub(super) now: u64,
    pub(super) max_snapshots: usize,
    pub(super) pending: Vec<Pending>,
    /// Every op id emitted, with its kind.
    pub(super) emitted: BTreeMap<OpId, Kind>,
    /// Every `Apply` batch emitted.
    pub(super) batches: Vec<BatchSeq>,
    /// The highest batch reported durable so far.
    pub(super) durable: Option<BatchSeq>,
    /// The shared ack rule: commit batches, what is durable, acks per feed.
    pub(super) acks: Acks,
    /// Epochs of every `Subscribe` emitted, per origin, in order.
    pub(super) epochs: BTreeMap<OriginId, Vec<Epoch>>,
    /// Epochs already answered.
    pub(super) answered_epochs: BTreeSet<(OriginId, Epoch)>,
    pub(super) feeds: BTreeMap<OriginId, FeedMirror>,
    pub(super) open_fence: Option<OpId>,
    /// Job state per view, as events reported it (the shared rule).
    pub(super) states: StateChanges,
    /// Per view, commits applied since its copy was last published (the
    /// shared rule).
    pub(super) applied: AppliedOrder,
    next_request: u64,
    pub(super) requests: BTreeMap<RequestId, u32>,
    pub(super) shut_down: bool,
    pub(super) wal: u64,
    pub(super) next_xid: u64,
    /// Milestones reached (see [`milestones`](super::milestones)).
    pub(super) seen: BTreeSet<&'static str>,
}

impl Harness {
    /// A machine over the stored state `setup` describes.
    pub(super) fn new(setup: &Setup) -> Harness {
        let cfg = Config {
            retry_base: Millis(u64::from(setup.retry_base) + 1),
            retry_max: Millis(u64::from(setup.retry_max) + 1),
            retry_permanent: Millis(u64::from(setup.retry_max) * 4 + 1),
            max_concurrent_snapshots: usize::from(setup.max_snapshots % 4) + 1,
            holdback_limit_bytes: usize::from(setup.holdback) * 4,
            max_batch_ops: usize::from(setup.batch_ops % 5),
            recent_commits: usize::from(setup.recent % 16),
            max_snapshot_races: u32::from(setup.races % 4),
            // Copies in one piece: the simulator covers copies in chunks.
            snapshot_chunk_rows: 0,
            audit: true,
            ..Config::default()
        };
        let max_snapshots = cfg.max_concurrent_snapshots;
        let now = 1_000_000;
        let wal: u64 = 100_000;
        let mut state = StoredState::default();
        let mut states = StateChanges::default();
        let (mut ids, mut names) = (BTreeSet::new(), BTreeSet::new());
        for v in &setup.stored {
            let id = RelationId(u64::from(v.id % 16) + 1);
            let name = view_name(v.ns, v.name);
            if !ids.insert(id) || !names.insert(name.clone()) {
                continue;
            }
            let persistence = if v.realtime { Persistence::Realtime } else { Persistence::Materialized };
            let table = usize::from(v.table) % TABLES.len();
            let (schema, tname) = TABLES[table];
            let def = ViewDef {
                name: name.clone(),
                persistence,
                origin: origin_id(v.origin),
                upstream: UpstreamRelation { schema: schema.into(), table: tname.into() },
                filter: None,
                columns: None,
            };
            state.views.push(ViewRecord { relation_id: id, def });
            if let Some(j) = &v.job {
                let mut job = JobRecord::new(id, &name, persistence, Timestamp(now - 1000));
                job.state = match j.state % 3 {
                    0 => JobState::Idle,
                    1 => JobState::Failed,
                    _ => JobState::success(persistence),
                };
                job.enabled = j.enabled;
                job.retry_count = u32::from(j.retry_count);
                job.next_retry_at = j.next_retry.map(|t| Timestamp(now - 500 + u64::from(t)));
                job.last_seen_commit = j.last_seen.map(|l| Lsn(wal.saturating_sub(u64::from(l))));
                states.start(id, job.state);
                state.jobs.push(job);
            }
            if let Some(s) = &v.schema {
                state.schemas.push((id, shape(s, table)));
            }
            if v.dirty {
                state.dirty.push(id);
            }
        }
        let mut acks = Acks::default();
        let mut seen = BTreeSet::new();
        for (o, back) in &setup.progress {
            let origin = origin_id(*o);
            if !seen.insert(origin.clone()) {
                continue;
            }
            let applied = Lsn(wal.saturating_sub(u64::from(*back)));
            acks.durable_at(&origin, applied);
            state.origins.push(OriginProgress { origin, applied });
        }
        let m = Machine::new(cfg, setup.seed, state, Timestamp(now));
        // Loading may correct a stored state (a running job that cannot
        // resume is idle): track what the machine reports, not what was stored.
        for st in m.status(&Selector::All) {
            states.start(st.relation_id, st.state);
        }
        Harness {
            m,
            now,
            max_snapshots,
            pending: Vec::new(),
            emitted: BTreeMap::new(),
            batches: Vec::new(),
            durable: None,
            acks,
            epochs: BTreeMap::new(),
            answered_epochs: BTreeSet::new(),
            feeds: BTreeMap::new(),
            open_fence: None,
            states,
            applied: AppliedOrder::default(),
            next_request: 1,
            requests: BTreeMap::new(),
            shut_down: false,
            wal,
            next_xid: (1u64 << 32) - 300 + u64::from(setup.xid_offset % 600),
            seen: BTreeSet::new(),
        }
    }

    pub(super) fn lsn(&self, pick: LsnPick) -> Lsn {
        match pick {
            LsnPick::Current => Lsn(self.wal),
            LsnPick::Back(d) => Lsn(self.wal.saturating_sub(u64::from(d))),
            LsnPick::Ahead(d) => Lsn(self.wal.saturating_add(u64::from(d))),
            LsnPick::Raw(l) => Lsn(l),
        }
    }

    pub(super) fn xid(&mut self, pick: XidPick) -> u32 {
        match pick {
            XidPick::Next => {
                let x = self.next_xid;
                self.next_xid += 1;
                x as u32
            }
            XidPick::Recent(k) => self.next_xid.saturating_sub(u64::from(k) + 1) as u32,
            XidPick::Raw(x) => x,
        }
    }

    pub(super) fn epoch(&self, origin: &OriginId, pick: EpochPick) -> Epoch {
        let list = self.epochs.get(origin).map(Vec::as_slice).unwrap_or_default();
        match pick {
            EpochPick::Latest => list.last().copied().unwrap_or(Epoch(1)),
            EpochPick::Older(k) => {
                list.len().checked_sub(usize::from(k) + 1).and_then(|i| list.get(i)).copied().unwrap_or(Epoch(0))
            }
            EpochPick::Raw(e) => Epoch(u64::from(e)),
        }
    }

    pub(super) fn seq(&self, pick: SeqPick) -> BatchSeq {
        match pick {
            SeqPick::Latest => self.batches.last().copied().unwrap_or(BatchSeq(1)),
            SeqPick::Emitted(i) if !self.batches.is_empty() => self.batches[usize::from(i) % self.batches.len()],
            SeqPick::Emitted(i) => BatchSeq(u64::from(i)),
            SeqPick::Raw(s) => BatchSeq(s),
        }
    }

    pub(super) fn request(&mut self) -> RequestId {
        let r = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(r, 0);
        r
    }

    /// The persistence of every defined view.
    pub(super) fn modes(&self) -> BTreeMap<RelationId, Persistence> {
        self.m.definitions(&Selector::All).into_iter().map(|r| (r.relation_id, r.def.persistence)).collect()
    }

    /// Feeds one input, drains and checks the outputs, checks the machine.
    pub(super) fn input(&mut self, input: Input) {
        self.mirror_input(&input);
        if trace() {
            eprintln!("  input {input:?} at {}", self.now);
        }
        let before = self.modes();
        self.m.handle(input, Timestamp(self.now));
        let mut outs = Vec::new();
        while let Some(o) = self.m.poll_output() {
            outs.push(o);
            assert!(outs.len() <= MAX_OUTPUTS, "runaway: more than {MAX_OUTPUTS} outputs for one input");
        }
        let after = self.modes();
        for o in outs {
            if trace() {
                eprintln!("    -> {o:?}");
            }
            self.observe(o, &before, &after);
        }
        self.check_state(&after);
    }

    /// Keeps the feed mirror in step with what the input does.
    fn mirror_input(&mut self, input: &Input) {
        match input {
            Input::Subscribed { origin, epoch, result } => {
                let f = self.feeds.entry(origin.clone()).or_default();
                if *f == FeedMirror::Subscribing(*epoch) {
                    *f = if result.is_ok() { FeedMirror::Up(*epoch, false) } else { FeedMirror::Down };
                }
            }
            Input::FeedLost { origin, epoch, .. } => {
                let f = self.feeds.entry(origin.clone()).or_default();
                if matches!(*f, FeedMirror::Subscribing(e) | FeedMirror::Up(e, _) if e == *epoch) {
                    *f = FeedMirror::Down;
                }
            }
            Input::Feed { origin, epoch, event } => {
                let f = self.feeds.entry(origin.clone()).or_default();
                if let FeedMirror::Up(e, open) = f {
                    if e == epoch {
                        // Protocol errors take the feed down; the machine's
                        // `Unsubscribe` output updates the mirror then.
                        match event {
                            StreamEvent::Begin { .. } => *open = true,
                            StreamEvent::Commit { .. } => *open = false,
                            _ => {}
                        }
                    }
                }
            }
            Input::Shutdown { .. } => {
                for f in self.feeds.values_mut() {
                    *f = FeedMirror::Down;
                }
            }
            _ => {}
        }
    }
}
