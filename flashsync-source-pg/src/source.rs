//! [`PgSource`]: the [`Source`] over a Postgres origin.

use std::time::Duration;

use async_trait::async_trait;
use flashsync_core::{
    CopiedChunk, FeedStart, Key, Lsn, OriginId, RelationSchema, RowSink, ServerPosition, SlotReport, SnapshotPoint,
    Source, SourceError, SourceErrorKind, Subscription, UpstreamRelation, ViewShape,
};
use tokio_postgres::Client;

use crate::catalog;
use crate::conninfo::ConnInfo;
use crate::control::SharedControl;
use crate::ident::{default_feed_name, is_valid_slot_name, quote_ident, store_feed_name};
use crate::publication;
use crate::replication::transport::WireConn;
use crate::replication::{spawn_feed, FeedParams, RelationWatch};
use crate::shape::Shapes;
use crate::slot;
use crate::snapshot::{self, ChunkRequest, SnapshotLimits};

/// How a [`PgSource`] connects and names and paces its resources.
#[derive(Clone, Debug)]
pub struct PgSourceConfig {
    /// Connection settings (the password is redacted in `Debug`).
    pub conn: ConnInfo,
    /// Replication slot name; default derived from the origin id
    /// ([`default_feed_name`]). Lower-case letters, digits, `_`; ≤ 63 bytes.
    pub slot_name: String,
    /// Publication name; by default the same as the slot name.
    pub publication_name: String,
    /// The store this source syncs into, when it has an id: the publication
    /// is marked as that store's, and a source of another store is refused
    /// the publication and its slot (see [`PgSourceConfig::for_store`]).
    pub owner: Option<String>,
    /// `application_name` when the connection settings give none.
    pub application_name: String,
    /// Rows per snapshot batch handed to the sink.
    pub snapshot_batch_rows: usize,
    /// Approximate bytes per snapshot batch.
    pub snapshot_batch_bytes: usize,
    /// Retakes of a snapshot that raced with a commit before giving up.
    pub snapshot_retries: u32,
    /// Period of standby status updates while the feed is idle or the
    /// consumer is not reading. Keep well below the server's
    /// `wal_sender_timeout` / 2.
    pub status_interval: Duration,
    /// Feed events buffered ahead of the consumer.
    pub feed_buffer: usize,
    /// Largest single server message accepted on the feed.
    pub max_message_bytes: usize,
    /// How long `prepare` waits for transactions that were writing to a
    /// table when it was added to the publication.
    pub writer_wait: Duration,
    /// How long to wait for the slot to be released by a previous
    /// connection before reporting it busy.
    pub slot_busy_wait: Duration,
    /// How often a feed checks that the relations it carries still exist
    /// and are still published (the stream says nothing when a table is
    /// dropped or leaves the publication). Zero turns the check off.
    pub relation_check_interval: Duration,
}

impl PgSourceConfig {
    /// Defaults for `origin` over `conn`.
    pub fn new(origin: &OriginId, conn: ConnInfo) -> Self {
        let name = default_feed_name(origin.as_str());
        PgSourceConfig {
            conn,
            slot_name: name.clone(),
            publication_name: name,
            owner: None,
            application_name: "flashsync".into(),
            snapshot_batch_rows: 8192,
            snapshot_batch_bytes: 4 << 20,
            snapshot_retries: 50,
            status_interval: Duration::from_secs(10),
            feed_buffer: 1024,
            max_message_bytes: 1 << 30,
            writer_wait: Duration::from_secs(300),
            slot_busy_wait: Duration::from_secs(10),
            relation_check_interval: Duration::from_secs(10),
        }
    }

    /// Defaults for `origin` over `conn`, syncing into the store with id
    /// `store_id` (e.g. `FjallStore::store_id`): the slot and publication
    /// are named after both ([`store_feed_name`]), so two stores syncing one
    /// database never share them, and the publication is claimed for the
    /// store, so a source of another store given the same names explicitly
    /// is refused at once instead of fighting over the slot. Without an id
    /// (a store from an earlier version), the names of
    /// [`new`](Self::new), unclaimed.
    pub fn for_store(origin: &OriginId, conn: ConnInfo, store_id: Option<&str>) -> Self {
        let mut config = Self::new(origin, conn);
        if let Some(id) = store_id {
            let name = store_feed_name(origin.as_str(), id);
            config.slot_name = name.clone();
            config.publication_name = name;
            config.owner = Some(id.to_owned());
        }
        config
    }

    /// Uses `name` for the slot and the publication.
    pub fn with_feed_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.slot_name = name.clone();
        self.publication_name = name;
        self
    }

    /// Sets the status update period.
    pub fn with_status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval;
        self
    }

    /// Sets how often feeds check their relations (zero: never).
    pub fn with_relation_check_interval(mut self, interval: Duration) -> Self {
        self.relation_check_interval = interval;
        self
    }
}

/// The Postgres [`Source`]: COPY snapshots and `pgoutput` logical
/// replication over one slot and one publication per origin.
pub struct PgSource {
    config: PgSourceConfig,
    /// Shared connection for catalog and slot/publication management.
    control: SharedControl,
    shapes: Shapes,
    /// A snapshot connection kept after a copy that ended well, for the
    /// next one: a copy in chunks takes one snapshot per chunk, and a
    /// connection (TCP, TLS, authentication, session settings) per chunk
    /// cost more than the snapshot itself.
    spare: std::sync::Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSource")
            .field("conn", &self.config.conn.to_string())
            .field("slot", &self.config.slot_name)
            .field("publication", &self.config.publication_name)
            .finish_non_exhaustive()
    }
}

impl PgSource {
    /// A source; connects lazily. Fails if a configured name is unusable.
    pub fn new(config: PgSourceConfig) -> Result<Self, SourceError> {
        if !is_valid_slot_name(&config.slot_name) {
            return Err(SourceError::new(
                SourceErrorKind::Refused,
                format!(
                    "slot name {:?} is not valid: use 1 to 63 lower-case letters, digits or underscores",
                    config.slot_name
                ),
            ));
        }
        if config.publication_name.is_empty() || config.publication_name.len() > 63 {
            return Err(SourceError::new(SourceErrorKind::Refused, "publication name must be 1 to 63 bytes"));
        }
        let control = SharedControl::new(config.conn.clone(), config.application_name.clone());
        Ok(PgSource { config, control, shapes: Shapes::default(), spare: std::sync::Mutex::new(None) })
    }

    /// Connects once and disconnects: for a process to find out at start
    /// that an origin cannot work at all (a `Refused` error: wrong password,
    /// no such role or database) rather than retry it in the background.
    /// One attempt, so one failed login on the server.
    pub async fn check_connection(&self) -> Result<(), SourceError> {
        self.control.connect_new().await.map(drop)
    }

    /// The configuration.
    pub fn config(&self) -> &PgSourceConfig {
        &self.config
    }

    /// What every snapshot and chunk runs with, from the configuration.
    fn snapshot_limits(&self) -> SnapshotLimits {
        SnapshotLimits {
            batch_rows: self.config.snapshot_batch_rows.max(1),
            batch_bytes: self.config.snapshot_batch_bytes.max(1),
            retries: self.config.snapshot_retries,
        }
    }

    async fn connect(&self) -> Result<Client, SourceError> {
        self.control.connect_new().await
    }

    /// A connection for a snapshot: the spare one if it is still open, a
    /// new one otherwise.
    async fn snapshot_client(&self) -> Result<Client, SourceError> {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        match spare {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.connect().await,
        }
    }

    /// Keeps a connection whose copy ended well (its transaction is over)
    /// for the next snapshot. One is enough: copies in chunks run one
    /// chunk at a time; concurrent copies of other views connect anew.
    fn keep_spare(&self, client: Client) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.is_none() {
            *spare = Some(client);
        }
    }

    /// Runs `f` with the shared control connection, reconnecting if needed.
    async fn with_control<T>(
        &self,
        f: impl for<'c> FnOnce(&'c Client) -> futures::future::BoxFuture<'c, Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        self.control.with(f).await
    }
}

#[async_trait]
impl Source for PgSource {
    async fn prepare(&self, relation: &UpstreamRelation, feed: bool) -> Result<RelationSchema, SourceError> {
        let publication = self.config.publication_name.clone();
        let owner = self.config.owner.clone();
        let rel = relation.clone();
        let (described, writers) = self
            .with_control(move |c| {
                Box::pin(async move {
                    let d = catalog::describe(c, &rel, feed).await?;
                    let writers = if feed {
                        publication::ensure(c, &publication, owner.as_deref()).await?;
                        publication::add(c, &publication, &rel, d.oid).await?
                    } else {
                        publication::Writers::default()
                    };
                    Ok((d, writers))
                })
            })
            .await?;
        if !writers.is_empty() {
            // Not on the shared control connection: this lasts as long as
            // the application's longest open transaction, and must not hold
            // up other views' `prepare` or the feed's `subscribe`.
            let client = self.connect().await?;
            publication::wait_for_writers(&client, relation, &writers, self.config.writer_wait).await?;
        }
        if feed {
            self.shapes.described(described.oid, described.shape);
        }
        Ok(described.schema)
    }

    async fn snapshot(
        &self,
        relation: &UpstreamRelation,
        shape: &ViewShape,
        sink: &mut dyn RowSink,
    ) -> Result<SnapshotPoint, SourceError> {
        let mut client = self.snapshot_client().await?;
        let point = snapshot::take(&mut client, relation, shape, sink, &self.snapshot_limits()).await?;
        self.keep_spare(client);
        Ok(point)
    }

    /// Splits by the key when its Postgres order is provably the order of
    /// encoded keys: keys of `int2`, `int4`, `int8`, `bytea`, `uuid`, `text`
    /// and `varchar` columns (text compared `COLLATE "C"`, in a UTF-8
    /// database), one or several. Each chunk is a `COPY` of the rows above
    /// `after`, ordered by the key and limited, in a transaction of its own
    /// taken exactly as [`snapshot`](Source::snapshot) takes it. Any other
    /// key, or none (`REPLICA IDENTITY FULL`), is copied whole as one
    /// chunk, and cannot resume after a key (`Unsupported`).
    async fn copy_chunk(
        &self,
        relation: &UpstreamRelation,
        shape: &ViewShape,
        after: Option<&Key>,
        rows: u64,
        sink: &mut dyn RowSink,
    ) -> Result<CopiedChunk, SourceError> {
        let mut client = self.snapshot_client().await?;
        let chunk = ChunkRequest { after, rows };
        let copied = snapshot::take_chunk(&mut client, relation, shape, chunk, sink, &self.snapshot_limits()).await?;
        self.keep_spare(client);
        Ok(copied)
    }

    async fn subscribe(&self, resume: Option<Lsn>) -> Result<Subscription, SourceError> {
        let slot_name = self.config.slot_name.clone();
        let publication = self.config.publication_name.clone();
        let owner = self.config.owner.clone();
        let database = self.config.conn.dbname.clone();
        let busy = self.config.slot_busy_wait;
        let start: FeedStart = self
            .with_control(move |c| {
                Box::pin(async move {
                    // pgoutput fails on a missing publication; an empty one
                    // simply carries nothing yet.
                    publication::ensure(c, &publication, owner.as_deref()).await?;
                    slot::ensure(c, &slot_name, &database, busy).await
                })
            })
            .await?;
        let mut conn =
            WireConn::connect(&self.config.conn, &self.config.application_name, self.config.max_message_bytes).await?;
        // Slot names are [a-z0-9_] (checked in `new`); the publication list
        // is parsed as identifiers by pgoutput, so quote it, then quote the
        // whole option value as a literal.
        let pubs = quote_ident(&self.config.publication_name).replace('\'', "''");
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names '{pubs}')",
            self.config.slot_name,
            resume.unwrap_or(Lsn::ZERO)
        );
        conn.start_copy_both(&sql).await?;
        let (events, feedback) = spawn_feed(
            conn,
            FeedParams {
                status_interval: self.config.status_interval,
                buffer: self.config.feed_buffer,
                shapes: self.shapes.clone(),
                watch: (!self.config.relation_check_interval.is_zero()).then(|| RelationWatch {
                    control: self.control.clone(),
                    publication: self.config.publication_name.clone(),
                    shapes: self.shapes.clone(),
                    interval: self.config.relation_check_interval,
                }),
                catalog: SharedControl::new(self.config.conn.clone(), self.config.application_name.clone()),
            },
        );
        Ok(Subscription { report: SlotReport { slot_id: self.config.slot_name.clone(), start }, events, feedback })
    }

    async fn release(&self, relation: &UpstreamRelation) -> Result<(), SourceError> {
        let publication = self.config.publication_name.clone();
        let rel = relation.clone();
        self.with_control(move |c| Box::pin(async move { publication::remove(c, &publication, &rel).await })).await
    }

    async fn drop_feed(&self) -> Result<(), SourceError> {
        let publication = self.config.publication_name.clone();
        let slot_name = self.config.slot_name.clone();
        let busy = self.config.slot_busy_wait;
        self.with_control(move |c| {
            Box::pin(async move {
                slot::drop(c, &slot_name, busy).await?;
                publication::drop(c, &publication).await
            })
        })
        .await?;
        self.shapes.clear();
        Ok(())
    }

    async fn estimate_rows(&self, relation: &UpstreamRelation) -> Option<u64> {
        let name = crate::ident::qualified(&relation.schema, &relation.table);
        let estimate = self
            .with_control(move |c| {
                Box::pin(async move {
                    // reltuples is -1 for a table never vacuumed or analyzed
                    // (Postgres 14+): no estimate rather than a wrong one.
                    let row = c
                        .query_opt(
                            "SELECT reltuples::float8 FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass($1)",
                            &[&name],
                        )
                        .await
                        .map_err(|e| crate::error::pg("estimating a table's rows", &e))?;
                    Ok(row.and_then(|r| r.try_get::<_, f64>(0).ok()))
                })
            })
            .await;
        match estimate {
            Ok(Some(n)) if n >= 0.0 && n.is_finite() => Some(n as u64),
            _ => None,
        }
    }

    async fn server_position(&self) -> Result<ServerPosition, SourceError> {
        let slot_name = self.config.slot_name.clone();
        self.with_control(move |c| {
            Box::pin(async move {
                // Retained WAL counts from the restart LSN: what the server
                // must keep for the slot (the disk an operator watches).
                let row = c
                    .query_one(
                        "SELECT pg_catalog.pg_current_wal_lsn()::text, \
                                (pg_catalog.pg_current_wal_lsn() - s.restart_lsn)::bigint, \
                                s.confirmed_flush_lsn::text \
                         FROM (SELECT 1) one \
                         LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1",
                        &[&slot_name],
                    )
                    .await
                    .map_err(|e| crate::error::pg("reading the server's WAL position", &e))?;
                let bad = |e: tokio_postgres::Error| crate::error::protocol("reading the server's WAL position", e);
                let current: String = row.try_get(0).map_err(bad)?;
                let current =
                    current.parse::<Lsn>().map_err(|e| crate::error::protocol("reading pg_current_wal_lsn", e))?;
                let retained: Option<i64> = row.try_get(1).map_err(bad)?;
                let confirmed: Option<String> = row.try_get(2).map_err(bad)?;
                let confirmed = confirmed
                    .map(|c| c.parse::<Lsn>())
                    .transpose()
                    .map_err(|e| crate::error::protocol("reading the slot's confirmed_flush_lsn", e))?;
                Ok(ServerPosition { current, retained_bytes: retained.map(|b| b.max(0) as u64), confirmed })
            })
        })
        .await
    }
}
