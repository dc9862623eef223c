//! Snapshot rows through the loader: in key order, nearly in order, far out
//! of order, with repeated keys, as rows or pre-encoded, with any reorder
//! window — the published copy is what the in-memory reference store makes
//! of the same writes, before and after reopening.

use flashsync_core::memory::MemoryStore;
use flashsync_core::{
    row, EncodedRowsBuilder, Generation, JobRecord, KeyRange, RelationSchema, Row, SourceRelId, Store, Timestamp,
};
use proptest::prelude::*;

use super::{block_on, schema, view};
use crate::{FjallStore, Options};

fn full_schema() -> RelationSchema {
    RelationSchema::full_row(SourceRelId(1), schema().columns)
}

/// Writes `batches` into a new generation of view 1 and publishes it;
/// `encoded` picks `write_encoded` over `write`.
async fn fill<S: Store>(store: &S, schema: &RelationSchema, batches: &[Vec<Row>], encoded: bool) -> Vec<Row> {
    let v = view(1);
    store.put_view(&v).await.unwrap();
    let mut generation: Box<dyn Generation> = store.begin_generation(v.relation_id, schema).await.unwrap();
    for batch in batches {
        if encoded {
            let mut b = EncodedRowsBuilder::new(schema);
            for row in batch {
                for value in &row.0 {
                    b.push(value.as_value_ref());
                }
                b.finish_row().unwrap();
            }
            generation.write_encoded(b.take()).await.unwrap();
        } else {
            generation.write(batch.clone()).await.unwrap();
        }
    }
    let job = JobRecord::new(v.relation_id, &v.def.name, v.def.persistence, Timestamp(1));
    generation.publish(&job).await.unwrap();
    store.scan(v.relation_id, &KeyRange::default(), usize::MAX).await.unwrap()
}

fn check(batches: Vec<Vec<Row>>, full_row: bool, window: usize, encoded: bool) {
    let schema = if full_row { full_schema() } else { schema() };
    let expected = block_on(fill(&MemoryStore::new(), &schema, &batches, false));
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().reorder_window(window);
    let store = FjallStore::open(dir.path(), options.clone()).unwrap();
    let got = block_on(fill(&store, &schema, &batches, encoded));
    assert_eq!(got, expected, "window {window}, encoded {encoded}, full row {full_row}");
    drop(store);
    let store = FjallStore::open(dir.path(), options).unwrap();
    let reopened = block_on(store.scan(view(1).relation_id, &KeyRange::default(), usize::MAX)).unwrap();
    assert_eq!(reopened, expected, "after reopening");
}

fn rows(ids: impl IntoIterator<Item = i64>) -> Vec<Row> {
    ids.into_iter().map(|i| row![i, format!("r{i}")]).collect()
}

#[test]
fn ascending_nearly_ascending_and_shuffled_copies() {
    // Keys are text: "10" sorts before "9", so these are far from key order
    // unless zero-padded.
    let padded = |i: i64| row![format!("{i:05}"), format!("r{i}")];
    let ascending: Vec<Row> = (0..3000).map(padded).collect();
    let mut nearly = ascending.clone();
    for pair in nearly.chunks_mut(7) {
        pair.reverse();
    }
    let shuffled = rows(0..3000);
    for window in [0, 16, 4096] {
        for encoded in [false, true] {
            check(ascending.chunks(500).map(<[Row]>::to_vec).collect(), false, window, encoded);
            check(nearly.chunks(333).map(<[Row]>::to_vec).collect(), false, window, encoded);
            check(shuffled.chunks(1000).map(<[Row]>::to_vec).collect(), false, window, encoded);
        }
    }
}

/// Copies discarded or dropped at any stage — rows still held back,
/// ingested but unregistered, registered and then continued in batches —
/// leave no row behind once reclaimed.
#[test]
fn copies_dropped_while_loading_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Options::default().reorder_window(0)).unwrap();
    let v = view(1);
    let key = |i: i64| row![format!("{i:05}"), "x"];
    block_on(async {
        store.put_view(&v).await.unwrap();
        for discard in [true, false] {
            for stage in 0..3 {
                let mut generation = store.begin_generation(v.relation_id, &schema()).await.unwrap();
                generation.write((0..100).map(key).collect()).await.unwrap();
                if stage >= 1 {
                    generation.write((100..200).map(key).collect()).await.unwrap();
                }
                if stage >= 2 {
                    // Behind the last key: the ingestion is registered, and
                    // these go through ordinary batches.
                    generation.write((0..50).map(key).collect()).await.unwrap();
                }
                if discard {
                    generation.discard().await.unwrap();
                } else {
                    drop(generation);
                }
            }
        }
        store.reclaim().await.unwrap();
    });
    assert_eq!(store.shared().ks.rows.iter().count(), 0, "rows of dropped copies remain");
}

/// A copy's rows out of key order end its ingestion on the loader thread
/// while the writer thread may be applying other views' batches; no batch
/// may commit between the journal sync and the finish that flushes the
/// memtable (see `loader::register`). So the commit gate is held there.
#[test]
fn registers_hold_the_commit_gate_from_sync_to_finish() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static HELD: AtomicUsize = AtomicUsize::new(0);
    static FREE: AtomicUsize = AtomicUsize::new(0);
    fn observe(shared: &crate::shared::Shared) {
        // Other tests' registers may call this too: they hold it as well.
        match shared.commit_gate.try_lock() {
            Err(std::sync::TryLockError::WouldBlock) => HELD.fetch_add(1, Ordering::SeqCst),
            _ => FREE.fetch_add(1, Ordering::SeqCst),
        };
    }
    *crate::loader::REGISTERING.lock().unwrap() = Some(observe);
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Options::default().reorder_window(0)).unwrap();
    let key = |i: i64| row![format!("{i:05}"), "x"];
    let v = view(1);
    block_on(async {
        store.put_view(&v).await.unwrap();
        let mut generation = store.begin_generation(v.relation_id, &schema()).await.unwrap();
        generation.write((100..200).map(key).collect()).await.unwrap();
        // Behind the last key: registered by the loader thread, mid-copy.
        generation.write((0..50).map(key).collect()).await.unwrap();
        generation.write((200..300).map(key).collect()).await.unwrap();
        let job = JobRecord::new(v.relation_id, &v.def.name, v.def.persistence, Timestamp(1));
        generation.publish(&job).await.unwrap();
    });
    *crate::loader::REGISTERING.lock().unwrap() = None;
    assert_eq!(FREE.load(Ordering::SeqCst), 0, "a register let batches commit between its sync and its finish");
    assert!(HELD.load(Ordering::SeqCst) >= 1, "no register was observed");
    let rows = block_on(store.scan(v.relation_id, &KeyRange::default(), usize::MAX)).unwrap();
    assert_eq!(rows.len(), 250);
}

/// The other half of the exclusion: a batch waits for the gate to commit.
#[test]
fn batches_wait_for_the_commit_gate() {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FjallStore::open(dir.path(), Options::default()).unwrap());
    block_on(super::publish(&store, 1, Vec::new())).unwrap();
    let shared = store.shared();
    let gate = shared.gate("test").unwrap();
    let (done, applied) = std::sync::mpsc::channel();
    let applier = std::sync::Arc::clone(&store);
    let thread = std::thread::spawn(move || {
        let commit = flashsync_core::Progress::Commit { end_lsn: flashsync_core::Lsn(10) };
        let _ = done.send(block_on(applier.apply(super::staging::batch(1, commit, 0..3))));
    });
    // It cannot commit while the gate is held, however long it is given.
    assert_eq!(applied.recv_timeout(Duration::from_millis(200)).err(), Some(RecvTimeoutError::Timeout));
    drop(gate);
    let result = applied.recv_timeout(Duration::from_secs(30)).expect("the batch commits once the gate is free");
    result.unwrap();
    thread.join().unwrap();
    let rows = block_on(store.scan(flashsync_core::RelationId(1), &KeyRange::default(), usize::MAX)).unwrap();
    assert_eq!(rows.len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any batches of any rows (repeated keys included, in keyed and full-row
    /// views), with any window.
    #[test]
    fn any_writes_publish_what_the_reference_store_does(
        batches in proptest::collection::vec(
            proptest::collection::vec((0i64..40, 0u8..3), 0..30), 0..6),
        full_row in any::<bool>(),
        window in prop_oneof![Just(0usize), 1usize..8, Just(4096)],
        encoded in any::<bool>(),
    ) {
        let batches: Vec<Vec<Row>> = batches
            .into_iter()
            .map(|b| b.into_iter().map(|(k, v)| row![format!("{k:03}"), format!("v{v}")]).collect())
            .collect();
        check(batches, full_row, window, encoded);
    }
}

/// A new store's keyspaces are created with the store's own options (and
/// fjall keeps them): the rows keyspace partitions its filters from level
/// 1, where ingested tables go, so finishing an ingestion under fjall's
/// journal lock does not build a whole table's filter there. Format checks
/// used to create every keyspace with fjall's defaults first.
#[test]
fn a_new_store_partitions_the_filters_of_ingested_tables() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Options::default()).unwrap();
    let ks = &store.inner.shared.ks;
    let partitioned = |k: &fjall::Keyspace, level: usize| {
        let policy = &k.config.filter_block_partitioning_policy;
        policy.get(level).or(policy.last()).copied().unwrap_or(false)
    };
    assert!(!partitioned(&ks.rows, 0), "memtable flushes keep whole filters");
    assert!(partitioned(&ks.rows, 1), "ingested tables (level 1) partition their filters");
    assert!(partitioned(&ks.rows, 6));
    assert!(!partitioned(&ks.jobs, 1), "other keyspaces keep fjall's defaults");
    drop(store);
    let reopened = FjallStore::open(dir.path(), Options::default()).unwrap();
    assert!(partitioned(&reopened.inner.shared.ks.rows, 1), "kept across a reopen");
}
