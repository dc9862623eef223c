//! Opening a store that cannot or must not be opened gives a typed error.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use flashsync_core::{key, row, Store, StoreErrorKind};

use super::{assert_kind, block_on, open, publish};
use crate::layout;
use crate::{FjallStore, Options};

#[test]
fn a_path_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("store");
    std::fs::write(&file, b"not a directory").expect("write file");
    let e = assert_kind(open(&file), StoreErrorKind::Io);
    assert!(e.message.contains("not a directory"), "{e}");
    // Below a file: nothing can be created there.
    assert_kind(open(&file.join("below")), StoreErrorKind::Io);
}

#[test]
fn an_unwritable_directory_is_an_io_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let locked = dir.path().join("ro");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    // Privileged users (root in containers) write anyway; then there is
    // nothing to test.
    let probe = locked.join("probe");
    if std::fs::write(&probe, b"").is_ok() {
        eprintln!("skipped: this user can write to read-only directories");
        return;
    }
    assert_kind(open(&locked.join("store")), StoreErrorKind::Io);
}

#[test]
fn someone_elses_directory_is_incompatible() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), b"precious").expect("write");
    assert_kind(open(dir.path()), StoreErrorKind::Incompatible);
    // And it was left alone.
    assert_eq!(std::fs::read(dir.path().join("notes.txt")).expect("read"), b"precious");
    assert!(!dir.path().join("keyspaces").exists());
}

#[test]
fn another_applications_fjall_database_is_incompatible() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = fjall::Database::builder(dir.path()).open().expect("open raw fjall");
        let items = db.keyspace("items", fjall::KeyspaceCreateOptions::default).expect("keyspace");
        items.insert("a", "b").expect("insert");
    }
    let e = assert_kind(open(dir.path()), StoreErrorKind::Incompatible);
    assert!(e.message.contains("items"), "{e}");
}

#[test]
fn another_format_version_is_incompatible() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()).expect("create"));
    {
        let db = fjall::Database::builder(dir.path()).open().expect("open raw fjall");
        let meta = db.keyspace(layout::KS_META, fjall::KeyspaceCreateOptions::default).expect("meta");
        meta.insert(layout::META_FORMAT_VERSION, 2u32.to_be_bytes().to_vec()).expect("insert");
    }
    let e = assert_kind(open(dir.path()), StoreErrorKind::Incompatible);
    assert!(e.message.contains("format version 2"), "{e}");
}

#[test]
fn a_damaged_engine_version_marker_is_incompatible() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()).expect("create"));
    std::fs::write(dir.path().join("version"), b"garbage").expect("overwrite marker");
    assert_kind(open(dir.path()), StoreErrorKind::Incompatible);
}

#[test]
fn a_second_open_in_this_process_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    assert_kind(open(dir.path()), StoreErrorKind::Locked);
    drop(store);
    open(dir.path()).expect("reopen once the first is closed");
}

/// The child half of [`a_store_open_in_another_process_is_locked`]: opens the
/// store named by the environment, says so, and holds it until its stdin
/// closes.
#[test]
#[ignore = "helper process for a_store_open_in_another_process_is_locked"]
fn lock_holder_child() {
    let Some(path) = std::env::var_os("FLASHSYNC_LOCK_HOLDER_DIR") else {
        return;
    };
    let store = open(std::path::Path::new(&path)).expect("child opens the store");
    // libtest may print "test <name> ... " on the same line first.
    println!("FLASHSYNC-LOCK-HELD");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(store);
}

#[test]
fn a_store_open_in_another_process_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let store = open(dir.path()).expect("create");
        publish(&store, 1, vec![row![1, "a"]]).await.expect("publish");
    });
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "tests::open_errors::lock_holder_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("FLASHSYNC_LOCK_HOLDER_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the lock holder");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    // Wait until the child holds the store (its marker line), however long
    // that takes: no sleeps.
    let held = lines.by_ref().map_while(Result::ok).any(|l| l.contains("FLASHSYNC-LOCK-HELD"));
    assert!(held, "the child never reported holding the store");

    let e = assert_kind(open(dir.path()), StoreErrorKind::Locked);
    assert!(e.message.contains("another process"), "{e}");

    drop(child.stdin.take()); // let the child go
    let status = child.wait().expect("wait for the child");
    assert!(status.success(), "lock holder failed: {status}");
    let store = open(dir.path()).expect("open after the other process exited");
    let got = block_on(store.get(flashsync_core::RelationId(1), &key![1])).expect("get");
    assert_eq!(got, Some(row![1, "a"]));
}

#[test]
fn a_stray_folder_the_engine_would_panic_on_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()).expect("create"));
    // fjall panics (and then aborts in a destructor) unless every folder
    // under `keyspaces/` is named by a number.
    std::fs::create_dir(dir.path().join("keyspaces").join("not-a-number")).expect("mkdir");
    let e = assert_kind(open(dir.path()), StoreErrorKind::Corrupt);
    assert!(e.message.contains("not-a-number"), "{e}");
}

#[test]
fn engine_panics_become_corrupt_errors() {
    let e = assert_kind(
        crate::error::guard("probe", || -> Result<(), flashsync_core::StoreError> {
            panic!("simulated engine assertion")
        }),
        StoreErrorKind::Corrupt,
    );
    assert!(e.message.contains("simulated engine assertion"), "{e}");
}

#[test]
fn a_creation_interrupted_by_a_crash_is_started_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    // What a crash inside fjall's database creation leaves: its files, but
    // not the `version` marker it writes last.
    std::fs::write(dir.path().join("lock"), b"").expect("lock");
    std::fs::create_dir_all(dir.path().join("keyspaces").join("0")).expect("keyspaces");
    std::fs::write(dir.path().join("0.jnl"), b"partial").expect("journal");
    let store = open(dir.path()).expect("open starts the creation over");
    block_on(publish(&store, 1, vec![row![1, "a"]])).expect("the store works");
    drop(store);
    let store = open(dir.path()).expect("reopen");
    assert_eq!(block_on(store.count(flashsync_core::RelationId(1))).expect("count"), 1);
}

#[test]
fn a_new_store_gets_an_id_of_its_own_that_outlives_a_reopen() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let id = FjallStore::open(a.path(), Options::default()).unwrap().store_id().map(str::to_owned);
    let id = id.expect("a new store has an id");
    assert!(id.len() == 12 && id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
    let again = FjallStore::open(a.path(), Options::default()).unwrap();
    assert_eq!(again.store_id(), Some(id.as_str()), "the id is kept, not made anew");
    let other = FjallStore::open(b.path(), Options::default()).unwrap();
    assert_ne!(other.store_id(), Some(id.as_str()), "two stores, two ids");
}
