//! Upstream transactions are applied atomically: a reader of a realtime view
//! never sees half of one, and every materialized copy is one consistent
//! snapshot. Checked with an invariant the writers keep in every
//! transaction (money moves between accounts; the total and the number of
//! accounts never change).

use crate::common::*;
use flashsync::{Persistence, Row, Value};
use flashsync_source_pg::testkit;

const ACCOUNTS: i64 = 500;
const TOTAL: i64 = ACCOUNTS * 100;
const FIXED: i64 = 250;

on_every_store!(readers_never_see_half_a_transaction,);

fn invariant(rows: &[Row]) -> (usize, i64) {
    let total = rows
        .iter()
        .map(|r| match r.0[1] {
            Value::Int(v) => v,
            ref other => panic!("balance {other:?}"),
        })
        .sum();
    (rows.len(), total)
}

async fn readers_never_see_half_a_transaction(kind: StoreKind) {
    let Some(db) = testkit::test_db("atomic").await else { return };
    let c = db.client().await;
    c.batch_execute(&format!(
        "CREATE TABLE money (id bigint PRIMARY KEY, v bigint NOT NULL);
         INSERT INTO money SELECT g, 100 FROM generate_series(1, {ACCOUNTS}) g;"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    engine.define(view("public", "money_live", Persistence::Realtime, "public", "money")).await.unwrap();
    engine.define(view("public", "money_copy", Persistence::Materialized, "public", "money")).await.unwrap();

    let writers = Writers::default();
    for w in 0..3 {
        writers.spawn(&db, 500 + w, |rng| {
            // Accounts 1..=FIXED are never closed: transfers between them
            // always find both rows.
            let (a, b) = (rng.below(FIXED as u64) as i64 + 1, rng.below(FIXED as u64) as i64 + 1);
            let x = rng.below(50) as i64;
            let txn = match rng.below(3) {
                // A transfer.
                0 | 1 => vec![
                    ("UPDATE money SET v = v - $2::bigint WHERE id = $1::bigint".to_owned(), vec![a, x]),
                    ("UPDATE money SET v = v + $2::bigint WHERE id = $1::bigint".to_owned(), vec![b, x]),
                ],
                // An account closed and its money moved to a new one (key
                // change by delete + insert), in one transaction.
                _ => vec![(
                    "WITH gone AS (DELETE FROM money WHERE id = \
                     (SELECT min(id) FROM money WHERE id > $1::bigint + 250) RETURNING v) \
                     INSERT INTO money SELECT (SELECT max(id) FROM money) + 1 + $2::bigint, v FROM gone"
                        .to_owned(),
                    vec![a, x],
                )],
            };
            (txn, if rng.below(10) == 0 { 30 } else { 0 })
        });
    }
    writers.wait_commits(50).await;
    let summary = engine.sync("*").await.unwrap();
    assert_eq!((summary.realtime.len(), summary.materialized.len()), (1, 1), "{summary:?}");

    let mut scans = 0;
    let mut copies = 0;
    let start = writers.committed();
    while writers.committed() < start + 2500 {
        let rows = engine.scan_all("public.money_live").await.unwrap();
        assert_eq!(invariant(&rows), (ACCOUNTS as usize, TOTAL), "a reader saw half a transaction");
        scans += 1;
        if scans % 20 == 0 {
            engine.sync_forced("public.money_copy").await.unwrap();
            let rows = engine.scan_all("public.money_copy").await.unwrap();
            assert_eq!(invariant(&rows), (ACCOUNTS as usize, TOTAL), "a materialized copy is not one snapshot");
            copies += 1;
        }
    }
    writers.stop().await;
    let upstream: (i64, i64) = {
        let r = c.query_one("SELECT count(*), sum(v)::bigint FROM money", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(upstream, (ACCOUNTS, TOTAL), "the writers broke the invariant upstream");
    assert_converges(&engine, "public.money_live", &c, "public", "money", WAIT).await;
    assert!(scans > 50 && copies > 2, "{scans} scans, {copies} copies");
    eprintln!("atomic: {} commits, {scans} scans, {copies} copies", writers.committed());
    engine.shutdown().await.unwrap();
}
