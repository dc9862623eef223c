//! Parts of upstream transactions too large for one batch, held by a store
//! until the batch that commits the transaction applies them.
//!
//! The machine splits a transaction with more row operations than fit one
//! batch into [`Progress::Stage`] batches and one final
//! [`Progress::Commit`] batch. A store gives the staged parts to a
//! [`Staging`] instead of applying them, and lets it rewrite each batch
//! before applying ([`Staging::absorb`]):
//!
//! - a `Stage` batch's row operations are taken out and kept (the batch
//!   then changes no row: its sequence number and job records still count);
//! - a `Commit` batch gets, for every view it names, that view's staged
//!   operations in front of its own, so the store applies the whole
//!   transaction as one atomic batch; every staged part of the origin is
//!   then dropped, claimed or not (a view that left the feed mid-transaction
//!   is not named, and its part goes);
//! - `Stage { first: true }` begins a transaction: parts staged by an
//!   earlier attempt that never committed (the feed broke) are dropped;
//! - staging is never durable and never read by readers: a reopened store
//!   starts with none, and the feed sends the unfinished transaction again
//!   from the origin's applied position.
//!
//! So readers never see part of a transaction, and a crash in the middle of
//! one leaves the copies exactly as they were before it.

mod codec;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::change::{ApplyBatch, Progress, ViewOps};
use crate::error::{StoreError, StoreErrorKind};
use crate::view::{OriginId, RelationId};
use codec::Part;

/// Where a store keeps staged parts' bytes out of memory — a file beside
/// its data, say — so a transaction of any size stages in flat memory.
/// Nothing in it needs to survive a crash.
pub trait Spill: Send {
    /// Keeps `bytes`; returns where they are.
    fn write(&mut self, bytes: &[u8]) -> Result<SpillRef, StoreError>;
    /// The bytes `write` kept at `at`.
    fn read(&mut self, at: SpillRef) -> Result<Vec<u8>, StoreError>;
    /// Nothing written so far will be read again: the space may go.
    fn reset(&mut self) -> Result<(), StoreError>;
}

/// Where a [`Spill`] keeps one part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpillRef {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

type SharedSpill = Arc<Mutex<Box<dyn Spill>>>;

/// The staged parts of each origin's open transaction, kept as bytes in
/// the stores' own encodings (see the `codec` module) — about the size of
/// the rows themselves — in memory, or in a [`Spill`].
#[derive(Default)]
pub struct Staging {
    origins: BTreeMap<OriginId, Staged>,
    spill: Option<SharedSpill>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("staged_ops", &self.staged_ops()).field("spill", &self.spill.is_some()).finish()
    }
}

/// One origin's staged parts, per view, in upstream order.
#[derive(Debug, Default)]
struct Staged {
    views: BTreeMap<RelationId, Vec<Held>>,
    ops: usize,
}

/// A part, and where its bytes are when not in it.
#[derive(Debug)]
struct Held {
    part: Part,
    spilled: Option<SpillRef>,
}

/// The staged parts a commit batch claims, to be applied before the
/// batch's own operations of each view: see
/// [`apply_staged`](crate::rowops::apply_staged). Decoded (and read back
/// from the spill) one part at a time as they are applied.
#[derive(Default)]
pub struct Claimed {
    views: BTreeMap<RelationId, Vec<Held>>,
    spill: Option<SharedSpill>,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed").field("views", &self.views.len()).finish()
    }
}

fn spill_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Io, "staging a large transaction", e.to_string())
}

impl Claimed {
    /// Nothing claimed.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Takes `view`'s parts, decoded one by one (empty after the first
    /// call for a view: a view named twice in a batch gets its parts once).
    pub fn take(&mut self, view: RelationId) -> impl Iterator<Item = Result<Vec<crate::RowOp>, StoreError>> + use<> {
        let spill = self.spill.clone();
        self.views.remove(&view).unwrap_or_default().into_iter().map(move |mut held| {
            if let (Some(at), Some(spill)) = (held.spilled, spill.as_ref()) {
                held.part.bytes = spill.lock().map_err(|_| spill_error("the spill's lock is poisoned"))?.read(at)?;
            }
            held.part.decode()
        })
    }
}

impl Staging {
    /// Staging that keeps parts' bytes in `spill` rather than in memory.
    pub fn with_spill(spill: impl Spill + 'static) -> Staging {
        Staging { origins: BTreeMap::new(), spill: Some(Arc::new(Mutex::new(Box::new(spill)))) }
    }

    /// Takes what `batch` stages, or what a commit claims; returns the batch
    /// to apply and the staged parts to apply before its operations (with
    /// [`apply_staged`](crate::rowops::apply_staged)). Fails only when the
    /// spill does.
    pub fn absorb(&mut self, mut batch: ApplyBatch) -> Result<(ApplyBatch, Claimed), StoreError> {
        let mut claimed = Claimed { views: BTreeMap::new(), spill: self.spill.clone() };
        match batch.progress {
            Progress::Stage { first } => {
                if first {
                    self.origins.remove(&batch.origin);
                    // Every part written so far has been applied or dropped
                    // (a commit's claim is applied before the next batch).
                    if self.origins.values().all(|s| s.views.is_empty()) {
                        if let Some(spill) = &self.spill {
                            spill.lock().map_err(|_| spill_error("the spill's lock is poisoned"))?.reset()?;
                        }
                    }
                }
                if batch.views.iter().all(|v| v.ops.is_empty()) {
                    // Nothing to keep (the machine's way of dropping an
                    // abandoned transaction's parts).
                    batch.views.clear();
                    return Ok((batch, claimed));
                }
                let staged = self.origins.entry(batch.origin.clone()).or_default();
                for v in std::mem::take(&mut batch.views) {
                    if v.ops.is_empty() {
                        continue;
                    }
                    let mut part = Part::encode(&v.ops);
                    let spilled = match &self.spill {
                        Some(spill) => {
                            let at = spill
                                .lock()
                                .map_err(|_| spill_error("the spill's lock is poisoned"))?
                                .write(&part.bytes)?;
                            part.bytes = Vec::new();
                            Some(at)
                        }
                        None => None,
                    };
                    staged.ops += part.ops;
                    staged.views.entry(v.relation_id).or_default().push(Held { part, spilled });
                }
            }
            Progress::Commit { .. } => {
                if let Some(mut staged) = self.origins.remove(&batch.origin) {
                    for v in &batch.views {
                        if let Some(parts) = staged.views.remove(&v.relation_id) {
                            claimed.views.insert(v.relation_id, parts);
                        }
                    }
                }
            }
            Progress::Replay => {}
        }
        Ok((batch, claimed))
    }

    /// Row operations staged and not yet committed, over every origin.
    pub fn staged_ops(&self) -> usize {
        self.origins.values().map(|s| s.ops).sum()
    }

    /// Drops everything staged: what reopening a store does.
    pub fn clear(&mut self) {
        self.origins.clear();
    }
}

/// A commit's views with staged parts but no operations of their own, for
/// the machine to name them (so the commit claims their parts).
pub(crate) fn claim(views: &mut Vec<ViewOps>, claimed: impl IntoIterator<Item = ViewOps>) {
    for c in claimed {
        if !views.iter().any(|v| v.relation_id == c.relation_id) {
            views.push(c);
        }
    }
    views.sort_by_key(|v| v.relation_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{BatchSeq, RowOp, ViewOps};
    use crate::lsn::Lsn;
    use crate::schema::Identity;
    use crate::{key, row};

    fn batch(progress: Progress, views: &[(u64, i64)]) -> ApplyBatch {
        ApplyBatch {
            seq: BatchSeq(1),
            origin: OriginId::new("postgres:main").expect("origin"),
            progress,
            views: views
                .iter()
                .map(|&(v, k)| ViewOps {
                    relation_id: RelationId(v),
                    identity: Identity::Key,
                    ops: vec![RowOp::Insert { key: key![k], row: row![k] }],
                })
                .collect(),
            jobs: vec![],
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        }
    }

    /// The keys inserted into `view`: its claimed parts, then its own.
    impl Staging {
        fn absorb_ok(&mut self, b: ApplyBatch) -> (ApplyBatch, Claimed) {
            self.absorb(b).expect("no spill, no failure")
        }
    }

    fn keys(absorbed: &mut (ApplyBatch, Claimed), view: u64) -> Vec<i64> {
        let id = RelationId(view);
        let staged: Vec<RowOp> = absorbed.1.take(id).flat_map(|ops| ops.expect("decodes")).collect();
        let own = absorbed.0.views.iter().filter(|v| v.relation_id == id).flat_map(|v| v.ops.clone());
        staged
            .into_iter()
            .chain(own)
            .map(|op| match op {
                RowOp::Insert { key, .. } => match key.0[0] {
                    crate::Value::Int(i) => i,
                    _ => unreachable!(),
                },
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_commit_applies_the_parts_it_names_first_and_drops_the_rest() {
        let mut s = Staging::default();
        let (staged, claimed) = s.absorb_ok(batch(Progress::Stage { first: true }, &[(1, 1), (2, 1)]));
        assert!(staged.views.is_empty() && claimed.is_empty(), "a stage batch changes no row");
        s.absorb_ok(batch(Progress::Stage { first: false }, &[(1, 2)]));
        assert_eq!(s.staged_ops(), 3);
        let mut commit = s.absorb_ok(batch(Progress::Commit { end_lsn: Lsn(9) }, &[(1, 3)]));
        assert_eq!(keys(&mut commit, 1), vec![1, 2, 3], "staged parts first, in order");
        assert_eq!(keys(&mut commit, 2), Vec::<i64>::new(), "view 2 was not named: its part is dropped");
        assert_eq!(s.staged_ops(), 0);
    }

    #[test]
    fn a_first_part_drops_an_abandoned_attempt_and_replays_touch_nothing() {
        let mut s = Staging::default();
        s.absorb_ok(batch(Progress::Stage { first: true }, &[(1, 1)]));
        s.absorb_ok(batch(Progress::Replay, &[(1, 7)]));
        assert_eq!(s.staged_ops(), 1);
        s.absorb_ok(batch(Progress::Stage { first: true }, &[(1, 2)]));
        let mut commit = s.absorb_ok(batch(Progress::Commit { end_lsn: Lsn(9) }, &[(1, 3)]));
        assert_eq!(keys(&mut commit, 1), vec![2, 3]);
    }

    /// A spill in memory that counts how often it was emptied.
    struct Counting(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Spill for Counting {
        fn write(&mut self, bytes: &[u8]) -> Result<SpillRef, StoreError> {
            let at = SpillRef { offset: self.0.len() as u64, len: bytes.len() as u64 };
            self.0.extend_from_slice(bytes);
            Ok(at)
        }
        fn read(&mut self, at: SpillRef) -> Result<Vec<u8>, StoreError> {
            Ok(self.0[at.offset as usize..(at.offset + at.len) as usize].to_vec())
        }
        fn reset(&mut self) -> Result<(), StoreError> {
            self.0.clear();
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn spilled_parts_come_back_and_the_spill_empties_when_nothing_is_staged() {
        let resets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut s = Staging::with_spill(Counting(Vec::new(), resets.clone()));
        s.absorb_ok(batch(Progress::Stage { first: true }, &[(1, 1)]));
        s.absorb_ok(batch(Progress::Stage { first: false }, &[(1, 2)]));
        let mut commit = s.absorb_ok(batch(Progress::Commit { end_lsn: Lsn(9) }, &[(1, 3)]));
        assert_eq!(keys(&mut commit, 1), vec![1, 2, 3], "parts read back from the spill");
        let emptied = resets.load(std::sync::atomic::Ordering::SeqCst);
        // The machine's way of dropping abandoned parts (an empty first
        // part) leaves nothing staged, so the next transaction empties the
        // spill.
        let (b, claimed) = s.absorb_ok(batch(Progress::Stage { first: true }, &[]));
        assert!(b.views.is_empty() && claimed.is_empty());
        // Another origin's next transaction.
        let mut other = batch(Progress::Stage { first: true }, &[(2, 5)]);
        other.origin = OriginId::new("postgres:other").expect("origin");
        s.absorb_ok(other);
        assert!(resets.load(std::sync::atomic::Ordering::SeqCst) > emptied, "the spill was never emptied");
    }
}
