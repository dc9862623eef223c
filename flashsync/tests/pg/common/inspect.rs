//! Reading and poking upstream replication state: slots, their confirmed position and walsender, the current LSN.

use super::*;

/// Replication slots of database `db`.
pub async fn slots(client: &tokio_postgres::Client, db: &str) -> Vec<String> {
    client
        .query("SELECT slot_name::text FROM pg_replication_slots WHERE database = $1 ORDER BY 1", &[&db])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The slot's `confirmed_flush_lsn`.
pub async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
    let row = client
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .unwrap();
    row.and_then(|r| r.get::<_, Option<String>>(0)).map(|s| s.parse().unwrap())
}

/// The walsender serving `slot`, if one is connected.
pub async fn walsender_pid(client: &tokio_postgres::Client, slot: &str) -> Option<i32> {
    client
        .query_opt("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .unwrap()
        .and_then(|r| r.get(0))
}

/// The current WAL insert position.
/// Writes WAL past `slot`'s restart point and checkpoints until the server
/// invalidates the slot (`wal_status = 'lost'`); the cluster must run with a
/// small `max_slot_wal_keep_size` and the slot must be inactive.
pub async fn invalidate_slot(c: &tokio_postgres::Client, slot: &str) {
    wait_for("the slot to be invalidated", WAIT, move || async move {
        c.batch_execute(
            "INSERT INTO side (x) VALUES (1); SELECT pg_switch_wal();
             INSERT INTO side (x) VALUES (2); SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .await
        .unwrap();
        let status: Option<String> = c
            .query_one("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .unwrap()
            .get(0);
        (status.as_deref() == Some("lost")).then_some(())
    })
    .await;
}

pub async fn current_lsn(client: &tokio_postgres::Client) -> Lsn {
    let s: String = client.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.unwrap().get(0);
    s.parse().unwrap()
}
