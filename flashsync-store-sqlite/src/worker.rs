//! The store's threads: one writer, and a few readers.
//!
//! rusqlite is a blocking library, and a commit may fsync for milliseconds.
//! Running SQLite calls inline would block whichever async executor thread
//! called the store. Instead each call is a closure sent to a thread that
//! owns a connection, and the caller awaits a oneshot reply: callers never
//! block, the store needs no particular async runtime, and — with a single
//! writer thread — writes execute in the order they were called (the order
//! the contract needs for batches). Reads go to a separate pool of threads
//! with read-only connections, so they never wait behind a long write (WAL
//! mode lets readers and the writer run at the same time).
//!
//! A call whose future is dropped before it completes may still take effect:
//! its closure is already queued.

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use flashsync_core::{StoreError, StoreErrorKind};
use futures::channel::oneshot;

use crate::error::{panic_message, panicked};

/// What a worker thread owns (a connection and its state).
pub(crate) trait Context: Send + 'static {
    /// Restores a usable state after a job panicked (a transaction may be
    /// open).
    fn recover(&mut self, cause: &str);
}

type Job<C> = Box<dyn FnOnce(&mut C) + Send + 'static>;

/// Owns a pool of threads sharing one queue; dropping it drains queued work
/// and joins the threads.
pub(crate) struct Worker<C> {
    tx: Option<mpsc::Sender<Job<C>>>,
    threads: Vec<JoinHandle<()>>,
}

impl<C: Context> Worker<C> {
    /// Starts one thread per context.
    pub(crate) fn start(name: &str, contexts: Vec<C>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Job<C>>();
        let rx = Arc::new(Mutex::new(rx));
        let mut worker = Worker { tx: Some(tx), threads: Vec::new() };
        for mut context in contexts {
            let rx = Arc::clone(&rx);
            let thread = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || loop {
                    // The lock is held only while waiting: the next idle
                    // thread takes the next job. A poisoned lock still holds
                    // a usable receiver.
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(&mut context),
                        // Every sender is gone: the store was dropped.
                        Err(_) => break,
                    }
                })
                .map_err(|e| StoreError::new(StoreErrorKind::Io, format!("start {name} thread"), e.to_string()))?;
            worker.threads.push(thread);
        }
        Ok(worker)
    }

    /// Runs `f` on a worker thread and waits for its result. A panic in `f`
    /// is caught, reported as an error, and the context recovers.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        op: String,
        f: impl FnOnce(&mut C) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        let op_for_job = op.clone();
        let job: Job<C> = Box::new(move |context: &mut C| {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(context)));
            let outcome = outcome.unwrap_or_else(|payload| {
                context.recover(&panic_message(payload.as_ref()));
                Err(panicked(op_for_job, payload.as_ref()))
            });
            // The caller may have stopped waiting; the work is done either way.
            let _ = reply.send(outcome);
        });
        self.submit(&op, job)?;
        result.await.map_err(|_| closed(&op))?
    }

    /// Queues `job` without waiting for it (used from `Drop`).
    pub(crate) fn spawn(&self, op: &str, job: impl FnOnce(&mut C) + Send + 'static) -> Result<(), StoreError> {
        let job: Job<C> = Box::new(move |context: &mut C| {
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(context))) {
                context.recover(&panic_message(payload.as_ref()));
            }
        });
        self.submit(op, job)
    }

    fn submit(&self, op: &str, job: Job<C>) -> Result<(), StoreError> {
        self.tx.as_ref().ok_or_else(|| closed(op))?.send(job).map_err(|_| closed(op))
    }
}

fn closed(op: &str) -> StoreError {
    StoreError::new(StoreErrorKind::Closed, op, "the store's threads have stopped")
}

impl<C> Drop for Worker<C> {
    fn drop(&mut self) {
        // Closing the channel lets the threads finish queued work and exit;
        // joining means the connections are closed once the store is
        // dropped, so it can be reopened at once (e.g. after a simulated
        // crash).
        drop(self.tx.take());
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}
