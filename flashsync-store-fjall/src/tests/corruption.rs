//! Damaged bytes on disk are reported as `Corrupt` errors — never a panic,
//! never silently skipped.

use flashsync_core::codec::encode_key;
use flashsync_core::{
    key, row, ApplyBatch, BatchSeq, Cell, Identity, JobRecord, OriginId, Progress, RelationId, RowOp, Store,
    StoreErrorKind, Timestamp, ViewOps,
};

use super::{assert_kind, block_on, open, publish, schema, view};
use crate::layout;

/// Creates a store with view 1 published as rows 1 and 2, closes it, then
/// lets `damage` write to the raw fjall database.
fn damaged(damage: impl FnOnce(&fjall::Database)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let store = open(dir.path()).expect("create");
        publish(&store, 1, vec![row![1, "a"], row![2, "b"]]).await.expect("publish");
    });
    let db = fjall::Database::builder(dir.path()).open().expect("open raw fjall");
    damage(&db);
    dir
}

fn keyspace(db: &fjall::Database, name: &str) -> fjall::Keyspace {
    db.keyspace(name, fjall::KeyspaceCreateOptions::default).expect("keyspace")
}

/// The rows key of `key` in view 1's published generation.
fn row_key_of_view_1(db: &fjall::Database, key: &flashsync_core::Key) -> Vec<u8> {
    let copies = keyspace(db, layout::KS_COPIES);
    let record = copies.get(layout::view_key(RelationId(1))).expect("read").expect("view 1 is published");
    let record: layout::CopyRecord = serde_json::from_slice(&record).expect("copy record");
    layout::GenKey { view: RelationId(1), generation: record.generation }.row_key(&encode_key(key))
}

#[test]
fn a_damaged_row_fails_reads_of_it_and_applies_that_need_it() {
    let dir = damaged(|db| {
        let key = row_key_of_view_1(db, &key![1]);
        keyspace(db, layout::KS_ROWS).insert(key, vec![0x02, 0xFF]).expect("insert garbage");
    });
    let store = open(dir.path()).expect("open: rows are read lazily");
    let id = RelationId(1);
    block_on(async {
        assert_kind(store.get(id, &key![1]).await, StoreErrorKind::Corrupt);
        assert_eq!(store.get(id, &key![2]).await.expect("intact row"), Some(row![2, "b"]));
        assert_kind(store.scan(id, &Default::default(), 10).await, StoreErrorKind::Corrupt);
        assert_kind(store.count(id).await, StoreErrorKind::Corrupt);
        // Keeping an unchanged value needs the damaged row.
        let batch = ApplyBatch {
            seq: BatchSeq(1),
            origin: OriginId::new("postgres:main").expect("origin"),
            progress: Progress::Commit { end_lsn: flashsync_core::Lsn(10) },
            views: vec![ViewOps {
                relation_id: id,
                identity: Identity::Key,
                ops: vec![RowOp::Update {
                    old_key: None,
                    key: key![1],
                    new: vec![Cell::Set(1.into()), Cell::Unchanged],
                }],
            }],
            jobs: vec![],
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        };
        assert_kind(store.apply(batch).await, StoreErrorKind::Corrupt);
        // The failed batch changed nothing.
        assert!(store.load().await.expect("load").origins.is_empty());
    });
}

#[test]
fn a_damaged_catalog_entry_fails_load() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_CATALOG)
            .insert(layout::view_key(RelationId(1)), b"{\"relation_id\":".to_vec())
            .expect("insert garbage");
    });
    let store = open(dir.path()).expect("open");
    assert_kind(block_on(store.load()), StoreErrorKind::Corrupt);
}

#[test]
fn a_catalog_key_of_the_wrong_size_fails_open() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_CATALOG).insert(b"xyz".to_vec(), b"{}".to_vec()).expect("insert");
    });
    assert_kind(open(dir.path()), StoreErrorKind::Corrupt);
}

#[test]
fn a_damaged_job_fails_load() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_JOBS).insert(layout::view_key(RelationId(1)), b"[]".to_vec()).expect("insert garbage");
    });
    let store = open(dir.path()).expect("open");
    assert_kind(block_on(store.load()), StoreErrorKind::Corrupt);
}

#[test]
fn a_damaged_copy_pointer_fails_open() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_COPIES)
            .insert(layout::view_key(RelationId(1)), b"\x00\x01".to_vec())
            .expect("insert garbage");
    });
    assert_kind(open(dir.path()), StoreErrorKind::Corrupt);
}

#[test]
fn a_damaged_garbage_marker_fails_open() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_GARBAGE).insert(vec![1u8; 15], []).expect("insert");
    });
    assert_kind(open(dir.path()), StoreErrorKind::Corrupt);
}

#[test]
fn a_damaged_generation_counter_fails_open() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_META).insert(layout::META_NEXT_GENERATION, vec![1, 2]).expect("insert");
    });
    assert_kind(open(dir.path()), StoreErrorKind::Corrupt);
}

#[test]
fn a_damaged_origin_lsn_fails_load() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_ORIGINS).insert("postgres:main", vec![1, 2, 3]).expect("insert");
    });
    let store = open(dir.path()).expect("open");
    assert_kind(block_on(store.load()), StoreErrorKind::Corrupt);
}

#[test]
fn a_damaged_dirty_marker_fails_open() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_DIRTY)
            .insert(layout::view_key(RelationId(1)), b"not an origin!".to_vec())
            .expect("insert");
    });
    assert_kind(open(dir.path()), StoreErrorKind::Corrupt);
}

#[test]
fn a_damaged_format_version_fails_open() {
    let dir = damaged(|db| {
        keyspace(db, layout::KS_META).insert(layout::META_FORMAT_VERSION, vec![1]).expect("insert");
    });
    assert_kind(open(dir.path()), StoreErrorKind::Corrupt);
}

#[test]
fn a_flipped_byte_in_the_journal_fails_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        // No reorder window: the first row is ingested at once.
        let store = crate::FjallStore::open(dir.path(), crate::Options::default().reorder_window(0)).expect("create");
        // One large batch of rows, then more batches after it, so the damage
        // lands in the middle of the journal rather than in its tail (a torn
        // tail is what a crash leaves, and is dropped by design). The rows
        // come after a higher key, so they go through the journal rather than
        // bulk ingestion.
        let v = view(1);
        store.put_view(&v).await.expect("put view");
        let mut generation = store.begin_generation(v.relation_id, &schema()).await.expect("begin");
        generation.write(vec![row![1_000_000, "last"]]).await.expect("write");
        generation.write((0..2_000).map(|i| row![i, format!("{i:0>400}")]).collect()).await.expect("write");
        let job = JobRecord::new(v.relation_id, &v.def.name, v.def.persistence, Timestamp(1));
        generation.publish(&job).await.expect("publish");
        publish(&store, 2, vec![row![1, "x"]]).await.expect("publish");
        publish(&store, 3, vec![row![1, "y"]]).await.expect("publish");
    });
    let journal = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a journal file");
    let mut bytes = std::fs::read(&journal).expect("read journal");
    // fjall preallocates journal files, so the file's middle may be padding:
    // aim inside the rows batch (about 850 kB, starting near the front) and
    // make sure the byte there is data.
    let target = 300_000;
    assert!(
        bytes.get(target - 64..target + 64).is_some_and(|w| w.iter().any(|&b| b != 0)),
        "offset {target} is not inside the journal's data"
    );
    bytes[target] ^= 0x5A;
    std::fs::write(&journal, bytes).expect("write journal");
    assert_kind(open(dir.path()), StoreErrorKind::Corrupt);
}
