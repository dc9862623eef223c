//! Opening a store: checking the path and the on-disk format, creating a new
//! store, and recovering the in-memory state — which includes reclaiming
//! generations a crash left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::RwLock;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use flashsync_core::{OriginId, StoreError, StoreErrorKind};

use crate::error::{corrupt, engine, guard};
use crate::layout::{self, CopyRecord, FORMAT_VERSION, META_FORMAT_VERSION};
use crate::options::Options;
use crate::shared::{Copy, Keyspaces, Shared, State};

/// Files fjall itself creates at the top of a database directory. A directory
/// holding only these (and no `version` marker yet) is a database whose
/// creation was interrupted; anything else there is someone else's data.
const FJALL_ENTRIES: [&str; 3] = ["lock", "keyspaces", "version"];

/// Opens (or creates) the store at `path`.
pub(crate) fn open(path: &Path, options: Options) -> Result<Shared, StoreError> {
    let op = format!("open {}", path.display());
    check_path(path, &op)?;
    let db = guard(&op, || {
        Database::builder(path).cache_size(options.cache_size).open().map_err(|e| engine(op.as_str(), e))
    })?;
    guard(&op, || check_format(&db, &op))?;
    let ks = Keyspaces {
        catalog: fixed(&db, layout::KS_CATALOG, &op)?,
        jobs: fixed(&db, layout::KS_JOBS, &op)?,
        origins: fixed(&db, layout::KS_ORIGINS, &op)?,
        copies: fixed(&db, layout::KS_COPIES, &op)?,
        dirty: fixed(&db, layout::KS_DIRTY, &op)?,
    };
    let state = guard(&op, || recover(&db, &ks, &op))?;
    Ok(Shared { db, ks, state: RwLock::new(state), options, path: path.to_owned() })
}

fn fixed(db: &Database, name: &str, op: &str) -> Result<Keyspace, StoreError> {
    db.keyspace(name, KeyspaceCreateOptions::default).map_err(|e| engine(op, e))
}

/// Refuses paths fjall would misbehave on, with a message that says why.
fn check_path(path: &Path, op: &str) -> Result<(), StoreError> {
    let io = |message: String| StoreError::new(StoreErrorKind::Io, op, message);
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => return Err(io(format!("{} exists and is not a directory", path.display()))),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("cannot inspect {}: {e}", path.display()))),
    }
    let entries = std::fs::read_dir(path).map_err(|e| io(format!("cannot list {}: {e}", path.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| io(format!("cannot list {}: {e}", path.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let fjall_owned = FJALL_ENTRIES.contains(&name.as_ref()) || name.ends_with(".jnl");
        if !fjall_owned {
            return Err(StoreError::new(
                StoreErrorKind::Incompatible,
                op,
                format!("{} is not empty and is not a flashsync store (found {name:?})", path.display()),
            ));
        }
    }
    check_keyspace_folders(path, op)
}

/// fjall 3 panics while recovering if a folder under `keyspaces/` is not named
/// by a number, and then panics again in a destructor (a poisoned lock), which
/// aborts the process — `catch_unwind` cannot help. Refuse such a directory
/// before fjall sees it.
fn check_keyspace_folders(path: &Path, op: &str) -> Result<(), StoreError> {
    let folder = path.join("keyspaces");
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::new(StoreErrorKind::Io, op, format!("cannot list {}: {e}", folder.display())))
        }
    };
    for entry in entries {
        let entry = entry
            .map_err(|e| StoreError::new(StoreErrorKind::Io, op, format!("cannot list {}: {e}", folder.display())))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let numbered = entry.file_name().to_str().is_some_and(|n| n.parse::<u64>().is_ok());
        if is_dir && !numbered {
            return Err(corrupt(
                op,
                format!(
                    "unexpected folder {:?} in {}: the store's files are damaged",
                    entry.file_name(),
                    folder.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the format version, or initializes a new store.
fn check_format(db: &Database, op: &str) -> Result<(), StoreError> {
    let incompatible = |message: String| StoreError::new(StoreErrorKind::Incompatible, op, message);
    let names = db.list_keyspace_names();
    if let Some(foreign) = names.iter().find(|n| !layout::is_ours(n)) {
        return Err(incompatible(format!(
            "the database holds keyspace {:?}, which flashsync does not write: not a flashsync store",
            &**foreign
        )));
    }
    if db.keyspace_exists(layout::KS_META) {
        let meta = fixed(db, layout::KS_META, op)?;
        if let Some(bytes) = meta.get(META_FORMAT_VERSION).map_err(|e| engine(op, e))? {
            let version = layout::decode_format_version(&bytes)?;
            if version != FORMAT_VERSION {
                return Err(incompatible(format!(
                    "the store was written in format version {version}; this build of flashsync-store-fjall reads version {FORMAT_VERSION}"
                )));
            }
            return Ok(());
        }
    }
    // No format version: a new store, or one whose creation was interrupted
    // (the version is written last). Either way nothing can be in it yet.
    for name in &names {
        let ks = fixed(db, name, op)?;
        if !ks.is_empty().map_err(|e| engine(op, e))? {
            return Err(corrupt(op, format!("keyspace {:?} holds data but the store has no format version", &**name)));
        }
    }
    for name in layout::FIXED_KEYSPACES {
        fixed(db, name, op)?;
    }
    let meta = fixed(db, layout::KS_META, op)?;
    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
    batch.insert(&meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes().to_vec());
    batch.commit().map_err(|e| engine(op, e))
}

/// Rebuilds the in-memory state from disk and reclaims every rows keyspace no
/// published copy refers to: generations being filled when the process
/// stopped, generations replaced by a switch whose cleanup did not run, and
/// fresh generations of a truncate whose batch was lost.
fn recover(db: &Database, ks: &Keyspaces, op: &str) -> Result<State, StoreError> {
    let mut catalog = BTreeSet::new();
    for item in ks.catalog.iter() {
        let key = item.key().map_err(|e| engine(op, e))?;
        catalog.insert(layout::decode_view_key("catalog", &key)?);
    }

    let mut copies = HashMap::new();
    for item in ks.copies.iter() {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let view = layout::decode_view_key("copies", &key)?;
        let record: CopyRecord = layout::decode_json("published copy", &value)?;
        let name = layout::rows_keyspace(view, record.generation);
        if !db.keyspace_exists(&name) {
            return Err(corrupt(
                op,
                format!("view {view}'s published copy is generation {}, whose rows are missing", record.generation),
            ));
        }
        let rows = fixed(db, &name, op)?;
        copies.insert(view, Copy { generation: record.generation, schema: record.schema, rows });
    }

    let mut dirty = BTreeMap::new();
    for item in ks.dirty.iter() {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let view = layout::decode_view_key("dirty marker", &key)?;
        let origin = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| OriginId::new(s).ok())
            .ok_or_else(|| corrupt(op, format!("dirty marker of view {view} names no valid origin")))?;
        dirty.insert(view, origin);
    }

    let mut highest = 0;
    for name in db.list_keyspace_names() {
        let Some((view, generation)) = layout::parse_rows_keyspace(&name) else {
            continue;
        };
        highest = highest.max(generation);
        let published = copies.get(&view).is_some_and(|c| c.generation == generation);
        if !published {
            let stale = fixed(db, &name, op)?;
            // Not fatal if it fails: it is found again on the next open.
            let _ = db.delete_keyspace(stale);
        }
    }

    Ok(State {
        catalog,
        copies,
        dirty,
        last_seq: None,
        retired: Vec::new(),
        next_generation: highest + 1,
        poisoned: None,
    })
}
