//! Scenarios: which faults and workload a run emphasises.

use std::fmt;
use std::str::FromStr;

use crate::faults::Fault;

/// A scenario (DESIGN §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Reconnect storms: many views, bursts of `sync()` from many callers
    /// while the connection flaps.
    Storm,
    /// Commit streams (inserts, updates incl. key changes, deletes,
    /// truncates, transactions open across snapshots) concurrent with
    /// bootstraps, slot loss and crashes.
    Commits,
    /// Stop / resume / forget / re-define churn under commits.
    Churn,
    /// Everything.
    All,
}

impl Scenario {
    /// Faults the scenario may switch on.
    pub fn faults(self) -> Vec<Fault> {
        use Fault::*;
        match self {
            Scenario::Storm => {
                vec![CutFeed, Storm, LostKeepalive, FeedStall, LostAck, SlowSnapshot, Offline, FailCalls]
            }
            Scenario::Commits => vec![
                CutFeed,
                LostKeepalive,
                FeedStall,
                LostAck,
                SlowSnapshot,
                DropSlot,
                InvalidateSlot,
                FailCalls,
                Crash,
                Restart,
                StoreError,
                AlterTable,
            ],
            Scenario::Churn => vec![CutFeed, SlowSnapshot, FeedStall, FailCalls, Crash, Churn, LostAck],
            Scenario::All => Fault::ALL.to_vec(),
        }
    }

    /// Faults that are always on in this scenario.
    pub fn headline(self) -> Vec<Fault> {
        match self {
            Scenario::Storm => vec![Fault::Storm, Fault::CutFeed],
            Scenario::Commits => vec![],
            Scenario::Churn => vec![Fault::Churn],
            Scenario::All => vec![],
        }
    }

    /// How many views to define at the start (inclusive range).
    pub fn views(self) -> (u64, u64) {
        match self {
            Scenario::Storm => (20, 50),
            Scenario::Commits => (4, 10),
            Scenario::Churn => (6, 12),
            Scenario::All => (6, 16),
        }
    }

    /// Relative weight of upstream writes among workload actions.
    pub fn write_weight(self) -> u32 {
        match self {
            Scenario::Storm => 15,
            Scenario::Commits => 80,
            Scenario::Churn => 40,
            Scenario::All => 60,
        }
    }

    /// Calls per storm wave (inclusive range).
    pub fn storm_calls(self) -> (u64, u64) {
        match self {
            Scenario::Storm => (50, 400),
            _ => (5, 60),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::Storm => "storm",
            Scenario::Commits => "commits",
            Scenario::Churn => "churn",
            Scenario::All => "all",
        })
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "storm" => Ok(Scenario::Storm),
            "commits" => Ok(Scenario::Commits),
            "churn" => Ok(Scenario::Churn),
            "all" => Ok(Scenario::All),
            other => Err(format!("unknown scenario {other:?} (expected storm, commits, churn or all)")),
        }
    }
}
