//! How far each origin's mirror is behind its server, in bytes and seconds.
//!
//! Once a second (ten after a failure) a task asks each origin's source for
//! the server's current WAL position ([`Source::server_position`]) and the
//! machine for the origin's acknowledged (durable) position. Bytes are the
//! difference. Seconds come from the same samples, the way Postgres
//! measures its own replication lag: the tracker remembers when the server
//! first stood past each position, and the lag is how long ago the server
//! first passed the position the mirror has reached — so unrelated WAL
//! (which keepalives let the mirror pass) counts only until the next
//! keepalive, and a quiet table is not "hours behind".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashsync_core::{Lsn, OriginId, Source};
use tokio::sync::{mpsc, oneshot};

use crate::driver::Msg;

/// An origin's lag, as last measured.
#[derive(Clone, Debug, PartialEq)]
pub struct OriginLag {
    /// The origin.
    pub origin: OriginId,
    /// The server's current end of WAL, when last asked.
    pub server: Option<Lsn>,
    /// The position applied locally and durable (acknowledged upstream).
    pub durable: Option<Lsn>,
    /// Bytes of WAL the mirror is behind the server.
    pub lag_bytes: Option<u64>,
    /// Seconds since the server first passed the mirror's position (0 when
    /// caught up).
    pub lag_seconds: Option<f64>,
    /// WAL the origin's replication slot keeps on the server.
    pub retained_bytes: Option<u64>,
    /// Why the last measurement failed, if it did.
    pub error: Option<String>,
}

/// Server positions and when they were first seen, to turn a position the
/// mirror has reached into an age.
#[derive(Debug, Default)]
pub(crate) struct LagTracker {
    samples: VecDeque<(Lsn, Instant)>,
}

/// Samples kept per origin: an hour at one a second; older ones only matter
/// for a mirror more than an hour behind, which then reads as an hour.
const MAX_SAMPLES: usize = 3600;

impl LagTracker {
    /// The server stood at `lsn` at `at`.
    pub fn observe(&mut self, lsn: Lsn, at: Instant) {
        if self.samples.back().is_none_or(|&(last, _)| lsn > last) {
            if self.samples.len() == MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back((lsn, at));
        }
    }

    /// How long ago the server first stood past `reached` (zero if it has
    /// not); forgets the samples `reached` covers.
    pub fn lag(&mut self, reached: Lsn, now: Instant) -> Duration {
        while self.samples.front().is_some_and(|&(lsn, _)| lsn <= reached) {
            self.samples.pop_front();
        }
        self.samples.front().map_or(Duration::ZERO, |&(_, at)| now.saturating_duration_since(at))
    }
}

/// What the engine handle reads.
pub(crate) type LagTable = Arc<Mutex<HashMap<OriginId, OriginLag>>>;

/// Measures every origin once a second until the engine goes.
pub(crate) async fn track(
    sources: Vec<(OriginId, Arc<dyn Source>)>,
    to_machine: mpsc::WeakUnboundedSender<Msg>,
    table: LagTable,
) {
    let mut trackers: HashMap<OriginId, LagTracker> = HashMap::new();
    let mut next_try: HashMap<OriginId, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tx) = to_machine.upgrade() else { return };
        let (reply, rx) = oneshot::channel();
        if tx.send(Msg::Progress { reply }).is_err() {
            return;
        }
        drop(tx);
        let Ok(progress) = rx.await else { return };
        for (origin, source) in &sources {
            let now = Instant::now();
            if next_try.get(origin).is_some_and(|&at| now < at) {
                continue;
            }
            let durable = progress.get(origin).copied().flatten();
            let lag = match source.server_position().await {
                Ok(pos) => {
                    next_try.remove(origin);
                    let tracker = trackers.entry(origin.clone()).or_default();
                    let now = Instant::now();
                    tracker.observe(pos.current, now);
                    // No position yet (nothing streamed): no lag to speak of.
                    let behind = durable.map(|reached| {
                        (pos.current.0.saturating_sub(reached.0), tracker.lag(reached, now).as_secs_f64())
                    });
                    OriginLag {
                        origin: origin.clone(),
                        server: Some(pos.current),
                        durable,
                        lag_bytes: behind.map(|b| b.0),
                        lag_seconds: behind.map(|b| b.1),
                        retained_bytes: pos.retained_bytes,
                        error: None,
                    }
                }
                Err(e) => {
                    // A server that is down is asked again in ten seconds,
                    // not every second.
                    next_try.insert(origin.clone(), now + Duration::from_secs(10));
                    OriginLag {
                        origin: origin.clone(),
                        server: None,
                        durable,
                        lag_bytes: None,
                        lag_seconds: None,
                        retained_bytes: None,
                        error: Some(e.to_string()),
                    }
                }
            };
            table.lock().unwrap_or_else(|e| e.into_inner()).insert(origin.clone(), lag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_first_position_past_the_mirror() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = LagTracker::default();
        t.observe(Lsn(100), t0);
        t.observe(Lsn(100), t0 + s(1)); // not new: the first sighting counts
        t.observe(Lsn(200), t0 + s(2));
        t.observe(Lsn(300), t0 + s(3));
        assert_eq!(t.lag(Lsn(50), t0 + s(4)), s(4), "behind the oldest sample");
        assert_eq!(t.lag(Lsn(150), t0 + s(4)), s(2), "the server passed 150 at t0+2");
        assert_eq!(t.lag(Lsn(300), t0 + s(4)), Duration::ZERO, "caught up");
        t.observe(Lsn(400), t0 + s(5));
        assert_eq!(t.lag(Lsn(300), t0 + s(7)), s(2));
    }
}
