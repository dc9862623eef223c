//! What can go wrong, and how often: the fault plan, drawn from the seed.
//!
//! Swarm testing (Groce et al.): rather than every fault at a middling rate,
//! each run switches some faults off entirely and turns others up, so that
//! interactions that need one fault to be frequent and another absent get
//! explored too. The plan is printed at the start of every run.

use std::fmt;

use flashsync_core::rng::Rng;
use flashsync_core::{Config, Millis};

use crate::scenario::Scenario;

/// Kinds of fault the simulator injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The replication connection drops.
    CutFeed,
    /// Bursts of `sync()` from many callers while the connection flaps.
    Storm,
    /// A keepalive never arrives.
    LostKeepalive,
    /// The feed stalls for a while (delayed keepalives and changes).
    FeedStall,
    /// An acknowledgement is lost on the wire.
    LostAck,
    /// A snapshot takes much longer than usual.
    SlowSnapshot,
    /// An operator drops the replication slot.
    DropSlot,
    /// The slot is invalidated (`wal_status = lost`).
    InvalidateSlot,
    /// The origin is unreachable for a while.
    Offline,
    /// The next source call(s) fail.
    FailCalls,
    /// The local process crashes and restarts (unpersisted batches lost).
    Crash,
    /// The local process shuts down cleanly and restarts.
    Restart,
    /// `stop`, `resume`, `forget` and re-`define` from callers.
    Churn,
    /// A store batch fails to apply.
    StoreError,
    /// A column is added upstream, or one added before is dropped.
    AlterTable,
}

impl Fault {
    /// Every fault, in a fixed order.
    pub const ALL: [Fault; 15] = [
        Fault::CutFeed,
        Fault::Storm,
        Fault::LostKeepalive,
        Fault::FeedStall,
        Fault::LostAck,
        Fault::SlowSnapshot,
        Fault::DropSlot,
        Fault::InvalidateSlot,
        Fault::Offline,
        Fault::FailCalls,
        Fault::Crash,
        Fault::Restart,
        Fault::Churn,
        Fault::StoreError,
        Fault::AlterTable,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::CutFeed => "cut_feed",
            Fault::Storm => "storm",
            Fault::LostKeepalive => "lost_keepalive",
            Fault::FeedStall => "feed_stall",
            Fault::LostAck => "lost_ack",
            Fault::SlowSnapshot => "slow_snapshot",
            Fault::DropSlot => "drop_slot",
            Fault::InvalidateSlot => "invalidate_slot",
            Fault::Offline => "offline",
            Fault::FailCalls => "fail_calls",
            Fault::Crash => "crash",
            Fault::Restart => "restart",
            Fault::Churn => "churn",
            Fault::StoreError => "store_error",
            Fault::AlterTable => "alter_table",
        }
    }

    /// Whether this is a per-event probability (`true`) rather than a
    /// weight among the workload's actions.
    fn is_probability(self) -> bool {
        matches!(self, Fault::LostKeepalive | Fault::FeedStall | Fault::LostAck | Fault::SlowSnapshot)
    }
}

/// Latencies and sizes, in virtual milliseconds.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Longest store operation.
    pub store_ms: u64,
    /// Longest source call (prepare, subscribe, release).
    pub source_ms: u64,
    /// Longest delay between two feed deliveries.
    pub feed_ms: u64,
    /// Feed events delivered per read, at most.
    pub feed_chunk: u64,
    /// Delay before a persist after an apply (group commit).
    pub persist_ms: u64,
    /// Longest normal snapshot.
    pub snapshot_ms: u64,
    /// Between two workload actions, at most.
    pub tick_ms: u64,
    /// Longest window between a commit reaching the log and becoming visible.
    pub invisible_ms: u64,
    /// Longest time a transaction stays open.
    pub open_txn_ms: u64,
    /// Between two keepalives.
    pub keepalive_ms: u64,
}

/// The fault plan and tunables of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Weight (for actions) or probability in percent (for per-event faults)
    /// of each fault; 0 = off.
    pub rates: Vec<(Fault, u32)>,
    /// The feed replays from `confirmed_flush` on every resubscribe.
    pub replay_from_confirmed: bool,
    /// Upstream xids start here (near a 2^32 boundary on some seeds).
    pub first_xid: u64,
    /// Timing.
    pub timing: Timing,
    /// The machine's tunables.
    pub config: Config,
    /// Deliberate executor bugs (off unless a test plants them).
    pub exec_bugs: flashsync_core::exec::PlantedBugs,
    /// Batches ask the store for their changes, as while a change feed
    /// listens, and the feed checker follows them.
    pub capture: bool,
}

impl Plan {
    /// Draws the plan for `scenario` from `rng`.
    pub fn draw(scenario: Scenario, rng: &mut Rng) -> Plan {
        let allowed = scenario.faults();
        let mut rates = Vec::new();
        for f in Fault::ALL {
            let rate = if !allowed.contains(&f) || rng.chance(0.3) {
                0
            } else if f.is_probability() {
                [2, 5, 10, 25][rng.below(4) as usize]
            } else {
                [1, 2, 3, 5][rng.below(4) as usize]
            };
            rates.push((f, rate));
        }
        // The scenario's headline fault is always on.
        for f in scenario.headline() {
            if let Some(r) = rates.iter_mut().find(|(g, _)| *g == f) {
                r.1 = r.1.max(if f.is_probability() { 10 } else { 6 });
            }
        }
        let first_xid = if rng.chance(0.5) {
            // A few hundred xids before a multiple of 2^32: the run crosses it.
            ((1 + rng.below(3)) << 32) - 50 - rng.below(200)
        } else {
            1000 + rng.below(100_000)
        };
        let timing = Timing {
            store_ms: rng.below(4),
            source_ms: 1 + rng.below(10),
            feed_ms: rng.below(4),
            feed_chunk: 1 + rng.below(6),
            persist_ms: rng.below(25),
            snapshot_ms: 1 + rng.below(40),
            tick_ms: 2 + rng.below(15),
            invisible_ms: rng.below(40),
            open_txn_ms: 10 + rng.below(600),
            keepalive_ms: 20 + rng.below(200),
        };
        let config = Config {
            retry_base: Millis(20 + rng.below(300)),
            retry_max: Millis(1000 + rng.below(4000)),
            max_concurrent_snapshots: 1 + rng.below(4) as usize,
            holdback_limit_bytes: if rng.chance(0.3) { 1024 + rng.below(8192) as usize } else { 64 << 20 },
            max_batch_ops: if rng.chance(0.3) { 2 + rng.below(6) as usize } else { 50_000 },
            audit: true,
            ..Config::default()
        };
        // Permanent failures (a table without replica identity) retry
        // rarely; derived, not drawn, so every seed keeps its plan.
        let config = Config { retry_permanent: Millis(config.retry_max.0 * 10), ..config };
        let replay_from_confirmed = rng.chance(0.25);
        // The executor's limits: short apply runs and a store that falls
        // behind after a few dozen operations on some seeds, so runs and
        // back-pressure are exercised.
        let apply_run = if rng.chance(0.5) { 1 + rng.below(8) as usize } else { 4096 };
        let max_ops_in_flight = if rng.chance(0.3) { 1 + rng.below(60) as usize } else { 50_000 };
        // Half the seeds copy realtime views in chunks of a few rows, so a
        // copy has many chunks, and writers hit chunks copied, in flight
        // and still to come. Drawn last: every earlier draw keeps its value.
        let snapshot_chunk_rows = if rng.chance(0.5) { 1 + rng.below(6) } else { 0 };
        // Most copies in chunks are checkpointed (so crashes continue
        // them); the rest start over, as with a store that cannot keep them.
        let checkpoint_copies = rng.chance(0.75);
        let config = Config { apply_run, max_ops_in_flight, snapshot_chunk_rows, checkpoint_copies, ..config };
        Plan { rates, replay_from_confirmed, first_xid, timing, config, exec_bugs: Default::default(), capture: false }
    }

    /// The rate of a fault (0 = off).
    pub fn rate(&self, f: Fault) -> u32 {
        self.rates.iter().find(|(g, _)| *g == f).map_or(0, |r| r.1)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<String> = self
            .rates
            .iter()
            .map(|(k, r)| match (r, k.is_probability()) {
                (0, _) => format!("{}=off", k.name()),
                (r, true) => format!("{}={r}%", k.name()),
                (r, false) => format!("{}=x{r}", k.name()),
            })
            .collect();
        write!(
            f,
            "faults: {}; replay_from_confirmed={}; first_xid={:#x}; snapshots<={}; holdback={}B; batch_ops={}; \
             retry {}..{}ms; apply_run={}; ops_in_flight<={}; chunk_rows={}; checkpoints={}",
            on.join(" "),
            self.replay_from_confirmed,
            self.first_xid,
            self.config.max_concurrent_snapshots,
            self.config.holdback_limit_bytes,
            self.config.max_batch_ops,
            self.config.retry_base.0,
            self.config.retry_max.0,
            self.config.apply_run,
            self.config.max_ops_in_flight,
            self.config.snapshot_chunk_rows,
            self.config.checkpoint_copies
        )
    }
}
