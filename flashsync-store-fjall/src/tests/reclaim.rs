//! Replaced, discarded, abandoned and crash-orphaned generations become
//! garbage, and their rows are deleted.

use flashsync_core::{
    key, row, ApplyBatch, BatchSeq, Identity, Lsn, OriginId, Progress, RelationId, RowOp, Store, ViewOps,
};

use super::{block_on, open, publish, schema};
use crate::layout::{self, GenKey};
use crate::FjallStore;

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
        chain: 0,
        commit_time: None,
        capture: Default::default(),
    }
}

/// Rows physically present under a generation's prefix.
fn rows_of(store: &FjallStore, view: u64, generation: u64) -> usize {
    let gen = GenKey { view: RelationId(view), generation };
    store.inner.shared.ks.rows.prefix(gen.prefix()).count()
}

fn published_generation(store: &FjallStore, view: u64) -> u64 {
    let state = store.inner.shared.read("test").expect("state");
    state.copies.get(&RelationId(view)).expect("published").generation
}

#[test]
fn replaced_discarded_and_abandoned_generations_are_reclaimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("create");
    block_on(async {
        publish(&store, 1, vec![row![1, "a"], row![2, "b"]]).await.expect("publish");
        let first = published_generation(&store, 1);
        assert_eq!(store.generation_count(), 1);
        publish(&store, 1, vec![row![3, "c"]]).await.expect("republish");
        assert_eq!(store.generation_count(), 2, "the replaced generation awaits reclamation");
        assert_eq!(rows_of(&store, 1, first), 2);
        store.persist().await.expect("persist");
        assert_eq!(store.generation_count(), 1);
        assert_eq!(rows_of(&store, 1, first), 0, "persist deleted the replaced rows");

        let mut generation = store.begin_generation(RelationId(1), &schema()).await.expect("begin");
        generation.write(vec![row![9, "x"]]).await.expect("write");
        assert_eq!(store.generation_count(), 2);
        generation.discard().await.expect("discard");
        store.persist().await.expect("persist");
        assert_eq!(store.generation_count(), 1);

        let mut generation = store.begin_generation(RelationId(1), &schema()).await.expect("begin");
        generation.write(vec![row![9, "x"]]).await.expect("write");
        drop(generation);
        // The abandonment is queued on the writer thread; persist runs after it.
        store.persist().await.expect("persist");
        assert_eq!(store.generation_count(), 1, "an abandoned generation is reclaimed");

        // A truncate switches to a fresh generation; the old rows must
        // outlive the (not yet durable) switch.
        let before = published_generation(&store, 1);
        store.apply(truncate(1)).await.expect("apply");
        store.apply(truncate(2)).await.expect("apply");
        assert_eq!(store.generation_count(), 3);
        assert_eq!(rows_of(&store, 1, before), 1, "rows kept until the switch is durable");
        assert_eq!(store.persist().await.expect("persist"), Some(BatchSeq(2)));
        assert_eq!(store.generation_count(), 1);
        assert_eq!(rows_of(&store, 1, before), 0);
        assert_eq!(store.scan(RelationId(1), &Default::default(), 10).await.expect("scan"), vec![row![2, "t"]]);

        let last = published_generation(&store, 1);
        store.forget(RelationId(1)).await.expect("forget");
        store.persist().await.expect("persist");
        assert_eq!(store.generation_count(), 0);
        assert_eq!(rows_of(&store, 1, last), 0);
    });
}

/// Persists overlap applies (the journal's fsync runs off the writer
/// thread, while the writer applies the next truncates): what they report
/// never goes back or past what was applied, every generation a truncate
/// replaced is released by some later persist (none is left behind by a
/// sync that began before its replacement), and the store ends whole,
/// before and after a reopen.
#[test]
fn persists_overlapping_applies_report_in_order_and_leave_no_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n: u64 = 200;
    {
        let store = open(dir.path()).expect("create");
        block_on(async {
            publish(&store, 1, vec![]).await.expect("publish");
            let applies = async {
                for seq in 1..=n {
                    store.apply(truncate(seq)).await.expect("apply");
                }
            };
            let persists = async {
                let mut last = None;
                for _ in 0..n / 4 {
                    let through = store.persist().await.expect("persist");
                    assert!(through >= last, "persist went back from {last:?} to {through:?}");
                    assert!(through <= Some(BatchSeq(n)));
                    last = through;
                }
            };
            futures::join!(applies, persists);
            assert_eq!(store.persist().await.expect("persist"), Some(BatchSeq(n)));
            store.reclaim().await.expect("reclaim");
            assert_eq!(store.generation_count(), 1, "every replaced generation reclaimed, the published one kept");
            let rows = store.scan(RelationId(1), &Default::default(), 10).await.expect("scan");
            assert_eq!(rows, vec![row![n as i64, "t"]]);
        });
    }
    let store = open(dir.path()).expect("reopen");
    let rows = block_on(store.scan(RelationId(1), &Default::default(), 10)).expect("scan");
    assert_eq!(rows, vec![row![n as i64, "t"]], "the last truncate and its row survive a reopen");
}

/// Rows that reached the view through ordinary batches share tables with
/// other views' rows, so they are deleted key by key, a bounded step per
/// persist.
#[test]
fn rows_written_by_batches_are_reclaimed_in_bounded_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("create");
    let n = crate::shared::RECLAIM_STEP * 2 + 10;
    block_on(async {
        publish(&store, 1, vec![]).await.expect("publish");
        publish(&store, 2, vec![]).await.expect("publish");
        let first = published_generation(&store, 1);
        let inserts = || (0..n as i64).map(|i| RowOp::Insert { key: key![i], row: row![i, "r"] }).collect();
        let batch = ApplyBatch {
            views: [1, 2]
                .map(|v| ViewOps { relation_id: RelationId(v), identity: Identity::Key, ops: inserts() })
                .to_vec(),
            ..truncate(1)
        };
        store.apply(batch).await.expect("apply");
        publish(&store, 1, vec![row![1, "new"]]).await.expect("republish");
        store.persist().await.expect("persist");
        let left = rows_of(&store, 1, first);
        assert_eq!(left, n - crate::shared::RECLAIM_STEP, "one bounded step per persist");
        store.reclaim().await.expect("reclaim");
        assert_eq!(rows_of(&store, 1, first), 0);
        assert_eq!(store.generation_count(), 2, "the two published copies");
        assert_eq!(store.count(RelationId(1)).await.expect("count"), 1);
    });
}

/// Bytes of the files under `dir` that hold data: the journal is left out,
/// because fjall preallocates it (64 MiB) whatever it holds. fjall's
/// background threads delete files meanwhile: one gone between listing
/// and measuring counts as nothing.
fn disk_usage(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        } else if entry.path().extension().is_none_or(|e| e != "jnl") {
            total += meta.len();
        }
    }
    total
}

/// A copied view's rows live in tables of their own (bulk ingestion), which
/// reclamation drops whole: forgetting the view gives the disk back at once,
/// without waiting for a persist,
/// while another view's copy stays readable throughout.
#[test]
fn forgetting_a_copied_view_gives_its_disk_space_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("create");
    let filler = "x".repeat(200);
    block_on(async {
        publish(&store, 2, (0..1000i64).map(|i| row![i, "kept"]).collect()).await.expect("publish other");
        publish(&store, 1, (0..200_000i64).map(|i| row![i, filler.as_str()]).collect()).await.expect("publish");
        store.persist().await.expect("persist");
        let full = disk_usage(dir.path());
        assert!(full > 20 << 20, "the copy takes space on disk ({full} bytes)");
        // No persist or reclaim after it: forget alone gives the space back.
        store.forget(RelationId(1)).await.expect("forget");
        // A table file goes when its last reader lets go of it (a background
        // compaction may hold one for a moment): bounded wait.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut after = disk_usage(dir.path());
        while after >= full / 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            after = disk_usage(dir.path());
        }
        assert!(after < full / 20, "forget gave the space back: {full} bytes before, {after} after");
        let rows = store.scan(RelationId(2), &Default::default(), usize::MAX).await.expect("scan other");
        assert_eq!(rows.len(), 1000, "the other view is whole");
    });
}

#[test]
fn generations_orphaned_by_a_crash_are_reclaimed_after_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let store = open(dir.path()).expect("create");
        publish(&store, 1, vec![row![1, "a"]]).await.expect("publish");
    });
    {
        // What a crash in the middle of a materialization leaves: a marked,
        // partly written generation nothing points at.
        let db = fjall::Database::builder(dir.path()).open().expect("open raw fjall");
        let ks = |name| db.keyspace(name, fjall::KeyspaceCreateOptions::default).expect("keyspace");
        let (filling, rows) = (ks(layout::KS_FILLING), ks(layout::KS_ROWS));
        for (view, generation) in [(1, 77), (5, 78)] {
            let gen = GenKey { view: RelationId(view), generation };
            filling.insert(gen.prefix(), []).expect("insert");
            rows.insert(gen.row_key(b"k"), b"v".to_vec()).expect("insert");
        }
    }
    let store = open(dir.path()).expect("reopen");
    assert_eq!(store.generation_count(), 3);
    let rows = block_on(store.scan(RelationId(1), &Default::default(), 10)).expect("scan");
    assert_eq!(rows, vec![row![1, "a"]]);
    block_on(store.persist()).expect("persist");
    assert_eq!(store.generation_count(), 1);
    assert_eq!(rows_of(&store, 1, 77) + rows_of(&store, 5, 78), 0);
    // New generations get numbers past the orphans'.
    block_on(publish(&store, 2, vec![row![1, "b"]])).expect("publish");
    assert!(published_generation(&store, 2) > 78);
}
