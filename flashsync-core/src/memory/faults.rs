//! Fault injection: calls that fail once, an unreachable origin, cut feeds,
//! a dropped or invalidated slot, and feeds that replay from
//! `confirmed_flush`.

use super::upstream::{MemoryUpstream, Upstream};
use crate::error::SourceError;

/// Calls that can be made to fail once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailPoint {
    /// `prepare`.
    Prepare,
    /// `snapshot`.
    Snapshot,
    /// `subscribe`.
    Subscribe,
    /// `release` and `drop_feed`.
    Release,
}

impl MemoryUpstream {
    /// Breaks the open feed (as if the connection dropped).
    pub fn cut_feed(&self) {
        let mut u = self.lock();
        if let Some(feed) = u.feed.take() {
            let _ = feed.tx.unbounded_send(Err(SourceError::connection("connection to memory upstream was cut")));
            u.stats.active_feeds = 0;
        }
    }

    /// Makes every call fail with a connection error (and cuts the feed) until
    /// set back.
    pub fn set_offline(&self, offline: bool) {
        if offline {
            self.cut_feed();
        }
        self.lock().offline = offline;
    }

    /// Makes the next `n` calls of `point` fail with a connection error.
    pub fn fail_next(&self, point: FailPoint, n: u32) {
        *self.lock().fail.entry(point).or_default() += n;
    }

    /// Drops the replication slot (as an operator might).
    pub fn drop_slot(&self) {
        let mut u = self.lock();
        u.slot = None;
        if let Some(feed) = u.feed.take() {
            let _ = feed.tx.unbounded_send(Err(SourceError::connection("replication slot was dropped")));
            u.stats.active_feeds = 0;
        }
    }

    /// Invalidates the slot (as `max_slot_wal_keep_size` would) and breaks the feed.
    pub fn invalidate_slot(&self) {
        let mut u = self.lock();
        if let Some(slot) = &mut u.slot {
            slot.invalidated = true;
        }
        if let Some(feed) = u.feed.take() {
            let _ = feed.tx.unbounded_send(Err(SourceError::connection("replication slot was invalidated")));
            u.stats.active_feeds = 0;
        }
    }

    /// When set, re-subscribing replays from `confirmed_flush` even when a
    /// later position was asked for.
    pub fn set_replay_from_confirmed(&self, on: bool) {
        self.lock().replay_from_confirmed = on;
    }
}

impl Upstream {
    pub(super) fn take_fail(&mut self, point: FailPoint) -> Result<(), SourceError> {
        if self.offline {
            return Err(SourceError::connection("memory upstream is offline"));
        }
        if let Some(n) = self.fail.get_mut(&point) {
            if *n > 0 {
                *n -= 1;
                return Err(SourceError::connection(format!("injected failure in {point:?}")));
            }
        }
        Ok(())
    }
}
