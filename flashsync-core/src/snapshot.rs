//! Snapshot visibility: which upstream transactions a snapshot already holds.
//!
//! This is the heart of the snapshot → stream hand-off (DESIGN §4.4): a
//! transaction the snapshot can see is already in the copy and must be skipped
//! when it comes through the change feed; every other one must be applied.

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;

/// The visibility point of a snapshot, in Postgres' `pg_current_snapshot()`
/// terms, with 64-bit (epoch-extended) transaction ids, plus the feed
/// position after which nothing can be visible to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPoint {
    /// Every transaction below `xmin` had finished when the snapshot was taken.
    pub xmin: u64,
    /// Every transaction at or above `xmax` had not yet started.
    pub xmax: u64,
    /// Transactions in `[xmin, xmax)` still in progress (invisible).
    pub xip: Vec<u64>,
    /// A feed position read after the snapshot was taken: every transaction the
    /// snapshot sees committed at or before it. Transactions whose commit
    /// record starts at or after this LSN are invisible.
    pub lsn: Lsn,
    /// Rows copied.
    pub rows: u64,
}

impl SnapshotPoint {
    /// Whether the transaction with 32-bit wire id `xid` is visible to this
    /// snapshot. The id is widened against `xmax`'s epoch: the feed never
    /// carries ids more than 2^31 away from a live snapshot's horizon.
    pub fn is_visible(&self, xid: u32) -> bool {
        let full = widen_xid(xid, self.xmax);
        if full < self.xmin {
            return true;
        }
        if full >= self.xmax {
            return false;
        }
        !self.xip.contains(&full)
    }

    /// Whether a transaction whose commit record starts at `final_lsn` and
    /// has wire id `xid` is already in the snapshot (so the feed's copy of it
    /// must be skipped for this view).
    pub fn contains(&self, xid: u32, final_lsn: Lsn) -> bool {
        final_lsn < self.lsn && self.is_visible(xid)
    }

    /// Internal consistency: `xmin <= xmax` and every `xip` in range.
    pub fn is_well_formed(&self) -> bool {
        self.xmin <= self.xmax && self.xip.iter().all(|x| (self.xmin..self.xmax).contains(x))
    }
}

/// Extends a 32-bit transaction id to the 64-bit id nearest to `reference`.
pub fn widen_xid(xid: u32, reference: u64) -> u64 {
    const SPAN: u64 = 1 << 32;
    const HALF: u64 = 1 << 31;
    let candidate = (reference & !(SPAN - 1)) | u64::from(xid);
    if candidate > reference.saturating_add(HALF) && candidate >= SPAN {
        candidate - SPAN
    } else if candidate.saturating_add(HALF) < reference {
        candidate.saturating_add(SPAN)
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn visibility_rules() {
        let p = SnapshotPoint { xmin: 100, xmax: 110, xip: vec![103, 107], lsn: Lsn(1000), rows: 0 };
        assert!(p.is_visible(99));
        assert!(p.is_visible(100));
        assert!(!p.is_visible(103));
        assert!(p.is_visible(105));
        assert!(!p.is_visible(110));
        assert!(!p.is_visible(5000));
        assert!(p.contains(105, Lsn(999)));
        assert!(!p.contains(105, Lsn(1000)));
    }

    #[test]
    fn visibility_across_wraparound() {
        // Epoch 7, xmin just below the 32-bit boundary, xmax just past it.
        let base = 7u64 << 32;
        let p = SnapshotPoint {
            xmin: base + 0xFFFF_FFF0,
            xmax: base + (1 << 32) + 5,
            xip: vec![base + (1 << 32) + 2],
            lsn: Lsn(1),
            rows: 0,
        };
        assert!(p.is_visible(0xFFFF_FFEF)); // before xmin, old epoch
        assert!(p.is_visible(0xFFFF_FFF5)); // in range, not in xip
        assert!(p.is_visible(1)); // new epoch, in range
        assert!(!p.is_visible(2)); // in xip
        assert!(!p.is_visible(5)); // xmax
        assert!(!p.is_visible(900)); // future
    }

    proptest! {
        #[test]
        fn widen_recovers_ids_near_the_reference(reference in (1u64 << 31)..(u64::MAX >> 2), delta in -(1i64 << 30)..(1i64 << 30)) {
            let full = (reference as i64 + delta) as u64;
            prop_assert_eq!(widen_xid(full as u32, reference), full);
        }
    }
}
