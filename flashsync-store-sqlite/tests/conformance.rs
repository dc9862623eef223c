//! The shared store conformance suite against `SqliteStore`, with both
//! durability modes and with a crash hook that closes and reopens the
//! database file.

use std::cell::RefCell;

use flashsync_core::conformance;
use flashsync_store_sqlite::{Durability, Options, SqliteStore};
use tempfile::TempDir;

fn run(durability: Durability) {
    // Every store gets its own directory; the directories live until the end
    // of the test (the crash hook reopens them).
    let dirs = RefCell::new(Vec::<TempDir>::new());
    let options = Options::default().durability(durability);
    let make = || {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = SqliteStore::open(dir.path().join("store.db"), options.clone()).expect("open a fresh store");
        dirs.borrow_mut().push(dir);
        store
    };
    let crash = |store: SqliteStore| {
        // Dropping the store closes the database without a `persist`; SQLite
        // keeps what was committed to the log — the checks accept losing any
        // suffix of unpersisted batches, or none. (The SIGKILL test in
        // crash.rs covers real crashes.)
        let path = store.path().to_owned();
        drop(store);
        SqliteStore::open(&path, options.clone()).expect("reopen after the crash")
    };
    let result = futures::executor::block_on(conformance::run_all_with_crash(make, crash));
    if let Err(failures) = result {
        panic!("{failures}");
    }
}

#[test]
fn sqlite_store_passes_the_conformance_suite() {
    run(Durability::Explicit);
}

#[test]
fn sqlite_store_passes_the_conformance_suite_with_batch_durability() {
    run(Durability::Batch);
}
