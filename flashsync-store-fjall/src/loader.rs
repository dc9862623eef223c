//! The thread that writes one generation's rows.
//!
//! A snapshot's rows go into a fresh prefix that nothing reads until publish,
//! so they need neither the journal nor the memtable: while they arrive in
//! key order — as a `COPY` of a table loaded in key order nearly does — they
//! are written straight into sorted tables with fjall's bulk ingestion. That
//! skips the journal write, the memtable insert, the flush and the
//! compaction that would rewrite them, which together took more CPU than
//! parsing the `COPY` in our profiles. The last
//! [`Options::reorder_window`](crate::Options::reorder_window) rows are held
//! back and kept sorted, so rows a little out of order still go in.
//!
//! A row whose key is not above the last one ingested ends the ingestion: it
//! is finished (its rows registered, with a sequence number above every
//! write so far), and the rest of the generation goes through ordinary
//! batches, which are newer still — so a later row for a key always wins, and
//! full-row copy counts read the ingested rows back, exactly as before.
//!
//! A generation amended before all its rows are in
//! ([`Generation::amend`](flashsync_core::Generation::amend), a copy made in
//! chunks) has its loader finished first, so the amendment's ordinary
//! batches are newer than every ingested row they change; the next write
//! starts a new loader, whose ingestion begins above the rows the
//! generation already holds (a row at or below them goes through ordinary
//! batches instead, as above).
//!
//! Each generation has its own thread because an ingestion borrows its
//! keyspace for as long as it runs; the thread owns both. Batches are
//! pipelined: the caller hands over a batch and goes back to decoding the
//! next one while this thread writes, and learns of a failure at its next
//! write or at publish.
//!
//! Crash safety: ingested tables bypass the journal, so the journal's order
//! no longer implies that a generation's `filling` marker (and its number's
//! allocation) is on disk before its rows; [`crate::generation::begin`]
//! makes them durable before any row is written instead. A crash
//! mid-ingestion leaves unregistered table files, which fjall deletes when it
//! next opens; a crash after `finish` leaves rows under a prefix still marked
//! `filling`, which the next open turns into garbage.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use fjall::Slice;
use flashsync_core::codec::restore_copies;
use flashsync_core::{EncodedRows, Identity, StoreError, StoreErrorKind};
use futures::channel::oneshot;

use crate::error::{engine, guard, invalid};
use crate::generation::write_rows;
use crate::presync;
use crate::shared::Shared;

/// Rows by their full rows-keyspace key, each encoded as one copy
/// ([`encode_row`](flashsync_core::codec::encode_row)), in fjall's own byte
/// type so nothing is copied again on the way in.
pub(crate) type KeyedRows = Vec<(Slice, Slice)>;

/// A reply the caller awaits.
pub(crate) type Reply = oneshot::Receiver<Result<(), StoreError>>;

/// Rows for the loader.
pub(crate) enum Batch {
    /// Keyed and encoded by the caller.
    Keyed(KeyedRows),
    /// Encoded by a source; their keys lack the generation's prefix, which
    /// the loader adds (off the caller's thread).
    Encoded(EncodedRows),
}

enum Msg {
    /// Write these rows.
    Rows(Batch, oneshot::Sender<Result<(), StoreError>>),
    /// Get the rows written so far ready for a `Finish` soon (`presync`).
    Prepare(oneshot::Sender<Result<(), StoreError>>),
    /// Register what was written (the generation is about to be published).
    Finish(oneshot::Sender<Result<(), StoreError>>),
}

/// Handle to a generation's loader thread. Dropping it without
/// [`finish`](Loader::finish) closes the channel and waits for the thread,
/// which drops its unfinished ingestion unregistered: once the drop returns,
/// nothing more of the generation reaches the database, so deleting its
/// prefix is safe. Drop it on the writer thread, not an async one.
pub(crate) struct Loader {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    op: String,
}

impl Loader {
    /// Starts the thread for the generation whose rows live under `prefix`.
    pub(crate) fn start(
        shared: Arc<Shared>,
        prefix: [u8; 16],
        identity: Identity,
        op: String,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let thread_op = op.clone();
        let thread = std::thread::Builder::new()
            .name("flashsync-fjall-loader".into())
            .spawn(move || run(&shared, prefix, identity, &thread_op, &rx))
            .map_err(|e| StoreError::new(StoreErrorKind::Io, op.as_str(), format!("start loader thread: {e}")))?;
        Ok(Loader { tx: Some(tx), thread: Some(thread), op })
    }

    /// Queues `rows`; the reply says whether they were written.
    pub(crate) fn write(&self, rows: Batch) -> Result<Reply, StoreError> {
        let (reply, result) = oneshot::channel();
        self.send(Msg::Rows(rows, reply))?;
        Ok(result)
    }

    /// Writes what it holds back into the ingestion and syncs the tables
    /// so far ([`presync`]), so that a later [`finish`](Self::finish) —
    /// which stalls every other write — is short.
    pub(crate) async fn prepare(&self) -> Result<(), StoreError> {
        let (reply, result) = oneshot::channel();
        self.send(Msg::Prepare(reply))?;
        result.await.map_err(|_| self.stopped())?
    }

    /// Registers everything written; the thread ends after replying.
    pub(crate) async fn finish(mut self) -> Result<(), StoreError> {
        let (reply, result) = oneshot::channel();
        self.send(Msg::Finish(reply))?;
        let outcome = result.await.map_err(|_| self.stopped());
        // The thread has replied and returns at once.
        self.join();
        outcome?
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        self.tx.as_ref().ok_or_else(|| self.stopped())?.send(msg).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> StoreError {
        StoreError::new(StoreErrorKind::Closed, self.op.as_str(), "the generation's loader thread has stopped")
    }

    fn join(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.join();
    }
}

/// The thread's loop: writes batches until told to finish or dropped.
fn run(shared: &Shared, prefix: [u8; 16], identity: Identity, op: &str, rx: &mpsc::Receiver<Msg>) {
    let rows_ks = shared.ks.rows.clone();
    // Tables written from here on are this ingestion's (see `presync`).
    let started = SystemTime::now();
    // `None` once rows go through ordinary batches.
    let mut ingestion = rows_ks.start_ingestion().ok();
    // After a failure the generation is doomed: every later call reports it.
    let mut failed: Option<StoreError> = None;
    // The last key ingested (or already in the generation: a loader started
    // after an amendment continues above the rows written before it, so
    // its ingested tables, newer than everything, shadow none of them),
    // and the sorted rows held back.
    let mut last_key: Option<Slice> = match guard(op, || last_key_under(shared, prefix, op)) {
        Ok(key) => key,
        Err(e) => {
            failed = Some(e);
            None
        }
    };
    let mut pending: KeyedRows = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Rows(batch, reply) => {
                let rows = match batch {
                    Batch::Keyed(rows) => rows,
                    Batch::Encoded(rows) => rows
                        .iter()
                        .map(|(key, row)| {
                            scratch.clear();
                            scratch.extend_from_slice(&prefix);
                            scratch.extend_from_slice(key);
                            (Slice::from(scratch.as_slice()), Slice::from(row))
                        })
                        .collect(),
                };
                let outcome = match &failed {
                    Some(e) => Err(e.clone()),
                    None => guard(op, || {
                        // Refuse to write once the store is poisoned.
                        drop(shared.read(op)?);
                        let Some(ing) = ingestion.as_mut() else {
                            return write_rows(shared, identity, rows, op);
                        };
                        pending.extend(rows);
                        // Stable: rows of one key stay in arrival order.
                        pending.sort_by(|a, b| a.0.cmp(&b.0));
                        let behind = match (pending.first(), &last_key) {
                            (Some((first, _)), Some(last)) => first.as_ref() <= last.as_ref(),
                            _ => false,
                        };
                        if behind {
                            // Further out of order than the window: register
                            // what was ingested, and write the rest (newer)
                            // through ordinary batches from here on.
                            if let Some(ing) = ingestion.take() {
                                presync::tables_since(rows_ks.path(), started);
                                register(shared, || ing.finish(), op)?;
                            }
                            return write_rows(shared, identity, std::mem::take(&mut pending), op);
                        }
                        // Hold back the window (`Options::reorder_window`),
                        // without splitting a key's rows. Rows that arrive a
                        // little out of key order still go in as sorted
                        // tables: a table loaded in key order comes back from
                        // a sequential scan almost, not quite, in that order
                        // (a row shorter than its neighbours lands in space
                        // left on an earlier page).
                        let mut split = pending.len().saturating_sub(shared.options.reorder_window);
                        while split > 0 && pending.get(split).is_some_and(|(k, _)| *k == pending[split - 1].0) {
                            split += 1;
                        }
                        ingest(&mut |k, v| ing.write(k, v), identity, pending.drain(..split), &mut last_key, op)
                    }),
                };
                if let Err(e) = &outcome {
                    failed.get_or_insert_with(|| e.clone());
                }
                let _ = reply.send(outcome);
            }
            Msg::Prepare(reply) => {
                let outcome = match &failed {
                    Some(e) => Err(e.clone()),
                    None => guard(op, || {
                        if let Some(ing) = ingestion.as_mut() {
                            ingest(&mut |k, v| ing.write(k, v), identity, pending.drain(..), &mut last_key, op)?;
                            presync::tables_since(rows_ks.path(), started);
                            presync::memtable(&rows_ks);
                        }
                        Ok(())
                    }),
                };
                if let Err(e) = &outcome {
                    failed.get_or_insert_with(|| e.clone());
                }
                let _ = reply.send(outcome);
            }
            Msg::Finish(reply) => {
                let outcome = match failed.take() {
                    Some(e) => Err(e),
                    None => guard(op, || match ingestion.take() {
                        Some(mut ing) => {
                            ingest(&mut |k, v| ing.write(k, v), identity, pending.drain(..), &mut last_key, op)?;
                            // Usually done by a `Prepare` already; then
                            // there is little left.
                            presync::tables_since(rows_ks.path(), started);
                            register(shared, || ing.finish(), op)
                        }
                        None => Ok(()),
                    }),
                };
                let _ = reply.send(outcome);
                return;
            }
        }
    }
    // The channel closed without `Finish`: the generation was abandoned, and
    // its unfinished ingestion is dropped unregistered.
}

/// Finishes an ingestion (`finish`), syncing the journal first. fjall
/// flushes the keyspace's memtable as it registers the ingested tables,
/// and unlike its own background flushes it does not sync the journal
/// before: the flushed table would hold other views' applied batches whose
/// journal entries a power cut can still lose — their row changes kept,
/// their origin position (another keyspace) gone, so the restart applies
/// them twice (found by the simulator: a full-row view counting a row
/// twice after a crash). With the journal synced, the table holds only
/// what is durable anyway — provided no batch commits between the sync
/// and the finish, which the commit gate ([`Shared::commit_gate`]) makes
/// sure of, whoever asks while the writer thread applies other views'
/// batches: a copy settling its rows (from its own task) or rows out of
/// key order mid-copy (from this thread).
fn register(shared: &Shared, finish: impl FnOnce() -> Result<(), fjall::Error>, op: &str) -> Result<(), StoreError> {
    let _gate = shared.gate(op)?;
    shared.db.persist(fjall::PersistMode::SyncAll).map_err(|e| engine(op, e))?;
    #[cfg(test)]
    if let Some(observe) = *REGISTERING.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
        observe(shared);
    }
    finish().map_err(|e| engine(op, e))
}

/// Test-only: what `register` calls between its journal sync and its
/// finish, if set.
#[cfg(test)]
pub(crate) static REGISTERING: std::sync::Mutex<Option<fn(&Shared)>> = std::sync::Mutex::new(None);

/// The highest key the generation under `prefix` holds, if any.
fn last_key_under(shared: &Shared, prefix: [u8; 16], op: &str) -> Result<Option<Slice>, StoreError> {
    match shared.ks.rows.prefix(prefix).next_back() {
        Some(item) => Ok(Some(item.key().map_err(|e| engine(op, e))?)),
        None => Ok(None),
    }
}

/// Ingests sorted rows (all above `last_key`), merging rows of one key the
/// way ordinary batches would: the last one wins in a keyed view; in a
/// full-row view (where the key is the row) they count as copies. `put` is
/// the ingestion's write (its type cannot be named).
fn ingest(
    put: &mut impl FnMut(Slice, Slice) -> Result<(), fjall::Error>,
    identity: Identity,
    rows: impl Iterator<Item = (Slice, Slice)>,
    last_key: &mut Option<Slice>,
    op: &str,
) -> Result<(), StoreError> {
    let mut rows = rows.peekable();
    while let Some((key, mut row)) = rows.next() {
        let mut copies = 1u64;
        while let Some((_, next)) = rows.next_if(|(k, _)| *k == key) {
            match identity {
                Identity::Key => row = next,
                Identity::FullRow => copies += 1,
            }
        }
        let value =
            if copies == 1 { row } else { Slice::from(restore_copies(&row, copies).map_err(|e| invalid(op, e))?) };
        put(key.clone(), value).map_err(|e| engine(op, e))?;
        *last_key = Some(key);
    }
    Ok(())
}
