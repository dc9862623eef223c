//! The origin's publication: which tables the feed carries (DESIGN §4.1).

use std::time::{Duration, Instant};

use flashsync_core::{SourceError, SourceErrorKind, UpstreamRelation};
use tokio_postgres::Client;

use crate::error;
use crate::ident::{qualified, quote_ident};

/// Creates the publication if it does not exist. It publishes every DML
/// kind including TRUNCATE, and partitions' changes under their root table
/// so a partitioned table is mirrored as one relation.
pub(crate) async fn ensure(client: &Client, name: &str) -> Result<(), SourceError> {
    if exists(client, name).await? {
        return Ok(());
    }
    let sql = format!(
        "CREATE PUBLICATION {} WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)",
        quote_ident(name)
    );
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Someone created it concurrently: fine.
        Err(e) if error::sqlstate(&e) == Some("42710") => Ok(()),
        Err(e) => Err(error::pg(format!("creating publication {name:?}"), &e)),
    }
}

/// Whether the publication exists.
pub(crate) async fn exists(client: &Client, name: &str) -> Result<bool, SourceError> {
    client
        .query_opt("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", &[&name])
        .await
        .map(|r| r.is_some())
        .map_err(|e| error::pg(format!("looking up publication {name:?}"), &e))
}

/// Whether relation `oid` is published (explicitly, or by a `FOR ALL
/// TABLES` publication).
async fn is_member(client: &Client, name: &str, oid: u32) -> Result<bool, SourceError> {
    client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication p \
             WHERE p.pubname = $1 AND (p.puballtables OR EXISTS ( \
                SELECT 1 FROM pg_catalog.pg_publication_rel pr \
                WHERE pr.prpubid = p.oid AND pr.prrelid = $2))",
            &[&name, &oid],
        )
        .await
        .map(|r| r.is_some())
        .map_err(|e| error::pg(format!("checking publication {name:?}"), &e))
}

/// Adds `rel` (OID `oid`) to the publication, idempotently. When it was not
/// a member yet, waits until every transaction that was writing to it when
/// it was added has ended: their earlier changes were decoded without the
/// table in the publication, so they must be in the snapshot taken next
/// (DESIGN §4.4: "the table is in the publication before the snapshot").
pub(crate) async fn add(
    client: &Client,
    name: &str,
    rel: &UpstreamRelation,
    oid: u32,
    wait_limit: Duration,
) -> Result<(), SourceError> {
    if is_member(client, name, oid).await? {
        return Ok(());
    }
    let sql = format!("ALTER PUBLICATION {} ADD TABLE {}", quote_ident(name), qualified(&rel.schema, &rel.table));
    match client.batch_execute(&sql).await {
        Ok(()) => {}
        Err(e) if error::sqlstate(&e) == Some("42710") => return Ok(()),
        Err(e) => return Err(error::pg(format!("adding {rel} to publication {name:?}"), &e)),
    }
    wait_for_writers(client, rel, oid, wait_limit).await
}

/// Waits, without blocking new writers, for the transactions holding a
/// write lock on `oid` right now to end (like `CREATE INDEX CONCURRENTLY`).
async fn wait_for_writers(
    client: &Client,
    rel: &UpstreamRelation,
    oid: u32,
    limit: Duration,
) -> Result<(), SourceError> {
    let step = format!("waiting for open transactions writing to {rel}");
    let rows = client
        .query(
            "SELECT DISTINCT virtualtransaction FROM pg_catalog.pg_locks \
             WHERE locktype = 'relation' AND relation = $1 AND granted \
               AND mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') \
               AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
               AND pid IS DISTINCT FROM pg_backend_pid()",
            &[&oid],
        )
        .await
        .map_err(|e| error::pg(&step, &e))?;
    let vxids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if vxids.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_locks \
                 WHERE locktype = 'virtualxid' AND virtualxid = ANY($1)",
                &[&vxids],
            )
            .await
            .map_err(|e| error::pg(&step, &e))?;
        let left: i64 = row.get(0);
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(SourceError::new(
                SourceErrorKind::Other,
                format!(
                    "{step}: {left} transaction(s) still open after {limit:?}; \
                     they must end before {rel} can be copied consistently"
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Removes `rel` from the publication if it is a member; a missing table or
/// publication is not an error.
pub(crate) async fn remove(client: &Client, name: &str, rel: &UpstreamRelation) -> Result<(), SourceError> {
    let member = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication_tables \
             WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[&name, &rel.schema, &rel.table],
        )
        .await
        .map_err(|e| error::pg(format!("checking publication {name:?}"), &e))?;
    if member.is_none() {
        return Ok(());
    }
    let sql = format!("ALTER PUBLICATION {} DROP TABLE {}", quote_ident(name), qualified(&rel.schema, &rel.table));
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Gone meanwhile (table dropped, or removed by someone else).
        Err(e) if matches!(error::sqlstate(&e), Some("42P01" | "42704")) => Ok(()),
        Err(e) => Err(error::pg(format!("removing {rel} from publication {name:?}"), &e)),
    }
}

/// Drops the publication if it exists.
pub(crate) async fn drop(client: &Client, name: &str) -> Result<(), SourceError> {
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name)))
        .await
        .map_err(|e| error::pg(format!("dropping publication {name:?}"), &e))
}
