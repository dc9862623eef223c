//! The arbitrary input the `core_machine` target decodes: the `Setup` the
//! machine starts from and the `Step`s that happen to it, with the `*Pick`
//! and `Fuzz*` types they are made of.

use arbitrary::Arbitrary;

// ----- inputs ------------------------------------------------------------------

/// Tunables and the stored state the machine starts from.
#[derive(Arbitrary, Debug)]
pub(super) struct Setup {
    pub(super) seed: u64,
    pub(super) retry_base: u8,
    pub(super) retry_max: u16,
    pub(super) max_snapshots: u8,
    pub(super) holdback: u16,
    pub(super) batch_ops: u8,
    pub(super) recent: u8,
    pub(super) races: u8,
    pub(super) xid_offset: u16,
    pub(super) stored: Vec<StoredView>,
    pub(super) progress: Vec<(u8, u16)>,
}

/// One view in the stored state.
#[derive(Arbitrary, Debug)]
pub(super) struct StoredView {
    pub(super) id: u8,
    pub(super) ns: u8,
    pub(super) name: u8,
    pub(super) realtime: bool,
    pub(super) origin: u8,
    pub(super) table: u8,
    pub(super) job: Option<StoredJob>,
    pub(super) schema: Option<ShapePick>,
    pub(super) dirty: bool,
}

#[derive(Arbitrary, Debug)]
pub(super) struct StoredJob {
    pub(super) state: u8,
    pub(super) enabled: bool,
    pub(super) retry_count: u8,
    pub(super) next_retry: Option<u16>,
    pub(super) last_seen: Option<u16>,
}

/// One thing that happens to the machine.
#[derive(Arbitrary, Debug)]
pub(super) enum Step {
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
pub(super) enum Sel {
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
pub(super) enum PatPick {
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
pub(super) enum Outcome {
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
pub(super) enum ShapePick {
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
pub(super) enum PointPick {
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
pub(super) enum StartPick {
    /// A new slot at the position.
    Created(LsnPick),
    /// An existing slot confirmed up to the position.
    Existing(LsnPick),
    /// A slot that was lost and re-created at the position.
    Recreated(LsnPick),
}

/// An LSN relative to the harness's upstream position.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(super) enum LsnPick {
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
pub(super) enum SeqPick {
    /// The newest emitted batch.
    Latest,
    /// An emitted batch, by index.
    Emitted(u16),
    /// Anything.
    Raw(u64),
}

/// A feed epoch.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(super) enum EpochPick {
    /// The newest epoch the machine subscribed with for the origin.
    Latest,
    /// An older one.
    Older(u8),
    /// Anything.
    Raw(u8),
}

/// A transaction id.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(super) enum XidPick {
    /// The next one.
    Next,
    /// A recent one again.
    Recent(u8),
    /// Anything.
    Raw(u32),
}

/// One feed event.
#[derive(Arbitrary, Debug)]
pub(super) enum FuzzEvent {
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
pub(super) enum RelPick {
    /// One of the universe's tables.
    Table(u8),
    /// Any source id.
    Raw(u16),
}

/// One row change.
#[derive(Arbitrary, Debug)]
pub(super) enum FuzzChange {
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
pub(super) struct FuzzRow {
    pub(super) width: Width,
    pub(super) values: Vec<FuzzValue>,
}

/// How wide a row is.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(super) enum Width {
    /// As wide as the relation.
    Fit,
    /// Any width.
    Raw(u8),
}

/// One cell of an update's new image.
#[derive(Arbitrary, Debug)]
pub(super) enum FuzzCell {
    /// A value.
    Set(FuzzValue),
    /// An unchanged TOAST value.
    Unchanged,
}

/// A value from a small domain, so keys collide.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(super) enum FuzzValue {
    /// NULL.
    Null,
    /// A small integer.
    Int(u8),
    /// A short text.
    Text(u8),
    /// A long text (for the hold-back byte limit).
    Big(u16),
}
