//! An app that reacts to its mirror: a filtered realtime view and its
//! change feed.
//!
//! ```sh
//! cargo run -p flashsync --example react_to_changes
//! ```
//!
//! Starts a throwaway Postgres (or uses `DATABASE_URL`), mirrors the open
//! todos of one user, and prints each change as it becomes visible locally
//! while a writer adds, finishes and reassigns todos upstream. The rows the
//! feed started from, with every change applied, end equal to the mirror.

use std::collections::BTreeMap;
use std::time::Duration;

use flashsync::fjall::{FjallStore, Options};
use flashsync::postgres::testkit::{Cluster, ClusterOptions, TestDb};
use flashsync::postgres::{ConnInfo, PgSource, PgSourceConfig};
use flashsync::{Engine, FeedItem, Key, Persistence, Row, RowChange, ViewDef};
use flashsync_core::OriginId;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A database: yours, or a throwaway cluster removed on exit.
    let (db, _cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) => (TestDb { conninfo: url.parse::<ConnInfo>()?, name: "main".into() }, None),
        Err(_) => {
            let cluster = tokio::task::spawn_blocking(|| Cluster::start(ClusterOptions::default())).await??;
            (cluster.create_db("react").await?, Some(cluster))
        }
    };
    let upstream = db.try_client().await?;
    upstream
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS todos (id bigint PRIMARY KEY, owner int NOT NULL, title text, done bool);
             INSERT INTO todos SELECT g, g % 3, 'todo ' || g, false FROM generate_series(1, 30) g
             ON CONFLICT DO NOTHING;",
        )
        .await?;

    let dir = tempfile::tempdir()?;
    let origin = OriginId::new("postgres:main")?;
    let store = FjallStore::open(dir.path(), Options::default())?;
    let source = PgSource::new(PgSourceConfig::for_store(&origin, db.conninfo.clone(), store.store_id()))?;
    let engine = Engine::builder().store(store).origin("postgres:main", source).open().await?;
    let mine = ViewDef::new("app", "my_todos", Persistence::Realtime, "postgres:main", "public", "todos")?
        .with_filter("owner = 1 AND done = false")?
        .with_columns(["id", "title"])?;
    engine.define(mine).await?;
    engine.sync("*").await?;

    // The rows now, then every change after them: no gap, no double.
    let (start, mut feed) = engine.changes_with_rows("app.my_todos").await?;
    let mut todos: BTreeMap<Key, Row> = start[0].rows.iter().map(|r| (Key(vec![r.0[0].clone()]), r.clone())).collect();
    println!("{} open todos of owner 1", todos.len());

    let writer = tokio::spawn(async move {
        for i in 100..110 {
            let sql = format!(
                "INSERT INTO todos VALUES ({i}, 1, 'new {i}', false);
                 UPDATE todos SET done = true WHERE id = {};
                 UPDATE todos SET owner = 1 WHERE id = {};",
                i - 99,
                i - 98
            );
            upstream.batch_execute(&sql).await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !writer.is_finished() || todos.len() != engine.count("app.my_todos").await? as usize {
        let item = tokio::time::timeout_at(deadline, feed.next()).await.map_err(|_| "no change for 30 s")?;
        match item.ok_or("the engine stopped")?? {
            FeedItem::Changes(changes) => {
                for change in changes.views.into_iter().flat_map(|v| v.changes) {
                    match change {
                        RowChange::Insert { key, row } => {
                            println!("+ {row:?}");
                            todos.insert(key, row);
                        }
                        RowChange::Update { key, row } => {
                            println!("~ {row:?}");
                            todos.insert(key, row);
                        }
                        RowChange::Delete { key } => {
                            println!("- {key:?}");
                            todos.remove(&key);
                        }
                        RowChange::Truncate => todos.clear(),
                    }
                }
            }
            FeedItem::Replaced { rows, .. } => {
                todos = rows.into_iter().map(|r| (Key(vec![r.0[0].clone()]), r)).collect();
            }
            FeedItem::Forgotten { .. } => break,
        }
    }
    writer.await??;
    let mirror = engine.scan_all("app.my_todos").await?;
    assert_eq!(todos.into_values().collect::<Vec<_>>(), mirror, "changes applied to the start equal the mirror");
    println!("{} open todos of owner 1, exactly as mirrored", mirror.len());
    engine.shutdown().await?;
    Ok(())
}
