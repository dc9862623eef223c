//! The executor's rule for batches queued behind a failed one.
//!
//! A driver applies the machine's batches strictly in emission order, but
//! the machine hears that a batch failed only after the driver has queued
//! (and, left alone, would apply) the batches it emitted meanwhile. Each of
//! those builds on the failed one: applied, they would leave a copy with a
//! hole and a stored position past it, and a persist before the machine's
//! reaction lands would make that durable. [`ApplyBatch::chain`] tells them
//! apart: a batch of a chain at or below a failed batch's chain is refused
//! ([`BatchGate::admit`]); the machine starts a new chain once it has handled
//! the failure, and those batches pass.

use std::collections::BTreeMap;

use crate::change::ApplyBatch;
use crate::error::{StoreError, StoreErrorKind};
use crate::view::OriginId;

/// Remembers, per origin, the chain of the last batch that failed. Every
/// driver of the machine keeps one in front of its store.
#[derive(Clone, Debug, Default)]
pub struct BatchGate {
    failed: BTreeMap<OriginId, u64>,
}

impl BatchGate {
    /// `Ok` if `batch` may be applied; otherwise the error to answer it with
    /// (the store is not called).
    pub fn admit(&self, batch: &ApplyBatch) -> Result<(), StoreError> {
        match self.failed.get(&batch.origin) {
            Some(&failed) if batch.chain <= failed => Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!("apply batch {}", batch.seq.0),
                "an earlier batch of the same origin failed; this one builds on it",
            )),
            _ => Ok(()),
        }
    }

    /// Records that a batch of `origin` and `chain` failed (or was refused).
    pub fn failed(&mut self, origin: &OriginId, chain: u64) {
        let mark = self.failed.entry(origin.clone()).or_insert(chain);
        *mark = (*mark).max(chain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{BatchSeq, Progress};
    use crate::lsn::Lsn;

    fn batch(origin: &str, seq: u64, chain: u64) -> ApplyBatch {
        ApplyBatch {
            seq: BatchSeq(seq),
            origin: OriginId::new(origin).expect("origin"),
            progress: Progress::Commit { end_lsn: Lsn(seq) },
            views: Vec::new(),
            jobs: Vec::new(),
            chain,
            commit_time: None,
            capture: Default::default(),
        }
    }

    #[test]
    fn batches_behind_a_failure_are_refused_until_a_new_chain() {
        let mut gate = BatchGate::default();
        assert!(gate.admit(&batch("pg:a", 1, 0)).is_ok());
        gate.failed(&OriginId::new("pg:a").expect("origin"), 0);
        assert!(gate.admit(&batch("pg:a", 2, 0)).is_err(), "emitted before the machine knew");
        assert!(gate.admit(&batch("pg:b", 3, 0)).is_ok(), "another origin is not affected");
        assert!(gate.admit(&batch("pg:a", 4, 1)).is_ok(), "the machine's new chain");
        gate.failed(&OriginId::new("pg:a").expect("origin"), 1);
        assert!(gate.admit(&batch("pg:a", 5, 1)).is_err());
        // A late refusal of an old chain does not lower the mark.
        gate.failed(&OriginId::new("pg:a").expect("origin"), 0);
        assert!(gate.admit(&batch("pg:a", 6, 1)).is_err());
    }
}
