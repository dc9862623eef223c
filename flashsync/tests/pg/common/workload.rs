//! Write-heavy workloads.

use super::*;

/// Keys the `acct` workload touches.
pub const ACCT_KEYS: u64 = 12_000;

/// Creates `acct` (primary key, `acct_rows` rows), `bag` (no key, REPLICA
/// IDENTITY FULL, many identical rows) and `side` (never mirrored).
pub async fn create_load_tables(client: &tokio_postgres::Client, acct_rows: i64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE acct (id bigint PRIMARY KEY, v bigint NOT NULL, note text);
             INSERT INTO acct SELECT g, g % 100, 'n' || g FROM generate_series(1, {acct_rows}) g;
             CREATE TABLE bag (k bigint, v bigint);
             ALTER TABLE bag REPLICA IDENTITY FULL;
             CREATE INDEX bag_k ON bag (k);
             INSERT INTO bag SELECT g % 40, g % 3 FROM generate_series(1, 3000) g;
             CREATE TABLE side (id bigserial PRIMARY KEY, x bigint);"
        ))
        .await
        .unwrap();
}

/// One random statement on `acct`: upserts, updates, deletes, key changes.
pub fn acct_op(rng: &mut Rng) -> (String, Vec<i64>) {
    let k = rng.below(ACCT_KEYS) as i64 + 1;
    let x = rng.below(1000) as i64;
    let sql = match rng.below(8) {
        0 | 1 => "INSERT INTO acct VALUES ($1::bigint, $2::bigint, 'ins') ON CONFLICT (id) DO UPDATE SET v = acct.v + excluded.v",
        2 | 3 => "UPDATE acct SET v = v + 1, note = 'u' || $2::bigint::text WHERE id = $1::bigint",
        4 => "DELETE FROM acct WHERE id = $1::bigint AND $2::bigint >= 0",
        5 => {
            "UPDATE acct SET id = id + 20000 WHERE id = $1::bigint AND $2::bigint >= 0 \
             AND NOT EXISTS (SELECT 1 FROM acct WHERE id = $1::bigint + 20000)"
        }
        6 => {
            "UPDATE acct SET id = id - 20000, note = 'back' || $2::bigint::text WHERE id = $1::bigint + 20000 \
             AND NOT EXISTS (SELECT 1 FROM acct WHERE id = $1::bigint)"
        }
        _ => "UPDATE acct SET v = v * 2 % 1000003 WHERE id BETWEEN $1::bigint AND $1::bigint + 4 AND $2::bigint >= 0",
    };
    (sql.to_owned(), vec![k, x])
}

/// One random statement on `bag`: identical rows inserted, and single
/// copies deleted or changed.
pub fn bag_op(rng: &mut Rng) -> (String, Vec<i64>) {
    let k = rng.below(40) as i64;
    let sql = match rng.below(4) {
        0 | 1 => "INSERT INTO bag VALUES ($1::bigint, $2::bigint % 3)",
        2 => "DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE k = $1::bigint AND $2::bigint >= 0 LIMIT 1)",
        _ => "UPDATE bag SET v = v + 1 WHERE ctid = (SELECT ctid FROM bag WHERE k = $1::bigint AND v < $2::bigint % 5 LIMIT 1)",
    };
    (sql.to_owned(), vec![k, rng.below(1000) as i64])
}

/// Starts the writers of the load: short transactions on `acct` and `bag`,
/// and transactions held open for a while (so snapshots see transactions in
/// progress, and transactions commit with xmin < xid < xmax of a snapshot).
pub fn start_load(writers: &Writers, db: &TestDb, seed: u64) {
    for w in 0..2 {
        writers.spawn(db, seed + w, |rng| {
            let n = 1 + rng.below(3);
            ((0..n).map(|_| acct_op(rng)).collect(), 0)
        });
    }
    writers.spawn(db, seed + 10, |rng| {
        let n = 1 + rng.below(2);
        ((0..n).map(|_| bag_op(rng)).collect(), 0)
    });
    for w in 0..2 {
        writers.spawn(db, seed + 20 + w, |rng| {
            let hold = 20 + rng.below(200);
            (vec![acct_op(rng), bag_op(rng), acct_op(rng)], hold)
        });
    }
}

/// `t (id, tenant, status, score, title)`: 3000 rows, keyed, the table the
/// partial-view tests filter.
pub const T_SETUP: &str = "CREATE TABLE t (
        id bigint PRIMARY KEY,
        tenant int NOT NULL,
        status text,
        score numeric,
        title text
    );
    INSERT INTO t SELECT g, g % 5, CASE WHEN g % 7 = 0 THEN 'archived' ELSE 'open' END,
        (g * 37) % 100, 'title ' || g
    FROM generate_series(1, 3000) g;";

/// One writer transaction on [`T_SETUP`]'s `t`: updates that move rows in
/// and out of filtered views (tenant, status, score), key changes, deletes
/// and inserts.
pub fn move_txn(rng: &mut Rng) -> (Txn, u64) {
    let mut txn: Txn = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let id = 1 + rng.below(3000) as i64;
        let v = rng.below(100) as i64;
        // Parameters are bigint: say so, or Postgres infers int4 or text.
        let stmt = match rng.below(10) {
            0..=2 => "UPDATE t SET tenant = ($2::bigint % 5)::int WHERE id = $1::bigint",
            3 | 4 => {
                "UPDATE t SET status = CASE $2::bigint % 3 WHEN 0 THEN 'archived' WHEN 1 THEN 'open' ELSE NULL END \
                 WHERE id = $1::bigint"
            }
            5 | 6 => "UPDATE t SET score = $2::bigint, title = 'moved ' || $2::bigint WHERE id = $1::bigint",
            7 => "UPDATE t SET id = id + 100000 WHERE id = $1::bigint AND $2::bigint >= 0",
            8 => "DELETE FROM t WHERE id = $1::bigint AND $2::bigint >= 0",
            _ => {
                "INSERT INTO t VALUES ($1::bigint, ($2::bigint % 5)::int, 'open', $2::bigint, 'ins') \
                 ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, score = excluded.score"
            }
        };
        txn.push((stmt.to_owned(), vec![id, v]));
    }
    (txn, 0)
}
