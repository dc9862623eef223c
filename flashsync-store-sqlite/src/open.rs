//! Opening a store: checking the path and the file, taking the store's lock,
//! creating a new store or checking an existing one's format (migrating an
//! older one), and recovering — which drops generation tables a crash left
//! behind, but for those a checkpoint keeps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flashsync_core::{RelationSchema, StoreError, StoreErrorKind, ViewRecord};
use rusqlite::{Connection, OpenFlags};

use crate::catalog::text_records;
use crate::checkpoint;
use crate::error::{corrupt, io, sql};
use crate::layout::{self, decode_json, quote, APPLICATION_ID, FORMAT_VERSION, MIGRATIONS};
use crate::options::{Durability, Options};
use crate::read::{open_reader, Reader};
use crate::table::Plan;
use crate::writer::Writer;

/// An opened store: the writer's state, the readers' connections, and the
/// lock that keeps other stores off the file while they live.
pub(crate) struct Opened {
    pub writer: Writer,
    pub readers: Vec<Reader>,
    pub lock: File,
    /// Created with the store; `None` for a store from before ids.
    pub store_id: Option<String>,
}

/// The lock file beside the database: `<file>-flashsync-lock`.
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-flashsync-lock");
    PathBuf::from(name)
}

/// Opens (or creates) the store in the database file `path`.
pub(crate) fn open(path: &Path, options: &Options) -> Result<Opened, StoreError> {
    let op = format!("open {}", path.display());
    check_path(path, &op)?;
    let lock = take_lock(path, &op)?;
    owner_only(path, &op)?;
    let conn = connect(path, options, &op)?;
    // Checked before anything is written: someone else's database is left
    // exactly as it was found.
    let found = check_format(&conn, &op)?;
    let fresh = found.is_none();
    if fresh {
        // Set before the first write fixes it: 16 KiB pages (SQLite's
        // default is 4 KiB) mean shallower B-trees and fewer page splits when
        // a copy loads a table — `bench snapshot --store sqlite` 0.26-0.30 ->
        // 0.31-0.35 — for a little more I/O per single-row read.
        conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(|e| sql(&op, e))?;
    }
    wal(&conn, &op)?;
    match found {
        None => create(&conn, &op)?,
        Some(version) if version < FORMAT_VERSION => migrate(&conn, version, &op)?,
        Some(_) => {}
    }
    let store_id: Option<i64> = conn
        .query_row("SELECT value FROM _flashsync_meta WHERE key = 'store_id'", [], |r| r.get(0))
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(sql(&op, e)) })?;
    let store_id = store_id.map(|id| format!("{:012x}", id & 0xffff_ffff_ffff));
    // Commits of applies are not synced (see `Durability`); WAL mode stays
    // consistent after any crash, and `persist` syncs.
    let synchronous = match options.durability {
        Durability::Explicit => "NORMAL",
        Durability::Batch => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous).map_err(|e| sql(&op, e))?;
    let mut writer = Writer {
        conn,
        durability: options.durability,
        catalog: BTreeMap::new(),
        copies: HashMap::new(),
        checkpoints: HashMap::new(),
        held: HashSet::new(),
        last_seq: None,
        staging: Default::default(),
        unsynced: false,
        next_generation: 1,
        poisoned: None,
    };
    recover(&mut writer, &op)?;
    let readers =
        (0..options.reader_threads.max(1)).map(|_| open_reader(path, options, &op)).collect::<Result<_, _>>()?;
    Ok(Opened { writer, readers, lock, store_id })
}

/// The page size of a new store's database.
const PAGE_SIZE: i64 = 16 * 1024;

/// Refuses paths that cannot hold a store, with a message that says why,
/// before anything is written next to them: a directory, a path below a
/// file, a path with a NUL byte. A file that is not a SQLite database is
/// refused by SQLite itself, before anything is written to it. (The file is
/// never opened here: closing a descriptor of a database would drop the
/// POSIX locks SQLite holds on it for every connection of this process.)
fn check_path(path: &Path, op: &str) -> Result<(), StoreError> {
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(io(op, "the path contains a NUL byte"));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            Err(io(op, format!("{} is a directory; a SQLite store is one file", path.display())))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent)
                .map_err(|e| io(op, format!("cannot create folder {}: {e}", parent.display()))),
            _ => Ok(()),
        },
        Err(e) => Err(io(op, format!("cannot inspect {}: {e}", path.display()))),
    }
}

/// Creates a new database file owner-only (0600) before SQLite opens it:
/// the mirror holds upstream rows, and SQLite gives its `-wal` and `-shm`
/// files the database file's mode, so they are owner-only too. An existing
/// file that others can read is left as it is (the user may share it on
/// purpose — other processes read the mirror with SQL), with a warning.
fn owner_only(path: &Path, op: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by other users (mode {mode:o}); `chmod 600` it unless that is meant",
                    path.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
            .map_err(|e| io(op, format!("cannot create {}: {e}", path.display()))),
        Err(e) => Err(io(op, format!("cannot inspect {}: {e}", path.display()))),
    }
}

/// One store per file: an exclusive OS lock on a file beside the database,
/// held for the store's life (the OS releases it when the process dies,
/// `kill -9` included). A separate file, because SQLite's own POSIX locks on
/// the database would be dropped if this process closed another descriptor
/// of it. Readers never take it: any number of other processes can read the
/// database while the store writes.
fn take_lock(path: &Path, op: &str) -> Result<File, StoreError> {
    let lock_path = lock_path(path);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| io(op, format!("cannot open the lock file {}: {e}", lock_path.display())))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => StoreError::new(
            StoreErrorKind::Locked,
            op,
            "the store is locked: another process (or another SqliteStore in this process) has it open",
        ),
        std::fs::TryLockError::Error(e) => io(op, format!("cannot lock {}: {e}", lock_path.display())),
    })?;
    Ok(lock)
}

/// The writer's connection, in WAL mode.
fn connect(path: &Path, options: &Options, op: &str) -> Result<Connection, StoreError> {
    // No URI flag: a path is a path, even one starting with "file:".
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql(op, e))?;
    conn.busy_timeout(options.busy_timeout).map_err(|e| sql(op, e))?;
    conn.set_prepared_statement_cache_capacity(512);
    conn.pragma_update(None, "cache_size", options.cache_size_pragma()).map_err(|e| sql(op, e))?;
    // The log is reused after each checkpoint; this caps the file it leaves
    // behind when a burst (a large copy) made it grow.
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20).map_err(|e| sql(op, e))?;
    Ok(conn)
}

/// WAL mode (persistent in the file): readers never block the writer or
/// see its uncommitted pages, and commits need not be synced to stay atomic.
fn wal(conn: &Connection, op: &str) -> Result<(), StoreError> {
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(|e| sql(op, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(io(op, format!("SQLite refused WAL mode (journal mode is {mode:?})")));
    }
    Ok(())
}

/// Checks the application id and format version. Returns the format
/// version of the store in the file (this build's or an older one, to be
/// migrated), or `None` if the database is empty (a new store, to be
/// created).
fn check_format(conn: &Connection, op: &str) -> Result<Option<i64>, StoreError> {
    let incompatible = |message: String| StoreError::new(StoreErrorKind::Incompatible, op, message);
    let pragma = |name: &str| -> Result<i64, StoreError> {
        conn.pragma_query_value(None, name, |r| r.get(0)).map_err(|e| sql(op, e))
    };
    let application_id = pragma("application_id")?;
    let version = pragma("user_version")?;
    if application_id == APPLICATION_ID {
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(incompatible(format!(
                "the store was written in format version {version}; this build of flashsync-store-sqlite reads \
                 versions 1 to {FORMAT_VERSION}"
            )));
        }
        return Ok(Some(version));
    }
    let objects: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(|e| sql(op, e))?;
    if application_id != 0 || version != 0 || objects != 0 {
        return Err(incompatible(format!(
            "the database is not a flashsync store (application id {application_id:#x}, {objects} schema objects)"
        )));
    }
    Ok(None)
}

/// Creates the store's tables in one synchronous transaction: a crash
/// leaves an empty database (created again on the next open) or a whole
/// store.
fn create(conn: &Connection, op: &str) -> Result<(), StoreError> {
    // The identity comes into being with the store, in its transaction.
    let ddl = format!(
        "BEGIN IMMEDIATE; {} INSERT INTO _flashsync_meta (key, value) VALUES ('store_id', {}); \
         PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {FORMAT_VERSION}; COMMIT;",
        layout::SCHEMA_DDL,
        new_store_id()
    );
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql(op, e))?;
    if let Err(e) = conn.execute_batch(&ddl) {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return Err(sql(op, e));
    }
    Ok(())
}

/// Brings a store of format version `from` (older than this build's) to
/// the current version in one synchronous transaction that also sets
/// `user_version`: a crash leaves the old version (migrated again on the
/// next open) or the new one, never a half-migrated store.
fn migrate(conn: &Connection, from: i64, op: &str) -> Result<(), StoreError> {
    let steps = usize::try_from(from - 1).ok().and_then(|first| MIGRATIONS.get(first..)).ok_or_else(|| {
        StoreError::new(StoreErrorKind::Incompatible, op, format!("no migration from format version {from}"))
    })?;
    let ddl = format!("BEGIN IMMEDIATE; {} PRAGMA user_version = {FORMAT_VERSION}; COMMIT;", steps.join("\n"));
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql(op, e))?;
    if let Err(e) = conn.execute_batch(&ddl) {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return Err(sql(op, e));
    }
    tracing::info!("migrated the store from format version {from} to {FORMAT_VERSION}");
    Ok(())
}

/// A fresh store id: 48 bits from std's OS-seeded `RandomState` keys mixed
/// with the time and the process id (see `SqliteStore::store_id`).
fn new_store_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    (h.finish() & 0xffff_ffff_ffff) as i64
}

/// Rebuilds the writer's mirror from disk and drops the generation tables a
/// previous run left unpublished (every `_flashsync_gen_*` table is: publish
/// renames it) — all but those a checkpoint keeps for `resume_generation`.
fn recover(w: &mut Writer, op: &str) -> Result<(), StoreError> {
    let e = |e| sql(op, e);
    let tables: Vec<String> = {
        let mut stmt = w.conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").map_err(e)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)?
    };
    for t in layout::TABLES {
        if !tables.iter().any(|name| name == t) {
            return Err(corrupt(op, format!("the bookkeeping table {t} is missing")));
        }
    }
    for (id, record) in text_records(&w.conn, "SELECT relation_id, record FROM _flashsync_views").map_err(e)? {
        let view: ViewRecord = decode_json("catalog entry", &record)?;
        w.catalog.insert(id, view.def.name);
    }
    // After the catalog: a checkpoint of a view no longer in it is stale.
    let stale = checkpoint::recover(w, &tables, op)?;
    let kept: HashSet<String> = w.checkpoints.values().map(|c| c.plan.table.clone()).collect();
    let leftovers: Vec<&String> =
        tables.iter().filter(|t| t.starts_with(layout::GEN_PREFIX) && !kept.contains(*t)).collect();
    if !leftovers.is_empty() || !stale.is_empty() {
        w.transaction(op, false, |conn| {
            for t in &leftovers {
                conn.execute(&format!("DROP TABLE {}", quote(t)), []).map_err(|e| sql(op, e))?;
            }
            for view in &stale {
                checkpoint::delete_row(conn, *view, None).map_err(|e| sql(op, e))?;
            }
            Ok(())
        })?;
    }
    let copies: Vec<(flashsync_core::RelationId, String, String)> = {
        let mut stmt = w.conn.prepare("SELECT relation_id, table_name, schema FROM _flashsync_copies").map_err(e)?;
        let rows = stmt
            .query_map([], |r| Ok((layout::id_from_sql(r.get(0)?), r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)?
    };
    for (id, table, schema) in copies {
        if !tables.contains(&table) {
            return Err(corrupt(op, format!("the table {table:?} of view {id}'s published copy is missing")));
        }
        let schema: RelationSchema = decode_json("published schema", &schema)?;
        let plan = Plan::new(&table, &schema).map_err(|e| corrupt(op, e))?;
        w.copies.insert(id, Arc::new(plan));
    }
    Ok(())
}
