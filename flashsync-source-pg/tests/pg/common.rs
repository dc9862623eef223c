//! Helpers shared by the Postgres tests.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flashsync_core::{Lsn, OriginId, Row, RowSink, SourceError, StoreError, StreamEvent, Subscription};
use flashsync_source_pg::testkit::TestDb;
use flashsync_source_pg::{PgSource, PgSourceConfig};
use futures::StreamExt;

/// Generous bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(30);

/// A source for `db` with an origin (and so slot) unique to the database.
pub fn source(db: &TestDb) -> PgSource {
    PgSource::new(config(db)).expect("valid config")
}

/// The default config for `db` with a short status interval.
pub fn config(db: &TestDb) -> PgSourceConfig {
    let origin = OriginId::new(format!("postgres:{}", db.name)).expect("origin id");
    PgSourceConfig::new(&origin, db.conninfo.clone()).with_status_interval(Duration::from_millis(500))
}

/// Collects snapshot rows, recording batch sizes.
#[derive(Default)]
pub struct VecSink {
    pub rows: Vec<Row>,
    pub batches: Vec<usize>,
}

#[async_trait]
impl RowSink for VecSink {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        self.batches.push(rows.len());
        self.rows.extend(rows);
        Ok(())
    }
}

/// The next feed event, failing the test after `WAIT`.
pub async fn next_event(sub: &mut Subscription) -> StreamEvent {
    match tokio::time::timeout(WAIT, sub.events.next()).await {
        Err(_) => panic!("no feed event within {WAIT:?}"),
        Ok(None) => panic!("feed ended"),
        Ok(Some(Err(e))) => panic!("feed error: {e}"),
        Ok(Some(Ok(e))) => e,
    }
}

/// The next non-keepalive event, failing the test after `WAIT`.
pub async fn next_data_event(sub: &mut Subscription) -> StreamEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no transaction within {WAIT:?} (only keepalives)");
        match next_event(sub).await {
            StreamEvent::Keepalive { .. } => continue,
            e => return e,
        }
    }
}

/// One transaction from the feed: (xid, final_lsn, events between, end_lsn).
#[derive(Debug)]
pub struct Txn {
    pub xid: u32,
    pub final_lsn: Lsn,
    pub events: Vec<StreamEvent>,
    pub end_lsn: Lsn,
}

/// Reads the next whole transaction (skipping keepalives before it).
pub async fn next_txn(sub: &mut Subscription) -> Txn {
    let (xid, final_lsn) = match next_data_event(sub).await {
        StreamEvent::Begin { xid, final_lsn, .. } => (xid, final_lsn),
        other => panic!("expected Begin, got {other:?}"),
    };
    let mut events = Vec::new();
    loop {
        match next_event(sub).await {
            StreamEvent::Commit { end_lsn } => return Txn { xid, final_lsn, events, end_lsn },
            StreamEvent::Begin { .. } => panic!("Begin inside a transaction"),
            StreamEvent::Keepalive { .. } => panic!("keepalive inside a transaction"),
            e => events.push(e),
        }
    }
}

/// [`testkit::wait_for`] with this suite's `WAIT`.
pub async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    flashsync_source_pg::testkit::wait_for(what, WAIT, check).await
}

/// The slot's `confirmed_flush_lsn`.
pub async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
    let row = client
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .expect("query slot");
    row.and_then(|r| r.get::<_, Option<String>>(0)).map(|s| s.parse().expect("lsn"))
}

/// The current WAL insert position.
pub async fn current_lsn(client: &tokio_postgres::Client) -> Lsn {
    let s: String = client.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.expect("lsn").get(0);
    s.parse().expect("lsn")
}

/// Asserts a source error's kind, showing the message on failure.
pub fn assert_kind<T: std::fmt::Debug>(
    r: Result<T, SourceError>,
    kind: flashsync_core::SourceErrorKind,
) -> SourceError {
    match r {
        Err(e) if e.kind == kind => e,
        other => panic!("expected {kind:?} error, got {other:?}"),
    }
}
