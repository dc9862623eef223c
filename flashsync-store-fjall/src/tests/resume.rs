//! A checkpointed copy survives a crash with exactly its checkpoint's rows:
//! rows bulk-ingested before the checkpoint are kept, rows that reached the
//! disk after it (registered ingested tables and synced batches) are
//! dropped when it is resumed, and the resumed copy goes on to publish
//! without leaving any row behind.

use std::collections::BTreeMap;

use flashsync_core::codec::decode_stored_row;
use flashsync_core::{
    Cell, CopyCheckpoint, Generation, Identity, JobRecord, JobState, Key, KeyRange, Lsn, RelationId, Row, RowOp, Store,
    Timestamp, ViewOps,
};

use super::{block_on, open, publish, schema, view};
use crate::layout::GenKey;
use crate::FjallStore;

const V: RelationId = RelationId(1);

fn id(i: u32) -> String {
    format!("{i:06}")
}

fn row(i: u32, tag: &str) -> Row {
    flashsync_core::row![id(i), format!("{tag}{i}")]
}

fn key(i: u32) -> Key {
    Key(vec![id(i).into()])
}

/// Writes rows `from..to` tagged `tag` in batches of 1000, in key order (the
/// bulk-ingestion path), recording them in `model` when given.
async fn write(
    generation: &mut Box<dyn Generation>,
    from: u32,
    to: u32,
    tag: &str,
    mut model: Option<&mut BTreeMap<String, Row>>,
) {
    let rows: Vec<Row> = (from..to).map(|i| row(i, tag)).collect();
    if let Some(model) = model.as_mut() {
        for (i, r) in (from..to).zip(&rows) {
            model.insert(id(i), r.clone());
        }
    }
    for batch in rows.chunks(1000) {
        generation.write(batch.to_vec()).await.expect("write");
    }
}

fn job(after: Option<u32>, rows: u64, through: u64) -> JobRecord {
    let v = view(V.0);
    let mut job = JobRecord::new(V, &v.def.name, v.def.persistence, Timestamp(7));
    job.state = JobState::Idle;
    job.copy = after
        .map(|after| Box::new(CopyCheckpoint { segments: Vec::new(), after: key(after), rows, through: Lsn(through) }));
    job
}

fn ops(ops: Vec<RowOp>) -> ViewOps {
    ViewOps { relation_id: V, identity: Identity::Key, ops }
}

/// The checkpointed generation of view 1.
fn kept(store: &FjallStore) -> GenKey {
    store.shared().read("test").expect("state").checkpoints.get(&V).expect("a checkpointed generation").gen
}

/// Every row physically under `gen`'s prefix, decoded, in key order.
fn rows_under(store: &FjallStore, gen: GenKey) -> Vec<Row> {
    store
        .shared()
        .ks
        .rows
        .prefix(gen.prefix())
        .map(|item| {
            let (_, value) = item.into_inner().expect("read");
            let (row, copies) = decode_stored_row(&value).expect("decode");
            assert_eq!(copies, 1, "a keyed view holds one copy per key");
            row
        })
        .collect()
}

/// Asserts `got == want` without printing tens of thousands of rows: the
/// counts, then the first difference.
fn same_rows(got: &[Row], want: &[Row], what: &str) {
    let first = got.iter().zip(want).position(|(g, w)| g != w);
    if let Some(at) = first {
        panic!("{what}: row {at} is {:?}, expected {:?}", got[at], want[at]);
    }
    assert_eq!(got.len(), want.len(), "{what}: number of rows");
}

#[test]
fn a_checkpointed_copy_resumes_after_a_crash_with_exactly_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = vec![row(0, "old")];
    // What the copy holds as of its first checkpoint.
    let mut model = BTreeMap::new();
    let first = job(Some(19_999), 20_000, 40);
    let gen = block_on(async {
        let store = open(dir.path()).expect("create");
        publish(&store, V.0, old.clone()).await.expect("publish the old copy");
        let mut generation = store.begin_generation(V, &schema()).await.expect("begin");
        write(&mut generation, 0, 20_000, "n", Some(&mut model)).await;
        // The feed's changes to the rows copied so far, in the checkpoint.
        let changes = vec![
            RowOp::Delete { key: key(5) },
            RowOp::Update {
                old_key: None,
                key: key(7),
                new: vec![Cell::Set(id(7).into()), Cell::Set("changed".into())],
            },
            RowOp::Insert { key: Key(vec!["004000a".into()]), row: flashsync_core::row!["004000a", "inserted"] },
        ];
        model.remove(&id(5));
        model.insert(id(7), flashsync_core::row![id(7), "changed"]);
        model.insert("004000a".into(), flashsync_core::row!["004000a", "inserted"]);
        let report = generation.checkpoint(ops(changes), &first).await.expect("checkpoint");
        assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
        let gen = kept(&store);
        same_rows(&rows_under(&store, gen), &model.values().cloned().collect::<Vec<_>>(), "checkpointed rows");

        // The next chunk: ingested in key order until a row arrives behind
        // the last one ingested, which registers the ingestion (its tables
        // are on disk from then on); the rest goes through batches, which
        // the persist makes durable. None of it is in the checkpoint.
        write(&mut generation, 20_000, 30_000, "lost", None).await;
        write(&mut generation, 20_500, 20_600, "lost again", None).await;
        // A write returns once the loader has the batch; the next one waits
        // for it to be written.
        generation.write(Vec::new()).await.expect("write");
        store.persist().await.expect("persist");
        assert_eq!(rows_under(&store, gen).len(), model.len() + 10_000, "the rows after the checkpoint are on disk");
        assert_eq!(store.scan(V, &KeyRange::default(), 10).await.expect("scan"), old);
        gen
    });
    // The process stops: handle and store dropped without publish, discard
    // or a clean close.

    let store = open(dir.path()).expect("reopen after the crash");
    block_on(async {
        let state = store.load().await.expect("load");
        assert_eq!(state.jobs, vec![first.clone()], "the checkpoint's job record");
        assert_eq!(store.scan(V, &KeyRange::default(), 10).await.expect("scan"), old, "the copy stays invisible");
        assert_eq!(store.generation_count(), 2, "the published copy and the kept one");
        assert_eq!(kept(&store), gen, "the open kept the checkpointed generation");
        assert_eq!(rows_under(&store, gen).len(), model.len() + 10_000, "nothing deleted before the resume");

        let mut generation = store
            .resume_generation(V, &schema(), &key(19_999))
            .await
            .expect("resume")
            .expect("a checkpointed copy to resume");
        same_rows(
            &rows_under(&store, gen),
            &model.values().cloned().collect::<Vec<_>>(),
            "exactly the checkpoint's rows, nothing written after it",
        );

        // Go on: the next chunk again (other values than the lost ones, so
        // a lost row coming back would show), a second checkpoint changing
        // rows of both chunks, one more chunk, publish.
        write(&mut generation, 20_000, 25_000, "w", Some(&mut model)).await;
        let changes = vec![
            RowOp::Update { old_key: None, key: key(3), new: vec![Cell::Set(id(3).into()), Cell::Set("again".into())] },
            RowOp::Delete { key: key(20_001) },
        ];
        model.insert(id(3), flashsync_core::row![id(3), "again"]);
        model.remove(&id(20_001));
        let report = generation.checkpoint(ops(changes), &job(Some(24_999), 25_000, 50)).await.expect("checkpoint");
        assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
        write(&mut generation, 25_000, 26_000, "x", Some(&mut model)).await;
        let mut done = job(None, 0, 0);
        done.state = JobState::Synced;
        generation.publish(&done).await.expect("publish the resumed copy");

        let expected: Vec<Row> = model.values().cloned().collect();
        same_rows(&store.scan(V, &KeyRange::default(), usize::MAX).await.expect("scan"), &expected, "published rows");
        assert_eq!(store.load().await.expect("load").jobs, vec![done]);
        let again = store.resume_generation(V, &schema(), &key(24_999)).await.expect("resume");
        assert!(again.is_none(), "a published copy was resumed again");

        // The old copy and every row the lost writes left go; nothing else.
        store.reclaim().await.expect("reclaim");
        assert_eq!(store.generation_count(), 1, "generations left after publish");
        assert_eq!(store.shared().ks.rows.iter().count(), expected.len(), "rows left outside the published copy");
    });
    drop(store);
    let store = open(dir.path()).expect("reopen after publish");
    let rows = block_on(store.scan(V, &KeyRange::default(), usize::MAX)).expect("scan");
    same_rows(&rows, &model.into_values().collect::<Vec<_>>(), "after reopening");
    assert_eq!(store.generation_count(), 1, "no checkpoint outlives its publish");
}
