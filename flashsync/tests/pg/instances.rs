//! Two stores syncing one database never share a slot: each gets its own
//! by default, and a store pointed at another's slot by name is refused at
//! once instead of taking turns on it (and copying everything again each
//! time it sees the other's acknowledgements).

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use flashsync::{Engine, Persistence};
use flashsync_core::OriginId;
use flashsync_source_pg::testkit::{self, TestDb};
use flashsync_source_pg::PgSourceConfig;

/// A source for the store in `dir` (its id names the slot), test pacing.
fn store_source(db: &TestDb, store: &TestStore) -> PgSourceConfig {
    let origin = OriginId::new(ORIGIN).unwrap();
    PgSourceConfig::for_store(&origin, db.conninfo.clone(), store.store_id())
        .with_status_interval(Duration::from_millis(200))
        .with_relation_check_interval(Duration::from_millis(200))
}

async fn engine_on(store: TestStore, probe: &Arc<Probe>) -> Engine {
    Engine::builder()
        .shared_store(store.shared())
        .shared_origin(ORIGIN, probe.source())
        .config(fast_config())
        .open()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_each_keep_their_own_slot() {
    let Some(db) = testkit::test_db("two_stores").await else { return };
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL);
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 200) g;",
    )
    .await
    .unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One store of each kind: both name their slot after their own id.
    let (store_a, store_b) =
        (open_store(StoreKind::Fjall, dir_a.path()).await, open_store(StoreKind::Sqlite, dir_b.path()).await);
    let (config_a, config_b) = (store_source(&db, &store_a), store_source(&db, &store_b));
    assert_ne!(config_a.slot_name, config_b.slot_name, "one origin id, two stores: two slots");
    let (probe_a, probe_b) = (Probe::new(config_a.clone()), Probe::new(config_b.clone()));
    let (a, b) = (engine_on(store_a, &probe_a).await, engine_on(store_b, &probe_b).await);
    for e in [&a, &b] {
        e.define(view("public", "t_live", Persistence::Realtime, "public", "t")).await.unwrap();
        let s = e.sync("*").await.unwrap();
        assert_eq!(s.realtime.len(), 1, "{s:?}");
    }
    // A minute of writes while both follow, with reconnects every few
    // seconds: the moments two consumers of one slot would trade it.
    let started = std::time::Instant::now();
    let mut round = 0u64;
    while started.elapsed() < Duration::from_secs(60) {
        c.batch_execute(&format!("UPDATE t SET n = n + 1 WHERE id % 20 = {}", round % 20)).await.unwrap();
        if round % 100 == 99 {
            if let Some(pid) = walsender_pid(&c, &config_a.slot_name).await {
                c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
            }
        }
        round += 1;
        // Paces the writes (about 20 a second), not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(round > 500, "only {round} write rounds in a minute");
    for e in [&a, &b] {
        assert_converges(e, "public.t_live", &c, "public", "t", WAIT).await;
    }
    assert_eq!((probe_a.snapshot_count(), probe_b.snapshot_count()), (1, 1), "a store copied its view again");
    let slots: Vec<String> = c
        .query("SELECT slot_name FROM pg_replication_slots WHERE database = current_database() ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = vec![config_a.slot_name.clone(), config_b.slot_name.clone()];
    expected.sort();
    assert_eq!(slots, expected);

    // A third store told to use the first one's slot and publication by
    // name is refused, naming the store that owns them.
    let dir_c = tempfile::tempdir().unwrap();
    let store_c = open_store(StoreKind::Fjall, dir_c.path()).await;
    let mut config_c = store_source(&db, &store_c).with_feed_name(config_a.slot_name.clone());
    config_c.owner = store_c.store_id().map(str::to_owned);
    let probe_c = Probe::new(config_c);
    let e = engine_on(store_c, &probe_c).await;
    e.define(view("public", "t_live", Persistence::Realtime, "public", "t")).await.unwrap();
    let s = e.sync("*").await.unwrap();
    let owner = config_a.owner.clone().unwrap();
    assert!(
        s.failed.iter().any(|(_, why)| why.contains("belong to another flashsync store") && why.contains(&owner)),
        "{s:?}"
    );
    assert_eq!(probe_c.snapshot_count(), 0, "the refused store copied nothing");
    // The owner is undisturbed.
    c.batch_execute("UPDATE t SET n = n + 100 WHERE id = 1").await.unwrap();
    assert_converges(&a, "public.t_live", &c, "public", "t", WAIT).await;
    e.shutdown().await.unwrap();
    for e in [a, b] {
        e.forget("*").await.unwrap();
        e.shutdown().await.unwrap();
    }
}
