//! The feed task: reads the walsender's CopyBoth stream, decodes it, hands
//! events to the consumer through a bounded channel, and keeps the server
//! informed with standby status updates (DESIGN §4.3).
//!
//! Throughput: events travel to the consumer in chunks — every message
//! already read is decoded into the current chunk (up to [`CHUNK`] events)
//! before it is handed over — so a busy stream costs one channel hand-off per
//! chunk, not per event.
//!
//! Flow control: while the channel is full the task holds at most one chunk
//! (plus the events of one message) and stops reading the socket, so TCP
//! back-pressure stops the walsender — nothing is buffered without bound. Meanwhile a timer keeps
//! sending status updates every `status_interval`; the walsender reads them
//! even while it waits to write, so `wal_sender_timeout` never fires on a
//! consumer that is merely slow (e.g. while a snapshot lands). A keepalive
//! that asks for a reply is answered as soon as it is read.
//!
//! Keepalives: the walsender sends one (no reply requested) whenever it has
//! caught up and our reported flush position is behind what it has read,
//! and our periodic status updates ask it for one. Between transactions they
//! become [`StreamEvent::Keepalive`] events, whose `wal_end` an idle consumer
//! may acknowledge so WAL without changes for it does not pin the slot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flashsync_core::{Feedback, Lsn, SourceError, SourceRelId, StreamEvent};
use futures::stream::BoxStream;
use tokio::sync::{mpsc, Notify};

use super::decoder::FeedDecoder;
use super::frame::{encode_status_update, parse_copy_data, pg_now_micros, ReplicationFrame};
use super::transport::{server_error, Frame, WireConn};
use super::watch::RelationWatch;
use crate::catalog;
use crate::control::SharedControl;
use crate::error::protocol;
use crate::pgoutput::{decode, Message};
use crate::shape::{CatalogColumns, Shapes};

/// How a feed runs.
#[derive(Clone, Debug)]
pub(crate) struct FeedParams {
    /// Period of unsolicited status updates.
    pub(crate) status_interval: Duration,
    /// Events buffered between the task and the consumer.
    pub(crate) buffer: usize,
    /// Expected relation shapes (shared with the source).
    pub(crate) shapes: Shapes,
    /// Checks for relations the stream stopped carrying without saying so.
    pub(crate) watch: Option<RelationWatch>,
    /// Where the feed reads a relation's columns when the stream announces
    /// it (`crate::shape`): a connection of the feed's own, so a `prepare`
    /// waiting for a lock on the shared one never holds up the stream.
    pub(crate) catalog: SharedControl,
}

/// Acknowledged position, shared by [`PgFeedback`] and the task.
#[derive(Debug, Default)]
struct AckState {
    acked: AtomicU64,
    changed: Notify,
}

/// [`Feedback`] for a Postgres feed: remembers the highest acknowledged LSN
/// and wakes the task, which sends it as write/flush/apply position.
#[derive(Debug)]
pub(crate) struct PgFeedback {
    state: Arc<AckState>,
}

impl Feedback for PgFeedback {
    fn ack(&self, lsn: Lsn) {
        let prev = self.state.acked.fetch_max(lsn.0, Ordering::AcqRel);
        if lsn.0 > prev {
            self.state.changed.notify_one();
        }
    }
}

type Item = Result<StreamEvent, SourceError>;

/// How long the feed waits, in all, for the catalog to show a transaction
/// that announced a relation (a synchronous standby confirming its commit)
/// before the catalog vouches for none of its columns.
const CATALOG_CATCH_UP: Duration = Duration::from_secs(2);

/// Longest one catalog lookup may take before the feed counts its
/// connection lost (well inside `wal_sender_timeout`'s default 60 s).
const CATALOG_LOOKUP_LIMIT: Duration = Duration::from_secs(10);

/// Most events handed to the consumer at once.
const CHUNK: usize = 512;

/// Starts the task over a connection already in CopyBoth mode.
pub(crate) fn spawn_feed(conn: WireConn, params: FeedParams) -> (BoxStream<'static, Item>, Box<dyn Feedback>) {
    // `buffer` counts events; the channel holds chunks of up to CHUNK.
    let (tx, mut rx) = mpsc::channel::<Vec<Item>>(params.buffer.div_ceil(CHUNK).max(2));
    let state = Arc::new(AckState::default());
    let lost = params.watch.map(|w| {
        let (lost_tx, lost_rx) = mpsc::channel(4);
        tokio::spawn(watch_relations(w, lost_tx));
        lost_rx
    });
    let task = FeedTask {
        conn,
        tx,
        state: state.clone(),
        decoder: FeedDecoder::new(params.shapes.clone()),
        pending: VecDeque::new(),
        reported: 0,
        status_interval: params.status_interval,
        lost,
        lost_pending: BTreeMap::new(),
        shapes: params.shapes,
        catalog: params.catalog,
    };
    tokio::spawn(task.run());
    let mut chunk: std::vec::IntoIter<Item> = Vec::new().into_iter();
    let events = futures::stream::poll_fn(move |cx| loop {
        if let Some(item) = chunk.next() {
            return std::task::Poll::Ready(Some(item));
        }
        match rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(next)) => chunk = next.into_iter(),
            std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
            std::task::Poll::Pending => return std::task::Poll::Pending,
        }
    });
    (Box::pin(events), Box::new(PgFeedback { state }))
}

/// Checks the watched relations every `interval` and sends what was lost,
/// until the feed task is gone. Errors are left to the feed: a server that
/// cannot be reached breaks the stream too.
async fn watch_relations(watch: RelationWatch, lost: mpsc::Sender<Vec<(u32, String)>>) {
    loop {
        tokio::select! {
            _ = lost.closed() => return,
            _ = tokio::time::sleep(watch.interval) => {}
        }
        if let Ok(found) = watch.check().await {
            if !found.is_empty() && lost.send(found).await.is_err() {
                return;
            }
        }
    }
}

async fn next_lost(rx: &mut Option<mpsc::Receiver<Vec<(u32, String)>>>) -> Option<Vec<(u32, String)>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What woke the task.
enum Step {
    Stop,
    Nothing,
    Failed(SourceError),
    Acked,
    Tick,
    Lost(Vec<(u32, String)>),
}

struct FeedTask {
    conn: WireConn,
    tx: mpsc::Sender<Vec<Item>>,
    state: Arc<AckState>,
    decoder: FeedDecoder,
    pending: VecDeque<Item>,
    /// Last position sent in a status update.
    reported: u64,
    status_interval: Duration,
    /// Reports of the relation watch.
    lost: Option<mpsc::Receiver<Vec<(u32, String)>>>,
    /// Lost relations to report at the next transaction boundary.
    lost_pending: BTreeMap<u32, String>,
    shapes: Shapes,
    catalog: SharedControl,
}

impl FeedTask {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.status_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set once the stream failed: deliver what is pending, then stop.
        let mut broken = false;
        loop {
            if self.pending.is_empty() && broken {
                break;
            }
            if self.pending.len() < CHUNK && !broken {
                // Work through what is already buffered before waiting.
                match self.conn.try_frame() {
                    Ok(Some(frame)) => {
                        match self.on_frame(frame).await {
                            Ok(true) => {
                                if let Err(e) = self.send_status(false).await {
                                    self.fail(e, &mut broken);
                                }
                            }
                            Ok(false) => {}
                            Err(e) => self.fail(e, &mut broken),
                        }
                        if !broken {
                            self.report_lost();
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.fail(e, &mut broken);
                        continue;
                    }
                }
            }
            let reading = self.pending.len() < CHUNK && !broken;
            let sending = !self.pending.is_empty();
            let step = tokio::select! {
                biased;
                _ = self.tx.closed() => Step::Stop,
                permit = self.tx.reserve(), if sending => match permit {
                    Ok(permit) => {
                        permit.send(self.pending.drain(..).collect());
                        Step::Nothing
                    }
                    Err(_) => Step::Stop,
                },
                r = self.conn.fill(), if reading => match r {
                    Ok(()) => Step::Nothing,
                    Err(e) => Step::Failed(e),
                },
                _ = self.state.changed.notified(), if !broken => Step::Acked,
                _ = ticker.tick(), if !broken => Step::Tick,
                Some(found) = next_lost(&mut self.lost), if !broken => Step::Lost(found),
            };
            match step {
                Step::Stop => break,
                Step::Nothing => {}
                Step::Failed(e) => self.fail(e, &mut broken),
                Step::Acked => {
                    if self.state.acked.load(Ordering::Acquire) > self.reported {
                        if let Err(e) = self.send_status(false).await {
                            self.fail(e, &mut broken);
                        }
                    }
                }
                // Periodic updates ask the server to answer with a
                // keepalive, so an idle consumer regularly learns how far
                // the server has read (`wal_end`) and can acknowledge WAL
                // that carried nothing for it.
                Step::Tick => {
                    if let Err(e) = self.send_status(true).await {
                        self.fail(e, &mut broken);
                    }
                }
                Step::Lost(found) => self.lost_pending.extend(found),
            }
            if !broken {
                self.report_lost();
            }
        }
        // Dropping the connection closes the socket; the walsender sees EOF,
        // exits and releases the slot.
    }

    /// Between transactions, reports relations the stream no longer
    /// carries as changed (once each).
    fn report_lost(&mut self) {
        if self.lost_pending.is_empty() || self.decoder.in_transaction() {
            return;
        }
        for (oid, detail) in std::mem::take(&mut self.lost_pending) {
            // Forgotten meanwhile (the feed was dropped): nothing to say.
            if self.shapes.get(oid).is_some() {
                self.shapes.forget(oid);
                let lost = StreamEvent::SchemaChanged { rel: SourceRelId(u64::from(oid)), detail, columns: None };
                self.pending.push_back(Ok(lost));
            }
        }
    }

    fn fail(&mut self, e: SourceError, broken: &mut bool) {
        if !*broken {
            self.pending.push_back(Err(e));
            *broken = true;
        }
    }

    /// Handles one backend message; `Ok(true)` when the server wants a
    /// status update now.
    async fn on_frame(&mut self, frame: Frame) -> Result<bool, SourceError> {
        match frame.tag {
            b'd' => match parse_copy_data(&frame.body) {
                Ok(ReplicationFrame::XLogData { data, .. }) => {
                    let event = match decode(data).map_err(|e| protocol("replication stream", e))? {
                        // Once per relation per session, and after DDL or
                        // other invalidations of its cache entry (VACUUM,
                        // ANALYZE): worth a round trip.
                        Message::Relation(r) => {
                            let now = self.catalog_now(r.oid).await?;
                            self.decoder.on_relation(r, now.as_ref())
                        }
                        msg => self.decoder.on_message(msg)?,
                    };
                    if let Some(event) = event {
                        self.pending.push_back(Ok(event));
                    }
                    Ok(false)
                }
                Ok(ReplicationFrame::Keepalive { wal_end, reply_requested, .. }) => {
                    // Keepalives between the messages of one transaction say
                    // nothing about commits; only report them between
                    // transactions, where "everything before wal_end was
                    // sent" holds.
                    if !self.decoder.in_transaction() {
                        self.pending.push_back(Ok(StreamEvent::Keepalive { wal_end, reply_requested }));
                    }
                    Ok(reply_requested)
                }
                Err(e) => Err(protocol("replication stream", e)),
            },
            b'E' => Err(server_error("replication stream", &frame.body)),
            // CopyDone, or CommandComplete without it (a walsender that is
            // shutting down ends the COPY this way).
            b'c' | b'C' | b'Z' => {
                Err(SourceError::connection("the server ended the replication stream (is it shutting down?)"))
            }
            // Notices and parameter changes.
            b'N' | b'S' => Ok(false),
            other => Err(protocol("replication stream", format!("unexpected message {:?}", char::from(other)))),
        }
    }

    /// The columns of relation `oid` as the catalog lists them, once it
    /// shows the transaction being decoded (`None` if it does not within
    /// [`CATALOG_CATCH_UP`]: then it vouches for nothing). Bounded in time:
    /// the walsender expects status updates meanwhile, and a half-open
    /// connection would otherwise hold the stream until TCP gives up.
    async fn catalog_now(&mut self, oid: u32) -> Result<Option<CatalogColumns>, SourceError> {
        let xid = self.decoder.xid();
        let give_up = tokio::time::Instant::now() + CATALOG_CATCH_UP;
        let mut pause = Duration::from_millis(2);
        loop {
            let lookup =
                self.catalog.with(move |c| Box::pin(async move { catalog::numbered_columns(c, oid, xid).await }));
            let found = tokio::time::timeout(CATALOG_LOOKUP_LIMIT, lookup).await.map_err(|_| {
                SourceError::connection(format!(
                    "reading the columns of relation {oid} took over {CATALOG_LOOKUP_LIMIT:?}"
                ))
            })??;
            if found.is_some() || tokio::time::Instant::now() >= give_up {
                return Ok(found);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    async fn send_status(&mut self, reply_requested: bool) -> Result<(), SourceError> {
        let acked = self.state.acked.load(Ordering::Acquire);
        let lsn = Lsn(acked);
        let msg = encode_status_update(lsn, lsn, lsn, pg_now_micros(), reply_requested);
        self.conn.send_copy_data(&msg).await?;
        self.reported = acked;
        Ok(())
    }
}
