//! Store throughput: commit apply (1-row and 100-row commits, persisting every
//! few batches as the driver does) and materialization (rows into a
//! generation, then publish).
//!
//! `cargo bench -p flashsync-store-fjall` prints one JSON object per
//! measurement. Sizes can be scaled with `FLASHSYNC_BENCH_SCALE` (default 1.0).

use std::time::Instant;

use flashsync_core::{
    row, ApplyBatch, BatchSeq, Column, Identity, JobRecord, Lsn, OriginId, Persistence, Progress, RelationId,
    RelationSchema, Row, RowOp, SourceRelId, Store, Timestamp, ViewDef, ViewOps, ViewRecord,
};
use flashsync_store_fjall::{Durability, FjallStore, Options};

type Error = Box<dyn std::error::Error>;

fn schema() -> RelationSchema {
    let columns = ["id", "name", "n"].map(|n| Column { name: n.into(), type_name: "text".into() });
    RelationSchema::keyed(SourceRelId(1), columns.to_vec(), vec![0])
}

fn data_row(i: i64) -> Row {
    row![i, format!("user-{i:012}@example.org"), i * 7]
}

fn insert(i: i64) -> RowOp {
    RowOp::Insert { key: flashsync_core::key![i], row: data_row(i) }
}

/// A store with view 1 defined and published empty.
async fn store(dir: &std::path::Path, durability: Durability) -> Result<(FjallStore, ViewRecord), Error> {
    let store = FjallStore::open(dir, Options::default().durability(durability))?;
    let def = ViewDef::new("bench", "users", Persistence::Realtime, "postgres:main", "public", "users")?;
    let view = ViewRecord { relation_id: RelationId(1), def };
    store.put_view(&view).await?;
    let generation = store.begin_generation(view.relation_id, &schema()).await?;
    generation.publish(&job(&view)).await?;
    Ok((store, view))
}

fn job(view: &ViewRecord) -> JobRecord {
    JobRecord::new(view.relation_id, &view.def.name, view.def.persistence, Timestamp(0))
}

/// Applies `commits` commits of `rows_per_commit` inserts each, persisting
/// every `persist_every` batches.
async fn commits(
    name: &str,
    durability: Durability,
    commits: u64,
    rows_per_commit: u64,
    persist_every: u64,
) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let (store, view) = store(dir.path(), durability).await?;
    let origin = OriginId::new("postgres:main")?;
    let started = Instant::now();
    let mut next_row = 0i64;
    for n in 1..=commits {
        let ops = (0..rows_per_commit)
            .map(|_| {
                next_row += 1;
                insert(next_row)
            })
            .collect();
        store
            .apply(ApplyBatch {
                seq: BatchSeq(n),
                origin: origin.clone(),
                progress: Progress::Commit { end_lsn: Lsn(n * 10) },
                views: vec![ViewOps { relation_id: view.relation_id, identity: Identity::Key, ops }],
                jobs: vec![],
                chain: 0,
                commit_time: None,
                capture: Default::default(),
            })
            .await?;
        if n % persist_every == 0 {
            store.persist().await?;
        }
    }
    store.persist().await?;
    let secs = started.elapsed().as_secs_f64();
    let rows = commits * rows_per_commit;
    assert_eq!(store.count(view.relation_id).await?, rows);
    println!(
        "{}",
        serde_json::json!({
            "bench": name,
            "durability": format!("{durability:?}"),
            "commits": commits,
            "rows_per_commit": rows_per_commit,
            "persist_every": persist_every,
            "seconds": secs,
            "commits_per_sec": commits as f64 / secs,
            "rows_per_sec": rows as f64 / secs,
        })
    );
    Ok(())
}

/// Writes `rows` rows into a generation in chunks of `chunk`, then publishes.
async fn materialize(rows: u64, chunk: usize) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let (store, view) = store(dir.path(), Durability::Explicit).await?;
    let started = Instant::now();
    let mut generation = store.begin_generation(view.relation_id, &schema()).await?;
    let all: Vec<i64> = (0..rows as i64).collect();
    for ids in all.chunks(chunk) {
        generation.write(ids.iter().map(|&i| data_row(i)).collect()).await?;
    }
    let written = started.elapsed().as_secs_f64();
    generation.publish(&job(&view)).await?;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(store.count(view.relation_id).await?, rows);
    // Replacing it again leaves the first copy as garbage: time its reclamation.
    let generation = store.begin_generation(view.relation_id, &schema()).await?;
    generation.publish(&job(&view)).await?;
    let reclaim_started = Instant::now();
    store.reclaim().await?;
    let reclaim_secs = reclaim_started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "materialize",
            "rows": rows,
            "chunk": chunk,
            "seconds_write": written,
            "seconds_total_with_publish": secs,
            "rows_per_sec": rows as f64 / secs,
            "reclaim_seconds": reclaim_secs,
            "reclaim_rows_per_sec": rows as f64 / reclaim_secs,
        })
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too,
    // so keep a smoke-sized run for anything that is not a real bench run.
    let real = std::env::args().any(|a| a == "--bench");
    let scale: f64 = std::env::var("FLASHSYNC_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let scale = if real { scale } else { scale * 0.01 };
    let n = |base: f64| ((base * scale) as u64).max(16);
    futures::executor::block_on(async {
        commits("commit_1_row", Durability::Explicit, n(100_000.0), 1, 16).await?;
        // The same with rare persists: the cost of `apply` itself.
        commits("commit_1_row", Durability::Explicit, n(100_000.0), 1, 1024).await?;
        commits("commit_100_rows", Durability::Explicit, n(5_000.0), 100, 16).await?;
        commits("commit_1_row", Durability::Batch, n(2_000.0), 1, 16).await?;
        materialize(n(500_000.0), 1_000).await
    })
}
