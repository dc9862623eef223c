//! A store's identity: created with it, kept across reopens, its own.

use flashsync_store_sqlite::{Options, SqliteStore};

#[test]
fn a_new_store_gets_an_id_of_its_own_that_outlives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let id = SqliteStore::open(&a, Options::default()).expect("open a").store_id().map(str::to_owned);
    let id = id.expect("a new store has an id");
    assert!(id.len() == 12 && id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
    let again = SqliteStore::open(&a, Options::default()).expect("reopen a");
    assert_eq!(again.store_id(), Some(id.as_str()), "the id is kept, not made anew");
    let other = SqliteStore::open(&b, Options::default()).expect("open b");
    assert_ne!(other.store_id(), Some(id.as_str()), "two stores, two ids");
}
