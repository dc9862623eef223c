//! `flashsync demo`: everything flashsync does, on a throwaway Postgres, in
//! under a minute — and a proof at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsync::fjall::{FjallStore, Options};
use flashsync::postgres::{PgSource, PgSourceConfig};
use flashsync::{Engine, Persistence, Row, Value, ViewDef};
use flashsync_core::OriginId;

use crate::{output, pg, run, CliError};

const SEED_ROWS: i64 = 20_000;

/// The filtered view's `where`.
const LOW_STOCK: &str = "qty < 10 AND name LIKE 'item %'";

fn err(e: impl std::fmt::Display) -> CliError {
    CliError(e.to_string())
}

pub async fn demo(seconds: Duration) -> Result<(), CliError> {
    let server = pg::start(None, pg::default_options(), "demo").await?;
    let db = &server.db;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (
                 id bigint PRIMARY KEY,
                 name text NOT NULL,
                 qty int NOT NULL,
                 price numeric(12,2),
                 tags text[],
                 updated_at timestamptz NOT NULL DEFAULT now()
             );
             INSERT INTO items (id, name, qty, price, tags)
             SELECT g, 'item ' || g, g % 100, (g % 1000) / 7.0, ARRAY['t' || g % 5, 'demo']
             FROM generate_series(1, {SEED_ROWS}) g;"
        ))
        .await
        .map_err(err)?;
    eprintln!("created table items with {SEED_ROWS} rows");

    let dir = tempfile_dir()?;
    let store = FjallStore::open(dir.path(), Options::default()).map_err(err)?;
    let origin = OriginId::new("postgres:demo").map_err(err)?;
    let source = PgSource::new(PgSourceConfig::new(&origin, db.conninfo.clone())).map_err(err)?;
    let engine = Engine::builder().store(store).origin("postgres:demo", source).open().await.map_err(err)?;
    let def = |name: &str, p| ViewDef::new("public", name, p, "postgres:demo", "public", "items").map_err(err);
    engine.define(def("items_copy", Persistence::Materialized)?).await.map_err(err)?;
    engine.define(def("items_live", Persistence::Realtime)?).await.map_err(err)?;
    // A partial view: the rows of one "tenant", three columns. Writers move
    // rows in and out of it (qty changes), and it must stay exact too.
    let low_stock = def("low_stock", Persistence::Realtime)?
        .with_filter(LOW_STOCK)
        .map_err(err)?
        .with_columns(["id", "name", "qty"])
        .map_err(err)?;
    engine.define(low_stock).await.map_err(err)?;
    eprintln!(
        "defined public.items_copy (materialized), public.items_live (realtime) and public.low_stock \
         (realtime, where {LOW_STOCK:?}, columns id, name, qty); store in {}",
        dir.path().display()
    );

    let progress = tokio::spawn(run::show_progress(engine.clone()));
    let started = Instant::now();
    let summary = engine.sync("*").await.map_err(err)?;
    eprint!("sync() took {:.2?}:\n{}", started.elapsed(), output::summary_text(&summary, true));

    // Writers: inserts, updates, deletes and multi-row transactions.
    let commits = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + seconds;
    let mut writers = Vec::new();
    for w in 0..2i64 {
        let client = db.client().await;
        let commits = commits.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0i64;
            while Instant::now() < stop_at {
                i += 1;
                let id = 1 + (i * 7919 + w * 104_729) % (SEED_ROWS + 5_000);
                let sql = match i % 5 {
                    0 => format!("DELETE FROM items WHERE id = {id}"),
                    1 => format!(
                        "INSERT INTO items (id, name, qty, price, tags) VALUES ({id}, 'new {id}', 1, 9.99, ARRAY['new']) \
                         ON CONFLICT (id) DO UPDATE SET qty = items.qty + 1, updated_at = now()"
                    ),
                    2 => format!(
                        "BEGIN; UPDATE items SET qty = qty + 1 WHERE id = {id}; \
                         UPDATE items SET price = price + 1 WHERE id = {}; COMMIT",
                        id + 1
                    ),
                    _ => format!("UPDATE items SET qty = qty - 1, updated_at = now() WHERE id = {id}"),
                };
                if client.batch_execute(&sql).await.is_ok() {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Live status while the writers run; stop and resume the realtime view
    // half-way to show that nothing is lost while it is disabled.
    let mut stopped = false;
    let mut resumed = false;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let elapsed = seconds.saturating_sub(stop_at.saturating_duration_since(Instant::now()));
        if !stopped && elapsed >= seconds / 3 {
            engine.stop("public.items_live").await.map_err(err)?;
            eprintln!("-- stop(public.items_live): disabled; upstream keeps changing");
            stopped = true;
        } else if stopped && !resumed && elapsed >= 2 * seconds / 3 {
            let s = engine.resume("public.items_live").await.map_err(err)?;
            eprint!("-- resume(public.items_live):\n{}", output::summary_text(&s, true));
            resumed = true;
        }
        let upstream: i64 = client.query_one("SELECT count(*) FROM items", &[]).await.map_err(err)?.get(0);
        let live = engine.count("public.items_live").await.unwrap_or(0);
        eprintln!(
            "{:>5.1}s  upstream rows {upstream:>6}  items_live {live:>6}  commits {:>6}",
            elapsed.as_secs_f64(),
            commits.load(Ordering::Relaxed)
        );
    }
    for w in writers {
        w.await.map_err(err)?;
    }
    if !resumed {
        engine.resume("public.items_live").await.map_err(err)?;
    }
    let total = commits.load(Ordering::Relaxed);
    eprintln!("writers done: {total} commits");
    print!("{}", output::status_table(&engine.status("*").await.map_err(err)?));

    // The proof.
    let expected = upstream_rows(&client).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let local = engine.scan_all("public.items_live").await.map_err(err)?;
        if local == expected {
            println!(
                "✓ public.items_live equals upstream: {} rows, identical values, after {total} commits",
                local.len()
            );
            break;
        }
        if Instant::now() > deadline {
            return Err(CliError(format!(
                "public.items_live did not converge within 60 s ({} local rows, {} upstream)",
                local.len(),
                expected.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let want: Vec<Row> = expected
        .iter()
        .filter(|r| matches!(r.0.get(2), Some(Value::Int(q)) if *q < 10))
        .filter(|r| matches!(r.0.get(1), Some(Value::Text(n)) if n.starts_with("item ")))
        .map(|r| Row(r.0.iter().take(3).cloned().collect()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let local = engine.scan_all("public.low_stock").await.map_err(err)?;
        if local == want {
            println!(
                "✓ public.low_stock equals SELECT id, name, qty FROM items WHERE {LOW_STOCK}: {} rows",
                local.len()
            );
            break;
        }
        if Instant::now() > deadline {
            return Err(CliError(format!(
                "public.low_stock did not converge within 60 s ({} local rows, {} expected)",
                local.len(),
                want.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let copy_before = engine.scan_all("public.items_copy").await.map_err(err)?;
    println!(
        "  public.items_copy is the snapshot it took at sync(): {} rows (materialized views refresh on demand)",
        copy_before.len()
    );
    engine.sync_forced("public.items_copy").await.map_err(err)?;
    let copy = engine.scan_all("public.items_copy").await.map_err(err)?;
    if copy != expected {
        return Err(CliError("public.items_copy differs from upstream after a forced sync".into()));
    }
    println!("✓ public.items_copy equals upstream after sync --force: {} rows", copy.len());
    progress.abort();
    engine.shutdown().await.map_err(err)?;
    drop(engine);
    // The store closes once every task of the engine has let go of it, and
    // its background threads stop with it. The temp dir must outlive them,
    // or they find their files gone and say so after the demo's verdict.
    released(dir.path()).await?;
    println!("demo finished: the mirror is exact");
    Ok(())
}

/// Waits (bounded) until the store at `path` is closed, by opening it.
async fn released(path: &std::path::Path) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match FjallStore::open(path, Options::default()) {
            Ok(store) => {
                drop(store);
                return Ok(());
            }
            Err(e) if e.kind == flashsync_core::StoreErrorKind::Locked && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(CliError(format!("the demo's store did not close: {e}"))),
        }
    }
}

/// Upstream rows as flashsync stores them (canonical text for numeric,
/// arrays and timestamps, under the same pinned session settings).
async fn upstream_rows(client: &tokio_postgres::Client) -> Result<Vec<Row>, CliError> {
    let rows = client
        .query("SELECT id, name, qty, price::text, tags::text, updated_at::text FROM items ORDER BY id", &[])
        .await
        .map_err(err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let text = |i: usize| r.get::<_, Option<String>>(i).map_or(Value::Null, Value::Text);
            Row(vec![
                Value::Int(r.get::<_, i64>(0)),
                Value::Text(r.get(1)),
                Value::Int(r.get::<_, i32>(2).into()),
                text(3),
                text(4),
                text(5),
            ])
        })
        .collect())
}

fn tempfile_dir() -> Result<tempfile::TempDir, CliError> {
    tempfile::Builder::new()
        .prefix("flashsync-demo-")
        .tempdir()
        .map_err(|e| CliError(format!("cannot create a temp dir: {e}")))
}
