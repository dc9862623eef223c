//! The store's writer thread.
//!
//! fjall is a blocking library, and every write to it takes the journal lock —
//! which a concurrent `persist` holds for the length of an fsync. Running
//! writes inline would block whichever async executor thread called the store
//! for milliseconds at a time. Instead, every mutation is a closure sent to
//! one dedicated thread, and the caller awaits a oneshot reply: callers never
//! block, writes execute in the order they were called (the order the
//! contract needs for batches), and the store needs no particular async
//! runtime. Reads run inline: they take no journal lock and are short.
//!
//! A call whose future is dropped before it completes may still take effect:
//! its closure is already queued.

use std::sync::mpsc;
use std::thread::JoinHandle;

use flashsync_core::{StoreError, StoreErrorKind};
use futures::channel::oneshot;

use crate::error::panicked;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Owns the writer thread; dropping it drains queued work and joins the thread.
pub(crate) struct Worker {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the writer thread.
    pub(crate) fn start() -> Result<Self, StoreError> {
        Self::named("flashsync-fjall-writer")
    }

    /// Starts a thread called `name` (the store also has one that syncs
    /// the journal off the writer thread: see `journal`).
    pub(crate) fn named(name: &str) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Ends when every sender is gone (the store was dropped).
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(|e| StoreError::new(StoreErrorKind::Io, "start writer thread", e.to_string()))?;
        Ok(Worker { tx: Some(tx), thread: Some(thread) })
    }

    /// Runs `f` on the writer thread and waits for its result. A panic in `f`
    /// is caught and reported as an error (see [`panicked`]).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        op: String,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        let op_for_job = op.clone();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|payload| Err(panicked(op_for_job, payload.as_ref())));
            // The caller may have stopped waiting; the work is done either way.
            let _ = reply.send(outcome);
        });
        self.submit(&op, job)?;
        result.await.map_err(|_| closed(&op))?
    }

    /// Queues `job` without waiting for it (used from `Drop`).
    pub(crate) fn spawn(&self, op: &str, job: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
        self.submit(op, Box::new(job))
    }

    fn submit(&self, op: &str, job: Job) -> Result<(), StoreError> {
        self.tx.as_ref().ok_or_else(|| closed(op))?.send(job).map_err(|_| closed(op))
    }
}

fn closed(op: &str) -> StoreError {
    StoreError::new(StoreErrorKind::Closed, op, "the store's writer thread has stopped")
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish queued work and exit;
        // joining means the database files are released once the store is
        // dropped, so it can be reopened at once (e.g. after a simulated crash).
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
