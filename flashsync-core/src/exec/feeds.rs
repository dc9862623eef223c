//! Per-origin feed slots: which connection is wanted, whether it is open,
//! and whether it may be read.
//!
//! A feed is read only when the machine has not paused it *and* the store
//! keeps up (row operations handed to the store and not yet applied stay
//! under [`Config::max_ops_in_flight`](crate::Config::max_ops_in_flight)).
//! That is the one back-pressure mechanism: the driver stops reading, the
//! source's TCP window fills, and the server waits.

use std::collections::BTreeMap;

use crate::machine::Epoch;
use crate::view::OriginId;

use super::work::FeedCommand;

/// The connection of one subscription attempt.
#[derive(Debug)]
enum Conn<F> {
    /// `subscribe` is in progress.
    Connecting,
    /// Subscribed; acknowledgements go through `F`.
    Open(F),
}

#[derive(Debug)]
struct Slot<F> {
    epoch: Epoch,
    conn: Conn<F>,
    /// The machine asked to stop reading.
    machine_paused: bool,
    /// What the driver was last told.
    paused: bool,
}

/// Why the executor holds every feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hold {
    /// The store is behind.
    pub store_behind: bool,
}

pub(crate) struct FeedSlots<F> {
    slots: BTreeMap<OriginId, Slot<F>>,
}

impl<F> FeedSlots<F> {
    pub fn new() -> Self {
        FeedSlots { slots: BTreeMap::new() }
    }

    /// Subscribing while a feed of the origin is open or connecting closes
    /// it first: one connection per origin, the newest epoch wins.
    pub fn open(&mut self, origin: OriginId, epoch: Epoch, out: &mut Vec<FeedCommand>) {
        if let Some(old) = self.slots.remove(&origin) {
            out.push(FeedCommand::Close { origin: origin.clone(), epoch: old.epoch });
        }
        self.slots.insert(origin, Slot { epoch, conn: Conn::Connecting, machine_paused: false, paused: false });
    }

    /// Forgets the connection of `epoch` (if it is the current one); `true`
    /// if there was one to close.
    pub fn close(&mut self, origin: &OriginId, epoch: Option<Epoch>) -> Option<Epoch> {
        let current = self.slots.get(origin)?.epoch;
        if epoch.is_some_and(|e| e != current) {
            return None;
        }
        self.slots.remove(origin);
        Some(current)
    }

    /// Every slot, closed (shutdown).
    pub fn close_all(&mut self) -> Vec<(OriginId, Epoch)> {
        std::mem::take(&mut self.slots).into_iter().map(|(o, s)| (o, s.epoch)).collect()
    }

    /// Whether `epoch` is the origin's current attempt.
    pub fn is_current(&self, origin: &OriginId, epoch: Epoch) -> bool {
        self.slots.get(origin).is_some_and(|s| s.epoch == epoch)
    }

    /// The subscription of `epoch` came up with feedback `f`; `false` if it
    /// is no longer wanted.
    pub fn connected(&mut self, origin: &OriginId, epoch: Epoch, f: F) -> bool {
        match self.slots.get_mut(origin) {
            Some(s) if s.epoch == epoch && matches!(s.conn, Conn::Connecting) => {
                s.conn = Conn::Open(f);
                true
            }
            _ => false,
        }
    }

    pub fn feedback(&self, origin: &OriginId, epoch: Epoch) -> Option<&F> {
        match self.slots.get(origin) {
            Some(Slot { epoch: e, conn: Conn::Open(f), .. }) if *e == epoch => Some(f),
            _ => None,
        }
    }

    /// Whether acknowledgements for `epoch` can go out.
    pub fn is_open(&self, origin: &OriginId, epoch: Epoch) -> bool {
        self.feedback(origin, epoch).is_some()
    }

    pub fn set_machine_pause(&mut self, origin: &OriginId, epoch: Epoch, paused: bool) {
        if let Some(s) = self.slots.get_mut(origin).filter(|s| s.epoch == epoch) {
            s.machine_paused = paused;
        }
    }

    /// Whether the driver should be reading the origin's feed now.
    pub fn is_paused(&self, origin: &OriginId) -> bool {
        self.slots.get(origin).is_some_and(|s| s.paused)
    }

    /// Brings every slot's pause in line with the machine's wish and `hold`;
    /// a command for each that changed.
    pub fn reconcile(&mut self, hold: Hold, out: &mut Vec<FeedCommand>) {
        for (origin, s) in &mut self.slots {
            let paused = s.machine_paused || hold.store_behind;
            if paused != s.paused {
                s.paused = paused;
                out.push(FeedCommand::Pause { origin: origin.clone(), epoch: s.epoch, paused });
            }
        }
    }
}
