//! The origin's publication: which tables the feed carries (DESIGN §4.1).

use std::time::{Duration, Instant};

use flashsync_core::{SourceError, SourceErrorKind, UpstreamRelation};
use tokio_postgres::Client;

use crate::error;
use crate::ident::{qualified, quote_ident, quote_literal};

/// Creates the publication if it does not exist. It publishes every DML
/// kind including TRUNCATE, and partitions' changes under their root table
/// so a partitioned table is mirrored as one relation.
pub(crate) async fn ensure(client: &Client, name: &str, owner: Option<&str>) -> Result<(), SourceError> {
    create(client, name).await?;
    match owner {
        Some(owner) => claim(client, name, owner).await,
        None => Ok(()),
    }
}

/// The comment that marks a publication (and its slot) as a store's.
fn owner_comment(owner: &str) -> String {
    format!("flashsync store {owner}")
}

/// Makes sure the publication belongs to store `owner`, marking it so
/// (`COMMENT ON PUBLICATION`) when nobody has claimed it. Two stores that
/// share a slot take turns on it, each seeing the other's acknowledgements
/// as a slot gone ahead of it and copying everything again, forever: the
/// second one is refused instead, at once and by name.
async fn claim(client: &Client, name: &str, owner: &str) -> Result<(), SourceError> {
    let read = || async {
        client
            .query_one(
                "SELECT coalesce(obj_description(oid, 'pg_publication'), '') FROM pg_catalog.pg_publication \
                 WHERE pubname = $1",
                &[&name],
            )
            .await
            .map(|r| r.get::<_, String>(0))
            .map_err(|e| error::pg(format!("reading the owner of publication {name:?}"), &e))
    };
    let mine = owner_comment(owner);
    let mut comment = read().await?;
    if comment.is_empty() {
        let sql = format!("COMMENT ON PUBLICATION {} IS {}", quote_ident(name), quote_literal(&mine));
        client.batch_execute(&sql).await.map_err(|e| error::pg(format!("claiming publication {name:?}"), &e))?;
        // Read back: of two stores claiming at once, the last one wins and
        // the other learns it here.
        comment = read().await?;
    }
    match comment.strip_prefix("flashsync store ") {
        Some(other) if comment != mine => Err(SourceError::new(
            SourceErrorKind::Refused,
            format!(
                "publication {name:?} and its replication slot belong to another flashsync store ({other}); this \
                 store is {owner}. Two stores cannot share a slot: give this origin its own `slot` and \
                 `publication`, or read the mirror of that store"
            ),
        )),
        // Ours, or a comment someone else wrote for their own reasons.
        _ => Ok(()),
    }
}

async fn create(client: &Client, name: &str) -> Result<(), SourceError> {
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

/// Transactions that were writing to a relation when it entered the
/// publication; see [`add`] and [`wait_for_writers`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Writers(Vec<String>);

impl Writers {
    /// Whether there is nothing to wait for.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Adds `rel` (OID `oid`) to the publication, idempotently, and returns the
/// transactions writing to it right now. Those that began writing before it
/// entered the publication had their earlier changes decoded without it, so
/// the snapshot taken next must contain them (DESIGN §4.4: "the table is in
/// the publication before the snapshot"): the caller waits for them with
/// [`wait_for_writers`] before the relation is copied — on a connection of
/// its own, so the wait (as long as the application's longest open
/// transaction) holds up nothing else.
///
/// The writers are returned even when the table already was a member: an
/// earlier `prepare` may have added it and then not finished its wait
/// (timed out, or the process stopped), and nothing records when the table
/// was added. Waiting for the current writers again is always safe.
pub(crate) async fn add(client: &Client, name: &str, rel: &UpstreamRelation, oid: u32) -> Result<Writers, SourceError> {
    if !is_member(client, name, oid).await? {
        let sql = format!("ALTER PUBLICATION {} ADD TABLE {}", quote_ident(name), qualified(&rel.schema, &rel.table));
        match client.batch_execute(&sql).await {
            // Added concurrently by someone else: fine.
            Ok(()) => {}
            Err(e) if error::sqlstate(&e) == Some("42710") => {}
            Err(e) => return Err(error::pg(format!("adding {rel} to publication {name:?}"), &e)),
        }
    }
    writers(client, rel, oid).await
}

/// The transactions holding a write lock on `oid` right now (other than
/// this session's).
async fn writers(client: &Client, rel: &UpstreamRelation, oid: u32) -> Result<Writers, SourceError> {
    let step = format!("looking for open transactions writing to {rel}");
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
    Ok(Writers(rows.iter().map(|r| r.get(0)).collect()))
}

/// Waits, without blocking new writers, for the transactions in `writers`
/// to end (like `CREATE INDEX CONCURRENTLY`), for at most `limit`.
pub(crate) async fn wait_for_writers(
    client: &Client,
    rel: &UpstreamRelation,
    writers: &Writers,
    limit: Duration,
) -> Result<(), SourceError> {
    let step = format!("waiting for open transactions writing to {rel}");
    let vxids = &writers.0;
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
                &[vxids],
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
