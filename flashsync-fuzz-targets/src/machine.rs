//! Target `core_machine`: the sans-IO sync [`Machine`] under arbitrary input
//! sequences.
//!
//! The input is decoded (with [`arbitrary`]) into a `Setup` — tunables and
//! a stored state to start from — and a sequence of `Step`s: control calls
//! with arbitrary selectors and definitions (valid or not), feed events in
//! any order (whole transactions, or single events that may break the
//! protocol), lost feeds, subscription results of every kind, results for the
//! operations the machine emitted in any order, more than once, or for
//! operations it never emitted, `Applied`/`Durable` for any sequence number,
//! and timers with time moving forward. A `Harness` plays the driver: it
//! feeds each input, drains the outputs (at most [`MAX_OUTPUTS`] per input),
//! remembers what is in flight, and checks after every input:
//!
//! - **no panic** anywhere in the machine;
//! - every `StateChanged` event is legal ([`JobState::is_legal`]) for the
//!   view's persistence, starts from the state the previous event (or the
//!   stored job) left, and `status()` agrees with the events: no state change
//!   goes unreported;
//! - an `Ack` never exceeds the highest end LSN of a `Progress::Commit` batch
//!   of that origin reported durable (or the stored progress), and acks of
//!   one feed epoch strictly increase;
//! - at most one pass in flight: a new pass's store `Fence` is only emitted
//!   once the previous pass's fence has been answered, and never after
//!   shutdown; `Apply` batch numbers strictly increase; subscription epochs
//!   strictly increase;
//! - per view, transactions recorded as applied ([`AuditRecord::Applied`])
//!   have strictly increasing end LSNs between two publications of a copy
//!   (no commit applied twice);
//! - no more views copy at once than `max_concurrent_snapshots`;
//! - every request is answered at most once, and only requests that were
//!   made are answered;
//! - **no busy loop**: after an `Input::Timer` at or past
//!   [`Machine::poll_timeout`], the deadline is gone or in the future;
//! - after shutdown, no new work (snapshots, subscriptions, batches, acks,
//!   fences) is emitted.
//!
//! At the end, the harness plays a well-behaved driver — answering
//! everything in flight successfully, closing open transactions, firing due
//! timers (but sending no keepalives: the machine must not need them to make
//! progress) — and requires the machine to become quiescent
//! ([`Machine::is_quiescent`]) with every request answered, whatever came
//! before (results of the wrong kind, repeated results, protocol
//! violations); then it shuts the machine down and requires every request to
//! have exactly one reply.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use flashsync_core::machine::{AuditRecord, Epoch};
use flashsync_core::rowops::Conflict;
use flashsync_core::{
    ApplyReport, BatchSeq, Cell, Change, Column, Config, EventKind, FeedStart, Identity, Input, JobRecord, JobState,
    Key, Lsn, Machine, Millis, OpId, OriginId, OriginProgress, Output, Persistence, Progress, RelationId,
    RelationSchema, Reply, RequestId, Row, Selector, SlotReport, SnapshotPoint, SourceAction, SourceError,
    SourceErrorKind, SourceRelId, StoreAction, StoreError, StoreErrorKind, StoredState, StreamEvent, Timestamp,
    UpstreamRelation, Value, ViewDef, ViewName, ViewRecord,
};

/// Most outputs one input may produce before the harness calls it runaway.
pub const MAX_OUTPUTS: usize = 4096;
/// Most steps taken from one input.
const MAX_STEPS: usize = 400;
/// Rounds the well-behaved driver gets to bring the machine to rest.
const SETTLE_ROUNDS: usize = 300;

const NAMESPACES: [&str; 2] = ["public", "app"];
const NAMES: [&str; 3] = ["a", "b", "c"];
const ORIGINS: [&str; 2] = ["pg:one", "pg:two"];
const TABLES: [(&str, &str); 3] = [("public", "t1"), ("public", "t2"), ("s", "t3")];

/// The `core_machine` target body (see the [module docs](self)).
pub fn core_machine(data: &[u8]) {
    run(data);
}

/// Runs `data` like [`core_machine`] and returns the milestones its steps
/// reached before the final settling (e.g. `running`, `replay`, `race`,
/// `ack`, `paused`): used to pick seed inputs that each show the machine
/// doing something distinct.
pub fn milestones(data: &[u8]) -> BTreeSet<&'static str> {
    run(data)
}

/// Whether `FLASHSYNC_FUZZ_TRACE` is set: print every step and output.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FLASHSYNC_FUZZ_TRACE").is_some())
}

fn run(data: &[u8]) -> BTreeSet<&'static str> {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else { return BTreeSet::new() };
    let mut h = Harness::new(&setup);
    let mut steps = 0;
    while !u.is_empty() && steps < MAX_STEPS {
        let Ok(step) = Step::arbitrary(&mut u) else { break };
        if trace() {
            eprintln!("step {steps}: {step:?}");
        }
        h.step(step);
        steps += 1;
    }
    let mut seen = std::mem::take(&mut h.seen);
    let stats = h.m.stats();
    for (hit, name) in [
        (stats.filtered > 0, "filtered"),
        (stats.duplicates_skipped > 0, "duplicate"),
        (stats.snapshot_races > 0, "race"),
        (stats.acks > 0, "ack"),
        (stats.commits_applied > 0, "commit"),
    ] {
        if hit {
            seen.insert(name);
        }
    }
    h.finish();
    seen
}

// ----- inputs ------------------------------------------------------------------

/// Tunables and the stored state the machine starts from.
#[derive(Arbitrary, Debug)]
struct Setup {
    seed: u64,
    retry_base: u8,
    retry_max: u16,
    max_snapshots: u8,
    holdback: u16,
    batch_ops: u8,
    recent: u8,
    races: u8,
    xid_offset: u16,
    stored: Vec<StoredView>,
    progress: Vec<(u8, u16)>,
}

/// One view in the stored state.
#[derive(Arbitrary, Debug)]
struct StoredView {
    id: u8,
    ns: u8,
    name: u8,
    realtime: bool,
    origin: u8,
    table: u8,
    job: Option<StoredJob>,
    schema: Option<ShapePick>,
    dirty: bool,
}

#[derive(Arbitrary, Debug)]
struct StoredJob {
    state: u8,
    enabled: bool,
    retry_count: u8,
    next_retry: Option<u16>,
    last_seen: Option<u16>,
}

/// One thing that happens to the machine.
#[derive(Arbitrary, Debug)]
enum Step {
    /// Define a view from the small universe of names, origins and tables.
    Define { ns: u8, name: u8, realtime: bool, origin: u8, table: u8 },
    /// Define a view with arbitrary (possibly invalid) names.
    DefineRaw { ns: String, name: String, realtime: bool, origin: u8, schema: String, table: String },
    /// `sync()`.
    Sync { sel: Sel, force: bool },
    /// `stop()`.
    Stop { sel: Sel },
    /// `resume()`.
    Resume { sel: Sel },
    /// `forget()`.
    Forget { sel: Sel },
    /// `shutdown()`.
    Shutdown,
    /// Answer an emitted operation (`pick` indexes what is in flight).
    Answer { pick: u16, outcome: Outcome, keep: bool },
    /// Answer an operation id the machine may never have emitted, as any kind.
    Stray { op: u16, kind: u8, outcome: Outcome },
    /// `Applied` for any sequence number.
    Applied { seq: SeqPick, outcome: Outcome },
    /// `Durable` through any sequence number.
    Durable { seq: SeqPick },
    /// A subscription result for any epoch.
    Subscribed { origin: u8, epoch: EpochPick, result: Outcome },
    /// A whole transaction on a feed.
    Txn { origin: u8, epoch: EpochPick, xid: XidPick, gap: u8, changes: Vec<FuzzChange>, commit: bool },
    /// One feed event, in any order.
    Feed { origin: u8, epoch: EpochPick, event: FuzzEvent },
    /// A feed broke.
    FeedLost { origin: u8, epoch: EpochPick },
    /// Time passes; a timer fires.
    Timer { advance: u16, to_deadline: bool },
    /// Play a well-behaved driver for a few rounds.
    Settle { rounds: u8 },
}

/// A selector.
#[derive(Arbitrary, Debug)]
enum Sel {
    /// `*`.
    All,
    /// Exact names.
    Names(Vec<(u8, u8)>),
    /// Patterns.
    Map(Vec<(PatPick, Vec<PatPick>)>),
    /// Selector text (skipped if it does not parse).
    Text(String),
}

/// A name pattern.
#[derive(Arbitrary, Debug)]
enum PatPick {
    /// A namespace or name of the universe.
    Known(u8),
    /// `*`.
    Star,
    /// A prefix of a known name followed by `*`.
    Prefix(u8),
    /// Anything.
    Raw(String),
}

/// How to answer an operation; interpreted by the operation's kind.
#[derive(Arbitrary, Debug, Clone)]
enum Outcome {
    /// Success with the natural result.
    Ok,
    /// A relation description (for `Prepare`).
    Shape(ShapePick),
    /// A snapshot point (for `Snapshot`).
    Point(PointPick),
    /// A feed start (for `Subscribe`).
    Start(StartPick),
    /// An apply report with a conflict (for `Apply`).
    Conflict,
    /// Failure of some kind.
    Err(u8),
}

/// A relation description.
#[derive(Arbitrary, Debug, Clone)]
enum ShapePick {
    /// The table's own shape.
    Canonical,
    /// Another table's shape.
    Other(u8),
    /// The table's shape under another source id.
    SourceId(u8),
    /// The table's shape with one more column.
    Wider,
    /// A key outside the columns.
    IllFormed,
}

/// A snapshot visibility point.
#[derive(Arbitrary, Debug, Clone)]
enum PointPick {
    /// Sees everything so far.
    Clean,
    /// Recent transactions (by age) in progress.
    InProgress(Vec<u8>),
    /// Taken at an older feed position.
    Behind(u16),
    /// Taken at a later feed position.
    Ahead(u16),
    /// `xip` outside `xmin..xmax`.
    IllFormed,
    /// Anything.
    Raw { xmin: u64, xmax: u64, xip: Vec<u64>, lsn: u64 },
}

/// Where a subscribed feed starts.
#[derive(Arbitrary, Debug, Clone)]
enum StartPick {
    /// A new slot at the position.
    Created(LsnPick),
    /// An existing slot confirmed up to the position.
    Existing(LsnPick),
    /// A slot that was lost and re-created at the position.
    Recreated(LsnPick),
}

/// An LSN relative to the harness's upstream position.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum LsnPick {
    /// The current position.
    Current,
    /// Some way back.
    Back(u16),
    /// Some way ahead.
    Ahead(u16),
    /// Anything.
    Raw(u64),
}

/// A batch sequence number.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum SeqPick {
    /// The newest emitted batch.
    Latest,
    /// An emitted batch, by index.
    Emitted(u16),
    /// Anything.
    Raw(u64),
}

/// A feed epoch.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum EpochPick {
    /// The newest epoch the machine subscribed with for the origin.
    Latest,
    /// An older one.
    Older(u8),
    /// Anything.
    Raw(u8),
}

/// A transaction id.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum XidPick {
    /// The next one.
    Next,
    /// A recent one again.
    Recent(u8),
    /// Anything.
    Raw(u32),
}

/// One feed event.
#[derive(Arbitrary, Debug)]
enum FuzzEvent {
    /// `Begin`.
    Begin { xid: XidPick, lsn: LsnPick },
    /// A change.
    Change(FuzzChange),
    /// `Commit`.
    Commit { lsn: LsnPick },
    /// `Keepalive`.
    Keepalive { lsn: LsnPick, reply: bool },
    /// `SchemaChanged`.
    SchemaChanged { rel: RelPick },
}

/// A relation of a change.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum RelPick {
    /// One of the universe's tables.
    Table(u8),
    /// Any source id.
    Raw(u16),
}

/// One row change.
#[derive(Arbitrary, Debug)]
enum FuzzChange {
    /// Insert.
    Insert { rel: RelPick, row: FuzzRow },
    /// Update.
    Update { rel: RelPick, old: Option<FuzzRow>, new: Vec<FuzzCell>, width: Width },
    /// Delete.
    Delete { rel: RelPick, old: FuzzRow },
    /// Truncate.
    Truncate { rels: Vec<RelPick> },
}

/// A row image.
#[derive(Arbitrary, Debug)]
struct FuzzRow {
    width: Width,
    values: Vec<FuzzValue>,
}

/// How wide a row is.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Width {
    /// As wide as the relation.
    Fit,
    /// Any width.
    Raw(u8),
}

/// One cell of an update's new image.
#[derive(Arbitrary, Debug)]
enum FuzzCell {
    /// A value.
    Set(FuzzValue),
    /// An unchanged TOAST value.
    Unchanged,
}

/// A value from a small domain, so keys collide.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum FuzzValue {
    /// NULL.
    Null,
    /// A small integer.
    Int(u8),
    /// A short text.
    Text(u8),
    /// A long text (for the hold-back byte limit).
    Big(u16),
}

// ----- interpretation helpers ------------------------------------------------------

fn columns(n: usize) -> Vec<Column> {
    (0..n).map(|i| Column { name: format!("c{i}"), type_name: "int8".into() }).collect()
}

/// The universe table `i`'s shape.
fn table_schema(i: usize) -> RelationSchema {
    match i % TABLES.len() {
        0 => RelationSchema::keyed(SourceRelId(101), columns(2), vec![0]),
        1 => RelationSchema::full_row(SourceRelId(102), columns(3)),
        _ => RelationSchema::keyed(SourceRelId(103), columns(3), vec![1, 0]),
    }
}

fn table_of(rel: &UpstreamRelation) -> usize {
    TABLES.iter().position(|(s, t)| rel.schema == *s && rel.table == *t).unwrap_or(0)
}

fn shape(pick: &ShapePick, table: usize) -> RelationSchema {
    match pick {
        ShapePick::Canonical => table_schema(table),
        ShapePick::Other(i) => table_schema(usize::from(*i)),
        ShapePick::SourceId(id) => {
            let mut s = table_schema(table);
            s.source_id = SourceRelId(u64::from(*id) + 100);
            s
        }
        ShapePick::Wider => {
            let mut s = table_schema(table);
            s.columns.push(Column { name: "extra".into(), type_name: "text".into() });
            if s.identity == Identity::FullRow {
                s.key.push(s.columns.len() - 1);
            }
            s
        }
        ShapePick::IllFormed => {
            let mut s = table_schema(table);
            s.key = vec![7];
            s
        }
    }
}

fn value(v: FuzzValue) -> Value {
    match v {
        FuzzValue::Null => Value::Null,
        FuzzValue::Int(i) => Value::Int(i64::from(i % 4)),
        FuzzValue::Text(i) => Value::Text(format!("v{}", i % 4)),
        FuzzValue::Big(n) => Value::Text("x".repeat(usize::from(n))),
    }
}

fn rel_id(pick: RelPick) -> SourceRelId {
    match pick {
        RelPick::Table(i) => table_schema(usize::from(i)).source_id,
        RelPick::Raw(r) => SourceRelId(u64::from(r)),
    }
}

fn width_of(rel: SourceRelId, w: Width) -> usize {
    match w {
        Width::Fit => (0..TABLES.len()).map(table_schema).find(|s| s.source_id == rel).map_or(2, |s| s.columns.len()),
        Width::Raw(n) => usize::from(n % 6),
    }
}

fn row(rel: SourceRelId, r: &FuzzRow) -> Row {
    let n = width_of(rel, r.width);
    Row((0..n).map(|i| r.values.get(i).copied().map_or(Value::Null, value)).collect())
}

fn change(c: &FuzzChange) -> Change {
    match c {
        FuzzChange::Insert { rel, row: r } => {
            let rel = rel_id(*rel);
            Change::Insert { rel, new: row(rel, r) }
        }
        FuzzChange::Update { rel, old, new, width } => {
            let rel = rel_id(*rel);
            let n = width_of(rel, *width);
            let cells = (0..n)
                .map(|i| match new.get(i) {
                    Some(FuzzCell::Set(v)) => Cell::Set(value(*v)),
                    Some(FuzzCell::Unchanged) => Cell::Unchanged,
                    None => Cell::Set(Value::Null),
                })
                .collect();
            Change::Update { rel, old: old.as_ref().map(|o| row(rel, o)), new: cells }
        }
        FuzzChange::Delete { rel, old } => {
            let rel = rel_id(*rel);
            Change::Delete { rel, old: row(rel, old) }
        }
        FuzzChange::Truncate { rels } => Change::Truncate { rels: rels.iter().map(|r| rel_id(*r)).collect() },
    }
}

fn source_error(code: u8) -> SourceError {
    let kind = match code % 8 {
        0 => SourceErrorKind::Connection,
        1 => SourceErrorKind::RelationMissing,
        2 => SourceErrorKind::ReplicaIdentity,
        3 => SourceErrorKind::Unsupported,
        4 => SourceErrorKind::Protocol,
        5 => SourceErrorKind::Refused,
        6 => SourceErrorKind::Sink,
        _ => SourceErrorKind::Other,
    };
    SourceError::new(kind, format!("injected {kind:?}"))
}

fn store_error(code: u8) -> StoreError {
    let kind = match code % 8 {
        0 => StoreErrorKind::Io,
        1 => StoreErrorKind::Corrupt,
        2 => StoreErrorKind::Locked,
        3 => StoreErrorKind::Incompatible,
        4 => StoreErrorKind::Poisoned,
        5 => StoreErrorKind::NotFound,
        6 => StoreErrorKind::Invalid,
        _ => StoreErrorKind::Closed,
    };
    StoreError::new(kind, "fuzz", format!("injected {kind:?}"))
}

fn origin_id(i: u8) -> OriginId {
    // The universe's origin ids are valid.
    OriginId::new(ORIGINS[usize::from(i) % ORIGINS.len()]).unwrap_or_else(|e| panic!("origin id: {e}"))
}

fn view_name(ns: u8, name: u8) -> ViewName {
    ViewName { namespace: NAMESPACES[usize::from(ns) % 2].into(), name: NAMES[usize::from(name) % 3].into() }
}

fn pattern(p: &PatPick, known: &[&str]) -> String {
    match p {
        PatPick::Known(i) => known[usize::from(*i) % known.len()].into(),
        PatPick::Star => "*".into(),
        PatPick::Prefix(i) => {
            let k = known[usize::from(*i) % known.len()];
            format!("{}*", &k[..1])
        }
        PatPick::Raw(s) => s.clone(),
    }
}

fn selector(sel: &Sel) -> Option<Selector> {
    match sel {
        Sel::All => Some(Selector::All),
        Sel::Names(names) => Some(Selector::Names(names.iter().map(|(ns, n)| view_name(*ns, *n)).collect())),
        Sel::Map(entries) => Selector::from_map(entries.iter().map(|(ns, names)| {
            (pattern(ns, &NAMESPACES), names.iter().map(|n| pattern(n, &NAMES)).collect::<Vec<_>>())
        }))
        .ok(),
        Sel::Text(t) => t.parse().ok(),
    }
}

// ----- the harness -------------------------------------------------------------

/// What an emitted operation was, so a result of the right kind can be made.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A store action answered with `StoreDone`.
    Store,
    Prepare(usize),
    Snapshot,
    Release,
}

/// Something in flight that the driver owes the machine an answer for.
#[derive(Clone, Debug)]
enum Pending {
    Op(OpId, Kind),
    Apply(BatchSeq, Vec<RelationId>),
    Subscribe(OriginId, Epoch),
}

/// The machine's feed of one origin, as the driver sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum FeedMirror {
    #[default]
    Down,
    Subscribing(Epoch),
    Up(Epoch, bool),
}

/// Plays the driver and checks the machine (see the [module docs](self)).
struct Harness {
    m: Machine,
    now: u64,
    max_snapshots: usize,
    pending: Vec<Pending>,
    /// Every op id emitted, with its kind.
    emitted: BTreeMap<OpId, Kind>,
    /// Every `Apply` batch emitted.
    batches: Vec<BatchSeq>,
    /// Commit batches not yet reported durable: seq → (origin, end LSN).
    undurable: BTreeMap<BatchSeq, (OriginId, Lsn)>,
    /// Per origin, the highest LSN a durable commit batch (or the stored
    /// progress) covers.
    durable: BTreeMap<OriginId, Lsn>,
    acks: BTreeMap<(OriginId, Epoch), Lsn>,
    /// Epochs of every `Subscribe` emitted, per origin, in order.
    epochs: BTreeMap<OriginId, Vec<Epoch>>,
    /// Epochs already answered.
    answered_epochs: BTreeSet<(OriginId, Epoch)>,
    feeds: BTreeMap<OriginId, FeedMirror>,
    open_fence: Option<OpId>,
    /// Job state per view, as events reported it.
    states: BTreeMap<RelationId, JobState>,
    /// End LSN of the last transaction applied to each view since its copy
    /// was last published.
    applied: BTreeMap<RelationId, Lsn>,
    next_request: u64,
    requests: BTreeMap<RequestId, u32>,
    shut_down: bool,
    wal: u64,
    next_xid: u64,
    /// Milestones reached (see [`milestones`]).
    seen: BTreeSet<&'static str>,
}

impl Harness {
    /// A machine over the stored state `setup` describes.
    fn new(setup: &Setup) -> Harness {
        let cfg = Config {
            retry_base: Millis(u64::from(setup.retry_base) + 1),
            retry_max: Millis(u64::from(setup.retry_max) + 1),
            retry_permanent: Millis(u64::from(setup.retry_max) * 4 + 1),
            max_concurrent_snapshots: usize::from(setup.max_snapshots % 4) + 1,
            holdback_limit_bytes: usize::from(setup.holdback) * 4,
            max_batch_ops: usize::from(setup.batch_ops % 5),
            recent_commits: usize::from(setup.recent % 16),
            max_snapshot_races: u32::from(setup.races % 4),
            audit: true,
            ..Config::default()
        };
        let max_snapshots = cfg.max_concurrent_snapshots;
        let now = 1_000_000;
        let wal: u64 = 100_000;
        let mut state = StoredState::default();
        let mut states = BTreeMap::new();
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
                states.insert(id, job.state);
                state.jobs.push(job);
            }
            if let Some(s) = &v.schema {
                state.schemas.push((id, shape(s, table)));
            }
            if v.dirty {
                state.dirty.push(id);
            }
        }
        let mut durable = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (o, back) in &setup.progress {
            let origin = origin_id(*o);
            if !seen.insert(origin.clone()) {
                continue;
            }
            let applied = Lsn(wal.saturating_sub(u64::from(*back)));
            durable.insert(origin.clone(), applied);
            state.origins.push(OriginProgress { origin, applied });
        }
        let m = Machine::new(cfg, setup.seed, state, Timestamp(now));
        // Loading may correct a stored state (a running job that cannot
        // resume is idle): track what the machine reports, not what was stored.
        for st in m.status(&Selector::All) {
            states.insert(st.relation_id, st.state);
        }
        Harness {
            m,
            now,
            max_snapshots,
            pending: Vec::new(),
            emitted: BTreeMap::new(),
            batches: Vec::new(),
            undurable: BTreeMap::new(),
            durable,
            acks: BTreeMap::new(),
            epochs: BTreeMap::new(),
            answered_epochs: BTreeSet::new(),
            feeds: BTreeMap::new(),
            open_fence: None,
            states,
            applied: BTreeMap::new(),
            next_request: 1,
            requests: BTreeMap::new(),
            shut_down: false,
            wal,
            next_xid: (1u64 << 32) - 300 + u64::from(setup.xid_offset % 600),
            seen: BTreeSet::new(),
        }
    }

    fn lsn(&self, pick: LsnPick) -> Lsn {
        match pick {
            LsnPick::Current => Lsn(self.wal),
            LsnPick::Back(d) => Lsn(self.wal.saturating_sub(u64::from(d))),
            LsnPick::Ahead(d) => Lsn(self.wal.saturating_add(u64::from(d))),
            LsnPick::Raw(l) => Lsn(l),
        }
    }

    fn xid(&mut self, pick: XidPick) -> u32 {
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

    fn epoch(&self, origin: &OriginId, pick: EpochPick) -> Epoch {
        let list = self.epochs.get(origin).map(Vec::as_slice).unwrap_or_default();
        match pick {
            EpochPick::Latest => list.last().copied().unwrap_or(Epoch(1)),
            EpochPick::Older(k) => {
                list.len().checked_sub(usize::from(k) + 1).and_then(|i| list.get(i)).copied().unwrap_or(Epoch(0))
            }
            EpochPick::Raw(e) => Epoch(u64::from(e)),
        }
    }

    fn seq(&self, pick: SeqPick) -> BatchSeq {
        match pick {
            SeqPick::Latest => self.batches.last().copied().unwrap_or(BatchSeq(1)),
            SeqPick::Emitted(i) if !self.batches.is_empty() => self.batches[usize::from(i) % self.batches.len()],
            SeqPick::Emitted(i) => BatchSeq(u64::from(i)),
            SeqPick::Raw(s) => BatchSeq(s),
        }
    }

    fn request(&mut self) -> RequestId {
        let r = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(r, 0);
        r
    }

    /// The persistence of every defined view.
    fn modes(&self) -> BTreeMap<RelationId, Persistence> {
        self.m.definitions(&Selector::All).into_iter().map(|r| (r.relation_id, r.def.persistence)).collect()
    }

    /// Feeds one input, drains and checks the outputs, checks the machine.
    fn input(&mut self, input: Input) {
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

    fn observe(
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
                StoreAction::Apply(batch) => {
                    assert!(!self.shut_down, "batch {:?} emitted after shutdown", batch.seq);
                    if let Some(last) = self.batches.last() {
                        assert!(batch.seq > *last, "batch {:?} emitted after {last:?}", batch.seq);
                    }
                    self.batches.push(batch.seq);
                    if let Progress::Commit { end_lsn } = batch.progress {
                        self.undurable.insert(batch.seq, (batch.origin.clone(), end_lsn));
                    }
                    match batch.progress {
                        Progress::Replay if !batch.views.is_empty() => {
                            self.seen.insert("replay");
                        }
                        Progress::Partial => {
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
                    let legal = |modes: &BTreeMap<RelationId, Persistence>| {
                        modes.get(&id).is_some_and(|p| JobState::is_legal(*p, from, to))
                    };
                    assert!(legal(before) || legal(after), "illegal state change of view {id}: {from} -> {to}");
                    let tracked = self.states.get(&id).copied().unwrap_or(JobState::Idle);
                    assert_eq!(from, tracked, "view {id} reported a change from {from}, but was {tracked}");
                    self.states.insert(id, to);
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
            SourceAction::Snapshot { op, schema, .. } => {
                assert!(!self.shut_down, "snapshot after shutdown");
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
                let durable = self.durable.get(&origin).copied();
                assert!(
                    durable.is_some_and(|d| lsn <= d),
                    "ack of {lsn} on {origin} beyond the durable position {durable:?}"
                );
                assert!(
                    self.epochs.get(&origin).is_some_and(|l| l.contains(&epoch)),
                    "ack on epoch {epoch:?} of {origin}, never subscribed"
                );
                if let Some(prev) = self.acks.insert((origin.clone(), epoch), lsn) {
                    assert!(lsn > prev, "ack of {lsn} on {origin} after {prev} on the same feed");
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
    fn check_state(&mut self, modes: &BTreeMap<RelationId, Persistence>) {
        // No unreported state changes; forgotten views leave the books.
        self.states.retain(|id, _| modes.contains_key(id));
        for job in self.m.status(&Selector::All) {
            let tracked = self.states.get(&job.relation_id).copied().unwrap_or(JobState::Idle);
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
            match rec {
                AuditRecord::Applied { seq, view, end_lsn, .. } => {
                    assert!(self.batches.contains(&seq), "audit names batch {seq:?}, never emitted");
                    if let Some(prev) = self.applied.insert(view, end_lsn) {
                        assert!(end_lsn > prev, "view {view} applied the commit ending {end_lsn} after {prev}");
                    }
                }
                AuditRecord::Published { view, .. } => {
                    self.applied.remove(&view);
                }
            }
        }
        if self.m.is_shut_down() {
            assert!(self.m.poll_timeout().is_none(), "a shut-down machine wants a timer");
        }
    }

    fn answer(&mut self, p: Pending, outcome: &Outcome) {
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
        let confirmed = self.acks.iter().filter(|((o, _), _)| o == origin).map(|(_, l)| *l).max();
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

    fn feed(&mut self, origin: &OriginId, epoch: Epoch, event: StreamEvent) {
        self.input(Input::Feed { origin: origin.clone(), epoch, event });
    }

    /// Carries out one step.
    fn step(&mut self, step: Step) {
        match step {
            Step::Define { ns, name, realtime, origin, table } => {
                let (schema, tname) = TABLES[usize::from(table) % TABLES.len()];
                let def = ViewDef {
                    name: view_name(ns, name),
                    persistence: if realtime { Persistence::Realtime } else { Persistence::Materialized },
                    origin: origin_id(origin),
                    upstream: UpstreamRelation { schema: schema.into(), table: tname.into() },
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
                    FuzzEvent::SchemaChanged { rel } => {
                        StreamEvent::SchemaChanged { rel: rel_id(rel), detail: "column added".into() }
                    }
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

    fn durable_through(&mut self, through: BatchSeq) {
        let covered: Vec<BatchSeq> = self.undurable.range(..=through).map(|(s, _)| *s).collect();
        for s in covered {
            if let Some((origin, lsn)) = self.undurable.remove(&s) {
                let d = self.durable.entry(origin).or_insert(lsn);
                *d = (*d).max(lsn);
            }
        }
        self.input(Input::Durable { through });
    }

    /// Delivers a timer and checks that it does not leave a due deadline
    /// behind (a driver would spin on it).
    fn timer(&mut self) {
        self.input(Input::Timer);
        if let Some(t) = self.m.poll_timeout() {
            assert!(t.0 > self.now, "busy loop: after a timer at {}, poll_timeout is still {}", self.now, t.0);
        }
    }

    fn shutdown(&mut self) {
        let request = self.request();
        self.input(Input::Shutdown { request });
        self.shut_down = true;
        for (r, n) in &self.requests {
            assert_eq!(*n, 1, "request {r:?} has {n} replies after shutdown");
        }
    }

    /// One round of a well-behaved driver: answer everything in flight
    /// successfully (in order), report durability, close open transactions;
    /// with nothing in flight, fire the next timer. Returns whether anything
    /// happened.
    fn settle_round(&mut self) -> bool {
        let mut acted = false;
        let pending: VecDeque<Pending> = std::mem::take(&mut self.pending).into();
        for p in pending {
            let stale = match &p {
                Pending::Subscribe(o, e) => self.answered_epochs.contains(&(o.clone(), *e)),
                // A snapshot whose op id now tags its publish.
                Pending::Op(op, kind) => self.emitted.get(op) != Some(kind),
                Pending::Apply(..) => false,
            };
            if stale {
                continue;
            }
            self.answer(p, &Outcome::Ok);
            acted = true;
        }
        if let Some(&last) = self.batches.last() {
            if !self.undurable.is_empty() {
                self.durable_through(last);
                acted = true;
            }
        }
        let open: Vec<(OriginId, Epoch)> = self
            .feeds
            .iter()
            .filter_map(|(o, f)| match f {
                FeedMirror::Up(e, true) => Some((o.clone(), *e)),
                _ => None,
            })
            .collect();
        for (origin, epoch) in open {
            self.wal = self.wal.saturating_add(1);
            let end_lsn = Lsn(self.wal);
            self.feed(&origin, epoch, StreamEvent::Commit { end_lsn });
            acted = true;
        }
        if !acted && self.pending.is_empty() {
            if let Some(t) = self.m.poll_timeout() {
                self.now = self.now.max(t.0);
                self.timer();
                acted = true;
            }
        }
        acted
    }

    /// End of input: liveness under a well-behaved driver, then shutdown.
    fn finish(mut self) {
        if trace() {
            eprintln!("finish");
        }
        if !self.shut_down {
            let mut rounds = 0;
            while self.settle_round() {
                rounds += 1;
                assert!(rounds < SETTLE_ROUNDS, "no rest after {SETTLE_ROUNDS} rounds of a well-behaved driver");
            }
            let unanswered: Vec<&RequestId> = self.requests.iter().filter(|(_, n)| **n == 0).map(|(r, _)| r).collect();
            assert!(unanswered.is_empty(), "requests {unanswered:?} unanswered with nothing left in flight");
            if !self.m.is_quiescent() {
                if trace() {
                    eprintln!("{:#?}", self.m);
                }
                let phases: Vec<(RelationId, Option<flashsync_core::machine::ViewPhase>)> =
                    self.modes().keys().map(|id| (*id, self.m.phase(*id))).collect();
                panic!(
                    "the machine is not at rest with nothing in flight: pass {}, phases {phases:?}",
                    self.m.pass_in_flight()
                );
            }
            self.shutdown();
        }
    }
}
