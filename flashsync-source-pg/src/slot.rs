//! The origin's logical replication slot: inspect, create, re-create after
//! loss, drop (DESIGN §4.1, §4.5).

use std::time::{Duration, Instant};

use flashsync_core::{FeedStart, Lsn, SourceError, SourceErrorKind};
use tokio_postgres::Client;

use crate::error;

/// The slot as `pg_replication_slots` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotInfo {
    pub(crate) plugin: Option<String>,
    pub(crate) slot_type: String,
    pub(crate) database: Option<String>,
    pub(crate) active_pid: Option<i32>,
    pub(crate) wal_status: Option<String>,
    pub(crate) restart_lsn: Option<Lsn>,
    pub(crate) confirmed_flush: Option<Lsn>,
}

impl SlotInfo {
    /// Invalidated: the WAL it needs is gone (`wal_status = 'lost'`, or a
    /// logical slot whose `restart_lsn` was cleared by invalidation).
    pub(crate) fn lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost") || self.restart_lsn.is_none()
    }
}

fn parse_lsn(s: Option<String>) -> Result<Option<Lsn>, SourceError> {
    s.map(|s| s.parse::<Lsn>().map_err(|e| error::protocol("reading replication slot", e))).transpose()
}

/// Reads the slot, if it exists.
pub(crate) async fn inspect(client: &Client, name: &str) -> Result<Option<SlotInfo>, SourceError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, slot_type, database::text, active_pid, wal_status, \
                    restart_lsn::text, confirmed_flush_lsn::text \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| error::pg(format!("inspecting replication slot {name:?}"), &e))?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(SlotInfo {
        plugin: r.get(0),
        slot_type: r.get(1),
        database: r.get(2),
        active_pid: r.get(3),
        wal_status: r.get(4),
        restart_lsn: parse_lsn(r.get(5))?,
        confirmed_flush: parse_lsn(r.get(6))?,
    }))
}

/// Creates the slot with `pgoutput`; returns its consistent point. Waits
/// (inside Postgres) for transactions running at creation to finish.
pub(crate) async fn create(client: &Client, name: &str) -> Result<Option<Lsn>, SourceError> {
    match client
        .query_one("SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", &[&name])
        .await
    {
        Ok(row) => Ok(Some(
            row.get::<_, String>(0).parse::<Lsn>().map_err(|e| error::protocol("creating replication slot", e))?,
        )),
        // Created concurrently by someone else: the caller re-inspects.
        Err(e) if error::sqlstate(&e) == Some("42710") => Ok(None),
        Err(e) => Err(error::pg(format!("creating replication slot {name:?}"), &e)),
    }
}

/// Waits until no process holds the slot, for at most `limit`.
pub(crate) async fn wait_inactive(
    client: &Client,
    name: &str,
    limit: Duration,
) -> Result<Option<SlotInfo>, SourceError> {
    let deadline = Instant::now() + limit;
    loop {
        let info = inspect(client, name).await?;
        match info.as_ref().and_then(|i| i.active_pid) {
            None => return Ok(info),
            Some(pid) if Instant::now() >= deadline => {
                return Err(SourceError::connection(format!(
                    "replication slot {name:?} is in use by server process {pid} \
                     (another consumer, or a connection that has not ended yet) after waiting {limit:?}"
                )))
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Drops the slot if it exists (waiting a bounded time for it to be free).
pub(crate) async fn drop(client: &Client, name: &str, limit: Duration) -> Result<(), SourceError> {
    if wait_inactive(client, name, limit).await?.is_none() {
        return Ok(());
    }
    match client.execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&name]).await {
        Ok(_) => Ok(()),
        Err(e) if error::sqlstate(&e) == Some("42704") => Ok(()),
        Err(e) => Err(error::pg(format!("dropping replication slot {name:?}"), &e)),
    }
}

/// Makes sure a usable slot exists and says what was found (DESIGN §4.5:
/// slot loss is reported, never silent).
pub(crate) async fn ensure(
    client: &Client,
    name: &str,
    database: &str,
    busy_limit: Duration,
) -> Result<FeedStart, SourceError> {
    // A few rounds cover concurrent creation/removal by another process.
    for _ in 0..3 {
        let info = wait_inactive(client, name, busy_limit).await?;
        let Some(info) = info else {
            match create(client, name).await? {
                Some(consistent_point) => return Ok(FeedStart::Created { consistent_point }),
                None => continue,
            }
        };
        if info.slot_type != "logical"
            || info.plugin.as_deref() != Some("pgoutput")
            || info.database.as_deref() != Some(database)
        {
            return Err(SourceError::new(
                SourceErrorKind::Refused,
                format!(
                    "replication slot {name:?} exists but is not a pgoutput logical slot of database {database:?} \
                     (type {}, plugin {:?}, database {:?}); choose another slot name or drop it",
                    info.slot_type, info.plugin, info.database
                ),
            ));
        }
        if info.lost() {
            let reason = format!(
                "replication slot {name:?} was invalidated (wal_status = {}): the WAL it needed was removed, \
                 e.g. because max_slot_wal_keep_size was exceeded; history before the new slot is lost",
                info.wal_status.as_deref().unwrap_or("unknown")
            );
            drop(client, name, busy_limit).await?;
            match create(client, name).await? {
                Some(consistent_point) => return Ok(FeedStart::Recreated { consistent_point, reason }),
                None => continue,
            }
        }
        let confirmed_flush = info.confirmed_flush.ok_or_else(|| {
            error::protocol("inspecting replication slot", "logical slot without confirmed_flush_lsn")
        })?;
        return Ok(FeedStart::Existing { confirmed_flush });
    }
    Err(SourceError::connection(format!(
        "replication slot {name:?} kept changing while being set up (created or dropped concurrently)"
    )))
}
