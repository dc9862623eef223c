//! The well-behaved driver: settling rounds, and the final liveness and
//! shutdown checks at the end of an input.

use std::collections::VecDeque;

use flashsync_core::machine::Epoch;
use flashsync_core::{Lsn, OriginId, RelationId, RequestId, StreamEvent};

use super::harness::{FeedMirror, Harness, Pending};
use super::inputs::Outcome;
use super::{trace, SETTLE_ROUNDS};

impl Harness {
    /// One round of a well-behaved driver: answer everything in flight
    /// successfully (in order), report every batch durable, close open
    /// transactions;
    /// with nothing in flight, fire the next timer. Returns whether anything
    /// happened.
    pub(super) fn settle_round(&mut self) -> bool {
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
        // Like the executor, which persists after every apply: batches
        // without an ack to wait on (a hand-off's replay, say) are made
        // durable too, and the machine may wait for that — but never one
        // not applied yet.
        let unapplied = self.pending.iter().filter_map(|p| match p {
            Pending::Apply(seq, _) => Some(*seq),
            _ => None,
        });
        let applied = match unapplied.min() {
            Some(first) => self.batches.iter().copied().filter(|s| *s < first).max(),
            None => self.batches.last().copied(),
        };
        if let Some(last) = applied {
            if self.acks.has_pending() || self.durable < Some(last) {
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
    pub(super) fn finish(mut self) {
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
