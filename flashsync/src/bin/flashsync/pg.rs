//! A Postgres to demo and benchmark against: a throwaway cluster from the
//! system binaries, or a server the user names.

use flashsync::postgres::testkit::{self, Cluster, ClusterOptions, TestDb};
use flashsync::postgres::ConnInfo;

use crate::CliError;

/// A database for one demo or benchmark run; the cluster (if we started it)
/// is torn down when this is dropped.
pub struct Server {
    pub db: TestDb,
    /// Kept for its `Drop`, which stops the cluster.
    pub _cluster: Option<Cluster>,
}

pub async fn start(url: Option<&str>, options: ClusterOptions, what: &str) -> Result<Server, CliError> {
    match url {
        Some(url) => {
            let info: ConnInfo = url.parse().map_err(|e| CliError(format!("--pg: {e}")))?;
            let db = testkit::create_db(&info, what).await.map_err(|e| CliError(e.to_string()))?;
            Ok(Server { db, _cluster: None })
        }
        None => {
            if testkit::find_bindir().is_none() {
                return Err(CliError(
                    "no PostgreSQL server binaries found (looked at PG_BINDIR, pg_config --bindir and \
                     /usr/lib/postgresql/*/bin): install PostgreSQL, or pass --pg URL"
                        .into(),
                ));
            }
            eprintln!("starting a throwaway PostgreSQL...");
            let cluster = tokio::task::spawn_blocking(move || Cluster::start(options))
                .await
                .map_err(|e| CliError(e.to_string()))?
                .map_err(|e| CliError(e.to_string()))?;
            eprintln!("PostgreSQL is up on 127.0.0.1:{} (data in a temp dir, removed on exit)", cluster.port());
            let db = cluster.create_db(what).await.map_err(|e| CliError(e.to_string()))?;
            Ok(Server { db, _cluster: Some(cluster) })
        }
    }
}

pub fn default_options() -> ClusterOptions {
    ClusterOptions::default()
}
