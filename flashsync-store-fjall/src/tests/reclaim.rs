//! Replaced, discarded, abandoned and crash-orphaned generations are deleted.

use flashsync_core::{
    key, row, ApplyBatch, BatchSeq, Identity, Lsn, OriginId, Progress, RelationId, RowOp, Store, ViewOps,
};

use super::{block_on, open, publish, schema};
use crate::layout;

fn truncate(seq: u64) -> ApplyBatch {
    ApplyBatch {
        seq: BatchSeq(seq),
        origin: OriginId::new("postgres:main").expect("origin"),
        progress: Progress::Commit { end_lsn: Lsn(seq * 10) },
        views: vec![ViewOps {
            relation_id: RelationId(1),
            identity: Identity::Key,
            ops: vec![RowOp::Truncate, RowOp::Insert { key: key![seq as i64], row: row![seq as i64, "t"] }],
        }],
        jobs: vec![],
    }
}

#[test]
fn replaced_discarded_and_abandoned_generations_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("create");
    block_on(async {
        publish(&store, 1, vec![row![1, "a"]]).await.expect("publish");
        assert_eq!(store.generation_count(), 1);
        publish(&store, 1, vec![row![2, "b"]]).await.expect("republish");
        assert_eq!(store.generation_count(), 1, "the replaced generation is deleted on publish");

        let generation = store.begin_generation(RelationId(1), &schema()).await.expect("begin");
        assert_eq!(store.generation_count(), 2);
        generation.discard().await.expect("discard");
        assert_eq!(store.generation_count(), 1);

        let generation = store.begin_generation(RelationId(1), &schema()).await.expect("begin");
        drop(generation);
        // The deletion is queued on the writer thread; any later call on it
        // runs after it.
        store.persist().await.expect("persist");
        assert_eq!(store.generation_count(), 1, "an abandoned generation is deleted");

        // A truncate switches to a fresh generation; the old one must outlive
        // the (not yet durable) switch.
        store.apply(truncate(1)).await.expect("apply");
        store.apply(truncate(2)).await.expect("apply");
        assert_eq!(store.generation_count(), 3);
        assert_eq!(store.persist().await.expect("persist"), Some(BatchSeq(2)));
        assert_eq!(store.generation_count(), 1);
        assert_eq!(store.scan(RelationId(1), &Default::default(), 10).await.expect("scan"), vec![row![2, "t"]]);

        store.forget(RelationId(1)).await.expect("forget");
        assert_eq!(store.generation_count(), 0);
    });
}

#[test]
fn generations_orphaned_by_a_crash_are_deleted_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let store = open(dir.path()).expect("create");
        publish(&store, 1, vec![row![1, "a"]]).await.expect("publish");
    });
    {
        // What a crash in the middle of a materialization leaves: a filled
        // generation nothing points at, for a known and a forgotten view.
        let db = fjall::Database::builder(dir.path()).open().expect("open raw fjall");
        for (view, generation) in [(1, 77), (5, 78)] {
            let name = layout::rows_keyspace(RelationId(view), generation);
            let ks = db.keyspace(&name, fjall::KeyspaceCreateOptions::default).expect("keyspace");
            ks.insert(b"k".to_vec(), b"v".to_vec()).expect("insert");
        }
    }
    let store = open(dir.path()).expect("reopen");
    assert_eq!(store.generation_count(), 1);
    let rows = block_on(store.scan(RelationId(1), &Default::default(), 10)).expect("scan");
    assert_eq!(rows, vec![row![1, "a"]]);
    // New generations get numbers past the orphans', even though they are gone.
    block_on(publish(&store, 2, vec![row![1, "b"]])).expect("publish");
    let names = store.inner.shared.db.list_keyspace_names();
    let newest = names.iter().filter_map(|n| layout::parse_rows_keyspace(n)).map(|(_, g)| g).max();
    assert!(newest.is_some_and(|g| g > 78), "{names:?}");
}
