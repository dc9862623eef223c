//! End to end on a real Postgres: the engine, the Postgres source and the
//! fjall store together, with writers committing while a realtime view
//! bootstraps.

use std::sync::Arc;
use std::time::Duration;

use crate::common::wait_for;
use flashsync::{Engine, JobState, Persistence, Value, ViewDef};
use flashsync_core::OriginId;
use flashsync_source_pg::{testkit, PgSource, PgSourceConfig};
use flashsync_store_fjall::{FjallStore, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_and_materialized_views_track_a_real_postgres() {
    let Some(db) = testkit::test_db("engine_smoke").await else { return };
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text, qty int);
             INSERT INTO items SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), Options::default()).unwrap();
    let origin = OriginId::new("postgres:main").unwrap();
    let source = PgSource::new(PgSourceConfig::new(&origin, db.conninfo.clone())).unwrap();
    let engine = Engine::builder().store(store).shared_origin("postgres:main", Arc::new(source)).open().await.unwrap();
    engine
        .define(
            ViewDef::new("public", "items_live", Persistence::Realtime, "postgres:main", "public", "items").unwrap(),
        )
        .await
        .unwrap();
    engine
        .define(
            ViewDef::new("public", "items_copy", Persistence::Materialized, "postgres:main", "public", "items")
                .unwrap(),
        )
        .await
        .unwrap();

    // Writers commit continuously while the views bootstrap.
    let writer = {
        let client = db.client().await;
        tokio::spawn(async move {
            for i in 0..600i64 {
                let k = 1 + (i * 37) % 2500;
                client
                    .execute(
                        "INSERT INTO items VALUES ($1::bigint, 'w' || $1::bigint::text, 1) ON CONFLICT (id) DO UPDATE SET qty = items.qty + 1",
                        &[&k],
                    )
                    .await
                    .unwrap();
                if i % 50 == 0 {
                    client.execute("DELETE FROM items WHERE id = $1", &[&(k + 1)]).await.unwrap();
                }
            }
        })
    };
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    assert_eq!(summary.materialized.len(), 1, "{summary:?}");
    writer.await.unwrap();

    let upstream = || async {
        let rows = db.client().await.query("SELECT id, name, qty FROM items ORDER BY id", &[]).await.unwrap();
        rows.iter()
            .map(|r| {
                flashsync::Row(vec![
                    Value::Int(r.get::<_, i64>(0)),
                    Value::Text(r.get::<_, String>(1)),
                    Value::Int(r.get::<_, i32>(2).into()),
                ])
            })
            .collect::<Vec<_>>()
    };
    let expected = upstream().await;
    wait_for("the realtime view to equal upstream", Duration::from_secs(30), || {
        let (engine, expected) = (engine.clone(), expected.clone());
        async move { (engine.scan_all("public.items_live").await.ok()? == expected).then_some(()) }
    })
    .await;
    let st = &engine.status("public.items_live").await.unwrap()[0];
    assert_eq!(st.state, JobState::Running);
    assert!(st.slot_id.is_some());

    // The materialized copy is the snapshot it took; a forced sync refreshes it.
    engine.sync_forced("public.items_copy").await.unwrap();
    assert_eq!(engine.scan_all("public.items_copy").await.unwrap(), expected);
    engine.shutdown().await.unwrap();
}
