//! Helpers shared by the engine tests (in-memory backends).
#![allow(dead_code)]

use std::time::Duration;

use flashsync::{Config, Engine, Persistence, ViewDef};
use flashsync_core::memory::{MemoryStore, MemoryUpstream, TableIdentity};
use flashsync_core::Millis;

#[allow(unused_imports)] // Not every test binary waits.
pub use flashsync_source_pg::testkit::wait_for;

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn upstream() -> MemoryUpstream {
    let up = MemoryUpstream::new();
    up.create_table("public", "users", &[("id", "int8"), ("name", "text")], TableIdentity::PrimaryKey(vec![0]));
    up.create_table("public", "posts", &[("id", "int8"), ("title", "text")], TableIdentity::PrimaryKey(vec![0]));
    up
}

pub fn fast_config() -> Config {
    Config { retry_base: Millis(20), retry_max: Millis(200), retry_permanent: Millis(200), ..Config::default() }
}

pub async fn engine(up: &MemoryUpstream, store: MemoryStore) -> Engine {
    Engine::builder()
        .store(store)
        .origin("postgres:main", up.source())
        .config(fast_config())
        .seed(7)
        .open()
        .await
        .unwrap()
}

pub fn view(name: &str, persistence: Persistence, table: &str) -> ViewDef {
    ViewDef::new("public", name, persistence, "postgres:main", "public", table).unwrap()
}
