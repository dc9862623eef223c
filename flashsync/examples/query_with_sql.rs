//! An app that queries its mirror with SQL: the SQLite store, read by plain
//! SQLite while sync writes.
//!
//! ```sh
//! cargo run -p flashsync --example query_with_sql
//! ```
//!
//! Starts a throwaway Postgres (or uses `DATABASE_URL`), mirrors two tables
//! into `mirror.db` in a temp dir, and answers a `JOIN … GROUP BY … ORDER BY`
//! from a read-only SQLite connection — the same file any process (the
//! `sqlite3` shell, another language) can open. Each view is a table named
//! by its qualified name, with the upstream columns; readers see whole
//! upstream transactions only.

use std::time::Duration;

use flashsync::postgres::testkit::{wait_for, Cluster, ClusterOptions, TestDb};
use flashsync::postgres::{ConnInfo, PgSource, PgSourceConfig};
use flashsync::sqlite::{Options, SqliteStore};
use flashsync::{Engine, Persistence, ViewDef};
use flashsync_core::OriginId;
use rusqlite::{Connection, OpenFlags};

const REPORT: &str = r#"
    SELECT u.name, count(o.id) AS orders, sum(o.amount_real) AS total
    FROM "app.users" u JOIN "app.orders" o ON o.user_id = u.id
    GROUP BY u.name ORDER BY total DESC, u.name"#;

fn report(db: &Connection) -> rusqlite::Result<Vec<(String, i64, f64)>> {
    let mut stmt = db.prepare(REPORT)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (db, _cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) => (TestDb { conninfo: url.parse::<ConnInfo>()?, name: "main".into() }, None),
        Err(_) => {
            let cluster = tokio::task::spawn_blocking(|| Cluster::start(ClusterOptions::default())).await??;
            (cluster.create_db("query").await?, Some(cluster))
        }
    };
    let upstream = db.try_client().await?;
    upstream
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS users (id bigint PRIMARY KEY, name text NOT NULL);
             CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, user_id bigint, amount numeric(10,2));
             INSERT INTO users VALUES (1, 'ada'), (2, 'bob'), (3, 'cy') ON CONFLICT DO NOTHING;
             INSERT INTO orders SELECT g, 1 + g % 3, g * 1.25 FROM generate_series(1, 12) g ON CONFLICT DO NOTHING;",
        )
        .await?;

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mirror.db");
    let store = SqliteStore::open(&path, Options::default())?;
    let origin = OriginId::new("postgres:main")?;
    let source = PgSource::new(PgSourceConfig::for_store(&origin, db.conninfo.clone(), store.store_id()))?;
    let engine = Engine::builder().store(store).origin("postgres:main", source).open().await?;
    for table in ["users", "orders"] {
        engine.define(ViewDef::new("app", table, Persistence::Realtime, "postgres:main", "public", table)?).await?;
    }
    engine.sync("*").await?;

    // Any reader, any process: plain SQLite, read-only.
    let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    for (name, orders, total) in report(&reader)? {
        println!("{name:>4}: {orders} orders, {total:.2}");
    }

    // A transaction upstream shows up whole.
    upstream.batch_execute("BEGIN; INSERT INTO orders VALUES (100, 3, 1000); COMMIT;").await?;
    wait_for("the new order in the mirror", Duration::from_secs(30), || async {
        let n: i64 = reader.query_row(r#"SELECT count(*) FROM "app.orders""#, [], |r| r.get(0)).ok()?;
        (n == 13).then_some(())
    })
    .await;
    let top = report(&reader)?.remove(0);
    println!("after a big order, the top customer is {} with {:.2}", top.0, top.2);
    assert_eq!(top.0, "cy");
    engine.shutdown().await?;
    Ok(())
}
