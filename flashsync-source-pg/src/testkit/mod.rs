//! Throwaway Postgres for tests and benchmarks (feature `testkit`).
//!
//! - [`shared`] starts one cluster per test process on first use (each test
//!   then makes its own database with [`test_db`]: fast, isolated).
//! - [`Cluster::start`] starts a dedicated cluster a test may restart or
//!   reconfigure (e.g. a small `max_slot_wal_keep_size`).
//! - `FLASHSYNC_TEST_PG_URL` points the shared cluster at an external server
//!   instead (the role needs `CREATEDB` and `REPLICATION`).
//!
//! Clusters come from the system binaries (`PG_BINDIR`, `pg_config
//! --bindir`, or the newest `/usr/lib/postgresql/*/bin`), run with
//! `wal_level = logical`, listen on 127.0.0.1 at a free port with their data
//! and Unix socket in a temporary directory, and run as the `postgres` user
//! when the tests run as root (`initdb` refuses root). A reaper process
//! watches the test process and kills the server and removes its directory
//! even if the test process dies without running destructors.
//!
//! When no binaries are found (and no URL is given), [`test_db`] prints a
//! loud skip notice and returns `None` — unless `CI=true` or
//! `FLASHSYNC_REQUIRE_PG=1`, where it panics so a missing server cannot pass
//! silently.
//!
//! ```no_run
//! # async fn t() {
//! use flashsync_source_pg::testkit;
//! let Some(db) = testkit::test_db("my_test").await else { return };
//! let client = db.client().await;
//! client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
//! # }
//! ```

mod cluster;
mod reaper;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub use cluster::{find_bindir, Cluster, ClusterOptions};

use crate::conninfo::ConnInfo;
use crate::ident::quote_ident;

/// Polls `check` until it returns `Some`, or fails the test after `timeout`
/// with `what` in the message. Polling only reads state: each check re-reads
/// the truth, so it never stands in for ordering. Every flashsync test waits
/// with this one function.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A harness failure (the message says what to fix).
#[derive(Debug, Clone, thiserror::Error)]
#[error("test Postgres: {0}")]
pub struct TestkitError(pub String);

/// Whether a missing Postgres must fail the tests (`CI=true` or
/// `FLASHSYNC_REQUIRE_PG=1`).
pub fn pg_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("FLASHSYNC_REQUIRE_PG").is_ok_and(|v| v == "1" || v == "true")
}

/// Reports that a Postgres test cannot run: loudly, and fatally when a
/// server is required.
pub fn skip(test: &str, why: &str) {
    let msg = format!(
        "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED Postgres test `{test}`: {why}\n\
         !!! Install PostgreSQL server binaries (or set PG_BINDIR, or\n\
         !!! FLASHSYNC_TEST_PG_URL) to run it. Set FLASHSYNC_REQUIRE_PG=1 to\n\
         !!! make this a failure.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    if pg_required() {
        panic!("{msg}Postgres is required here (CI=true or FLASHSYNC_REQUIRE_PG=1)");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of
    // passing tests, and a skip must not go unseen.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
}

/// Where the shared server is.
enum Shared {
    Local(Cluster),
    External(ConnInfo),
}

static SHARED: OnceLock<Option<Shared>> = OnceLock::new();

fn shared_server() -> Option<&'static Shared> {
    SHARED
        .get_or_init(|| {
            if let Ok(url) = std::env::var("FLASHSYNC_TEST_PG_URL") {
                let info = url.parse::<ConnInfo>().unwrap_or_else(|e| panic!("FLASHSYNC_TEST_PG_URL: {e}"));
                return Some(Shared::External(info));
            }
            find_bindir()?;
            match Cluster::start(ClusterOptions::default()) {
                Ok(c) => Some(Shared::Local(c)),
                // Binaries exist but the server does not start: a real
                // failure, never a skip.
                Err(e) => panic!("{e}"),
            }
        })
        .as_ref()
}

/// The shared cluster's connection settings for database `postgres` (or the
/// external server's), if a server is available.
pub fn shared() -> Option<ConnInfo> {
    shared_server().map(|s| match s {
        Shared::Local(c) => c.conninfo("postgres"),
        Shared::External(info) => info.clone(),
    })
}

/// A fresh database for one test.
#[derive(Clone, Debug)]
pub struct TestDb {
    /// Connection settings for it (superuser on local clusters).
    pub conninfo: ConnInfo,
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// A tokio-postgres client with the pinned session settings.
    pub async fn client(&self) -> tokio_postgres::Client {
        crate::control::connect(&self.conninfo, "flashsync-test")
            .await
            .unwrap_or_else(|e| panic!("connecting to test database {}: {e}", self.name))
    }

    /// Like [`client`](Self::client), but a failure (e.g. the server is
    /// restarting) is returned instead of failing the test.
    pub async fn try_client(&self) -> Result<tokio_postgres::Client, flashsync_core::SourceError> {
        crate::control::connect(&self.conninfo, "flashsync-test").await
    }
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// Creates a uniquely named database on `server` (settings for any existing
/// database there).
pub async fn create_db(server: &ConnInfo, prefix: &str) -> Result<TestDb, TestkitError> {
    let clean: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(30).collect();
    let name = format!("fs_{clean}_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let admin = crate::control::connect(server, "flashsync-test")
        .await
        .map_err(|e| TestkitError(format!("connecting to create a database: {e}")))?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .await
        .map_err(|e| TestkitError(format!("CREATE DATABASE {name}: {e}")))?;
    let mut conninfo = server.clone();
    conninfo.dbname = name.clone();
    Ok(TestDb { conninfo, name })
}

/// A fresh database on the shared server, or `None` (after a loud notice)
/// when no server is available and none is required.
pub async fn test_db(test: &str) -> Option<TestDb> {
    let Some(server) = shared() else {
        skip(test, "no PostgreSQL server binaries found");
        return None;
    };
    Some(create_db(&server, test).await.unwrap_or_else(|e| panic!("{e}")))
}

/// A dedicated cluster for one test, or `None` (after a loud notice) when no
/// binaries are available and none are required.
pub fn dedicated(test: &str, options: ClusterOptions) -> Option<Cluster> {
    if find_bindir().is_none() {
        skip(test, "no PostgreSQL server binaries found (a dedicated cluster is needed)");
        return None;
    }
    Some(Cluster::start(options).unwrap_or_else(|e| panic!("{e}")))
}
