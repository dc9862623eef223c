//! Bad input through the public API of `FjallStore`: store paths that are
//! files, lie below files, cannot be created or hold someone else's data,
//! and calls naming views, keys and rows that do not fit — typed errors,
//! never panics.

use std::path::{Path, PathBuf};

use flashsync_core::{
    key, row, ApplyBatch, BatchSeq, Column, Identity, JobRecord, KeyRange, Lsn, OriginId, Persistence, Progress,
    RelationId, RelationSchema, RowOp, SourceRelId, Store, StoreError, StoreErrorKind, Timestamp, ViewDef, ViewOps,
    ViewRecord,
};
use flashsync_store_fjall::{FjallStore, Options};

fn open(path: &Path) -> Result<FjallStore, StoreError> {
    FjallStore::open(path, Options::default())
}

#[track_caller]
fn kind(r: Result<FjallStore, StoreError>) -> StoreErrorKind {
    match r {
        Ok(s) => panic!("opened a store at {}", s.path().display()),
        Err(e) => {
            assert!(!e.message.is_empty() && !e.to_string().is_empty(), "an error without a message: {e:?}");
            e.kind
        }
    }
}

#[test]
fn a_file_is_not_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("store");
    std::fs::write(&file, b"precious").expect("write");
    assert_eq!(kind(open(&file)), StoreErrorKind::Io);
    assert_eq!(kind(open(&file.join("below"))), StoreErrorKind::Io);
    assert_eq!(kind(open(&file.join("deeper/still"))), StoreErrorKind::Io);
    assert_eq!(std::fs::read(&file).expect("read"), b"precious", "the file was left alone");
}

#[test]
fn unwritable_places_are_io_errors() {
    // Places no user, not even root, can create a directory in.
    let mut tried = 0;
    for p in ["/proc/flashsync-store", "/proc/self/flashsync-store", "/sys/flashsync-store"] {
        let path = PathBuf::from(p);
        if !path.parent().is_some_and(Path::exists) {
            continue;
        }
        tried += 1;
        let k = kind(open(&path));
        assert!(matches!(k, StoreErrorKind::Io | StoreErrorKind::Incompatible), "{p}: {k:?}");
    }
    eprintln!("{tried} unwritable places tried");
    // A path with a NUL byte cannot name anything.
    assert_eq!(kind(open(Path::new("/tmp/flashsync\0store"))), StoreErrorKind::Io);
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
    assert_eq!(kind(open(&ro.join("store"))), StoreErrorKind::Io);
    assert_eq!(kind(open(&ro)), StoreErrorKind::Io);
}

#[test]
fn someone_elses_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), b"precious").expect("write");
    std::fs::create_dir(dir.path().join("photos")).expect("mkdir");
    assert_eq!(kind(open(dir.path())), StoreErrorKind::Incompatible);
    assert_eq!(std::fs::read(dir.path().join("notes.txt")).expect("read"), b"precious");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "the store wrote into someone else's directory: {names:?}");
}

#[test]
fn a_store_open_twice_is_locked_not_corrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("first open");
    // Same process, second handle: refused (fjall's lock), typed.
    match open(dir.path()) {
        Ok(_) => {} // some platforms allow the same process twice; then it must still work
        Err(e) => assert!(matches!(e.kind, StoreErrorKind::Locked | StoreErrorKind::Io), "{e:?}"),
    }
    drop(store);
    open(dir.path()).expect("reopens after the first handle is gone");
}

fn schema() -> RelationSchema {
    let columns = ["id", "name"].map(|n| Column { name: n.into(), type_name: "text".into() }).to_vec();
    RelationSchema::keyed(SourceRelId(7), columns, vec![0])
}

#[test]
fn calls_that_name_nothing_or_do_not_fit_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    futures::executor::block_on(async {
        let ghost = RelationId(999);
        // Reads of a view that does not exist.
        let e = store.get(ghost, &key![1]).await.expect_err("get of an unknown view");
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}");
        let e = store.scan(ghost, &KeyRange::default(), 10).await.expect_err("scan of an unknown view");
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}");
        let e = store.count(ghost).await.expect_err("count of an unknown view");
        assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}");
        // Forgetting what is not there is not an error worth failing over.
        let _ = store.forget(ghost).await;
        let _ = store.forget_origin(&OriginId::new("pg:nowhere").expect("origin")).await;

        // A view with a copy.
        let id = RelationId(1);
        let def = ViewDef::new("public", "v", Persistence::Realtime, "pg:main", "public", "t").expect("def");
        store.put_view(&ViewRecord { relation_id: id, def: def.clone() }).await.expect("put_view");
        let mut generation = store.begin_generation(id, &schema()).await.expect("generation");
        // Rows of the wrong width are refused, not stored.
        let e = generation.write(vec![row![1]]).await.expect_err("a row too narrow");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e:?}");
        let e = generation.write(vec![row![1, "a", "extra"]]).await.expect_err("a row too wide");
        assert_eq!(e.kind, StoreErrorKind::Invalid, "{e:?}");
        generation.write(vec![row![1, "ada"]]).await.expect("a good row");
        let job = JobRecord::new(id, &def.name, def.persistence, Timestamp(0));
        generation.publish(&job).await.expect("publish");
        // A generation for a view that does not exist.
        match store.begin_generation(ghost, &schema()).await {
            Ok(g) => g.discard().await.expect("discard"),
            Err(e) => assert_eq!(e.kind, StoreErrorKind::NotFound, "{e:?}"),
        }
        // A schema that is not well formed.
        let mut bad = schema();
        bad.key = vec![5];
        if let Ok(g) = store.begin_generation(id, &bad).await {
            g.discard().await.expect("discard");
        }

        // Keys of any shape, and odd ranges, read as absent or empty.
        for k in [key![], key![1, 2, 3], key!["1"], flashsync_core::Key(vec![f64::NAN.into()])] {
            assert_eq!(store.get(id, &k).await.expect("get"), None, "{k:?}");
        }
        let inverted = KeyRange { start: Some(key![9]), end: Some(key![0]) };
        assert!(store.scan(id, &inverted, 10).await.expect("scan").is_empty());
        assert!(store.scan(id, &KeyRange::default(), 0).await.expect("scan").is_empty());

        // A batch whose row does not fit the view's columns. `apply` trusts
        // its caller here (the machine checks widths before it builds row
        // ops, and `generation.write` refuses such rows): it may apply it or
        // refuse the whole batch, but never half of it, and never panic.
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
        match store.apply(batch).await {
            Ok(_) => assert_eq!(store.get(id, &key![2]).await.expect("get"), Some(row![2, "grace"])),
            Err(e) => {
                assert!(matches!(e.kind, StoreErrorKind::Invalid | StoreErrorKind::NotFound), "{e:?}");
                assert_eq!(store.get(id, &key![2]).await.expect("get"), None, "half of a failed batch was applied");
            }
        }
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
        let _ = store.apply(batch).await;
        // Whatever happened, the store still answers.
        assert_eq!(store.get(id, &key![1]).await.expect("get"), Some(row![1, "ada"]));
        let _ = store.persist().await;
        store.load().await.expect("load");
    });
}
