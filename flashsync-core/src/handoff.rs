//! A copy made in chunks, each at its own snapshot, and which feed
//! transactions each part of it already holds.
//!
//! A chunked copy (DESIGN §10) copies a view's key space a range at a time,
//! each range from its own snapshot, while the feed keeps flowing. Which of
//! the feed's transactions a row already reflects then depends on the range
//! its key lies in: a transaction the snapshot of *that* range could see is
//! skipped for the key, any other applied. A [`Handoff`] holds the ranges
//! (as [`Segment`]s, in key order) with their snapshot points; a copy made
//! in one piece is the one-segment case.
//!
//! Keys are compared in their [`crate::codec::encode_key`]
//! bytes — the order a chunked source must split by (a source that cannot
//! copies the relation as one chunk).

use serde::{Deserialize, Serialize};

use crate::change::RowOp;
use crate::codec::encode_key;
use crate::lsn::Lsn;
use crate::snapshot::SnapshotPoint;

/// A range of a view's keys copied at one snapshot: every key above the
/// previous segment's bound, through `through`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Inclusive upper bound, as encoded key bytes; `None`: to the end.
    pub through: Option<Vec<u8>>,
    /// The snapshot this range was copied at; `None` once the feed is past
    /// it (nothing it delivers can be in the range's copy any more).
    pub point: Option<SnapshotPoint>,
}

/// What a feed transaction means for a key (or for an operation's keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The copy lacks the transaction there: apply it.
    Apply,
    /// The copy already holds it there: skip.
    Skip,
    /// The operation touches keys of two segments that disagree (a key
    /// change across them, or a truncate): no single answer.
    Mixed,
}

/// An operation sifted by a [`Handoff`].
#[derive(Clone, Debug, PartialEq)]
pub enum Sifted {
    /// Apply this (the operation, or the half of a move that concerns a
    /// range lacking the transaction).
    Apply(RowOp),
    /// Nothing: the copy holds the transaction wherever it matters.
    Skip,
}

/// Which feed transactions each key range of a copy already holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HandoffRepr", into = "HandoffRepr")]
pub struct Handoff {
    /// In ascending bound order; the last one's bound is `None`.
    segments: Vec<Segment>,
}

/// The stored form. Job records written before chunked copies hold a bare
/// [`SnapshotPoint`] (a copy in one piece); they still load.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum HandoffRepr {
    Segments { segments: Vec<Segment> },
    Whole(SnapshotPoint),
}

impl From<HandoffRepr> for Handoff {
    fn from(r: HandoffRepr) -> Self {
        match r {
            HandoffRepr::Segments { segments } => Handoff { segments },
            HandoffRepr::Whole(point) => Handoff::whole(point),
        }
    }
}

impl From<Handoff> for HandoffRepr {
    fn from(h: Handoff) -> Self {
        HandoffRepr::Segments { segments: h.segments }
    }
}

impl Handoff {
    /// A copy made at one snapshot.
    pub fn whole(point: SnapshotPoint) -> Self {
        Handoff { segments: vec![Segment { through: None, point: Some(point) }] }
    }

    /// The segments built so far followed by a last one, to the end of the
    /// key space, at `last`. `done` must be in ascending bound order, each
    /// with a bound.
    pub fn from_chunks(done: Vec<Segment>, last: SnapshotPoint) -> Self {
        let mut segments = done;
        segments.push(Segment { through: None, point: Some(last) });
        Handoff { segments }
    }

    /// The key ranges a chunked copy has copied so far (`done`, in
    /// ascending bound order, each bounded): keys above the last bound are
    /// judged [`Verdict::Skip`] — the chunk that copies them is taken after
    /// everything delivered so far, and holds it.
    pub fn so_far(done: Vec<Segment>) -> Self {
        Handoff { segments: done }
    }

    /// The segments, in key order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segment `key` (encoded) falls in.
    fn segment_of(&self, key: &[u8]) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.through.as_deref().is_some_and(|t| t < key));
        self.segments.get(i)
    }

    /// Whether every segment's copy holds the transaction (so the view need
    /// not see it at all).
    pub fn contains_everywhere(&self, xid: u32, final_lsn: Lsn) -> bool {
        self.segments.iter().all(|s| s.point.as_ref().is_some_and(|p| p.contains(xid, final_lsn)))
    }

    /// Whether no segment's copy holds it (apply it whole).
    pub fn contains_nowhere(&self, xid: u32, final_lsn: Lsn) -> bool {
        self.segments.iter().all(|s| !s.point.as_ref().is_some_and(|p| p.contains(xid, final_lsn)))
    }

    /// What the transaction means at `key` (encoded).
    pub fn at_key(&self, key: &[u8], xid: u32, final_lsn: Lsn) -> Verdict {
        match self.segment_of(key) {
            // Not copied yet (see `so_far`).
            None => Verdict::Skip,
            Some(Segment { point: Some(p), .. }) if p.contains(xid, final_lsn) => Verdict::Skip,
            Some(_) => Verdict::Apply,
        }
    }

    /// Forgets every point: each range applies whatever the feed delivers.
    /// Only for planting a bug (`skip_chunk_filter`).
    pub fn without_points(mut self) -> Self {
        for s in &mut self.segments {
            s.point = None;
        }
        self
    }

    /// What the transaction means for `op`: the verdict at each key it
    /// touches, if they agree.
    pub fn for_op(&self, op: &RowOp, xid: u32, final_lsn: Lsn) -> Verdict {
        let (key, old) = match op {
            RowOp::Insert { key, .. } | RowOp::Evict { key } | RowOp::Delete { key } => (key, None),
            RowOp::Update { old_key, key, .. } | RowOp::UpdateIf { old_key, key, .. } => (key, old_key.as_ref()),
            RowOp::Truncate => {
                return if self.contains_everywhere(xid, final_lsn) {
                    Verdict::Skip
                } else if self.contains_nowhere(xid, final_lsn) {
                    Verdict::Apply
                } else {
                    Verdict::Mixed
                };
            }
        };
        let at = self.at_key(&encode_key(key), xid, final_lsn);
        match old.map(|o| self.at_key(&encode_key(o), xid, final_lsn)) {
            Some(before) if before != at => Verdict::Mixed,
            _ => at,
        }
    }

    /// What to do with `op` for the transaction: the operation as it is,
    /// nothing, or (for a row moving between ranges that disagree) the half
    /// of it that concerns the range lacking the transaction — the old key
    /// removed, or the row inserted at its new key when the change carries
    /// every value. `None` when no operation is right (a truncate some
    /// ranges hold, a row moving into a range that lacks the transaction
    /// from one that holds it, without all its values).
    pub fn sift(&self, op: RowOp, xid: u32, final_lsn: Lsn) -> Option<Sifted> {
        let moved = match &op {
            RowOp::Update { old_key: Some(old), key, .. } | RowOp::UpdateIf { old_key: Some(old), key, .. } => {
                Some((self.at_key(&encode_key(old), xid, final_lsn), self.at_key(&encode_key(key), xid, final_lsn)))
            }
            _ => None,
        };
        let Some((from, to)) = moved else {
            return match self.for_op(&op, xid, final_lsn) {
                Verdict::Apply => Some(Sifted::Apply(op)),
                Verdict::Skip => Some(Sifted::Skip),
                Verdict::Mixed => None,
            };
        };
        match (from, to, op) {
            (Verdict::Apply, Verdict::Apply, op) => Some(Sifted::Apply(op)),
            (Verdict::Skip, Verdict::Skip, _) => Some(Sifted::Skip),
            // The range of the old key lacks the move: the row leaves it.
            // The new key's range already has the row there.
            (Verdict::Apply, _, RowOp::Update { old_key: Some(old), .. }) => {
                Some(Sifted::Apply(RowOp::Delete { key: old }))
            }
            (Verdict::Apply, _, RowOp::UpdateIf { old_key: Some(old), .. }) => {
                Some(Sifted::Apply(RowOp::Evict { key: old }))
            }
            // The row arrives in a range that lacks the move, from one that
            // already reflects it: only a change carrying every value can
            // put it there.
            (_, Verdict::Apply, RowOp::Update { key, new, .. }) => {
                let values: Option<Vec<_>> = new
                    .into_iter()
                    .map(|c| match c {
                        crate::change::Cell::Set(v) => Some(v),
                        crate::change::Cell::Unchanged => None,
                    })
                    .collect();
                values.map(|v| Sifted::Apply(RowOp::Insert { key, row: crate::value::Row(v) }))
            }
            _ => None,
        }
    }

    /// Forgets the points the feed is past (`position`: every transaction
    /// committing before it has been delivered); `true` when none is left
    /// and the hand-off is over.
    pub fn expire(&mut self, position: Lsn) -> bool {
        for s in &mut self.segments {
            if s.point.as_ref().is_some_and(|p| p.lsn <= position) {
                s.point = None;
            }
        }
        self.segments.iter().all(|s| s.point.is_none())
    }

    /// The highest point's feed position: past it, the hand-off is over.
    pub fn lsn(&self) -> Lsn {
        self.segments.iter().filter_map(|s| s.point.as_ref()).map(|p| p.lsn).max().unwrap_or(Lsn(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Key, Value};

    fn point(xmin: u64, xmax: u64, lsn: u64) -> SnapshotPoint {
        SnapshotPoint { xmin, xmax, xip: Vec::new(), lsn: Lsn(lsn), rows: 0 }
    }

    fn k(i: i64) -> Key {
        Key(vec![Value::Int(i)])
    }

    /// Keys up to 10 copied at a snapshot that saw xids below 100; the rest
    /// at one that saw below 200.
    fn two() -> Handoff {
        Handoff::from_chunks(
            vec![Segment { through: Some(encode_key(&k(10))), point: Some(point(100, 100, 1000)) }],
            point(200, 200, 2000),
        )
    }

    #[test]
    fn each_key_is_judged_by_its_own_segment() {
        let h = two();
        assert_eq!(h.at_key(&encode_key(&k(10)), 150, Lsn(1500)), Verdict::Apply);
        assert_eq!(h.at_key(&encode_key(&k(11)), 150, Lsn(1500)), Verdict::Skip);
        assert_eq!(h.at_key(&encode_key(&k(-5)), 50, Lsn(500)), Verdict::Skip);
        assert!(!h.contains_everywhere(150, Lsn(1500)));
        assert!(h.contains_everywhere(50, Lsn(500)));
        assert!(h.contains_nowhere(250, Lsn(2500)));
    }

    #[test]
    fn operations_across_disagreeing_segments_are_mixed() {
        let h = two();
        let moved = RowOp::Update { old_key: Some(k(3)), key: k(30), new: Vec::new() };
        assert_eq!(h.for_op(&moved, 150, Lsn(1500)), Verdict::Mixed);
        assert_eq!(h.for_op(&moved, 50, Lsn(500)), Verdict::Skip);
        assert_eq!(h.for_op(&RowOp::Truncate, 150, Lsn(1500)), Verdict::Mixed);
        assert_eq!(h.for_op(&RowOp::Truncate, 250, Lsn(2500)), Verdict::Apply);
    }

    #[test]
    fn a_row_moving_between_disagreeing_ranges_keeps_the_half_that_matters() {
        let h = two();
        let cells = |i: i64| vec![crate::change::Cell::Set(Value::Int(i))];
        // Keys up to 10 lack transaction 150, keys above hold it.
        let out = RowOp::Update { old_key: Some(k(3)), key: k(30), new: cells(30) };
        assert_eq!(h.sift(out, 150, Lsn(1500)), Some(Sifted::Apply(RowOp::Delete { key: k(3) })));
        let back = RowOp::Update { old_key: Some(k(30)), key: k(3), new: cells(3) };
        let row = crate::value::Row(vec![Value::Int(3)]);
        assert_eq!(h.sift(back, 150, Lsn(1500)), Some(Sifted::Apply(RowOp::Insert { key: k(3), row })));
        let partial = RowOp::Update { old_key: Some(k(30)), key: k(3), new: vec![crate::change::Cell::Unchanged] };
        assert_eq!(h.sift(partial, 150, Lsn(1500)), None);
        let both = RowOp::Update { old_key: Some(k(30)), key: k(31), new: cells(31) };
        assert_eq!(h.sift(both, 150, Lsn(1500)), Some(Sifted::Skip));
        assert_eq!(h.sift(RowOp::Truncate, 150, Lsn(1500)), None);
    }

    #[test]
    fn expires_point_by_point() {
        let mut h = two();
        assert!(!h.expire(Lsn(1000)));
        assert_eq!(h.at_key(&encode_key(&k(1)), 50, Lsn(500)), Verdict::Apply);
        assert_eq!(h.lsn(), Lsn(2000));
        assert!(h.expire(Lsn(2000)));
    }

    #[test]
    fn a_stored_bare_point_loads_as_a_whole_copy() {
        let p = point(5, 9, 77);
        let json = serde_json::to_string(&p).unwrap();
        let h: Handoff = serde_json::from_str(&json).unwrap();
        assert_eq!(h, Handoff::whole(p));
        let again: Handoff = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(again, h);
    }
}
