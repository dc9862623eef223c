//! Bad input through the public API of `SqliteStore`: store paths that are
//! directories, lie below files, cannot be created or hold someone else's
//! data; damaged or tampered files; and calls naming views, keys and rows
//! that do not fit — typed errors, never panics.

use std::path::{Path, PathBuf};

use flashsync_core::{
    key, row, ApplyBatch, BatchSeq, Column, Identity, JobRecord, KeyRange, Lsn, OriginId, Persistence, Progress,
    RelationId, RelationSchema, RowOp, SourceRelId, Store, StoreError, StoreErrorKind, Timestamp, ViewDef, ViewOps,
    ViewRecord,
};
use flashsync_store_sqlite::{Options, SqliteStore};

fn open(path: &Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(path, Options::default())
}

#[track_caller]
fn kind(r: Result<SqliteStore, StoreError>) -> StoreErrorKind {
    match r {
        Ok(s) => panic!("opened a store at {}", s.path().display()),
        Err(e) => {
            assert!(!e.message.is_empty() && !e.to_string().is_empty(), "an error without a message: {e:?}");
            e.kind
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).expect("list").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn directories_and_paths_below_files_are_io_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(kind(open(dir.path())), StoreErrorKind::Io);
    let file = dir.path().join("notes");
    std::fs::write(&file, b"precious").expect("write");
    assert_eq!(kind(open(&file.join("below.db"))), StoreErrorKind::Io);
    assert_eq!(kind(open(&file.join("deeper/still.db"))), StoreErrorKind::Io);
    assert_eq!(std::fs::read(&file).expect("read"), b"precious", "the file was left alone");
    // A path with a NUL byte cannot name anything.
    assert_eq!(kind(open(Path::new("/tmp/flashsync\0store.db"))), StoreErrorKind::Io);
    // Missing folders are created.
    let nested = dir.path().join("a/b/store.db");
    drop(open(&nested).expect("a store in new folders"));
}

#[test]
fn unwritable_places_are_io_errors() {
    // Places no user, not even root, can create a file in.
    let mut tried = 0;
    for p in ["/proc/flashsync-store.db", "/proc/self/flashsync-store.db", "/sys/flashsync/store.db"] {
        let path = PathBuf::from(p);
        if !path.parent().and_then(Path::parent).is_some_and(Path::exists) {
            continue;
        }
        tried += 1;
        let k = kind(open(&path));
        assert!(matches!(k, StoreErrorKind::Io | StoreErrorKind::Incompatible), "{p}: {k:?}");
    }
    eprintln!("{tried} unwritable places tried");
}

#[test]
fn a_read_only_directory_is_an_io_error_for_ordinary_users() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    if std::fs::write(ro.join("probe"), b"").is_ok() {
        eprintln!("skipped: this user (root?) writes to read-only directories");
        return;
    }
    assert_eq!(kind(open(&ro.join("store.db"))), StoreErrorKind::Io);
}

#[test]
fn someone_elses_files_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Not a database at all.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"precious notes, more than sixteen bytes").expect("write");
    assert_eq!(kind(open(&text)), StoreErrorKind::Incompatible);
    assert_eq!(std::fs::read(&text).expect("read"), b"precious notes, more than sixteen bytes");
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, b"abc").expect("write");
    assert_eq!(kind(open(&tiny)), StoreErrorKind::Incompatible);
    assert_eq!(std::fs::read(&tiny).expect("read"), b"abc");
    // Another application's SQLite database.
    let other = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&other).expect("sqlite");
        conn.execute_batch(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT); INSERT INTO accounts VALUES (1, 'ada');",
        )
        .expect("someone's data");
    }
    let before = std::fs::read(&other).expect("read");
    assert_eq!(kind(open(&other)), StoreErrorKind::Incompatible);
    assert!(std::fs::read(&other).expect("read") == before, "someone else's database was changed");
    assert_eq!(names(dir.path()), ["notes.txt", "other.db", "tiny"], "files were left beside someone else's data");
}

#[test]
fn another_format_version_is_incompatible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    drop(open(&path).expect("create"));
    rusqlite::Connection::open(&path).expect("sqlite").pragma_update(None, "user_version", 99).expect("bump");
    let e = open(&path).expect_err("a future format");
    assert_eq!(e.kind, StoreErrorKind::Incompatible, "{e}");
    assert!(e.message.contains("99"), "{e}");
}

#[test]
fn a_store_open_twice_is_locked_not_corrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = open(&path).expect("first open");
    assert_eq!(kind(open(&path)), StoreErrorKind::Locked);
    // Readers are welcome meanwhile.
    let reader = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("a read-only connection");
    let tables: i64 =
        reader.query_row("SELECT count(*) FROM _flashsync_views", [], |r| r.get(0)).expect("read the catalog");
    assert_eq!(tables, 0);
    drop(store);
    drop(open(&path).expect("reopens after the first handle is gone"));
}

/// The mirror holds upstream rows: a new store's files — the database, its
/// write-ahead log and shared memory, the lock — are owner-only.
#[test]
fn a_new_store_s_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = open(&path).expect("open");
    let v = view(1, "public", "v");
    futures::executor::block_on(async {
        store.put_view(&v).await.expect("put view");
        publish(&store, &v, vec![row![1, "a"]]).await.expect("publish");
    });
    let files = names(dir.path());
    for suffix in ["", "-wal", "-shm", "-flashsync-lock"] {
        let name = format!("store.db{suffix}");
        assert!(files.contains(&name), "{name} exists: {files:?}");
        let mode = std::fs::metadata(dir.path().join(&name)).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
    }
    drop(store);
}

fn schema() -> RelationSchema {
    let columns = [("id", "int8"), ("name", "text")].map(|(n, t)| Column { name: n.into(), type_name: t.into() });
    RelationSchema::keyed(SourceRelId(7), columns.to_vec(), vec![0])
}

fn view(id: u64, namespace: &str, name: &str) -> ViewRecord {
    let def = ViewDef::new(namespace, name, Persistence::Realtime, "pg:main", "public", "t").expect("def");
    ViewRecord { relation_id: RelationId(id), def }
}

async fn publish(store: &SqliteStore, v: &ViewRecord, rows: Vec<flashsync_core::Row>) -> Result<(), StoreError> {
    let mut generation = store.begin_generation(v.relation_id, &schema()).await?;
    generation.write(rows).await?;
    generation.publish(&JobRecord::new(v.relation_id, &v.def.name, v.def.persistence, Timestamp(0))).await
}

#[test]
fn damaged_and_tampered_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let v = view(1, "public", "v");
    {
        let store = open(&path).expect("open");
        futures::executor::block_on(async {
            store.put_view(&v).await.expect("put view");
            publish(&store, &v, (0..2000).map(|i| row![i, "x".repeat(50)]).collect()).await.expect("publish");
        });
    }
    // A copy to damage later (closing the store checkpointed the log).
    let damaged = dir.path().join("damaged.db");
    std::fs::copy(&path, &damaged).expect("copy");

    // Someone writes a value the column never holds: reads of it say Corrupt.
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute(r#"UPDATE "public.v" SET id = 'nope' WHERE id = 5"#, []).expect("tamper");
    drop(conn);
    let store = open(&path).expect("open");
    futures::executor::block_on(async {
        assert_eq!(store.get(v.relation_id, &key![6]).await.expect("get"), Some(row![6, "x".repeat(50)]));
        let e = store.get(v.relation_id, &key![5]).await.expect_err("get of the tampered row");
        assert_eq!(e.kind, StoreErrorKind::Corrupt, "{e}");
        let e = store.scan(v.relation_id, &KeyRange::default(), usize::MAX).await.expect_err("scan over it");
        assert_eq!(e.kind, StoreErrorKind::Corrupt, "{e}");
    });
    drop(store);

    // Someone drops the view's table.
    rusqlite::Connection::open(&path).expect("sqlite").execute_batch(r#"DROP TABLE "public.v""#).expect("drop");
    assert_eq!(kind(open(&path)), StoreErrorKind::Corrupt);

    // Garbage over the middle of the file: an error, whatever it is, on open
    // or on the first reads.
    let mut bytes = std::fs::read(&damaged).expect("read");
    let len = bytes.len();
    for b in &mut bytes[len / 4..len / 2] {
        *b = 0xA5;
    }
    std::fs::write(&damaged, &bytes).expect("write");
    match open(&damaged) {
        Err(e) => eprintln!("open of the damaged file: {e}"),
        Ok(store) => futures::executor::block_on(async {
            eprintln!("load: {:?}", store.load().await.map(|s| s.views.len()));
            // The view's rows fill most of the file: the garbage hit them.
            let e = store.scan(v.relation_id, &KeyRange::default(), usize::MAX).await.expect_err("scan");
            assert_eq!(e.kind, StoreErrorKind::Corrupt, "{e}");
            eprintln!("count: {:?}", store.count(v.relation_id).await);
        }),
    }
}

#[test]
fn views_sqlite_cannot_name_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store.db")).expect("open");
    futures::executor::block_on(async {
        // SQLite reserves names starting with "sqlite_".
        let reserved = view(1, "sqlite_stuff", "v");
        store.put_view(&reserved).await.expect("put view");
        let e = store.begin_generation(reserved.relation_id, &schema()).await.map(|_| ()).expect_err("reserved name");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e}");
        // SQLite table names ignore ASCII case: two views differing only in
        // case cannot both have a table.
        let lower = view(2, "public", "users");
        let upper = view(3, "public", "Users");
        store.put_view(&lower).await.expect("put view");
        store.put_view(&upper).await.expect("put view");
        publish(&store, &lower, vec![row![1, "ada"]]).await.expect("publish");
        let e = publish(&store, &upper, vec![row![2, "grace"]]).await.expect_err("a second table of the same name");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e}");
        assert_eq!(store.get(lower.relation_id, &key![1]).await.expect("get"), Some(row![1, "ada"]));
        // Renaming a view takes its table along.
        let renamed = view(2, "public", "people");
        store.put_view(&renamed).await.expect("rename");
        assert_eq!(store.table_name(lower.relation_id).await.expect("table"), Some("public.people".into()));
        assert_eq!(store.get(lower.relation_id, &key![1]).await.expect("get"), Some(row![1, "ada"]));
        publish(&store, &upper, vec![row![2, "grace"]]).await.expect("the name is free now");
        // A rename in case only keeps the table (SQLite finds it either way).
        store.put_view(&view(2, "public", "PEOPLE")).await.expect("rename in case only");
        assert_eq!(store.table_name(lower.relation_id).await.expect("table"), Some("public.people".into()));
        assert_eq!(store.get(lower.relation_id, &key![1]).await.expect("get"), Some(row![1, "ada"]));
    });
}

#[test]
fn calls_that_name_nothing_or_do_not_fit_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store.db")).expect("open");
    futures::executor::block_on(async {
        let ghost = RelationId(999);
        // Reads of a view that does not exist.
        let e = store.get(ghost, &key![1]).await.expect_err("get of an unknown view");
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}");
        let e = store.scan(ghost, &KeyRange::default(), 10).await.expect_err("scan of an unknown view");
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}");
        let e = store.count(ghost).await.expect_err("count of an unknown view");
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}");
        store.forget(ghost).await.expect("forgetting what is not there");
        store.forget_origin(&OriginId::new("pg:nowhere").expect("origin")).await.expect("forget origin");

        // A view with a copy.
        let v = view(1, "public", "v");
        let id = v.relation_id;
        store.put_view(&v).await.expect("put_view");
        let mut generation = store.begin_generation(id, &schema()).await.expect("generation");
        // Rows of the wrong width are refused, not stored.
        let e = generation.write(vec![row![1]]).await.expect_err("a row too narrow");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e:?}");
        let e = generation.write(vec![row![1, "a", "extra"]]).await.expect_err("a row too wide");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e:?}");
        generation.write(vec![row![1, "ada"]]).await.expect("a good row");
        let job = JobRecord::new(id, &v.def.name, v.def.persistence, Timestamp(0));
        generation.publish(&job).await.expect("publish");
        let e = store.begin_generation(ghost, &schema()).await.map(|_| ()).expect_err("an unknown view");
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}");
        let mut bad = schema();
        bad.key = vec![5];
        let e = store.begin_generation(id, &bad).await.map(|_| ()).expect_err("a schema that is not well formed");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e:?}");
        let nul = RelationSchema::keyed(
            SourceRelId(7),
            vec![Column { name: "a\0b".into(), type_name: "text".into() }],
            vec![0],
        );
        let e = store.begin_generation(id, &nul).await.map(|_| ()).expect_err("a column SQL cannot name");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e:?}");

        // Keys of any shape, and odd ranges, read as absent or empty.
        for k in [key![], key![1, 2, 3], key!["1"], flashsync_core::Key(vec![f64::NAN.into()])] {
            assert_eq!(store.get(id, &k).await.expect("get"), None, "{k:?}");
        }
        let inverted = KeyRange { start: Some(key![9]), end: Some(key![0]) };
        assert!(store.scan(id, &inverted, 10).await.expect("scan").is_empty());
        assert!(store.scan(id, &KeyRange::default(), 0).await.expect("scan").is_empty());

        // A batch whose second row does not fit the view's columns is
        // refused whole: the first row does not land either.
        let origin = OriginId::new("pg:main").expect("origin");
        let batch = ApplyBatch {
            seq: BatchSeq(1),
            origin: origin.clone(),
            progress: Progress::Commit { end_lsn: Lsn(10) },
            views: vec![ViewOps {
                relation_id: id,
                identity: Identity::Key,
                ops: vec![
                    RowOp::Insert { key: key![2], row: row![2, "grace"] },
                    RowOp::Insert { key: key![3], row: row![3] },
                ],
            }],
            jobs: vec![],
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        };
        let e = store.apply(batch).await.expect_err("a row of the wrong width");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e:?}");
        assert_eq!(store.get(id, &key![2]).await.expect("get"), None, "half of a failed batch was applied");
        assert!(store.load().await.expect("load").origins.is_empty(), "the failed batch moved progress");
        // A batch for a view that does not exist.
        let batch = ApplyBatch {
            seq: BatchSeq(2),
            origin,
            progress: Progress::Commit { end_lsn: Lsn(20) },
            views: vec![ViewOps { relation_id: ghost, identity: Identity::Key, ops: vec![RowOp::Truncate] }],
            jobs: vec![],
            chain: 0,
            commit_time: None,
            capture: Default::default(),
        };
        let e = store.apply(batch).await.expect_err("an unknown view");
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}");
        // Whatever happened, the store still answers.
        assert_eq!(store.get(id, &key![1]).await.expect("get"), Some(row![1, "ada"]));
        store.persist().await.expect("persist");
        store.load().await.expect("load");
    });
}
