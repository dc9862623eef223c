//! Large transactions: staged parts wait in the spill file, and a commit
//! that fails after writing some of them leaves nothing readable.

use flashsync_core::{
    key, row, ApplyBatch, BatchSeq, Identity, Lsn, OriginId, Progress, RelationId, RowOp, Store, StoreErrorKind,
    ViewOps,
};

use super::{assert_kind, block_on, open, publish};
use crate::spill::STAGING_FILE;

pub(super) fn batch(seq: u64, progress: Progress, keys: std::ops::Range<i64>) -> ApplyBatch {
    ApplyBatch {
        seq: BatchSeq(seq),
        origin: OriginId::new("postgres:main").expect("origin"),
        progress,
        views: vec![ViewOps {
            relation_id: RelationId(1),
            identity: Identity::Key,
            ops: keys.map(|k| RowOp::Insert { key: key![k], row: row![k, "big"] }).collect(),
        }],
        jobs: vec![],
        chain: 0,
        commit_time: None,
        capture: Default::default(),
    }
}

#[test]
fn a_commit_that_fails_after_writing_a_part_refuses_every_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("create");
    block_on(async {
        publish(&store, 1, vec![]).await.expect("publish");
        store.apply(batch(1, Progress::Stage { first: true }, 0..100)).await.expect("stage");
        let first = std::fs::metadata(dir.path().join(STAGING_FILE)).expect("staging file").len();
        assert!(first > 0, "the part went to the spill file");
        store.apply(batch(2, Progress::Stage { first: false }, 100..200)).await.expect("stage");
        assert_eq!(store.count(RelationId(1)).await.expect("count"), 0, "staged parts are invisible");
        // The second part's bytes are lost: the commit writes the first,
        // then cannot read the second back.
        let file = std::fs::OpenOptions::new().write(true).open(dir.path().join(STAGING_FILE)).expect("open");
        file.set_len(first).expect("truncate");
        let commit = batch(3, Progress::Commit { end_lsn: Lsn(10) }, 200..201);
        assert!(store.apply(commit).await.is_err(), "the commit cannot complete");
        assert_kind(store.count(RelationId(1)).await, StoreErrorKind::Poisoned);
    });
    // Reopened, the view is marked to be copied again; nothing was staged.
    drop(store);
    let store = open(dir.path()).expect("reopen");
    let state = block_on(store.load()).expect("load");
    assert_eq!(state.dirty, vec![RelationId(1)]);
}
