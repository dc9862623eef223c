//! Embedding flashsync: a durable fjall store and a real Postgres.
//!
//! ```sh
//! DATABASE_URL='postgres://app:secret@localhost/main' \
//!   cargo run -p flashsync --example embed_postgres -- public.users ./flashsync-data
//! ```
//!
//! Mirrors the given table as a realtime view, prints its status and every
//! event, and stops cleanly on Ctrl-C. Run it twice: the second start
//! resumes from where the first stopped, without copying the table again.

use flashsync::fjall::{FjallStore, Options};
use flashsync::postgres::{ConnInfo, PgSource, PgSourceConfig};
use flashsync::{Engine, Persistence, ViewDef};
use flashsync_core::OriginId;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let table = args.next().unwrap_or_else(|| "public.users".into());
    let dir = args.next().unwrap_or_else(|| "./flashsync-data".into());
    let (schema, name) = table.split_once('.').ok_or("give the table as schema.table")?;
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to a postgres:// URL")?;

    let conn: ConnInfo = url.parse()?; // secrets never appear in its Debug or errors
    let origin = OriginId::new("postgres:main")?;
    let source = PgSource::new(PgSourceConfig::new(&origin, conn))?;
    let store = FjallStore::open(&dir, Options::default())?;
    let engine = Engine::builder().store(store).origin("postgres:main", source).open().await?;

    let view = format!("{name}_live");
    engine.define(ViewDef::new("local", &view, Persistence::Realtime, "postgres:main", schema, name)?).await?;
    let mut events = engine.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("event: {:?} {:?} {:?}", e.phase, e.view.map(|v| v.to_string()), e.kind);
        }
    });

    // On startup, on reconnect, whenever unsure: sync() is idempotent.
    let summary = engine.sync("*").await?;
    println!("synced: {summary:?}");
    println!("{} rows in local.{view}", engine.count(&format!("local.{view}")).await?);
    for st in engine.status("*").await? {
        println!("{}.{}: {} (last commit {:?})", st.namespace, st.name, st.state, st.last_seen_commit);
    }

    tokio::signal::ctrl_c().await?;
    engine.shutdown().await?; // everything applied is durable; the next start resumes here
    Ok(())
}
