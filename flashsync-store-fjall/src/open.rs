//! Opening a store: checking the path and the on-disk format, creating a new
//! store, and recovering the in-memory state — which includes reclaiming
//! generations a crash left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use flashsync_core::{OriginId, RelationId, StoreError, StoreErrorKind};

use crate::checkpoint::{self, Checkpointed};
use crate::error::{corrupt, engine, guard};
use crate::layout::{self, CopyRecord, GenKey, FORMAT_VERSION, META_FORMAT_VERSION, META_STORE_ID};
use crate::options::{Options, MIN_JOURNAL_SIZE_LIMIT};
use crate::shared::{Copy, Keyspaces, Shared, State};

/// Files fjall itself creates at the top of a database directory. A directory
/// holding only these (and no `version` marker yet) is a database whose
/// creation was interrupted; anything else there is someone else's data.
const FJALL_ENTRIES: [&str; 4] = [LOCK_FILE, "keyspaces", VERSION_MARKER, crate::spill::STAGING_FILE];
/// fjall's lock file.
const LOCK_FILE: &str = "lock";
/// fjall's format marker, written last when it creates a database.
const VERSION_MARKER: &str = "version";

/// Opens (or creates) the store at `path`.
pub(crate) fn open(path: &Path, options: Options) -> Result<Shared, StoreError> {
    let op = format!("open {}", path.display());
    check_path(path, &op)?;
    let db = guard(&op, || {
        Database::builder(path)
            .cache_size(options.cache_size)
            // Checked here too: fjall panics on smaller limits, and the field is public.
            .max_journaling_size(options.journal_size_limit.max(MIN_JOURNAL_SIZE_LIMIT))
            .open()
            .map_err(|e| engine(op.as_str(), e))
    })?;
    guard(&op, || check_format(&db, &op, &options))?;
    let ks = Keyspaces {
        meta: fixed(&db, layout::KS_META, &op, &options)?,
        catalog: fixed(&db, layout::KS_CATALOG, &op, &options)?,
        jobs: fixed(&db, layout::KS_JOBS, &op, &options)?,
        origins: fixed(&db, layout::KS_ORIGINS, &op, &options)?,
        copies: fixed(&db, layout::KS_COPIES, &op, &options)?,
        dirty: fixed(&db, layout::KS_DIRTY, &op, &options)?,
        rows: fixed(&db, layout::KS_ROWS, &op, &options)?,
        filling: fixed(&db, layout::KS_FILLING, &op, &options)?,
        garbage: fixed(&db, layout::KS_GARBAGE, &op, &options)?,
    };
    let mut state = guard(&op, || recover(&db, &ks, &op))?;
    state.staging = flashsync_core::Staging::with_spill(crate::spill::FileSpill::create(path)?);
    let store_id = match ks.meta.get(META_STORE_ID).map_err(|e| engine(&op, e))? {
        Some(bytes) => Some(
            std::str::from_utf8(&bytes)
                .ok()
                .filter(|id| is_store_id(id))
                .ok_or_else(|| corrupt(&op, "the store id is not 12 lower-case hex digits"))?
                .to_owned(),
        ),
        None => None,
    };
    Ok(Shared {
        db,
        ks,
        state: RwLock::new(state),
        options,
        path: path.to_owned(),
        // Absolute, so a later change of working directory cannot point
        // the journal sync at another directory.
        journal_dir: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
        store_id,
        table_drops: RwLock::new(()),
        commit_gate: Mutex::new(()),
    })
}

/// Opens keyspace `name`, creating it with its options if it is new. fjall
/// stores a keyspace's options when it creates it and reads them back at
/// every later open: these apply to new stores only.
fn fixed(db: &Database, name: &str, op: &str, options: &Options) -> Result<Keyspace, StoreError> {
    db.keyspace(name, || create_options(name, options)).map_err(|e| engine(op, e))
}

/// How keyspace `name` is created.
///
/// The rows keyspace partitions its Bloom filters from level 1 on, where a
/// copy's bulk ingestion puts its tables (fjall's default partitions them
/// from level 3). An unpartitioned filter is built whole when its table is
/// finished, and an ingestion finishes its last table under fjall's journal
/// lock, where every other view's batch waits: for a chunk of a million
/// rows that build alone took 24–31 ms of a 30–60 ms stall of the other
/// views' commits. A partitioned filter is built a partition at a time as
/// the table is written, leaving the finish one partition and the filter's
/// index; reads of a key consult that index, then one partition.
fn create_options(name: &str, options: &Options) -> KeyspaceCreateOptions {
    let create = KeyspaceCreateOptions::default().max_memtable_size(options.memtable_size.max(1 << 20));
    if name == layout::KS_ROWS {
        create.filter_block_partitioning_policy(fjall::config::PartitioningPolicy::new([false, true]))
    } else {
        create
    }
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
    let mut fjall_files = false;
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
        fjall_files = true;
    }
    if fjall_files && !path.join(VERSION_MARKER).exists() {
        discard_unfinished_database(path, op)?;
    }
    check_keyspace_folders(path, op)
}

/// fjall writes its `version` marker last when it creates a database; a crash
/// before that leaves files that make every later open fail ("file exists").
/// Nothing can have been stored in such a database, so its files are removed
/// (under the database lock, so a creation in progress elsewhere is not
/// disturbed) and creation starts over.
fn discard_unfinished_database(path: &Path, op: &str) -> Result<(), StoreError> {
    let io = |what: &str, e: std::io::Error| {
        StoreError::new(StoreErrorKind::Io, op, format!("{what} in {}: {e}", path.display()))
    };
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path.join(LOCK_FILE))
        .map_err(|e| io("cannot open the lock file", e))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => {
            StoreError::new(StoreErrorKind::Locked, op, "the store is being created by another process")
        }
        std::fs::TryLockError::Error(e) => io("cannot lock the store", e),
    })?;
    let entries = std::fs::read_dir(path).map_err(|e| io("cannot list files", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("cannot list files", e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "keyspaces" {
            std::fs::remove_dir_all(entry.path()).map_err(|e| io("cannot remove an unfinished database", e))?;
        } else if name.ends_with(".jnl") {
            std::fs::remove_file(entry.path()).map_err(|e| io("cannot remove an unfinished database", e))?;
        }
    }
    // Dropping the file releases the lock; fjall takes it again at once.
    drop(lock);
    Ok(())
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
fn check_format(db: &Database, op: &str, options: &Options) -> Result<(), StoreError> {
    let incompatible = |message: String| StoreError::new(StoreErrorKind::Incompatible, op, message);
    let names = db.list_keyspace_names();
    if let Some(foreign) = names.iter().find(|n| !layout::is_ours(n)) {
        return Err(incompatible(format!(
            "the database holds keyspace {:?}, which flashsync does not write: not a flashsync store",
            &**foreign
        )));
    }
    if db.keyspace_exists(layout::KS_META) {
        let meta = fixed(db, layout::KS_META, op, options)?;
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
        let ks = fixed(db, name, op, options)?;
        if !ks.is_empty().map_err(|e| engine(op, e))? {
            return Err(corrupt(op, format!("keyspace {:?} holds data but the store has no format version", &**name)));
        }
    }
    for name in layout::KEYSPACES {
        fixed(db, name, op, options)?;
    }
    let meta = fixed(db, layout::KS_META, op, options)?;
    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
    // The identity comes into being with the store, in the same batch as
    // its format: a store either has both or is not there yet.
    batch.insert(&meta, META_STORE_ID, new_store_id().into_bytes());
    batch.insert(&meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes().to_vec());
    batch.commit().map_err(|e| engine(op, e))
}

/// A fresh store id: 48 bits as 12 hex digits, from the OS-seeded keys of
/// std's `RandomState` mixed with the time and the process id — enough that
/// two stores pointed at one database never pick the same slot name.
fn new_store_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

fn is_store_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Rebuilds the in-memory state from disk. Generations that were being
/// written when the process stopped can never be published now: they become
/// garbage, reclaimed with the rest by later `persist` calls — except each
/// view's checkpointed one, whose marker has a value
/// ([`crate::checkpoint`]): it is kept for `resume_generation`.
fn recover(db: &Database, ks: &Keyspaces, op: &str) -> Result<State, StoreError> {
    let mut catalog = BTreeSet::new();
    for item in ks.catalog.iter() {
        let key = item.key().map_err(|e| engine(op, e))?;
        catalog.insert(layout::decode_view_key("catalog", &key)?);
    }

    let mut highest = 0;
    let mut copies = HashMap::new();
    for item in ks.copies.iter() {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let view = layout::decode_view_key("copies", &key)?;
        let record: CopyRecord = layout::decode_json("published copy", &value)?;
        highest = highest.max(record.generation);
        copies.insert(view, Copy { generation: record.generation, schema: record.schema });
    }

    let mut dirty = BTreeMap::new();
    let mut diverged = BTreeSet::new();
    for item in ks.dirty.iter() {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let view = layout::decode_view_key("dirty marker", &key)?;
        if value.is_empty() {
            diverged.insert(view);
            continue;
        }
        let origin = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| OriginId::new(s).ok())
            .ok_or_else(|| corrupt(op, format!("dirty marker of view {view} names no valid origin")))?;
        dirty.insert(view, origin);
    }

    let mut garbage = VecDeque::new();
    for item in ks.garbage.iter() {
        let key = item.key().map_err(|e| engine(op, e))?;
        let gen = GenKey::decode("garbage marker", &key)?;
        highest = highest.max(gen.generation);
        garbage.push_back(gen);
    }
    let mut checkpoints: BTreeMap<RelationId, Checkpointed> = BTreeMap::new();
    let mut orphans = Vec::new();
    for item in ks.filling.iter() {
        let (key, value) = item.into_inner().map_err(|e| engine(op, e))?;
        let gen = GenKey::decode("generation marker", &key)?;
        highest = highest.max(gen.generation);
        let Some(schema) = checkpoint::decode_marker(&value)? else {
            orphans.push(gen);
            continue;
        };
        // Each batch writing a marker ends the view's other one, so there is
        // one per view; should there be more, the newest stands (markers
        // come in key order: generation order within a view).
        if let Some(older) = checkpoints.insert(gen.view, Checkpointed { gen, schema }) {
            orphans.push(older.gen);
        }
    }
    // Not synced: if a crash loses this batch, the markers are still there
    // and the next open does the same again.
    let mut batch = db.batch().durability(None);
    for gen in orphans {
        batch.remove(&ks.filling, gen.prefix());
        batch.insert(&ks.garbage, gen.prefix(), []);
        garbage.push_back(gen);
    }
    batch.commit().map_err(|e| engine(op, e))?;

    let stored_next = match ks.meta.get(layout::META_NEXT_GENERATION).map_err(|e| engine(op, e))? {
        Some(bytes) => layout::decode_u64("next generation", &bytes)?,
        None => 1,
    };
    Ok(State {
        catalog,
        copies,
        dirty,
        diverged,
        filling: BTreeSet::new(),
        checkpoints,
        garbage,
        reclaim_cursor: None,
        garbage_after_sync: Vec::new(),
        last_seq: None,
        staging: Default::default(),
        next_generation: stored_next.max(highest + 1),
        poisoned: None,
    })
}
